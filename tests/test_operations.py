"""Operating the receiver: readiness, metrics, JSON logs, traces, stats, signature diagnoses.

The process-level cases run the Procfile's gunicorn (two workers) on a Redis
of their own and stop that Redis to see readiness flip.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from receiver import Event, Router, create_app
from receiver.core.signature import SHA1_HEADER, SHA256_HEADER, diagnose, sign
from receiver.observe import outcomes, trace
from receiver.observe.capture import capture_files, read_captures
from receiver.routing.contracts import Request, Result
from receiver.testing import free_port

from .conftest import SECRET, base_config, envelope, payload, signed
from .processes import Served, gunicorn_on_own_redis, stop, wait_until

pytestmark = pytest.mark.redis  # starts servers of its own

METRICS_TOKEN = "metrics-test-token"


# --- why a signature failed --------------------------------------------------------------------

BODY = b'{"object":"group","entry":[{"id":"1","changes":[{"field":"posts","value":{"link":"https:\\/\\/x.example\\/\\u00e9"}}]}]}'  # noqa: E501


@pytest.mark.parametrize(
    ("received", "headers", "code", "reason"),
    [
        (BODY, {}, "missing_signature", "missing"),
        (BODY, {SHA1_HEADER: sign(BODY, SECRET, "sha1")}, "sha1_not_accepted", "sha1_not_accepted"),
        (BODY, {SHA256_HEADER: "sha256=zz"}, "malformed_signature", "malformed"),
        (
            BODY,
            {SHA256_HEADER: f"{sign(BODY, 'other')}, {sign(BODY, SECRET)}"},
            "malformed_signature",
            "header_mangled",
        ),
        (BODY, {SHA256_HEADER: f'"{sign(BODY, SECRET)}"'}, "malformed_signature", "header_mangled"),
        # A proxy re-encoded the JSON: unescaped slashes and unicode, spaces after separators.
        (
            json.dumps(json.loads(BODY), ensure_ascii=False).encode(),
            {SHA256_HEADER: sign(BODY, SECRET)},
            "bad_signature",
            "body_reencoded",
        ),
        (BODY + b"\n", {SHA256_HEADER: sign(BODY, SECRET)}, "bad_signature", "body_reencoded"),
        (
            BODY,
            {SHA256_HEADER: sign(BODY, "rotated"), SHA1_HEADER: sign(BODY, SECRET, "sha1")},
            "bad_signature",
            "sha1_only",
        ),
        (BODY, {SHA256_HEADER: sign(BODY, "forged")}, "bad_signature", "no_secret_matches"),
    ],
)
def test_signature_failures_say_why(
    received: bytes, headers: dict[str, str], code: str, reason: str
) -> None:
    assert diagnose(headers, received, [SECRET], code) == reason


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

        def execute(self) -> Any:
            if threading.current_thread().name == "receiver-trace":
                taken.set()
                release.wait(10)
            return self.inner.execute()

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


# --- real processes: readiness, metrics across workers, JSON logs -----------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with gunicorn_on_own_redis(tmp_path, {
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": "token",
        "RECEIVER_HANDLERS": "handlers.log_events",
        "RECEIVER_METRICS_TOKEN": METRICS_TOKEN,
        "RECEIVER_LOG_FORMAT": "json",
    }) as served:
        yield served


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(
        f"{served.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_readyz_follows_redis(served: Served) -> None:
    def ready() -> requests.Response:
        return requests.get(f"{served.url}/readyz", timeout=10)

    first = ready()
    assert first.status_code == 200 and first.json()["status"] == "ready"
    served.redis.stop()
    # (a requests.Response is falsy when not 2xx: wait on its JSON)
    down = wait_until(
        lambda: (r := ready()).status_code == 503 and r.json(), what="/readyz to say 503"
    )
    assert down["status"] == "not_ready" and down["checks"]["redis"]["ok"] is False
    assert requests.get(f"{served.url}/healthz", timeout=10).status_code == 200  # still alive
    served.redis.start()
    wait_until(lambda: ready().status_code == 200, what="/readyz to recover")


def test_metrics_add_up_across_gunicorn_workers(served: Served) -> None:
    assert requests.get(f"{served.url}/metrics", timeout=10).status_code == 401
    body = payload("group__comments__add.json")

    def deliver(_: int) -> int:
        with requests.Session() as session:  # a fresh connection each
            return session.post(
                f"{served.url}/webhook", data=body, headers=signed(body)
            ).status_code

    def answering_pids() -> set[int]:
        return {
            json.loads(line)["process"]
            for line in served.log_lines()
            if line.startswith("{") and '"kind": "delivery"' in line
        }

    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: both workers take some
        while sent < 400 and (sent < 20 or len(answering_pids()) < 2):
            assert set(pool.map(deliver, range(20))) == {200}
            sent += 20
    assert len(answering_pids()) == 2, "both gunicorn workers should have answered"
    requests.post(f"{served.url}/webhook", data=body, headers=signed(body, "forged"), timeout=10)
    samples = scrape(served)
    integration = ("integration", "default")
    assert samples[("receiver_deliveries_total", (integration, ("status", "200")))] == sent
    assert samples[("receiver_deliveries_total", (integration, ("status", "403")))] == 1
    reason = ("reason", "no_secret_matches")
    assert samples[("receiver_signature_failures_total", (integration, reason))] == 1
    name = ("name", "group.comments")
    assert samples[("receiver_events_total", (integration, name))] == sent
    handler = ("handler", "handlers.log_events:log_event@*")
    inline_ok = (handler, ("mode", "inline"), ("outcome", "ok"))
    assert samples[("receiver_handler_runs_total", inline_ok)] == sent
    assert samples[("receiver_redis_up", ())] == 1
    assert samples[("receiver_queue_pending_deliveries", (("queue", "receiver"),))] == 0


def test_json_logs_carry_one_line_per_delivery(served: Served) -> None:
    body = payload("group__comments__add.json")
    answer = requests.post(f"{served.url}/webhook", data=body, headers=signed(body), timeout=10)
    delivery_id = answer.json()["delivery_id"]
    lines: list[dict[str, Any]] = []

    def logged() -> bool:
        lines[:] = [json.loads(line) for line in served.log_lines() if line.startswith("{")]
        return any(line.get("delivery_id") == delivery_id for line in lines)

    wait_until(logged, what="the delivery's log line")
    [line] = [line for line in lines if line.get("delivery_id") == delivery_id]
    assert line["kind"] == "delivery" and line["status"] == 200
    assert line["events"] == {"group.comments": 1} and line["queued"] == 0
    assert line["integration"] == "default" and line["duration_ms"] >= 0
    assert line["level"] == "INFO" and line["name"] == "receiver"
    assert SECRET not in served.log_path.read_text()


def test_metrics_are_off_unless_a_token_is_set(router: Router) -> None:
    app = create_app(base_config(), router=router)
    assert app.test_client().get("/metrics").status_code == 404


def test_event_names_and_handler_outcomes_count_in_process(router: Router) -> None:
    seen: list[Event] = []
    router.connect("*", seen.append)
    app = create_app(base_config(metrics_token="t"), router=router)
    body = payload("group__comments__add.json")
    app.test_client().post("/webhook", data=body, headers=signed(body))
    text = app.test_client().get("/metrics", headers={"Authorization": "Bearer t"}).text
    assert 'receiver_events_total{integration="default",name="group.comments"}' in text
    assert seen


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


# --- the worker's side: attempts traced, logged and counted -----------------------------------


def test_a_failed_attempt_is_logged_at_the_warning_level_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Operators running at WARNING saw "retry ..." without the error that caused it."""
    caplog.set_level(logging.WARNING, logger="receiver.worker")
    event = Event("group", "posts", {}, "e1", "d1", "hr-bot")
    outcomes.attempt_ended(event, "mod:ok", 1, None, 0.01)
    outcomes.attempt_ended(event, "mod:flaky", 1, "Traceback...\nValueError: boom", 0.01)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "handler='mod:flaky'" in record.getMessage()
    assert "ValueError: boom" in record.getMessage()


def test_a_failed_then_successful_background_handler_is_traced_logged_and_counted(
    tmp_path: Path,
) -> None:
    """A handler that fails once: two attempts in the trace, a retry line, worker metrics."""
    config = tmp_path / "receiver.toml"
    config.write_text('[receiver]\nretry_backoff = 0.1\nhandlers = ["tests.plugins.recording"]\n')
    settings = {
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": "token",
        "RECEIVER_CONFIG": str(config),
        "RECEIVER_LOG_FORMAT": "json",
        "RECORDING_DB": str(tmp_path / "side-effects.sqlite"),
    }
    with gunicorn_on_own_redis(tmp_path, settings) as served:
        env = served.env
        metrics_port = free_port()
        log_path = tmp_path / "worker.log"
        with open(log_path, "wb") as log_file:
            worker = subprocess.Popen(
                [sys.executable, "-m", "receiver", "worker", "--metrics-port", str(metrics_port)],
                env=env,
                stderr=log_file,
            )
        try:
            body = envelope("faulty", {"field": "flaky", "value": {"fail_times": 1}}, id="1")
            answer = requests.post(
                f"{served.url}/webhook", data=body, headers=signed(body), timeout=10
            ).json()
            delivery_id = answer["delivery_id"]
            assert answer["queued"] == 1
            connection = redis.Redis.from_url(served.redis.url)

            def two_attempts() -> dict[str, Any] | None:
                record = trace.load(connection, delivery_id)
                return record if record and len(record["background"]) == 2 else None

            record = wait_until(two_attempts, 60, "the second attempt in the trace")
            first, second = record["background"]
            assert (first["attempt"], first["outcome"]) == (1, "failed")
            assert "attempt 1 fails on purpose" in first["error"]
            assert (second["attempt"], second["outcome"]) == (2, "ok")
            assert record["events"][0][0] == "faulty.flaky" and record["status"] == 200

            shown = subprocess.run(
                [sys.executable, "-m", "receiver", "trace", delivery_id],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            lines = shown.stdout.splitlines()
            assert any(line.startswith("  attempt 1 ") and " failed " in line for line in lines)
            assert any(line.startswith("  attempt 2 ") and " ok " in line for line in lines)

            scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scraped)
                for s in family.samples
            }
            handler = ("handler", "tests.plugins.recording:flaky@faulty.flaky")
            runs = "receiver_handler_runs_total"
            background = ("mode", "background")
            assert samples[(runs, (handler, background, ("outcome", "failed")))] == 1
            assert samples[(runs, (handler, background, ("outcome", "ok")))] == 1
            assert samples[("receiver_retries_scheduled_total", (handler,))] == 1
        finally:
            stop(worker)
    logged = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    attempts = [line for line in logged if line.get("kind") == "attempt"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "failed"), (2, "ok")]
    assert all(a["delivery_id"] == delivery_id for a in attempts)
    [retry] = [line for line in logged if line.get("kind") == "retry"]
    assert retry["attempt"] == 2
    assert not [line for line in logged if line.get("kind") == "final_failure"]
