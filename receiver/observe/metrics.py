"""Prometheus metrics: declared once here, fed by the core's and the worker's outcomes.

Web processes count what they answer (``delivery_finished``); workers count
what their handlers did. Under gunicorn, several processes count at once:
prometheus_client's multiprocess mode adds them up, with the directory it
needs created by the gunicorn config (``PROMETHEUS_MULTIPROC_DIR``) before
any worker starts. Levels that live in Redis or on disk (queue depth, oldest
pending delivery, retries scheduled, failed items, spool files) are read when
scraped, so every process reports the same truth.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
_OWN = CollectorRegistry(auto_describe=True)
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


class _Cell:
    """One value of a labelled child, added to without prometheus_client's per-call overhead.

    In multiprocess mode every ``inc`` of the library takes a lock, asks the
    kernel for the process id and packs the value into its mmap file: a
    delivery's seven writes cost 8.0 µs in ``observe_delivery`` (timeit), 3.6 µs
    with cells (``bench/observe_bench.py --multiprocess``: +13 → +8 µs). A cell adds to
    the same value and writes it to the same place in the same file, so a scrape
    from any process reads it at once, exactly as before; the callers below take
    one lock per delivery instead of one per value, and a fork drops every cell
    (``os.register_at_fork``) instead of each write checking the process id. The
    value is private to prometheus_client (pinned below 1); with any other value
    class (not multiprocess mode) the library's own ``inc`` runs.

    The value's place in its file is found once: the file only grows at its end
    (a value's offset never changes), though it may be mapped again when it does,
    so the map is looked up on each write. Written as the library writes it (one
    16-byte slice assignment, never ``pack_into``, whose transient zeros a scrape
    could read): the library's per-write lookups were a third of
    ``observe_delivery``'s instructions (callgrind: 54k with them, 34k with no write).
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
        """Add ``amount``; callers hold ``_WRITING`` (gthread workers run requests on threads)."""
        value = self._value
        if not self._direct:
            value.inc(amount)
            return
        total = value._value = value._value + amount
        value._timestamp = 0.0
        at = self._at
        self._file._m[at : at + 16] = _TWO_DOUBLES(total, 0.0)


_TWO_DOUBLES = struct.Struct("dd").pack


_WRITING = threading.Lock()
"""Held while cells are written: their read-modify-write must not interleave."""


class _HistogramCell:
    __slots__ = ("_sum", "_buckets", "_bounds")

    def __init__(self, child: Any) -> None:
        self._sum = _Cell(child._sum)
        self._buckets = [_Cell(bucket) for bucket in child._buckets]
        self._bounds = list(child._upper_bounds)

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect.bisect_left(self._bounds, amount)].inc(1.0)


_children: dict[tuple[int, tuple[str, ...]], Any] = {}
os.register_at_fork(after_in_child=_children.clear)
_delivery_cells: dict[tuple[str, str], tuple[Any, Any]] = {}
"""A delivery's two cells (count, seconds) by integration and status: one lookup, not two."""
os.register_at_fork(after_in_child=_delivery_cells.clear)
_handler_cells: dict[tuple[str, str, str], list[Any]] = {}
"""A handler run's two cells (count, seconds) by handler, mode and outcome."""
os.register_at_fork(after_in_child=_handler_cells.clear)


def _child(metric: Any, *labels: str) -> Any:
    """A cell for ``metric.labels(*labels)``, kept: the lookup is most of a counter's cost."""
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        labelled = metric.labels(*labels)
        child = _children[key] = (
            _HistogramCell(labelled) if isinstance(metric, Histogram) else _Cell(labelled._value)
        )
    return child


def observe_delivery(sender: Any, request: Request, result: Result, **_: Any) -> None:
    """``delivery_finished`` receiver: count the answer, its events and inline handlers."""
    with _WRITING:
        _observe_delivery(request, result)


def _observe_delivery(request: Request, result: Result) -> None:
    integration = result.integration or UNKNOWN_INTEGRATION  # the core names known ones
    status = str(result.status)
    if request.method != "POST":
        _child(HANDSHAKES, integration, status).inc(1.0)
        return
    cells = _delivery_cells.get((integration, status))
    if cells is None:
        cells = _delivery_cells[(integration, status)] = (
            _child(DELIVERIES, integration, status),
            _child(DELIVERY_SECONDS, integration),
        )
    cells[0].inc(1.0)
    cells[1].observe(result.seconds)
    if result.reason == REPLICATION_TIMEOUT:
        then = "spooled" if result.status < 300 else "rejected"
        _child(REPLICATION_TIMEOUTS, integration, then).inc(1.0)
    elif result.reason is not None:
        _child(SIGNATURE_FAILURES, integration, result.reason).inc(1.0)
    names: dict[str, int] = {}
    for event in result.events:  # a batch of 1,000 of one name is one increment
        names[event.name] = names.get(event.name, 0) + 1
    for name, count in names.items():
        _child(EVENTS, integration, name).inc(count)
    for outcome in result.results:
        _observe_handler(
            outcome.handler, "inline", _outcome(outcome.ok, outcome.error), outcome.seconds
        )


UNKNOWN_INTEGRATION = "(unknown)"
"""The one label for requests to names not configured: attackers choose those names."""


def increment(metric: Counter, *labels: str) -> None:
    """Add one to a counter's labelled child, as the per-request metrics do."""
    with _WRITING:
        _child(metric, *labels).inc(1.0)


def observe_handler(handler: str, mode: str, outcome: str, seconds: float | None) -> None:
    with _WRITING:
        _observe_handler(handler, mode, outcome, seconds)


def _observe_handler(handler: str, mode: str, outcome: str, seconds: float | None) -> None:
    key = (handler, mode, outcome)
    cells = _handler_cells.get(key)
    if cells is None:
        cells = _handler_cells[key] = [_child(HANDLER_RUNS, handler, mode, outcome), None]
    cells[0].inc(1.0)
    if seconds is not None:
        if cells[1] is None:  # made at its first value, as before: no empty series
            cells[1] = _child(HANDLER_SECONDS, handler, mode)
        cells[1].observe(seconds)


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
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_OwnCollector())
    registry.register(backlog)
    return registry


def exposition(backlog: BacklogCollector) -> bytes:
    return generate_latest(registry_for(backlog))


class _OwnCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        return _OWN.collect()
