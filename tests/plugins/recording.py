"""A test plugin whose background handler records each call in SQLite, across processes."""

from __future__ import annotations

import json
import os
import sqlite3
import time

from receiver import Event, on


def _db() -> sqlite3.Connection:
    connection = sqlite3.connect(os.environ["RECORDING_DB"], timeout=30)
    connection.execute(
        "CREATE TABLE IF NOT EXISTS calls "
        "(event_id TEXT, name TEXT, verb TEXT, pid INTEGER, data TEXT)"
    )
    return connection


def calls(path: str) -> list[tuple[str, str, str | None]]:
    """What the handler recorded: (event id, event name, verb) per call."""
    if not os.path.exists(path):
        return []
    with sqlite3.connect(path, timeout=30) as connection:
        try:
            return connection.execute("SELECT event_id, name, verb FROM calls").fetchall()
        except sqlite3.OperationalError:
            return []


@on("*", background=True)
def record(event: Event) -> None:
    delay = float(event.value.get("sleep", 0)) if isinstance(event.value, dict) else 0
    if delay:
        time.sleep(delay)
    with _db() as connection:
        connection.execute(
            "INSERT INTO calls VALUES (?, ?, ?, ?, ?)",
            (event.id, event.name, event.verb, os.getpid(), json.dumps(event.to_dict())),
        )
