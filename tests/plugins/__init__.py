"""Test plugins: handler modules the tests load into real workers, and what they share."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any

from receiver import Event


@contextmanager
def transaction(path: str, schema: Sequence[str] = ()) -> Iterator[sqlite3.Connection]:
    """One transaction on the recording database, on a connection closed at its end.

    ``with sqlite3.connect(...)`` commits but does not close: the connection lived on
    until collected, and a worker forks its work horses; SQLite's locks are per
    process, so a child closing an inherited connection could break the parent's
    (a "disk I/O error" after the row was stored, which failed a recorded call).
    """
    with closing(sqlite3.connect(path, timeout=30)) as connection, connection:
        for statement in schema:
            connection.execute(statement)
        yield connection


def noted(path: str, query: str, phase: str, name: str | None, order: str) -> list[Any]:
    """Rows of ``query`` (``... WHERE phase = ?``) for one phase, and one event name when
    given, sorted by ``order``; none while the file or its table does not exist yet."""
    if not os.path.exists(path):
        return []
    args: list[Any] = [phase]
    if name is not None:
        query += " AND name = ?"
        args.append(name)
    with transaction(path) as connection:
        try:
            return connection.execute(f"{query} ORDER BY {order}", args).fetchall()
        except sqlite3.OperationalError:
            return []


def value_of(event: Event) -> dict[str, Any]:
    return event.value if isinstance(event.value, dict) else {}
