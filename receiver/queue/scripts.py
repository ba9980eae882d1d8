"""Lua scripts registered once per Redis client (registering hashes the source every time)."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from redis import Redis

_registered: WeakKeyDictionary[Redis, dict[str, Any]] = WeakKeyDictionary()


def script(connection: Redis, source: str) -> Any:
    """The client's ``Script`` for ``source``: EVALSHA, loading it again after a Redis restart."""
    scripts = _registered.setdefault(connection, {})
    found = scripts.get(source)
    if found is None:
        found = scripts[source] = connection.register_script(source)
    return found
