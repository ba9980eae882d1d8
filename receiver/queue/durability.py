"""Web side, ``durability = "replicated"``: acknowledge a delivery once replicas hold it too.

With ``local`` durability a delivery is acknowledged once the Redis master holds
its packet. That survives a Redis crash (its append-only file), not the loss of
the machine: up to a second of AOF not yet fsynced, and, with Sentinel, whatever
had not reached the replica when the master died. ``replicated`` adds Redis's
``WAIT`` (``WAITAOF`` with ``replication_fsync``): the answer waits until
``min_replicas`` replicas confirm, at most ``replication_timeout``.

**WAIT belongs to a connection.** It blocks until replicas have acknowledged the
master's replication offset as of *that connection's* last write. A pooled
client sends each command on whichever connection is free: a WAIT sent on its
own may go out on a connection whose last write is older than the delivery's, or
that never wrote (WAIT then returns at once and confirms nothing), and after a
failover a fresh connection reaches the new master, where it would confirm
writes the delivery never made there. So packets and their WAIT travel together.
A *round* is one pipeline on one connection: the packets (one ``PUSH`` script
per queue), ``INFO replication``, then ``WAIT``. Redis runs one connection's
commands in order on one server, so a WAIT that counts enough replicas covers
every packet of its round; if the connection breaks midway, redis-py runs the
whole pipeline again on one fresh connection (to the new master, after a
failover: Sentinel names it).

**Group commit.** A process runs one round at a time. Deliveries that arrive
while a round is in flight (gevent greenlets, threads) put their packets in the
next round, led by the first of them to find the line free; the others wait for
its outcome. Under load one round, one WAIT and one ``PUSH`` per queue serve
many deliveries; a lone delivery costs one round trip (its packet, INFO and
WAIT go together) plus the replicas' acknowledgement.

**On a timeout** the packets are in the master but unconfirmed, and the caller
either keeps a copy in the local spool and answers 200 (two copies on two
machines: the master's memory, this machine's fsynced disk) or answers 503
(``spool_mode = "reject"``). The round's ``INFO replication`` gives the mark a
held copy keeps: the master's ``master_replid`` (new after every promotion or
restart) and its offset at or past the packets. ``tend_held`` checks held copies
with a round of its own: confirmed on the same ``replid``, a copy is dropped; on
another ``replid`` it may be gone with its master (a failover, a restart; a
master also takes a new one with its first replica), so it is pushed again (the
per-item dedupe in Redis makes a copy that did survive run nothing twice).

**A master without live replicas** (after a failover, until a new replica
joins) cannot confirm anything. A round whose predecessor's INFO saw fewer than
``min_replicas`` live replicas (online, acknowledged within ``LIVE_LAG``) does not
WAIT: such deliveries are held at once, instead of each waiting out
``replication_timeout``; the INFO of every round sees a replica come back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from receiver.errors import ConfigError, NotReplicated
from receiver.queue import keys, scripts
from receiver.queue.handoff import push_call
from receiver.queue.web_spool import Spool
from receiver.server.supported import server_version
from receiver.settings.model import Settings

log = logging.getLogger("receiver.queue")

LIVE_LAG = 2
"""Seconds since a replica's last acknowledgement (it sends one every second) past which a
round stops waiting for it: a stopped replica costs a few slow rounds, not one per delivery."""
PUSH_CHUNK = 1000
"""Packets per ``PUSH`` call: Lua's ``unpack`` refuses a few thousand arguments."""
WAITAOF_FROM = {"redis": (7, 2), "valkey": (7, 2)}
"""First releases with ``WAITAOF`` (every Valkey has it: it forked from Redis 7.2.4)."""


@dataclass
class _Round:
    """Packets of the deliveries that share one pipeline and one WAIT, then its outcome."""

    queues: dict[str, list[bytes]] = field(default_factory=dict)
    lanes: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    """Ordered items per queue, ``(lane, element, wake)``, in acknowledgement order."""
    done: bool = False
    replid: str = ""
    error: Exception | None = None


class GroupCommit:
    """One process's rounds: packets, ``INFO replication`` and ``WAIT`` in one pipeline.

    ``connection`` must allow a read to block ``replication_timeout`` longer than the
    web's ``redis_timeout`` (the WAIT); ``start_drainer(queue, id)`` enqueues the drain
    job for a slot a round's ``PUSH`` took.
    """

    def __init__(
        self,
        connection: redis.Redis,
        settings: Settings,
        start_drainer: Callable[[str, str], None],
    ) -> None:
        self.connection = connection
        self.min_replicas = settings.min_replicas
        self.timeout_ms = max(1, round(settings.replication_timeout * 1000))
        self.fsync = settings.replication_fsync
        self.max_drainers = settings.max_drainers
        self.start_drainer = start_drainer
        # A caller waits for the round in flight, then its own; each may be run twice
        # (redis-py's one retry), connecting and reading within these timeouts.
        self._bound = 4 * (2 * settings.redis_timeout + settings.replication_timeout) + 1.0
        self._line = threading.Condition()
        self._next = _Round()
        self._busy = False
        self._live: int | None = None
        self.rounds = 0
        """Rounds run so far (several deliveries share one under load)."""

    def store(
        self,
        queues: Mapping[str, Sequence[bytes]],
        lanes: Mapping[str, Sequence[tuple[str, str, str]]] | None = None,
    ) -> str:
        """Append packets in the next round; return the master's ``replid`` once replicas confirm.

        Raises ``NotReplicated`` (stored in the master, not confirmed: its ``replid`` and
        offset mark where) or a ``redis.RedisError`` (not stored, or not known to be).
        With no packets, the round still writes (a probe) so that its WAIT covers
        everything this process wrote before.
        """
        deadline = time.monotonic() + self._bound
        with self._line:
            mine = self._next
            for queue, packets in queues.items():
                mine.queues.setdefault(queue, []).extend(packets)
            for queue, items in (lanes or {}).items():
                mine.lanes.setdefault(queue, []).extend(items)
            while self._busy and not mine.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise redis.TimeoutError("the replication round did not finish in time")
                self._line.wait(left)
            leads = not mine.done
            if leads:
                self._busy = True
                self._next = _Round()
        if leads:
            drainers: list[tuple[str, str]] = []
            try:
                drainers = self._run(mine)
            except Exception as exc:
                mine.error = exc
            finally:
                with self._line:
                    mine.done = True
                    self._busy = False
                    self._line.notify_all()
            for queue, drainer in drainers:
                self.start_drainer(queue, drainer)
        return _outcome(mine, leads)

    def _run(self, mine: _Round) -> list[tuple[str, str]]:
        """One pipeline; sets the round's replid, or its error; returns drain slots taken."""
        self.rounds += 1
        pipe = self.connection.pipeline(transaction=False)
        candidates: list[tuple[str, str]] = []
        for queue in sorted(mine.queues.keys() | mine.lanes.keys()):
            packets, ordered = mine.queues.get(queue, []), mine.lanes.get(queue, [])
            for start in range(0, max(len(packets), len(ordered), 1), PUSH_CHUNK):
                candidates.append((queue, uuid.uuid4().hex))
                chunk = packets[start : start + PUSH_CHUNK]
                in_order = ordered[start : start + PUSH_CHUNK]
                script_keys, args = push_call(
                    queue, chunk, self.max_drainers, candidates[-1][1], in_order
                )
                # EVAL, not EVALSHA: a new master after a failover has no script cache.
                pipe.eval(scripts.PUSH, len(script_keys), *script_keys, *args)
        if not candidates:
            pipe.incr(keys.REPLICATION_PROBE)
        pipe.info("replication")
        seen = self._live
        waits = seen is None or seen >= self.min_replicas
        if waits and self.fsync:
            pipe.waitaof(1, self.min_replicas, self.timeout_ms)
        elif waits:
            pipe.wait(self.min_replicas, self.timeout_ms)
        replies = pipe.execute(raise_on_error=False)
        writes = len(candidates) or 1
        for reply in replies[: writes + 1]:
            if isinstance(reply, Exception):
                raise reply  # a write not made (or not known to be): nothing to confirm
        info: dict[str, Any] = replies[writes]
        mine.replid = str(info.get("master_replid", ""))
        offset = int(info.get("master_repl_offset", 0))
        self._live = live_replicas(info)
        pushed = replies[: len(candidates)]
        drainers = [pair for pair, wanted in zip(candidates, pushed, strict=True) if wanted]
        confirmed = self._confirmed(replies[-1]) if waits else 0
        if confirmed < self.min_replicas:
            why = (
                f"{confirmed} of {self.min_replicas} replica(s) confirmed within "
                f"{self.timeout_ms} ms"
                if waits
                else f"the master had {seen} live replica(s), fewer than {self.min_replicas}"
            )
            mine.error = NotReplicated(why, replid=mine.replid, offset=offset)
        return drainers

    def _confirmed(self, reply: Any) -> int:
        """Replicas that acknowledged (and, with ``replication_fsync``, fsynced) the round."""
        if isinstance(reply, Exception):
            # The writes are in; only the confirmation failed (WAITAOF without an
            # append-only file on a newly promoted master, say): held, and said so.
            log.error("replication not confirmed: %s", reply)
            return 0
        if self.fsync:
            local, replicas = reply
            return int(replicas) if int(local) >= 1 else 0
        return int(reply)


def _outcome(mine: _Round, led: bool) -> str:
    """The round's ``replid``, or its error: the leader's own, a fresh one for the others."""
    error = mine.error
    if error is None:
        return mine.replid
    if led:
        raise error
    if isinstance(error, NotReplicated):
        raise NotReplicated(str(error), replid=error.replid, offset=error.offset)
    raise redis.RedisError(f"the replication round failed: {error}") from error


def live_replicas(info: Mapping[str, Any]) -> int:
    """Replicas ``INFO replication`` shows online and acknowledging (``slave0:...`` entries)."""
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave")
        and isinstance(value, dict)
        and value.get("state") == "online"
        and int(value.get("lag", 0)) <= LIVE_LAG
    )


def tend_held(spool: Spool, commit: GroupCommit) -> None:
    """Drop held copies replicas now confirm; give back for pushing those of a lost master."""
    held = spool.held()
    if not held:
        return
    try:
        replid, confirmed = commit.store({}), True
    except NotReplicated as exc:
        replid, confirmed = exc.replid, False
    gone = [h for h in held if h.replid != replid]
    for copy in gone:
        spool.release(copy.path)
    if gone:
        log.warning(
            "%d held deliveries were stored under another replication id (the master was "
            "replaced or restarted, or took its first replica); pushing them again",
            len(gone),
        )
    if confirmed:
        for copy in held:
            if copy.replid == replid:
                spool.forget(copy.path)


def check(connection: redis.Redis, settings: Settings) -> tuple[str, int]:
    """A line saying what replicated durability finds, and the live replicas it counts.

    Raises ``ConfigError`` when the promise cannot be kept at all: ``replication_fsync``
    on a server without ``WAITAOF``, or without an append-only file of its own.
    """
    live = live_replicas(connection.info("replication"))
    line = (
        f"durability: replicated, {live} live replica(s), min_replicas {settings.min_replicas}, "
        f"timeout {settings.replication_timeout:g}s"
    )
    if settings.replication_fsync:
        found = server_version(connection.info("server"))
        if found.version < WAITAOF_FROM.get(found.name, (999,)):
            raise ConfigError(
                f"replication_fsync waits with WAITAOF, which {found} lacks (Redis >= 7.2 or "
                "Valkey has it): upgrade the server, or set replication_fsync = false"
            )
        if not connection.info("persistence").get("aof_enabled"):
            raise ConfigError(
                "replication_fsync waits for the master's append-only file fsync too, and "
                "this master has none: set appendonly yes on it (and its replicas)"
            )
        line += ", fsync (WAITAOF)"
        try:
            every = connection.config_get("appendfsync").get("appendfsync")
        except redis.ResponseError:
            every = None  # managed Redis often forbids CONFIG
        if every != "always":
            line += (
                f"; NOTE appendfsync is {every or 'unknown'}: replicas report their fsync once "
                "a second, so under load rounds run into a 2 s timeout; set appendfsync always "
                "on the master and its replicas (docs/deployment.md)"
            )
    return line, live
