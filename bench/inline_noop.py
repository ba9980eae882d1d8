"""An inline no-op handler for bench/http_bench.py: the request path's own cost, no Redis."""

from receiver import Event, on


@on("*")
def noop(event: Event) -> None:
    """An inline handler that does nothing."""
