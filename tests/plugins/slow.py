"""A test plugin of slow, hanging, failing and async background handlers, recorded in SQLite.

Every event's value carries ``n``; most handlers first mark the call started, then
do their work, then record it finished, so tests can tell what overlapped and in
what order. ``sleep`` in the value is how long the slow ones wait.
"""

from __future__ import annotations

import asyncio
import os
import time

from receiver import Event, on

from . import noted, transaction
from . import value_of as _value

_SCHEMA = "CREATE TABLE IF NOT EXISTS runs (name TEXT, n INTEGER, pid INTEGER, phase TEXT, at REAL)"


def _note(event: Event, phase: str) -> None:
    with transaction(os.environ["RECORDING_DB"], [_SCHEMA]) as connection:
        connection.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (event.name, _value(event).get("n"), os.getpid(), phase, time.time()),
        )


def runs(path: str, phase: str, name: str | None = None) -> list[tuple[str, int, int, float]]:
    """(name, n, pid, at) rows of one phase (``start`` or ``end``), oldest first."""
    return noted(path, "SELECT name, n, pid, at FROM runs WHERE phase = ?", phase, name, "at")


@on("slow.wait", background=True)
def wait(event: Event) -> None:
    _note(event, "start")
    time.sleep(float(_value(event).get("sleep", 0.5)))
    _note(event, "end")


@on("slow.fast", background=True)
def fast(event: Event) -> None:
    _note(event, "end")


@on("slow.async", background=True)
async def waits_async(event: Event) -> None:
    _note(event, "start")
    await asyncio.sleep(float(_value(event).get("sleep", 0.5)))
    _note(event, "end")


@on("slow.capped", background=True, concurrency=2)
def capped(event: Event) -> None:
    _note(event, "start")
    time.sleep(0.3)
    _note(event, "end")


@on("slow.hang", background=True, timeout=1, retry=0)
def hang(event: Event) -> None:
    """Never returns in any useful time: its threads are abandoned."""
    _note(event, "start")
    time.sleep(float(_value(event).get("sleep", 3600)))
    _note(event, "end")


@on("slow.overrun", background=True, timeout=1, retry=1)
def overrun(event: Event) -> None:
    """Runs past its 1 s limit on every attempt."""
    _note(event, "start")
    time.sleep(4)


@on("slow.async_overrun", background=True, timeout=1, retry=0)
async def overrun_async(event: Event) -> None:
    _note(event, "start")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        _note(event, "cancelled")
        raise


@on("slow.fail", background=True, retry=0)
def fail(event: Event) -> None:
    _note(event, "start")
    raise RuntimeError(f"event {_value(event).get('n')} fails on purpose")
