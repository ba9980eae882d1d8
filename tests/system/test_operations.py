"""Operating the receiver: readiness, metrics, JSON logs, traces, stats, signature diagnoses.

The process-level cases run the Procfile's gunicorn (two workers) on a Redis
of their own and stop that Redis to see readiness flip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from receiver.observe import trace
from receiver.testing import free_port
from tests.conftest import SECRET, envelope, payload, signed
from tests.processes import Served, gunicorn_on_own_redis, stop, wait_until

pytestmark = pytest.mark.redis  # starts servers of its own

METRICS_TOKEN = "metrics-test-token"


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
    integration = ("integration", "default")
    handler = ("handler", "handlers.log_events:log_event@*")
    expected = {
        ("receiver_deliveries_total", (integration, ("status", "200"))): sent,
        ("receiver_deliveries_total", (integration, ("status", "403"))): 1,
        ("receiver_signature_failures_total", (integration, ("reason", "no_secret_matches"))): 1,
        ("receiver_events_total", (integration, ("name", "group.comments"))): sent,
        ("receiver_handler_runs_total", (handler, ("mode", "inline"), ("outcome", "ok"))): sent,
    }

    def all_folded() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        # Workers fold their counts into the shared files every 0.5 s (metrics.FOLD_SECONDS):
        # the worker serving the scrape folds its own at once, the other's may come a turn late.
        samples = scrape(served)
        return samples if all(samples.get(k) == v for k, v in expected.items()) else None

    samples = wait_until(all_folded, 10, "every worker's counts in one scrape")
    assert {key: samples[key] for key in expected} == expected
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
