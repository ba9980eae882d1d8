"""Test plugins: handler modules the tests load into real workers, and what they share."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from receiver import Event


def noted(path: str, query: str, phase: str, name: str | None, order: str) -> list[Any]:
    """Rows of ``query`` (``... WHERE phase = ?``) for one phase, and one event name when
    given, sorted by ``order``; none while the file or its table does not exist yet."""
    if not os.path.exists(path):
        return []
    args: list[Any] = [phase]
    if name is not None:
        query += " AND name = ?"
        args.append(name)
    with sqlite3.connect(path, timeout=30) as connection:
        try:
            return connection.execute(f"{query} ORDER BY {order}", args).fetchall()
        except sqlite3.OperationalError:
            return []


def value_of(event: Event) -> dict[str, Any]:
    return event.value if isinstance(event.value, dict) else {}
