"""Web side: store a delivery's background work durably before it is acknowledged.

Each delivery becomes one packet per queue, appended to Redis by a Lua
script that also says whether a drain job must be started. Deliveries that
arrive while another's write is in flight (gevent greenlets, or gthread
threads, of one process) wait and go together in the next write: one script
call per queue for the whole group (``GroupCommit``), each answered only
once Redis holds its packet. When Redis is unreachable or slower than
``redis_timeout``, the delivery is spooled to local disk and still
acknowledged (``spool_mode = "spool"``), or refused with 503 so Meta retries
(``"reject"``, or when the spool fails too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from ..config import Settings
from ..contracts import Work
from ..errors import QueueUnavailable
from .handoff import packets, push, start_drainer
from .web_spool import Spool, Spooled, SpoolFlusher, spool_folder

log = logging.getLogger("receiver.queue")

BREAKER_SECONDS = 1.0
"""After a Redis failure, new deliveries go straight to the spool for this long."""

Queues = dict[str, list[str]]
"""Queue name → packets (JSON text), in arrival order."""


class _Waiter:
    """One delivery's packets and, once its group is written, the outcome of the write."""

    __slots__ = ("queues", "event", "leads", "error")

    def __init__(self, queues: Queues) -> None:
        self.queues = queues
        self.event: threading.Event | None = None
        self.leads = False
        self.error: BaseException | None = None


class GroupCommit:
    """Writes that arrive while one is in flight go together in the next (group commit).

    The first caller writes at once, alone. Callers arriving meanwhile queue;
    when the write returns, the first of them is woken to write for all that
    queued by then, and so on. Every caller returns once a write holding its
    packets has succeeded, or raises that write's error. Nothing waits on a
    timer: an idle process writes each delivery at once, as before, and a busy
    one shares each round trip, each script call and its network I/O among the
    deliveries that arrived during the previous one. ``threading`` primitives
    are gevent's under the Procfile's workers (monkey-patched), so waiting
    greenlets let others run; a sync worker never has a second caller. Under
    ``bench/http_bench.py`` (gevent, 16 connections) Redis commands per durable
    delivery, the worker's included, went from 15.5 to 12.4, and the web CPU per
    durable ack from 835 to 619 µs with issue 20's other changes.
    """

    def __init__(self, write: Callable[[Queues], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._busy = False

    def submit(self, queues: Queues) -> None:
        me = _Waiter(queues)
        with self._lock:
            if self._busy:
                me.event = threading.Event()
                self._waiting.append(me)
            else:
                self._busy = True
        if me.event is not None:
            me.event.wait()
            if not me.leads:
                if me.error is not None:
                    raise me.error
                return
        with self._lock:
            group, self._waiting = [me, *self._waiting], []
        error: BaseException | None = None
        successor: _Waiter | None = None
        try:
            self._write(_merged(group) if len(group) > 1 else queues)
        except BaseException as exc:  # every caller of the group gets it, and the spool
            error = exc
        finally:
            with self._lock:
                if self._waiting:
                    successor = self._waiting.pop(0)
                    successor.leads = True
                else:
                    self._busy = False
            for waiter in group[1:]:
                waiter.error = error
                assert waiter.event is not None
                waiter.event.set()
            if successor is not None:
                assert successor.event is not None
                successor.event.set()
        if error is not None:
            raise error


def _merged(group: list[_Waiter]) -> Queues:
    merged: Queues = {}
    for waiter in group:
        for queue, items in waiter.queues.items():
            merged.setdefault(queue, []).extend(items)
    return merged


class RQBackend:
    """Durable: answers only once Redis, or the local spool, holds the work."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection
        self.spool = Spool(spool_folder(settings))
        self.flusher = SpoolFlusher(self.spool, self.push_spooled)
        self._down_until = 0.0
        self._commit = GroupCommit(self._push)
        if settings.spool_mode == "spool" and self.spool.files():
            self.flusher.ensure_running()

    def submit(self, delivery_id: str, work: Work) -> str:
        queues = packets(delivery_id, work, self.settings.queue_name)
        if time.monotonic() >= self._down_until:
            try:
                self._commit.submit({queue: [packet] for queue, packet in queues.items()})
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
        self.flusher.ensure_running()
        return "spool"

    def _push(self, queues: Queues) -> None:
        for queue, items in queues.items():
            encoded = [p.encode() for p in items]
            drainer = push(self.connection, queue, encoded, self.settings.max_drainers)
            if drainer is not None:
                try:
                    start_drainer(self.connection, queue, drainer, self.settings.job_timeout)
                except redis.RedisError:
                    # Stored; worker maintenance starts a drainer once the slot lapses.
                    log.warning("stored delivery but could not start a drain job; workers will")

    def push_spooled(self, spooled: Spooled) -> None:
        self._push(spooled.queues)
        self._down_until = 0.0
