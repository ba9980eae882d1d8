"""Operating the receiver: readiness, metrics, JSON logs, traces, stats, signature diagnoses.

The process-level cases run the Procfile's gunicorn (two workers) on a Redis
of their own and stop that Redis to see readiness flip.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from receiver import Event, Router, create_app
from receiver.observe import trace
from receiver.observe.capture import capture_files, read_captures
from receiver.routing.contracts import Request, Result
from tests.conftest import SECRET, base_config, envelope, payload, signed

pytestmark = pytest.mark.redis  # starts servers of its own


@pytest.fixture
def capturing(router: Router, redis_url: str, tmp_path: Path) -> Flask:
    config = base_config(redis_url=redis_url, capture_dir=str(tmp_path / "captures"))
    config["integrations"]["default"]["capture"] = True
    return create_app(config, router=router)


def test_the_reason_reaches_the_log_and_the_capture_but_not_the_client(
    capturing: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="receiver")
    body = payload("group__comments__add.json")
    reencoded = json.dumps(json.loads(body), separators=(",", ":")).encode()
    response = capturing.test_client().post("/webhook", data=reencoded, headers=signed(body))
    assert response.status_code == 403
    assert "reencoded" not in response.get_data(as_text=True)
    [(_, record)] = list(read_captures(capture_files(tmp_path / "captures")))
    assert (record["error"], record["reason"]) == ("bad_signature", "body_reencoded")
    [line] = [r for r in caplog.records if getattr(r, "kind", None) == "delivery"]
    assert line.reason == "body_reencoded" and line.status == 403  # type: ignore[attr-defined]


# --- traces and stats, in-process on a real Redis ---------------------------------------------


@pytest.fixture
def traced(router: Router, redis_url: str) -> Flask:
    router.connect("group.*", lambda event: None)
    return create_app(base_config(redis_url=redis_url), router=router)


def flush(app: Flask) -> None:
    assert app.extensions["receiver.trace"].flush() >= 0


def test_a_delivery_leaves_a_trace_findable_by_event(traced: Flask, redis_url: str) -> None:
    body = payload("group__comments__add.json")
    answer = traced.test_client().post("/webhook", data=body, headers=signed(body)).get_json()
    flush(traced)
    connection = redis.Redis.from_url(redis_url)
    record = trace.load(connection, answer["delivery_id"])
    assert record is not None
    assert record["status"] == 200 and record["integration"] == "default"
    [[name, event_id]] = record["events"]
    assert name == "group.comments"
    [inline] = record["inline"]
    assert inline["outcome"] == "ok" and inline["event_id"] == event_id
    assert trace.deliveries_of(connection, event_id) == [answer["delivery_id"]]


def test_a_trace_record_and_the_last_delivery_hold_what_they_did(redis_url: str) -> None:
    """The writer keeps plain values from a delivery (``trace.entry``): the record and the
    ``last`` hash read back as when it kept the request and result themselves."""
    from datetime import UTC, datetime

    connection = redis.Redis.from_url(redis_url)
    writer = trace.TraceWriter(60, lambda: connection)
    writer._thread = object()  # type: ignore[assignment]  # flushed by hand
    event = Event("group", "comments", {"verb": "add"}, "e1", "d1", "kept", verb="add")
    received = 1_800_000_000.5  # half a second: the text keeps its microseconds
    result = Result(status=200, body=b"{}", delivery_id="d1", integration="kept", events=[event],
                    verified="ok", secret_index=1, queued=1, stored="redis",
                    ordered=[["h", "e1", "k", "q"]], received_at=received, seconds=0.001234)
    writer(None, Request(method="POST", path="/webhooks/kept", body=b"{}"), result)
    handshake = Result(status=200, body=b"c", integration="kept", received_at=received + 1)
    writer(None, Request(method="GET", path="/webhooks/kept"), handshake)
    assert writer.flush() == 2
    record = trace.load(connection, "d1")
    assert record == {
        "delivery_id": "d1", "integration": "kept",
        "received_at": datetime.fromtimestamp(received, UTC).isoformat(),
        "status": 200, "error": None, "reason": None, "replayed": False, "duration_ms": 1.23,
        "events": [["group.comments", "e1"]], "inline": [], "queued": 1,
        "ordered": [["h", "e1", "k", "q"]], "stored": "redis", "secret_index": 1,
        "background": [],
    }  # fmt: skip
    [(_, stats)] = trace.stats(connection, ["kept"]).items()
    assert stats["last"] == {
        "at": "2027-01-15T08:00:00.500000+00:00", "status": "200", "delivery_id": "d1",
        "secret_index": "1", "secret_index_at": "2027-01-15T08:00:00.500000+00:00",
        "handshake_at": "2027-01-15T08:00:01.500000+00:00", "handshake_status": "200",
    }  # fmt: skip
    assert connection.hgetall(trace.day_key("kept", datetime(2027, 1, 15).date())) == {
        b"group": b"1"
    }


def test_a_trace_that_cannot_be_made_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(request: Request, result: Result) -> Any:
        raise ValueError("a bug of ours")

    monkeypatch.setattr(trace, "entry", broken)
    writer = trace.TraceWriter(60, lambda: None)
    writer._thread = object()  # type: ignore[assignment]
    writer(None, Request(method="POST", body=b"{}"), Result(status=200, body=b"", integration="x"))
    assert writer.flush() == 0


@pytest.mark.parametrize("changes", [1, 3, 8])
def test_every_event_of_a_redelivered_batch_finds_both_deliveries(
    traced: Flask, redis_url: str, changes: int
) -> None:
    body = envelope("group", *(
        {"field": "comments", "value": {"verb": "add", "comment_id": str(n), "message": "hi"}}
        for n in range(changes)
    ))
    client = traced.test_client()
    first, again = (client.post("/webhook", data=body, headers=signed(body)).get_json()
                    for _ in range(2))
    flush(traced)
    connection = redis.Redis.from_url(redis_url)
    record = trace.load(connection, again["delivery_id"])
    assert record is not None and len(record["events"]) == changes
    for _, event_id in record["events"]:
        assert trace.deliveries_of(connection, event_id) == [
            again["delivery_id"], first["delivery_id"]
        ]
        assert 0 < connection.ttl(trace.event_key(event_id)) <= 24 * 3600


def test_a_flush_waits_for_the_background_writer_already_writing(redis_url: str) -> None:
    """flush() returns only once what was queued is in Redis, even if the background thread
    had taken it and was still waiting on Redis (the admin page flushes, then reads)."""
    connection = redis.Redis.from_url(redis_url)
    taken, release = threading.Event(), threading.Event()

    class HeldPipeline:
        def __init__(self) -> None:
            self.inner = connection.pipeline(transaction=False)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def execute(self, raise_on_error: bool = True) -> Any:
            if threading.current_thread().name == "receiver-trace":
                taken.set()
                release.wait(10)
            return self.inner.execute(raise_on_error)

    class HeldConnection:
        def pipeline(self, transaction: bool = True) -> HeldPipeline:
            return HeldPipeline()

    writer = trace.TraceWriter(60, lambda: HeldConnection())  # type: ignore[arg-type,return-value]
    request = Request(method="POST", path="/webhook", body=b"{}")
    result = Result(status=403, body=b"{}", integration="held", reason="mismatch",
                    received_at=time.time())
    writer(None, request, result)
    assert taken.wait(10), "the background writer never started writing"
    flushed = threading.Thread(target=writer.flush)
    flushed.start()
    flushed.join(0.3)
    assert flushed.is_alive(), "flush returned while the background write was unfinished"
    release.set()
    flushed.join(10)
    [(_, stats)] = trace.stats(connection, ["held"]).items()
    assert stats["days"][max(stats["days"])] == {"!signature_failures": 1}


def test_stats_count_deliveries_per_topic_and_day(traced: Flask, redis_url: str) -> None:
    client = traced.test_client()
    for name in ("group__comments__add.json", "group__posts__status_add.json"):
        body = payload(name)
        assert client.post("/webhook", data=body, headers=signed(body)).status_code == 200
    body = payload("page__messages__text_workplace_bot.json")
    client.post("/webhook", data=body, headers=signed(body))
    client.post("/webhook", data=body, headers=signed(body, "forged"))
    flush(traced)
    [(name, stats)] = trace.stats(redis.Redis.from_url(redis_url), ["default"]).items()
    today = max(stats["days"])
    assert stats["days"][today] == {"group": 2, "page": 1, "!signature_failures": 1}
    # The last delivery is the last verified one; the forgery is the last refusal.
    assert stats["last"]["status"] == "200" and stats["last"]["secret_index"] == "0"
    assert (stats["last"]["refused_status"], stats["last"]["refused_error"]) == (
        "403", "bad_signature"
    )


def test_unknown_integration_names_leave_nothing_behind(router: Router, redis_url: str) -> None:
    """Anyone may post to /webhooks/<any name>: no stats keys, traces or metric series each."""
    app = create_app(base_config(redis_url=redis_url, metrics_token="t"), router=router)
    client = app.test_client()

    def unknown(metric: str) -> float:  # this process's counters: earlier tests add to them
        text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
        assert "made-up" not in text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == metric and sample.labels.get("integration") == "(unknown)"
        )

    before = unknown("receiver_deliveries_total"), unknown("receiver_handshakes_total")
    body = payload("group__comments__add.json")
    for n in range(20):
        answer = client.post(f"/webhooks/made-up-{n}", data=body, headers=signed(body))
        assert answer.status_code == 404 and answer.get_json()["error"] == "unknown_integration"
        assert client.get(f"/webhooks/made-up-{n}", query_string={"hub.mode": "subscribe"}
                          ).status_code == 404
    assert client.post("/webhook", data=body, headers=signed(body)).status_code == 200
    flush(app)
    connection = redis.Redis.from_url(redis_url)
    assert not [k for k in connection.keys("*") if b"made-up" in k]
    assert [r["integration"] for r in trace.recent(connection)] == ["default"]
    after = unknown("receiver_deliveries_total"), unknown("receiver_handshakes_total")
    assert (after[0] - before[0], after[1] - before[1]) == (20, 20)


def traced_in_the_cli(
    app: Flask, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], Any]:
    """Post the sample comment, flush its trace, and show it with ``receiver trace``."""
    from click.testing import CliRunner

    from receiver.cli import main

    body = payload("group__comments__add.json")
    answer = app.test_client().post("/webhook", data=body, headers=signed(body)).get_json()
    flush(app)
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", "token")
    monkeypatch.setenv("REDIS_URL", redis_url)
    shown = CliRunner().invoke(main, ["trace", answer["delivery_id"]])
    assert shown.exit_code == 0, shown.output
    return answer, shown


def test_trace_and_stats_commands(
    traced: Flask, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from receiver.cli import main

    answer, shown = traced_in_the_cli(traced, redis_url, monkeypatch)
    assert f"delivery {answer['delivery_id']}" in shown.output and "status 200" in shown.output
    assert "group.comments" in shown.output and "  ok  " in shown.output
    record = trace.load(redis.Redis.from_url(redis_url), answer["delivery_id"])
    assert record is not None
    event_id = record["events"][0][1]
    by_event = CliRunner().invoke(main, ["trace", "--event", event_id, "--json"])
    assert json.loads(by_event.output)["delivery_id"] == answer["delivery_id"]
    missing = CliRunner().invoke(main, ["trace", "nope"])
    assert missing.exit_code == 1 and "no trace of delivery nope" in missing.output
    figures = CliRunner().invoke(main, ["stats"])
    assert figures.exit_code == 0, figures.output
    assert figures.output.startswith("default: last delivery ")
    assert "group" in figures.output.splitlines()[1]


def test_trace_shows_an_inline_failure_with_its_message(
    router: Router, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(event: Event) -> None:
        raise ValueError(f"comments on {event.entry_id} are closed\nsecond line")

    router.connect("group.comments", refuse)
    app = create_app(base_config(redis_url=redis_url), router=router)
    _, shown = traced_in_the_cli(app, redis_url, monkeypatch)
    [line] = [ln for ln in shown.output.splitlines() if "refuse" in ln]
    assert "failed (ValueError: comments on" in line and "are closed second line)" in line


def test_recent_deliveries_newest_first(traced: Flask, redis_url: str) -> None:
    client = traced.test_client()
    ids = []
    for name in ("group__comments__add.json", "group__posts__status_add.json"):
        body = payload(name)
        ids.append(
            client.post("/webhook", data=body, headers=signed(body)).get_json()["delivery_id"]
        )
    flush(traced)
    listed = trace.recent(redis.Redis.from_url(redis_url), limit=10)
    assert [r["delivery_id"] for r in listed] == ids[::-1]
