"""Realistic background handlers for bench/slow_bench.py: each calls a service over HTTP.

``call`` (a plain function, on the worker's threads) and ``call_async`` (``async def``,
on its event loop) post the event to ``SLOW_SERVICE_URL`` through one kept-alive
httpx client per process, the way a handler calls the Graph API; ``call_ordered`` is ``call`` with
``ordered_by`` (the key is the event's ``k``). ``call_job`` is
the same call as a plain RQ job, for the one-job-per-event baseline.
"""

from __future__ import annotations

import os
import threading

import httpx

from receiver import Event, on

_lock = threading.Lock()
_client: httpx.Client | None = None
_async_client: httpx.AsyncClient | None = None
LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=256)


def client() -> httpx.Client:
    global _client
    with _lock:
        if _client is None:
            _client = httpx.Client(base_url=os.environ["SLOW_SERVICE_URL"], limits=LIMITS)
        return _client


def async_client() -> httpx.AsyncClient:
    global _async_client
    if _async_client is None:
        _async_client = httpx.AsyncClient(base_url=os.environ["SLOW_SERVICE_URL"], limits=LIMITS)
    return _async_client


@on("bench.sync", background=True)
def call(event: Event) -> None:
    """Post the event's value to the slow service and check the answer."""
    client().post("/lookup", json=event.value).raise_for_status()


@on("bench.async", background=True)
async def call_async(event: Event) -> None:
    """The same call from an ``async def`` handler."""
    (await async_client().post("/lookup", json=event.value)).raise_for_status()


@on("bench.ordered", background=True, ordered_by=lambda event: event.value["k"])
def call_ordered(event: Event) -> None:
    """The same call, ordered by the event's ``k``: one at a time per key."""
    client().post("/lookup", json=event.value).raise_for_status()


def call_job(n: int) -> None:
    """The same call as a plain RQ job (one job per event)."""
    client().post("/lookup", json={"n": n}).raise_for_status()
