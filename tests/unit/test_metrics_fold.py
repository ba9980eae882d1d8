"""Metrics added up in memory and folded (``metrics.fold``) equal the per-increment writes.

``observe_delivery`` and ``observe_handler`` add to pending amounts; a fold writes
them where prometheus_client reads. Here every sample they change is compared with
what prometheus_client's own ``inc``/``observe`` give for the same deliveries, one
call per value, as the receiver wrote them before (the reference below).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from receiver import Event
from receiver.observe import metrics
from receiver.routing.contracts import REPLICATION_TIMEOUT, HandlerResult, Request, Result

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def reference_registry() -> tuple[CollectorRegistry, dict[str, Any]]:
    """The receiver's metrics declared again, in a registry of their own."""
    registry = CollectorRegistry(auto_describe=True)
    made: dict[str, Any] = {}
    for metric in (
        metrics.DELIVERIES, metrics.HANDSHAKES, metrics.SIGNATURE_FAILURES, metrics.EVENTS,
        metrics.DELIVERY_SECONDS, metrics.HANDLER_RUNS, metrics.HANDLER_SECONDS,
        metrics.REPLICATION_TIMEOUTS, metrics.RETRIES_SCHEDULED,
    ):  # fmt: skip
        name, doc, labels = metric._name, metric._documentation, metric._labelnames
        if isinstance(metric, Histogram):
            bounds = metric._upper_bounds
            made[name] = Histogram(name, doc, labels, buckets=bounds, registry=registry)
        else:
            made[name] = Counter(name, doc, labels, registry=registry)
    return registry, made


def write_directly(made: dict[str, Any], request: Request, result: Result) -> None:
    """What ``observe_delivery`` adds, one prometheus_client call per value."""
    integration = result.integration or metrics.UNKNOWN_INTEGRATION
    status = str(result.status)
    if request.method != "POST":
        made["receiver_handshakes"].labels(integration, status).inc()
        return
    made["receiver_deliveries"].labels(integration, status).inc()
    made["receiver_delivery_duration_seconds"].labels(integration).observe(result.seconds)
    if result.reason == REPLICATION_TIMEOUT:
        then = "spooled" if result.status < 300 else "rejected"
        made["receiver_replication_timeouts"].labels(integration, then).inc()
    elif result.reason is not None:
        made["receiver_signature_failures"].labels(integration, result.reason).inc()
    for event in result.events:
        made["receiver_events"].labels(integration, event.name).inc()
    for run in result.results:
        outcome = "ok" if run.ok else ("timeout" if run.error == "timeout" else "failed")
        made["receiver_handler_runs"].labels(run.handler, "inline", outcome).inc()
        made["receiver_handler_duration_seconds"].labels(run.handler, "inline").observe(run.seconds)


seconds = st.floats(min_value=0, max_value=20, allow_nan=False)
names = st.sampled_from(["a", "b"])
deliveries = st.builds(
    lambda method, integration, status, reason, took, events, runs: (
        Request(method=method),
        Result(
            status=status, body=b"", integration=integration, reason=reason, seconds=took,
            events=[Event(t, f, {}, "e", "d", "i") for t, f in events],
            results=[HandlerResult(h, "e", ok, error, s) for h, ok, error, s in runs],
        ),
    ),
    st.sampled_from(["POST", "POST", "GET"]),
    st.sampled_from([None, "default", "other"]),
    st.sampled_from([200, 403, 503]),
    st.sampled_from([None, None, "no_secret_matches", REPLICATION_TIMEOUT]),
    seconds,
    st.lists(st.tuples(names, names), max_size=3),
    st.lists(
        st.tuples(names, st.booleans(), st.sampled_from([None, "timeout", "boom"]), seconds),
        max_size=2,
    ),
)  # fmt: skip


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(deliveries, max_size=12))
def test_folded_counts_equal_the_direct_writes(batch: list[tuple[Request, Result]]) -> None:
    metrics.fold()
    before = samples(metrics._OWN)
    registry, made = reference_registry()
    for request, result in batch:
        metrics.observe_delivery(None, request=request, result=result)
        write_directly(made, request, result)
    after = samples(metrics._OWN)  # _OWN folds before it is read
    expected = samples(registry)
    changed = {key for key in after if after[key] != before.get(key, 0.0)}
    assert changed <= set(expected)
    for key, value in expected.items():
        got = after.get(key, 0.0) - before.get(key, 0.0)
        if key[0].endswith("_sum"):  # added up in another order: equal to rounding
            assert got == pytest.approx(value, rel=1e-9, abs=1e-12)
        else:
            assert got == value, key


def test_worker_outcomes_fold_like_deliveries() -> None:
    metrics.fold()
    labels = {"handler": "h:f@x", "mode": "background", "outcome": "failed"}
    runs = "receiver_handler_runs_total"
    before = metrics._OWN.get_sample_value(runs, labels) or 0.0
    metrics.observe_handler("h:f@x", "background", "failed", 0.5)
    metrics.observe_handler("h:f@x", "background", "failed", None)
    metrics.increment(metrics.RETRIES_SCHEDULED, "h:f@x")
    assert metrics._OWN.get_sample_value(runs, labels) == before + 2
    summed = metrics._OWN.get_sample_value(
        "receiver_handler_duration_seconds_count", {"handler": "h:f@x", "mode": "background"}
    )
    assert summed is not None and summed >= 1


def test_worker_attempts_counted_without_the_lock_are_each_folded_once() -> None:
    """A known plan's attempts append without ``_WRITING``; folds meanwhile lose none."""
    import threading

    labels = {"handler": "h:threads@x", "mode": "background", "outcome": "ok"}
    runs = "receiver_handler_runs_total"
    metrics.observe_handler("h:threads@x", "background", "ok", 0.001)  # the plan, made
    metrics.fold()
    before = metrics._OWN.get_sample_value(runs, labels) or 0.0
    stop = threading.Event()

    def observing() -> None:
        for _ in range(3000):
            metrics.observe_handler("h:threads@x", "background", "ok", 0.001)

    def folding() -> None:
        while not stop.is_set():
            metrics.fold()

    folder = threading.Thread(target=folding)
    folder.start()
    threads = [threading.Thread(target=observing) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    folder.join()
    assert metrics._OWN.get_sample_value(runs, labels) == before + 9000


def test_a_lock_free_attempt_arms_the_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted after a fold, it reaches the files within ``FOLD_SECONDS`` unasked."""
    metrics.observe_handler("h:armed@x", "background", "ok", 0.001)
    metrics.fold()
    armed: list[bool] = []
    monkeypatch.setattr(metrics._Folder, "arm", lambda self: armed.append(True))
    metrics.observe_handler("h:armed@x", "background", "ok", 0.001)
    assert armed == [True]
    metrics.fold()
