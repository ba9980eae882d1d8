"""Background handlers run concurrently in a real `receiver worker`, each attempt under a limit.

Deliveries go through the app into a real Redis; a real worker process (its
``--concurrency`` set per test) runs the handlers of ``tests.plugins.slow``,
which note in SQLite when each call started and ended.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from receiver import create_app
from receiver.testing import free_port
from tests.conftest import base_config, envelope, plugin_router, signed
from tests.plugins import slow
from tests.plugins.slow import runs
from tests.processes import (
    ROOT,
    gunicorn_command,
    receiver_command,
    stop,
    stop_group,
    wait_for_http,
    wait_until,
)

HANDLERS = "tests.plugins.slow"


@pytest.fixture
def env(worker_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "receiver.toml"
    config.write_text("[receiver]\nretry_backoff = 1.0\n")
    return {**worker_env, "RECEIVER_HANDLERS": HANDLERS, "RECEIVER_CONFIG": str(config)}


@pytest.fixture
def client(redis_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """The web side routes to the slow plugin's handlers only, as the worker does.

    (Other test modules import catch-all plugins into the default router.)
    """
    monkeypatch.setenv("RECORDING_DB", env["RECORDING_DB"])
    router = plugin_router(slow.__name__)
    return create_app(base_config(redis_url=redis_url), router=router).test_client()


@contextmanager
def worker(env: dict[str, str], *args: str, log: Path | None = None) -> Iterator[Any]:
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        receiver_command("--log-level", "WARNING", "worker", *args),
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stderr=out,
    )
    try:
        yield process
    finally:
        stop_group(process)
        if log is not None:
            out.close()  # type: ignore[union-attr]


def post(client: FlaskClient, topic: str, field: str, *values: dict[str, Any]) -> None:
    body = envelope(topic, *[{"field": field, "value": v} for v in values])
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()


def most_at_once(db: str, name: str) -> int:
    """The largest number of calls of ``name`` that were running at the same moment."""
    starts = {n: at for _, n, _, at in runs(db, "start", name)}
    ends = {n: at for _, n, _, at in runs(db, "end", name)}
    moments = sorted([(at, 1) for at in starts.values()] + [(ends[n], -1) for n in starts])
    level = peak = 0
    for _, step in moments:
        level += step
        peak = max(peak, level)
    return peak


def failed_job(redis_url: str, name: str) -> Job | None:
    """The job RQ's failed registry holds for the item of event ``name``."""
    connection = redis.Redis.from_url(redis_url)
    registry = FailedJobRegistry("receiver", connection=connection, serializer=JSONSerializer)
    try:
        for job_id in registry.get_job_ids():
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            if job.args and job.args[0]["event"]["name"] == name:
                return job
        return None
    finally:
        connection.close()


def failed_status(redis_url: str, name: str) -> str | None:
    job = failed_job(redis_url, name)
    return None if job is None else job.get_status().value


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        receiver_command(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout


def listed(env: dict[str, str], name: str) -> str:
    """What `receiver failed` prints, once it lists an item of ``name``."""
    out = cli(env, "failed")
    return out if name in out else ""


# -- in a real worker ------------------------------------------------------------------------


def test_slow_handlers_run_up_to_the_concurrency_at_once(
    client: FlaskClient, env: dict[str, str]
) -> None:
    post(client, "slow", "wait", *[{"n": n, "sleep": 1} for n in range(16)])
    with worker(env, "--concurrency", "8"):
        wait_until(lambda: len(runs(env["RECORDING_DB"], "end")) == 16, 60, "16 slow calls")
    assert most_at_once(env["RECORDING_DB"], "slow.wait") == 8


def test_async_handlers_run_on_the_worker_within_the_same_limit(
    client: FlaskClient, env: dict[str, str]
) -> None:
    post(client, "slow", "async", *[{"n": n, "sleep": 0.5} for n in range(8)])
    with worker(env, "--concurrency", "4") as process:
        wait_until(lambda: len(runs(env["RECORDING_DB"], "end")) == 8, 60, "8 async calls")
    assert most_at_once(env["RECORDING_DB"], "slow.async") == 4
    assert {pid for _, _, pid, _ in runs(env["RECORDING_DB"], "end")} == {process.pid}


def test_a_handler_concurrency_caps_its_share(client: FlaskClient, env: dict[str, str]) -> None:
    post(client, "slow", "capped", *[{"n": n} for n in range(6)])
    with worker(env, "--concurrency", "8"):
        wait_until(lambda: len(runs(env["RECORDING_DB"], "end")) == 6, 60, "6 capped calls")
    assert most_at_once(env["RECORDING_DB"], "slow.capped") == 2


def test_worker_concurrency_from_the_environment(client: FlaskClient, env: dict[str, str]) -> None:
    post(client, "slow", "wait", *[{"n": n, "sleep": 1} for n in range(6)])
    with worker({**env, "RECEIVER_WORKER_CONCURRENCY": "3"}):
        wait_until(lambda: len(runs(env["RECORDING_DB"], "end")) == 6, 60, "6 slow calls")
    assert most_at_once(env["RECORDING_DB"], "slow.wait") == 3


def test_fast_events_are_not_held_behind_a_slow_backlog(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """40 calls of a 500 ms handler (5 s of work at 4 at once), then no-op events one by one."""
    db = env["RECORDING_DB"]
    with worker(env, "--concurrency", "4"):
        post(client, "slow", "wait", *[{"n": n, "sleep": 0.5} for n in range(40)])
        wait_until(lambda: runs(db, "start", "slow.wait"), 30, "the slow backlog to start")
        posted = {}
        for n in range(10):
            posted[n] = time.time()
            post(client, "slow", "fast", {"n": n})
            time.sleep(0.1)
        wait_until(lambda: len(runs(db, "end", "slow.wait")) == 40, 60, "the slow backlog")
    fast = {n: at for _, n, _, at in runs(db, "end", "slow.fast")}
    assert sorted(fast) == list(range(10))
    last_slow = max(at for _, _, _, at in runs(db, "end", "slow.wait"))
    assert all(at < last_slow for at in fast.values())  # none waited for the backlog
    assert max(fast[n] - posted[n] for n in fast) < 3.0  # generous: ~0.2 s on an idle machine


def test_first_attempt_past_its_limit_fails_with_timeout_and_is_retried(
    client: FlaskClient, env: dict[str, str], redis_url: str
) -> None:
    """timeout=1, retry=1: two attempts, each cut at 1 s; meanwhile other events go on."""
    db = env["RECORDING_DB"]
    with worker(env, "--concurrency", "2"):
        post(client, "slow", "overrun", {"n": 1})
        wait_until(lambda: runs(db, "start", "slow.overrun"), 30, "the first attempt")
        post(client, "slow", "fast", {"n": 2})
        wait_until(lambda: runs(db, "end", "slow.fast"), 30, "the fast event meanwhile")
        listing = wait_until(
            lambda: listed(env, "slow.overrun"), 60, "the overrun item in the failed registry"
        )
    assert len(runs(db, "start", "slow.overrun")) == 2
    assert "timeout" in listing and " 2 " in listing  # attempts: first try plus one retry
    job = failed_job(redis_url, "slow.overrun")
    assert job is not None and job.get_status() == "failed"
    result = job.latest_result()
    assert result is not None and "did not finish within 1s" in (result.exc_string or "")


def test_async_attempt_past_its_limit_is_cancelled(
    client: FlaskClient, env: dict[str, str], redis_url: str
) -> None:
    with worker(env, "--concurrency", "2"):
        post(client, "slow", "async_overrun", {"n": 1})
        wait_until(
            lambda: runs(env["RECORDING_DB"], "cancelled"), 30, "the coroutine to be cancelled"
        )
        wait_until(
            lambda: "slow.async_overrun" in cli(env, "failed"), 30, "the item to be filed as failed"
        )
    assert failed_status(redis_url, "slow.async_overrun") == "failed"


def test_retry_zero_files_a_failed_job_and_requeue_counts_attempts(
    client: FlaskClient, env: dict[str, str], redis_url: str
) -> None:
    db = env["RECORDING_DB"]
    with worker(env):
        post(client, "slow", "fail", {"n": 7})
        wait_until(lambda: "slow.fail" in cli(env, "failed"), 30, "the failed item")
        job = failed_job(redis_url, "slow.fail")
        assert job is not None and job.get_status() == "failed"
        result = job.latest_result()
        assert result is not None
        assert "Traceback" in (result.exc_string or "")
        assert "event 7 fails on purpose" in (result.exc_string or "")
        listing = cli(env, "failed")
        assert " 1 " in listing and "RuntimeError: event 7 fails on purpose" in listing

        assert "requeued 1 item(s)" in cli(env, "failed", "requeue", "--all")
        wait_until(lambda: len(runs(db, "start", "slow.fail")) == 2, 30, "the requeued attempt")
        wait_until(
            lambda: (
                failed_status(redis_url, "slow.fail") == "failed" and " 2 " in cli(env, "failed")
            ),
            30,
            "the second failure to be filed with 2 attempts",
        )


def test_abandoned_threads_past_the_limit_restart_the_worker(
    client: FlaskClient, env: dict[str, str], tmp_path: Path
) -> None:
    """Concurrency 1: a second hung thread is one too many; the worker restarts itself."""
    db = env["RECORDING_DB"]
    log = tmp_path / "worker.log"
    with worker(env, "--concurrency", "1", log=log) as process:
        for n in range(3):
            post(client, "slow", "hang", {"n": n})
        def shown() -> str:  # this test once timed out with nothing to go on
            return "worker log (end):\n" + log.read_text(errors="replace")[-6000:]

        wait_until(lambda: "restarting this worker" in log.read_text(), 60, "the restart", shown)
        wait_until(
            lambda: len(runs(db, "start", "slow.hang")) == 3, 60, "every hung event tried", shown
        )
        post(client, "slow", "fast", {"n": 9})
        wait_until(lambda: runs(db, "end", "slow.fast"), 30, "work after the restart", shown)
        assert process.poll() is None  # the same process (exec), still serving
        assert {pid for _, _, pid, _ in runs(db, "end", "slow.fast")} == {process.pid}
    assert runs(db, "end", "slow.hang") == []


@pytest.mark.slow
def test_inline_async_handlers_answer_concurrently_under_gunicorn(
    worker_env: dict[str, str],
) -> None:
    """The Procfile's gunicorn (gevent workers): many async previews at once, each answered."""
    port = free_port()
    env = {**worker_env, "RECEIVER_HANDLERS": "tests.plugins.async_preview"}
    web = subprocess.Popen(gunicorn_command(port), env=env, cwd=ROOT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web)

        def preview(n: int) -> Any:
            link = f"https://docs.example.com/{n}"
            body = envelope("link", {"field": "preview", "value": {"link": link}})
            answer = requests.post(
                f"http://127.0.0.1:{port}/webhook", data=body, headers=signed(body), timeout=30
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["data"], link

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(preview, range(32)))
    finally:
        stop(web)
    for data, link in answers:
        assert data == [{"link": link, "title": "async preview"}]
