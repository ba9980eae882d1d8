"""The web side of background work: store it durably before the delivery is acknowledged.

Each delivery becomes one packet per queue, appended to Redis in one round
trip (a Lua script that also says whether a drain job must be started).
When Redis is unreachable or slower than ``redis_timeout``, the delivery is
spooled to local disk and still acknowledged (``spool_mode = "spool"``), or
refused with 503 so Meta retries (``"reject"``, or when the spool fails too).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

import redis

from . import drain
from .config import Settings
from .contracts import Backend, Work
from .errors import QueueUnavailable
from .jobs import Outcome, WorkContext, execute, item
from .spool import Spool, SpoolDrainer, Spooled, spool_folder

log = logging.getLogger("receiver.queue")

BREAKER_SECONDS = 1.0
"""After a Redis failure, new deliveries go straight to the spool for this long."""


def packets(delivery_id: str, work: Work, default_queue: str) -> dict[str, list[str]]:
    by_queue: dict[str, list[dict[str, object]]] = defaultdict(list)
    for event, handler in work:
        by_queue[handler.queue or default_queue].append(item(event, handler))
    at = round(time.time(), 3)  # for the oldest-pending gauge (ops.packet_time)
    return {
        queue: [
            json.dumps(
                {"delivery_id": delivery_id, "at": at, "items": items}, separators=(",", ":")
            )
        ]
        for queue, items in by_queue.items()
    }


__all__ = ["Backend", "InlineBackend", "RQBackend", "Work", "packets"]


class RQBackend:
    """Durable: answers only once Redis, or the local spool, holds the work."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection
        self.spool = Spool(spool_folder(settings))
        self.drainer = SpoolDrainer(self.spool, self.push_spooled)
        self._down_until = 0.0
        if settings.spool_mode == "spool" and self.spool.files():
            self.drainer.ensure_running()

    def submit(self, delivery_id: str, work: Work) -> str:
        queues = packets(delivery_id, work, self.settings.queue_name)
        if time.monotonic() >= self._down_until:
            try:
                self._push(queues)
                return "redis"
            except redis.RedisError as exc:
                self._down_until = time.monotonic() + BREAKER_SECONDS
                log.error("Redis did not take delivery %s: %s", delivery_id, exc)
        if self.settings.spool_mode != "spool":
            raise QueueUnavailable(
                "background work could not be stored (Redis unreachable); "
                "the delivery was not acknowledged and Meta will retry it"
            )
        try:
            self.spool.write(delivery_id, queues)
        except OSError as exc:
            log.critical("spool write failed for delivery %s: %s", delivery_id, exc)
            raise QueueUnavailable(
                "neither Redis nor the local spool could store the delivery; "
                "not acknowledged, Meta will retry it"
            ) from exc
        self.drainer.ensure_running()
        return "spool"

    def _push(self, queues: dict[str, list[str]]) -> None:
        for queue, items in queues.items():
            encoded = [p.encode() for p in items]
            drainer = drain.push(self.connection, queue, encoded, self.settings.max_drainers)
            if drainer is not None:
                try:
                    drain.start_drainer(self.connection, queue, drainer, self.settings.job_timeout)
                except redis.RedisError:
                    # Stored; worker maintenance starts a drainer once the slot lapses.
                    log.warning("stored delivery but could not start a drain job; workers will")

    def push_spooled(self, spooled: Spooled) -> None:
        self._push(spooled.queues)
        self._down_until = 0.0


class InlineBackend:
    """Runs background handlers at once, in this process: replay and handler tests."""

    def __init__(self, context: WorkContext) -> None:
        self.context = context
        self.outcomes: list[Outcome] = []

    def submit(self, delivery_id: str, work: Work) -> str:
        if work:
            self.outcomes = execute(
                [item(e, h) for e, h in work],
                self.context,
                token=f"i:{delivery_id}",
                failed_state=lambda o: "failed",
            )
        return "inline"
