"""Integrations an operator switched off from the admin dashboard, shared through Redis.

The config's ``enabled`` is the floor: an integration disabled there stays
disabled, whatever the dashboard says. The dashboard can only switch off an
enabled one, and switch back on what it switched off. Every web process
reads the switches from a background thread at most once a second
(``SWITCH_REFRESH``) and answers from memory: the ack path never waits for
Redis because of them. While Redis is away the last known switches hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from receiver.settings import defaults

log = logging.getLogger("receiver.switches")

KEY = "receiver:switches:off"
"""Hash: integration name -> when it was switched off (ISO 8601)."""


def switch(connection: redis.Redis, integration: str, on: bool) -> None:
    """Switch an integration on or off for every web process (within ``SWITCH_REFRESH``)."""
    if on:
        connection.hdel(KEY, integration)
    else:
        connection.hset(KEY, integration, datetime.now(UTC).isoformat())


def switched_off(connection: redis.Redis) -> dict[str, str]:
    """Read now, from Redis: integration name -> when it was switched off."""
    return {_text(k): _text(v) for k, v in connection.hgetall(KEY).items()}


class Switches:
    """What the core asks on every request: ``switches(name)`` is true when switched off."""

    def __init__(
        self,
        connection: Callable[[], redis.Redis | None],
        every: float = defaults.SWITCH_REFRESH,
    ) -> None:
        self.connection = connection
        self.every = every
        self._off: frozenset[str] = frozenset()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __call__(self, integration: str) -> bool:
        if self._thread is None:
            self._start()
        return integration in self._off

    def refresh(self) -> None:
        """Read the switches once (the background thread does this every ``every`` seconds)."""
        connection = self.connection()
        if connection is not None:
            self._off = frozenset(switched_off(connection))

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="receiver-switches", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        while True:
            try:
                self.refresh()
            except (redis.RedisError, OSError) as exc:
                log.debug("switches not read (%s); keeping the last known ones", exc)
            except Exception:  # never let this thread die: the last switches would stick
                log.exception("reading integration switches failed; carrying on")
            stop.wait(self.every)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
