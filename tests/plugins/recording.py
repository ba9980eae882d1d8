"""A test plugin whose background handlers record each call in SQLite, across processes.

- ``record`` (every topic but ``faulty``): one row per successful call; with
  ``{"sleep": s}`` in the value it first marks itself started, then sleeps.
- ``faulty.flaky``: fails its first ``fail_times`` attempts, then succeeds.
- ``faulty.broken``: fails until the file named by ``FIXED_FLAG`` exists.

A call whose SQLite write raises fails (the receiver runs it again), yet SQLite
may have kept its row (CI once saw "disk I/O error" on a commit that had
landed); such a call's run id goes to ``<db>.raised`` and ``successful`` leaves
its row out, so the tests count exactly the calls that returned.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from receiver import Event, on

from . import transaction

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS calls"
    " (event_id TEXT, name TEXT, verb TEXT, pid INTEGER, data TEXT, run TEXT)",
    "CREATE TABLE IF NOT EXISTS attempts (event_id TEXT, name TEXT, at REAL, pid INTEGER)",
    "CREATE TABLE IF NOT EXISTS started (event_id TEXT, pid INTEGER)",
)


def _db() -> AbstractContextManager[sqlite3.Connection]:
    return transaction(os.environ["RECORDING_DB"], _SCHEMA)


def rows(path: str, query: str) -> list[Any]:
    if not os.path.exists(path):
        return []
    with transaction(path) as connection:
        try:
            return connection.execute(query).fetchall()
        except sqlite3.OperationalError:
            return []


def successful(path: str, columns: str) -> list[Any]:
    """``columns`` of each recorded call that returned (see the module's docstring)."""
    try:
        raised = set(Path(f"{path}.raised").read_text().split())
    except FileNotFoundError:
        raised = set()
    found = rows(path, f"SELECT run, {columns} FROM calls")
    return [row[1:] for row in found if row[0] not in raised]


def calls(path: str) -> list[tuple[str, str, str | None]]:
    """What the handlers recorded: (event id, event name, verb) per successful call."""
    return successful(path, "event_id, name, verb")


def _value(event: Event) -> dict[str, Any]:
    return event.value if isinstance(event.value, dict) else {}


def _success(event: Event) -> None:
    run = uuid.uuid4().hex
    data = json.dumps(event.to_dict())
    try:
        with _db() as connection:
            connection.execute(
                "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                (event.id, event.name, event.verb, os.getpid(), data, run),
            )
    except sqlite3.Error as exc:
        with open(f"{os.environ['RECORDING_DB']}.raised", "a") as raised:
            raised.write(f"{run}\n")
        name = getattr(exc, "sqlite_errorname", "")
        raise RuntimeError(f"recording the call failed: {exc} ({name})") from exc


def _attempt(event: Event) -> int:
    with _db() as connection:
        connection.execute(
            "INSERT INTO attempts VALUES (?, ?, ?, ?)",
            (event.id, event.name, time.time(), os.getpid()),
        )
        return int(
            connection.execute(
                "SELECT COUNT(*) FROM attempts WHERE event_id = ?", (event.id,)
            ).fetchone()[0]
        )


@on("*", lambda event: event.topic != "faulty", background=True)
def record(event: Event) -> None:
    delay = float(_value(event).get("sleep", 0))
    if delay:
        with _db() as connection:
            connection.execute("INSERT INTO started VALUES (?, ?)", (event.id, os.getpid()))
        time.sleep(delay)
    _success(event)


@on("faulty.flaky", background=True)
def flaky(event: Event) -> None:
    attempt = _attempt(event)
    if attempt <= int(_value(event).get("fail_times", 0)):
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    _success(event)


@on("faulty.broken", background=True)
def broken(event: Event) -> None:
    _attempt(event)
    if not os.path.exists(os.environ.get("FIXED_FLAG", "/nonexistent")):
        raise RuntimeError("broken until FIXED_FLAG exists")
    _success(event)
