"""Web side: store a delivery's background work durably before it is acknowledged.

Each delivery becomes one packet per queue, appended to Redis by a Lua
script that also says whether a drain job must be started. Deliveries that
arrive while another's write is in flight (gevent greenlets, or gthread
threads, of one process) wait and go together in the next write: one script
call per queue for the whole group (``PacketGroup``), each answered only
once Redis holds its packet. When Redis is unreachable or slower than
``redis_timeout``, the delivery is spooled to local disk and still
acknowledged (``spool_mode = "spool"``), or refused with 503 so Meta retries
(``"reject"``, or when the spool fails too). With ``durability = "replicated"``
packets go through ``durability.GroupCommit`` instead (its rounds group
deliveries the same way, each round with its ``WAIT``: stored once replicas
confirm), and what replicas do not confirm in time is held in the spool (or
refused, with ``"reject"``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import redis

from receiver.errors import NotReplicated, QueueUnavailable
from receiver.queue import ordering, scripts
from receiver.queue.durability import GroupCommit, tend_held
from receiver.queue.handoff import packets, push, start_drainer
from receiver.queue.web_spool import Lanes, Mark, Spool, Spooled, SpoolFlusher, spool_folder
from receiver.routing.contracts import REPLICATION_TIMEOUT, Stored, Work
from receiver.settings.model import Settings

log = logging.getLogger("receiver.queue")

BREAKER_SECONDS = 1.0
"""After a Redis failure, new deliveries go straight to the spool for this long."""

Queues = dict[str, list[str]]
"""Queue name → packets (JSON text), in arrival order."""


class _Waiter:
    """One delivery's packets and ordered items and, once its group is written, the outcome."""

    __slots__ = ("queues", "lanes", "done", "leads", "error")

    def __init__(self, queues: Queues, lanes: Lanes) -> None:
        self.queues = queues
        self.lanes = lanes
        self.done: Any = None
        """Held while the waiter waits; released once its group is written, or it leads.
        A lock, not a ``threading.Event``: whose ``wait`` builds a ``Condition``'s waiter
        lock and deque entry in Python each time; a lock is one C call each way."""
        self.leads = False
        self.error: BaseException | None = None


class PacketGroup:
    """Writes that arrive while one is in flight go together in the next (group commit).

    The first caller writes at once (under gevent after one yield: ``gevent_parts``).
    Callers arriving meanwhile queue;
    when the write returns, the first of them is woken to write for all that
    queued by then, and so on. Every caller returns once a write holding its
    packets has succeeded, or raises that write's error. Nothing waits on a
    timer: an idle process writes each delivery at once, as before, and a busy
    one shares each round trip, each script call and its network I/O among the
    deliveries that arrived during the previous one. The locks are gevent's under
    the Procfile's workers, so waiting greenlets let others run; gthread's threads
    group the same way (≈ 2 deliveries per write under ``bench/http_bench.py``'s
    load, as before); a sync worker never has a second caller. Under
    ``bench/http_bench.py`` (gevent, 16 connections) Redis commands per durable
    delivery, the worker's included, went from 15.5 to 12.4, and the web CPU per
    durable ack from 835 to 619 µs with issue 20's other changes.
    """

    def __init__(
        self, write: Callable[[Queues, Lanes], None], gevent: GeventParts | None = None
    ) -> None:
        self._write = write
        self._turn: Callable[[], Any] | None = None
        """Called by a caller that finds no write in flight, before it writes: under
        gevent a yield, so that the greenlets ready in the same loop iteration (requests
        already read, parsed and verified) join its write."""
        self._new_lock: Callable[[], Any] = threading.Lock
        if gevent is not None:
            self._turn, self._new_lock = gevent
        self._lock = self._new_lock()
        self._waiting: list[_Waiter] = []
        self._busy = False

    def submit(self, queues: Queues, lanes: Lanes) -> None:
        me = _Waiter(queues, lanes)
        with self._lock:
            if self._busy:
                me.done = self._new_lock()
                me.done.acquire()
                self._waiting.append(me)
            else:
                self._busy = True
        if me.done is not None:
            me.done.acquire()  # released by the writer of its group
            if not me.leads:
                if me.error is not None:
                    raise me.error
                return
        elif self._turn is not None:
            self._turn()
        with self._lock:
            group, self._waiting = [me, *self._waiting], []
        error: BaseException | None = None
        successor: _Waiter | None = None
        try:
            self._write(*(_merged(group) if len(group) > 1 else (queues, lanes)))
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
                waiter.done.release()
            if successor is not None:
                successor.done.release()
        if error is not None:
            raise error


GeventParts = tuple[Callable[[], Any], Callable[[], Any]]
"""A yield, and a lock factory, for ``PacketGroup`` in a gevent worker."""


def gevent_parts() -> GeventParts | None:
    """``gevent.sleep(0)`` and gevent's C semaphore when this process's threads are
    gevent's (its workers), else None.

    The turn: a writer that finds the line free yields once before it writes: the
    greenlets the hub's loop already woke (requests already in their sockets) run up
    to their own ``submit`` and go in the same write. It costs no system call (gevent
    runs it before its loop polls again). Under ``bench/http_bench.py``'s load (gevent,
    16 connections) deliveries per write went from 1.8 to 3.8 and the p99 from 62 to
    30 ms. The locks: ``gevent.lock.Semaphore(1)`` works as the patched
    ``threading.Lock`` does, without its ``acquire`` in Python (every delivery takes
    the group's lock two or three times, and waits on one of its own when it joins).
    """
    if "gevent" not in sys.modules:
        return None
    from gevent import monkey, sleep
    from gevent.lock import Semaphore

    if not monkey.is_module_patched("threading"):
        return None
    return partial(sleep, 0), Semaphore


def _merged(group: list[_Waiter]) -> tuple[Queues, Lanes]:
    """The group's packets and ordered items per queue, in arrival order (a key's order)."""
    merged: Queues = {}
    lanes: dict[str, list[Sequence[str]]] = {}
    for waiter in group:
        for queue, items in waiter.queues.items():
            merged.setdefault(queue, []).extend(items)
        for queue, ordered in waiter.lanes.items():
            lanes.setdefault(queue, []).extend(ordered)
    return merged, lanes


class RedisBackend:
    """Durable: answers only once Redis, or the local spool, holds the work.

    ``replication``, given with ``durability = "replicated"``, is a client whose reads
    may block ``replication_timeout`` longer than ``connection``'s (the rounds' WAIT).
    """

    started = True

    def __init__(
        self, settings: Settings, connection: redis.Redis, replication: redis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.spool = Spool(spool_folder(settings))
        self.commit = (
            GroupCommit(replication, settings, self._start_drainer) if replication else None
        )
        self.flusher = SpoolFlusher(
            self.spool, self.push_spooled, tend=self._tend if self.commit else None
        )
        self._down_until = 0.0
        self._unconfirmed = False
        # One write at a time goes through the group: it keeps a connection of its own.
        self._held = scripts.Held(connection)
        self._group = PacketGroup(
            lambda queues, lanes: self._push_local(queues, lanes, self._held), gevent_parts()
        )
        if self.commit is None:
            for copy in self.spool.held():  # replicated durability was switched off
                self.spool.release(copy.path)
        if settings.spool_mode == "spool" and (self.spool.files() or self.spool.held()):
            self.flusher.ensure_running()

    def submit(self, delivery_id: str, work: Work) -> str:
        ordered, unordered = ordering.split(work)
        queues = packets(delivery_id, unordered, self.settings.queue_name)
        lanes = ordering.elements(delivery_id, ordered, self.settings.queue_name)
        if time.monotonic() >= self._down_until:
            try:
                self._store({queue: [packet] for queue, packet in queues.items()}, lanes)
                self._confirmed(True)
                return "redis"
            except NotReplicated as exc:
                self._confirmed(False, exc)
                if self.settings.spool_mode != "spool":
                    raise QueueUnavailable(
                        "replicas did not confirm the delivery in time; "
                        "not acknowledged, Meta will retry it",
                        reason=REPLICATION_TIMEOUT,
                    ) from exc
                self._spool(delivery_id, queues, lanes, (exc.replid, exc.offset))
                return Stored("spool", REPLICATION_TIMEOUT)
            except redis.RedisError as exc:
                self._down_until = time.monotonic() + BREAKER_SECONDS
                log.error("Redis did not take delivery %s: %s", delivery_id, exc)
        if self.settings.spool_mode != "spool":
            raise QueueUnavailable(
                "background work could not be stored (Redis unreachable); "
                "the delivery was not acknowledged and Meta will retry it"
            )
        self._spool(delivery_id, queues, lanes)
        return "spool"

    def _spool(
        self, delivery_id: str, queues: dict[str, str], lanes: Lanes, held: Mark | None = None
    ) -> None:
        try:
            self.spool.write(delivery_id, queues, lanes, held)
        except OSError as exc:
            log.critical("spool write failed for delivery %s: %s", delivery_id, exc)
            raise QueueUnavailable(
                "neither Redis nor the local spool could store the delivery; "
                "not acknowledged, Meta will retry it",
                reason=REPLICATION_TIMEOUT if held else None,
            ) from exc
        self.flusher.ensure_running()

    def _confirmed(self, confirmed: bool, exc: NotReplicated | None = None) -> None:
        """Log when replicas stop confirming deliveries, and when they start again."""
        if self.commit is None or confirmed != self._unconfirmed:
            return
        self._unconfirmed = not confirmed
        if exc is not None:
            then = "holding them" if self.settings.spool_mode == "spool" else "refusing them (503)"
            log.warning("replicas did not confirm deliveries (%s): %s", exc, then)
        else:
            log.warning("replicas confirm deliveries again")

    def _store(self, queues: Queues, lanes: Lanes) -> None:
        """Replicated rounds group deliveries themselves; local writes group here."""
        if self.commit is not None:
            self._push(queues, lanes)
        else:
            self._group.submit(queues, lanes)

    def _push(self, queues: Queues, lanes: Lanes, held: scripts.Held | None = None) -> None:
        if self.commit is None:
            self._push_local(queues, lanes, held)
            return
        encoded = {queue: [p.encode() for p in items] for queue, items in queues.items()}
        ordered = {
            queue: [(lane, element, wake) for lane, element, wake in items]
            for queue, items in lanes.items()
        }
        self.commit.store(encoded, ordered)

    def _push_local(self, queues: Queues, lanes: Lanes, held: scripts.Held | None) -> None:
        """One ``PUSH`` per queue, in queue order; packets go as text (``scripts.run``
        encodes them once), with no copy of the packets and lanes per write."""
        names = queues.keys() | lanes.keys() if lanes else queues.keys()
        for queue in sorted(names) if len(names) > 1 else names:
            drainer = push(
                self.connection,
                queue,
                queues.get(queue, ()),
                self.settings.max_drainers,
                lanes.get(queue, ()),
                held,
            )
            if drainer is not None:
                self._start_drainer(queue, drainer)

    def _start_drainer(self, queue: str, drainer: str) -> None:
        try:
            start_drainer(self.connection, queue, drainer, self.settings.job_timeout)
        except redis.RedisError:
            # Stored; worker maintenance starts a drainer once the slot lapses.
            log.warning("stored delivery but could not start a drain job; workers will")

    def push_spooled(self, spooled: Spooled) -> Mark | None:
        """Push one spooled delivery; a mark when replicas have not confirmed it (keep it held)."""
        try:
            self._push(spooled.queues, spooled.lanes)
        except NotReplicated as exc:
            self._down_until = 0.0
            return (exc.replid, exc.offset)
        self._down_until = 0.0
        return None

    def _tend(self) -> None:
        assert self.commit is not None
        tend_held(self.spool, self.commit)
