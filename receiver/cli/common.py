"""What several command groups share: the operator's view of Redis, and safe output.

``operator_view`` connects as ``receiver worker`` would (settings, plugins, Redis),
for the commands that read the queues and traces; ``say`` and ``table`` print
text that may quote payload data, escaped; ``F`` types the option decorators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from receiver.observe import logsafe
from receiver.settings.loading import load_settings
from receiver.settings.model import Settings

F = TypeVar("F", bound=Callable[..., Any])


def ping_redis() -> Settings:
    """The settings, once the configured Redis answered (before any start-up warning)."""
    from receiver.app import connect
    from receiver.deploy.checks import CHECK_TIMEOUT

    settings = load_settings()
    if settings.redis_url is not None:
        connect(settings.redis_url, CHECK_TIMEOUT).ping()
    return settings


def operator_view() -> tuple[Any, list[str]]:
    """Settings, plugins and Redis, as ``receiver worker`` would see them.

    An unreachable Redis fails here, before the start-up warning a web process would log.
    """
    from receiver.app import build_core
    from receiver.queue.ops import queue_names

    settings = ping_redis()
    core = build_core(settings, require_redis=True)
    connection = core.backend.connection
    return connection, queue_names(core.settings, core.router)


def say(text: str) -> None:
    """Echo text that may quote payload data (topics, fields, ids, handler errors).

    A signed payload is Meta's, its text any user's: each line is escaped (``logsafe.escape``),
    so an ESC or BEL in a field name reaches the terminal as ``\\x1b``, never as a command.
    """
    click.echo("\n".join(logsafe.escape(line) for line in text.split("\n")))


def table(rows: Sequence[tuple[str, ...]]) -> None:
    rows = [tuple(logsafe.escape(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        click.echo("  ".join([*cells, row[-1]]))
