"""Prometheus metrics: declared once here, fed by the core's and the worker's outcomes.

Web processes count what they answer (``delivery_finished``); workers count
what their handlers did. Under gunicorn, several processes count at once:
prometheus_client's multiprocess mode adds them up, with the directory it
needs created by the gunicorn config (``PROMETHEUS_MULTIPROC_DIR``) before
any worker starts. Each process adds up in memory and folds into its file
at most ``FOLD_SECONDS`` later (``_Folder``). Levels that live in Redis or on
disk (queue depth, oldest pending delivery, retries scheduled, failed items,
spool files) are read when scraped, so every process reports the same truth.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from operator import attrgetter
from typing import Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver.routing.contracts import REPLICATION_TIMEOUT, QueueDepth, Request, Result
from receiver.settings.model import Settings

log = logging.getLogger("receiver.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _FoldedRegistry(CollectorRegistry):
    """A registry whose readers see this process's pending additions (``fold`` first)."""

    def collect(self) -> Iterator[Metric]:
        fold()
        yield from super().collect()


_OWN = _FoldedRegistry(auto_describe=True)
"""This process's counters; in multiprocess mode the files on disk are what is read."""

DELIVERIES = Counter(
    "receiver_deliveries",
    "POSTs answered on callback URLs, by integration and HTTP status.",
    ["integration", "status"],
    registry=_OWN,
)
HANDSHAKES = Counter(
    "receiver_handshakes",
    "Verify-token handshakes (GET) answered, by integration and HTTP status.",
    ["integration", "status"],
    registry=_OWN,
)
SIGNATURE_FAILURES = Counter(
    "receiver_signature_failures",
    "Deliveries refused for their signature, by integration and why (see docs/security.md).",
    ["integration", "reason"],
    registry=_OWN,
)
EVENTS = Counter(
    "receiver_events",
    "Events routed, by integration and event name.",
    ["integration", "name"],
    registry=_OWN,
)
DELIVERY_SECONDS = Histogram(
    "receiver_delivery_duration_seconds",
    "Time the core took to answer a POST (verify, parse, store, inline handlers).",
    ["integration"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=_OWN,
)
HANDLER_RUNS = Counter(
    "receiver_handler_runs",
    "Handler calls by handler, mode (inline, background) and outcome "
    "(ok, failed, timeout, duplicate).",
    ["handler", "mode", "outcome"],
    registry=_OWN,
)
HANDLER_SECONDS = Histogram(
    "receiver_handler_duration_seconds",
    "Time a handler call took, by handler and mode.",
    ["handler", "mode"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180),
    registry=_OWN,
)
RETRIES_SCHEDULED = Counter(
    "receiver_retries_scheduled",
    "Failed background (event, handler) pairs scheduled for another attempt.",
    ["handler"],
    registry=_OWN,
)
REPLICATION_TIMEOUTS = Counter(
    "receiver_replication_timeouts",
    "Deliveries whose replicas did not confirm them within replication_timeout, by "
    "integration and outcome (spooled: held in the local spool, 200; rejected: 503).",
    ["integration", "outcome"],
    registry=_OWN,
)
FINAL_FAILURES = Counter(
    "receiver_final_failures",
    "Background (event, handler) pairs that failed for good (into RQ's failed registry).",
    ["handler"],
    registry=_OWN,
)


class _Value:
    """One value of a labelled child, written without prometheus_client's per-call overhead.

    Only the fold (``fold``) writes here: the request path adds to a ``_Count`` or
    ``_Histogram`` in memory. In multiprocess mode every ``inc`` of the library
    takes a lock, asks the kernel for the process id and packs the value into its
    mmap file; this writes the same value to the same place in the same file,
    found once: the file only grows at its end (a value's offset never changes),
    though it may be mapped again when it does, so the map is looked up on each
    write. Written as the library writes it (one 16-byte slice assignment, never
    ``pack_into``, whose transient zeros a scrape could read). The value is
    private to prometheus_client (pinned by tests); with any other value class
    (not multiprocess mode) the library's own ``inc`` runs.
    """

    __slots__ = ("_value", "_direct", "_file", "_at")

    def __init__(self, value: Any) -> None:
        self._direct = bool(getattr(value, "_multiprocess", False))
        if self._direct:
            value.get()  # the library reopens its files here if this process is a fork
            self._file = value._file
            self._file.read_value(value._key)  # gives the value its place, if it had none
            self._at = self._file._positions[value._key]
        self._value = value

    def inc(self, amount: float) -> None:
        """Add ``amount``; the caller holds ``_WRITING``."""
        value = self._value
        if not self._direct:
            value.inc(amount)
            return
        total = value._value = value._value + amount
        value._timestamp = 0.0
        at = self._at
        self._file._m[at : at + 16] = _TWO_DOUBLES(total, 0.0)


_TWO_DOUBLES = struct.Struct("dd").pack


class _Count:
    """A counter child's additions not folded yet: ``pending += n`` is all a delivery does."""

    __slots__ = ("pending", "_value")

    def __init__(self, child: Any) -> None:
        self.pending = 0.0
        self._value = _Value(child._value)

    def fold(self) -> None:
        if self.pending:
            self._value.inc(self.pending)
            self.pending = 0.0


class _Histogram:
    """A histogram child's observations not folded yet, as they came.

    Folded as prometheus_client's ``observe`` adds each (to the sum, and one to the
    first bucket whose bound is ≥ it; kept per bucket, summed on collection): one
    write for the sum and one per bucket that changed, the buckets found and counted
    in C (``map``, ``set``, ``list.count``), never a Python step per value.
    """

    __slots__ = ("seen", "bounds", "_sum", "_buckets")

    def __init__(self, child: Any) -> None:
        self.seen: list[float] = []
        self.bounds = tuple(child._upper_bounds)
        self._sum = _Value(child._sum)
        self._buckets = [_Value(bucket) for bucket in child._buckets]

    def observe(self, amount: float) -> None:
        """Add one observation; the caller holds ``_WRITING``."""
        self.seen.append(amount)

    def fold(self) -> None:
        seen = self.seen
        if not seen:
            return
        self.seen = []
        self._sum.inc(sum(seen))
        buckets = list(map(partial(bisect.bisect_left, self.bounds), seen))
        for at in set(buckets):  # a bucket or two: counted in C, not value by value
            self._buckets[at].inc(float(buckets.count(at)))


class _Timed:
    """A counter child and a histogram child that every addition goes to both, such as a
    delivery's count and duration: the durations wait in ``seen``, one ``append`` each
    (atomic: the request path takes no lock), and are counted (``len``) and observed
    when folded."""

    __slots__ = ("seen", "count", "seconds", "_labels")

    def __init__(self, count: _Count, seconds: Histogram, *labels: str) -> None:
        self.seen: list[float] = []
        self.count = count
        self.seconds: _Histogram | None = None  # made at its first value: no empty series
        self._labels = (seconds, labels)
        _PLANS.append(self)

    def fold(self) -> None:
        if not self.seen:
            return
        taken = _take(self.seen)
        self.count.pending += len(taken)
        if self.seconds is None:
            metric, labels = self._labels
            self.seconds = _child(metric, *labels)
        self.seconds.seen += taken


def _take(appended: list[Any]) -> list[Any]:
    """What ``appended`` holds now, removed from it: the list itself stays, so an ``append``
    from another thread, before or after, is either taken here or left for the next fold."""
    count = len(appended)
    taken = appended[:count]
    del appended[:count]
    return taken


_WRITING = threading.RLock()
"""Held while pending amounts change (all but the appends of the request path), plans are
made, or anything is folded: gthread workers run requests on threads. Taking it cost
≈ 1,900 instructions a delivery; the request path's appends need none."""

FOLD_SECONDS = 0.5
"""How long an addition may wait in memory before it is in the multiprocess files."""


class _Folder:
    """When this process's pending amounts go to prometheus_client (``fold``).

    Each delivery's increments used to be written to the mmap files at once:
    ≈ 6 writes under a lock, 38k instructions a delivery (callgrind,
    ``bench/wsgi_bench.py --count 1000``, against ``--without metrics``); 12k now,
    the folds included. They add up in memory (``_Timed``, ``_Count``,
    ``_Histogram``) and are folded into
    the files, where any process's scrape adds them up: at most
    ``FOLD_SECONDS`` after the first addition since the last fold (a background
    thread, woken only when nothing was pending), before this process collects
    for a scrape (``registry_for``, ``_OWN``), before it forks and at exit. What a
    process killed without exiting (SIGKILL, a gunicorn worker's ``timeout``) loses
    is its last ``FOLD_SECONDS`` of counts; another worker's scrape may see this
    one's counts up to ``FOLD_SECONDS`` late. The pattern of
    ``logsafe.BatchedStreamHandler``.
    """

    __slots__ = ("armed", "_wake", "_pid", "_starting")

    def __init__(self) -> None:
        self.armed = False
        """True from the first addition after a fold until the next fold."""
        self._wake = threading.Event()
        self._pid = 0
        self._starting = threading.Lock()

    def arm(self) -> None:
        """Fold within ``FOLD_SECONDS``."""
        self.armed = True
        with self._starting:
            pid = os.getpid()
            if self._pid != pid:  # none yet, or this is a fork: threads do not follow
                self._pid = pid
                self._wake = threading.Event()
                threading.Thread(
                    target=self._fold_later, name="receiver-metrics", daemon=True
                ).start()
            self._wake.set()

    def disarm(self) -> None:
        """Called by ``fold`` before it takes what is pending: an addition after this
        arms again, one before it is taken."""
        self._wake.clear()
        self.armed = False

    def _fold_later(self) -> None:
        wake = self._wake
        while wake is self._wake:  # a fork replaced it: this copy of the thread is gone
            wake.wait()
            time.sleep(FOLD_SECONDS)
            try:
                fold()
            except Exception:  # noqa: BLE001 - metrics never take the process down
                log.exception("metrics: fold failed; carrying on")


_FOLDER = _Folder()
_PENDING: list[_Count | _Histogram] = []
"""Every child this process has added to (each folded on every fold: a few dozen)."""
_PLANS: list[_Timed] = []
"""Every count-and-duration pair: folded first, into their children."""


def fold() -> None:
    """Write this process's pending additions where a scrape reads them."""
    with _WRITING:
        _FOLDER.disarm()
        for plan in _PLANS:
            plan.fold()
        for pending in _PENDING:
            pending.fold()


_children: dict[tuple[int, tuple[str, ...]], Any] = {}
_delivery_plans: dict[tuple[str | None, int], _DeliveryPlan] = {}
_handler_plans: dict[tuple[str, str, str], _HandlerPlan] = {}
_inline_ok: dict[str, _HandlerPlan] = {}
"""The plans of inline runs that went well, by handler: one lookup without a key to build."""


def _after_fork() -> None:
    """The child starts with nothing pending (the parent folded, and still owns what it
    had): every kept child and plan goes, and a lock another thread held is replaced."""
    global _WRITING, _FOLDER
    _WRITING = threading.RLock()
    _FOLDER = _Folder()
    _PENDING.clear()
    _PLANS.clear()
    _children.clear()
    _delivery_plans.clear()
    _handler_plans.clear()
    _inline_ok.clear()


os.register_at_fork(before=fold, after_in_child=_after_fork)
atexit.register(fold)


def _child(metric: Any, *labels: str) -> Any:
    """The pending amounts of ``metric.labels(*labels)``, kept: the lookup is most of a
    counter's cost. The caller holds ``_WRITING``."""
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        labelled = metric.labels(*labels)
        child = _children[key] = (
            _Histogram(labelled) if isinstance(metric, Histogram) else _Count(labelled)
        )
        _PENDING.append(child)
    return child


class _DeliveryPlan(_Timed):
    """What a POST of one integration and status adds to, looked up once per delivery."""

    __slots__ = ("integration", "names", "events")

    def __init__(self, integration: str, status: int) -> None:
        count = _child(DELIVERIES, integration, str(status))
        super().__init__(count, DELIVERY_SECONDS, integration)
        self.integration = integration
        self.names: list[tuple[str, str]] = []
        """Each event's topic and field, appended (its ``name`` property formats text)."""
        self.events: dict[tuple[str, str], _Count] = {}

    def fold(self) -> None:
        super().fold()
        if not self.names:
            return
        events = self.events
        taken = _take(self.names)
        for name in set(taken):  # a name or two: counted in C, not event by event
            found = events.get(name)
            if found is None:
                topic, field = name
                found = events[name] = _child(EVENTS, self.integration, f"{topic}.{field}")
            found.pending += taken.count(name)


class _HandlerPlan(_Timed):
    """What a handler run of one handler, mode and outcome adds to."""

    __slots__ = ()

    def __init__(self, handler: str, mode: str, outcome: str) -> None:
        runs = _child(HANDLER_RUNS, handler, mode, outcome)
        super().__init__(runs, HANDLER_SECONDS, handler, mode)


def _handler_plan(handler: str, mode: str, outcome: str) -> _HandlerPlan:
    plan = _handler_plans.get((handler, mode, outcome))
    if plan is None:
        plan = _handler_plans[handler, mode, outcome] = _HandlerPlan(handler, mode, outcome)
    return plan


def observe_delivery(sender: Any, request: Request, result: Result, **_: Any) -> None:
    """``delivery_finished`` receiver: count the answer, its events and inline handlers.

    A verified POST (the common case) appends its durations and event names to kept
    plans, nothing else, and takes no lock (``list.append`` is atomic; ``fold`` takes
    what was appended without replacing the lists).
    """
    if request.method != "POST" or result.reason is not None:
        with _WRITING:
            _observe_other(request, result)
    else:
        plan = _delivery_plans.get((result.integration, result.status))
        if plan is None:
            plan = _delivery_plan(result.integration, result.status)
        plan.seen.append(result.seconds)
        plan.names.extend(map(_TOPIC_FIELD, result.events))  # C throughout: atomic too
        for outcome in result.results:
            handler = (outcome.ok and _inline_ok.get(outcome.handler)) or _inline_plan(
                outcome.handler, outcome.ok, outcome.error
            )
            handler.seen.append(outcome.seconds)
    if not _FOLDER.armed:  # after the appends: see _Folder.disarm
        _FOLDER.arm()


_TOPIC_FIELD = attrgetter("topic", "field")


def _delivery_plan(integration: str | None, status: int) -> _DeliveryPlan:
    with _WRITING:
        plan = _delivery_plans.get((integration, status))
        if plan is None:
            name = integration or UNKNOWN_INTEGRATION  # the core names known ones
            plan = _delivery_plans[integration, status] = _DeliveryPlan(name, status)
        return plan


def _inline_plan(handler: str, ok: bool, error: str | None) -> _HandlerPlan:
    """An inline run's plan; those that went well are also kept by handler alone."""
    with _WRITING:
        plan = _handler_plan(handler, "inline", _outcome(ok, error))
        if ok:
            _inline_ok[handler] = plan
        return plan


def _observe_inline(handler: str, ok: bool, error: str | None, seconds: float) -> None:
    _inline_plan(handler, ok, error).seen.append(seconds)


def _observe_other(request: Request, result: Result) -> None:
    """A handshake, or a POST refused or held for its replicas (``reason``)."""
    integration = result.integration or UNKNOWN_INTEGRATION  # the core names known ones
    status = str(result.status)
    if request.method != "POST":
        _child(HANDSHAKES, integration, status).pending += 1.0
        return
    _child(DELIVERIES, integration, status).pending += 1.0
    _child(DELIVERY_SECONDS, integration).observe(result.seconds)
    if result.reason == REPLICATION_TIMEOUT:
        then = "spooled" if result.status < 300 else "rejected"
        _child(REPLICATION_TIMEOUTS, integration, then).pending += 1.0
    elif result.reason is not None:
        _child(SIGNATURE_FAILURES, integration, result.reason).pending += 1.0
    names: dict[str, int] = {}
    for event in result.events:  # a batch of 1,000 of one name is one addition
        names[event.name] = names.get(event.name, 0) + 1
    for name, count in names.items():
        _child(EVENTS, integration, name).pending += count
    for outcome in result.results:
        _observe_inline(outcome.handler, outcome.ok, outcome.error, outcome.seconds)


UNKNOWN_INTEGRATION = "(unknown)"
"""The one label for requests to names not configured: attackers choose those names."""


def increment(metric: Counter, *labels: str) -> None:
    """Add one to a counter's labelled child, as the per-request metrics do."""
    with _WRITING:
        _child(metric, *labels).pending += 1.0
        if not _FOLDER.armed:
            _FOLDER.arm()


def observe_handler(handler: str, mode: str, outcome: str, seconds: float | None) -> None:
    """Count one handler run (``seconds``: its duration; ``None``: a duplicate skipped).

    A timed run of a known plan (a worker's every attempt but its first) appends its
    duration and takes no lock, as ``observe_delivery`` does: 2.2k instructions a call instead
    of 4.7k (callgrind, 20,000 calls).
    """
    plan = _handler_plans.get((handler, mode, outcome))
    if plan is not None and seconds is not None:
        plan.seen.append(seconds)  # atomic; ``fold`` takes it or leaves it for the next
        if not _FOLDER.armed:  # after the append: see _Folder.disarm
            _FOLDER.arm()
        return
    with _WRITING:
        plan = _handler_plan(handler, mode, outcome)
        if seconds is None:
            plan.count.pending += 1.0
        else:
            plan.seen.append(seconds)
        if not _FOLDER.armed:
            _FOLDER.arm()


def _outcome(ok: bool, error: str | None) -> str:
    if ok:
        return "ok"
    return "timeout" if error == "timeout" else "failed"


class BacklogCollector(Collector):
    """Queue depth, oldest pending age, retries, failed items and spool files, read on scrape.

    ``connection`` gives the Redis to read (``None``: none in use); ``depths``
    reads its queues' backlog (the queue side's ``ops.depths``) and ``spool``
    counts the local spool's files and those held for replicas: both passed in by
    whoever wires this collector, since metrics sit below the queue side.
    """

    def __init__(
        self,
        settings: Settings,
        connection: Callable[[], redis.Redis | None],
        depths: Callable[[redis.Redis], list[QueueDepth]],
        spool: Callable[[], tuple[int, int]],
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.depths = depths
        self.spool = spool

    def describe(self) -> Iterable[Metric]:
        return []  # read from Redis at scrape time: nothing to describe up front

    def collect(self) -> Iterator[Metric]:
        spool = GaugeMetricFamily(
            "receiver_spool_files", "Deliveries acknowledged from this machine's local spool."
        )
        files, held_files = self.spool()
        spool.add_metric([], files)
        yield spool
        held = GaugeMetricFamily(
            "receiver_spool_unreplicated_files",
            "Deliveries in Redis that replicas have not confirmed yet, also kept in this "
            "machine's spool (durability = replicated).",
        )
        held.add_metric([], held_files)
        yield held
        up = GaugeMetricFamily("receiver_redis_up", "1 when Redis answered this scrape.")
        try:
            connection = self.connection()
            if connection is None:
                return
            depths = self.depths(connection)
        except redis.RedisError as exc:
            log.warning("metrics: Redis did not answer (%s)", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {
            "pending": GaugeMetricFamily(
                "receiver_queue_pending_deliveries",
                "Deliveries stored for workers and not taken yet.",
                labels=["queue"],
            ),
            "age": GaugeMetricFamily(
                "receiver_queue_oldest_pending_seconds",
                "Age of the oldest delivery waiting for a worker (0 when none waits).",
                labels=["queue"],
            ),
            "retries": GaugeMetricFamily(
                "receiver_queue_scheduled_retries",
                "Background retries waiting for their time.",
                labels=["queue"],
            ),
            "failed": GaugeMetricFamily(
                "receiver_queue_failed_jobs",
                "Items in RQ's failed registry (receiver failed).",
                labels=["queue"],
            ),
            "held": GaugeMetricFamily(
                "receiver_queue_held_keys",
                "Order keys (ordered_by) whose events wait behind a retrying or blocked one.",
                labels=["queue"],
            ),
        }
        now = time.time()
        for depth in depths:
            families["pending"].add_metric([depth.queue], depth.pending_packets)
            age = now - depth.oldest_pending_at if depth.oldest_pending_at else 0.0
            families["age"].add_metric([depth.queue], max(0.0, age))
            families["retries"].add_metric([depth.queue], depth.scheduled_retries)
            families["failed"].add_metric([depth.queue], depth.failed)
            families["held"].add_metric([depth.queue], depth.held_keys)
        yield from families.values()


def registry_for(backlog: BacklogCollector) -> CollectorRegistry:
    """What a scrape reads: all processes' counters (or this one's), and the backlog."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROC_ENV):
        registry.register(_FoldedFiles())
    else:
        registry.register(_OwnCollector())
    registry.register(backlog)
    return registry


def exposition(backlog: BacklogCollector) -> bytes:
    return generate_latest(registry_for(backlog))


class _FoldedFiles(Collector):
    """Every process's counters from the multiprocess files, this process's own folded first:
    a scrape sees at once what the process serving it counted."""

    def __init__(self) -> None:
        self._files = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        fold()
        return self._files.collect()  # type: ignore[no-any-return,no-untyped-call]


class _OwnCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        return _OWN.collect()
