"""A test plugin of ordered background handlers (``ordered_by``), recorded in SQLite.

Events are ``chat.*`` changes whose value carries ``from.id`` (the sender: the
order key), ``n`` and how the call behaves: ``sleep`` seconds, ``fail_times``
attempts that fail first. Each call notes when it started and ended, in which
process and at which attempt, so tests can tell order and overlap apart;
``stall`` seconds are slept by the first attempt only.

- ``chat.say``: ordered by ``sender_id``, one retry; its key moves on after a failure.
- ``chat.block``: ordered by ``sender_id``, no retry, ``on_failure="block"``; fails while
  ``fail_times`` is more than its attempts so far, unless ``FIXED_FLAG`` exists.
- ``chat.free``: the same work, unordered: the baseline.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from receiver import Event, on

from . import noted, transaction
from . import value_of as _value

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS calls"
    " (name TEXT, n INTEGER, key TEXT, pid INTEGER, attempt INTEGER, phase TEXT, at REAL)"
)


def _db() -> AbstractContextManager[sqlite3.Connection]:
    return transaction(os.environ["RECORDING_DB"], [_SCHEMA])


def calls(path: str, phase: str, name: str | None = None) -> list[tuple[Any, ...]]:
    """``(name, n, key, pid, attempt, at)`` rows of one phase (``start``, ``end``,
    ``fail``), in the order they were noted."""
    query = "SELECT name, n, key, pid, attempt, at FROM calls WHERE phase = ?"
    return noted(path, query, phase, name, "rowid")


def _run(event: Event) -> None:
    value = _value(event)
    with _db() as connection:
        attempt = 1 + connection.execute(
            "SELECT COUNT(*) FROM calls WHERE name = ? AND n = ? AND phase = 'start'",
            (event.name, value.get("n")),
        ).fetchone()[0]
    note = (event.name, value.get("n"), event.sender_id, os.getpid(), attempt)

    def noted(phase: str) -> None:
        with _db() as connection:
            row = (*note, phase, time.time())
            connection.execute("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    noted("start")
    time.sleep(float(value.get("sleep", 0)) + (float(value.get("stall", 0)) if attempt == 1 else 0))
    fixed = os.path.exists(os.environ.get("FIXED_FLAG", "/nonexistent"))
    if attempt <= int(value.get("fail_times", 0)) and not fixed:
        noted("fail")
        raise RuntimeError(f"event {value.get('n')} fails on purpose (attempt {attempt})")
    noted("end")


@on("chat.say", background=True, ordered_by="sender_id", retry=1)
def say(event: Event) -> None:
    _run(event)


@on("chat.block", background=True, ordered_by="sender_id", on_failure="block", retry=0)
def block(event: Event) -> None:
    _run(event)


@on("chat.free", background=True)
def free(event: Event) -> None:
    _run(event)
