"""No-op handlers for the benchmarks: the cost measured is the receiver's own."""

from receiver import Event, on


@on("*", background=True)
def noop(event: Event) -> None:
    """A background handler that does nothing."""


def noop_job(*args: object) -> None:
    """A plain RQ job that does nothing: the baseline."""
