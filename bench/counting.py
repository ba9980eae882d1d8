"""A background handler that counts the events it handles, for bench/http_bench.py's check.

Used only by the correctness run ("every acked event was handled"): each call is
one Redis ``INCR`` on top of the no-op, so the plain no-op numbers use ``bench.noop``.
"""

from __future__ import annotations

import os

import redis

from receiver import Event, on

COUNTER = "bench:handled"

_connection: redis.Redis | None = None


def connection() -> redis.Redis:
    global _connection
    if _connection is None:
        _connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _connection


@on("*", background=True)
def count(event: Event) -> None:
    """Count one handled event."""
    connection().incr(COUNTER)
