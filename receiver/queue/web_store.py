"""Web side: store a delivery's background work durably before it is acknowledged.

Each delivery becomes one packet per queue, appended to Redis in one round
trip (a Lua script that also says whether a drain job must be started).
When Redis is unreachable or slower than ``redis_timeout``, the delivery is
spooled to local disk and still acknowledged (``spool_mode = "spool"``), or
refused with 503 so Meta retries (``"reject"``, or when the spool fails too).
"""

from __future__ import annotations

import logging
import time

import redis

from ..config import Settings
from ..contracts import Work
from ..errors import QueueUnavailable
from . import ordering
from .handoff import packets, push, start_drainer
from .web_spool import Lanes, Spool, Spooled, SpoolFlusher, spool_folder

log = logging.getLogger("receiver.queue")

BREAKER_SECONDS = 1.0
"""After a Redis failure, new deliveries go straight to the spool for this long."""


class RQBackend:
    """Durable: answers only once Redis, or the local spool, holds the work."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection
        self.spool = Spool(spool_folder(settings))
        self.flusher = SpoolFlusher(self.spool, self.push_spooled)
        self._down_until = 0.0
        if settings.spool_mode == "spool" and self.spool.files():
            self.flusher.ensure_running()

    def submit(self, delivery_id: str, work: Work) -> str:
        ordered, unordered = ordering.split(work)
        queues = packets(delivery_id, unordered, self.settings.queue_name)
        lanes = ordering.elements(delivery_id, ordered, self.settings.queue_name)
        if time.monotonic() >= self._down_until:
            try:
                self._push({queue: [packet] for queue, packet in queues.items()}, lanes)
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
            self.spool.write(delivery_id, queues, lanes)
        except OSError as exc:
            log.critical("spool write failed for delivery %s: %s", delivery_id, exc)
            raise QueueUnavailable(
                "neither Redis nor the local spool could store the delivery; "
                "not acknowledged, Meta will retry it"
            ) from exc
        self.flusher.ensure_running()
        return "spool"

    def _push(self, queues: dict[str, list[str]], lanes: Lanes) -> None:
        for queue in sorted(queues.keys() | lanes.keys()):
            encoded = [p.encode() for p in queues.get(queue, [])]
            ordered = [(lane, element, wake) for lane, element, wake in lanes.get(queue, [])]
            drainer = push(self.connection, queue, encoded, self.settings.max_drainers, ordered)
            if drainer is not None:
                try:
                    start_drainer(self.connection, queue, drainer, self.settings.job_timeout)
                except redis.RedisError:
                    # Stored; worker maintenance starts a drainer once the slot lapses.
                    log.warning("stored delivery but could not start a drain job; workers will")

    def push_spooled(self, spooled: Spooled) -> None:
        self._push(spooled.queues, spooled.lanes)
        self._down_until = 0.0
