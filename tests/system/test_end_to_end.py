"""End to end through real servers.

gunicorn + redis-server + `receiver worker`, and `receiver serve` on the embedded default.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from rq import Worker
from rq.worker import WorkerStatus

from receiver.testing import free_port, without_settings
from tests.conftest import SECRET, TOKEN, payload, signed
from tests.plugins.recording import calls
from tests.processes import (
    ROOT,
    gunicorn_command,
    receiver_command,
    stop,
    wait_for_http,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]  # starts servers of its own


@pytest.fixture
def gunicorn(worker_env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    web = subprocess.Popen(gunicorn_command(port), env=worker_env, cwd=ROOT)
    worker = subprocess.Popen(receiver_command("worker"), env=worker_env, cwd=ROOT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web)
        # A worker still starting up dies of SIGTERM (-15): wait until it is in its loop.
        wait_until(lambda: worker_working(worker, worker_env["REDIS_URL"]), what="the worker")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(web)
        assert stop(worker) == 0  # SIGTERM: warm shutdown, clean exit


def worker_working(process: subprocess.Popen[bytes], redis_url: str) -> bool:
    """The worker is in RQ's loop (idle or busy), with its warm-shutdown SIGTERM handler set."""
    if process.poll() is not None:
        raise AssertionError(f"the worker exited with {process.returncode}")
    with redis.Redis.from_url(redis_url) as connection:
        states = {w.get_state() for w in Worker.all(connection=connection)}
    return bool(states & {WorkerStatus.IDLE, WorkerStatus.BUSY})


def test_signed_post_runs_background_handler_in_worker(
    gunicorn: str, worker_env: dict[str, str]
) -> None:
    body = payload("group__comments__add.json")
    response = requests.post(f"{gunicorn}/webhook", data=body, headers=signed(body), timeout=10)
    assert response.status_code == 200, response.text

    db = worker_env["RECORDING_DB"]
    [(_, name, verb)] = wait_until(lambda: calls(db), what="the worker to run the handler")
    assert (name, verb) == ("group.comments", "add")


def test_bad_requests_through_gunicorn(gunicorn: str) -> None:
    body = payload("group__comments__add.json")
    cases = [
        (requests.post(f"{gunicorn}/webhook", data=body, timeout=10), 401),
        (
            requests.post(
                f"{gunicorn}/webhook", data=body, headers=signed(body, "wrong"), timeout=10
            ),
            403,
        ),
        (requests.post(f"{gunicorn}/webhook", data=b"x" * (5 * 1024 * 1024), timeout=10), 413),
        (requests.patch(f"{gunicorn}/webhook", timeout=10), 405),
        (
            requests.get(
                f"{gunicorn}/webhook",
                params={"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "xyz"},
                timeout=10,
            ),
            200,
        ),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
    assert cases[-1][0].text == "xyz"


def test_chunked_body_is_read_whole(gunicorn: str, worker_env: dict[str, str]) -> None:
    body = payload("group__posts__status_add.json")
    chunks = (body[i : i + 100] for i in range(0, len(body), 100))
    response = requests.post(f"{gunicorn}/webhook", data=chunks, headers=signed(body), timeout=10)
    assert response.status_code == 200, response.text


def test_serve_on_the_embedded_default(tmp_path: Path, worker_env: dict[str, str]) -> None:
    """`receiver serve` with no REDIS_URL: private Redis, worker beside it, cleaned up on Ctrl-C."""
    env = {k: v for k, v in worker_env.items() if k != "REDIS_URL"}
    env["RECEIVER_DATA_DIR"] = str(tmp_path / "data")
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        serve = subprocess.Popen(
            receiver_command("serve", "--port", str(port)), env=env, cwd=ROOT, stderr=log_file
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", serve)
        body = payload("group__posts__status_add.json")
        response = requests.post(
            f"http://127.0.0.1:{port}/webhook", data=body, headers=signed(body, SECRET), timeout=10
        )
        assert response.status_code == 200, response.text
        wait_until(lambda: calls(env["RECORDING_DB"]), what="the embedded worker")
        # Redis and Valkey from 7.0 keep a multi-part append-only file in a folder.
        assert any((tmp_path / "data" / "redis" / "appendonlydir").glob("*.aof"))
    finally:
        stop(serve, signal.SIGINT)
    log = log_path.read_text()
    assert "embedded server (" in log and str(tmp_path / "data") in log
    assert not (tmp_path / "data" / "redis" / "redis.sock").exists()  # stopped with serve


def test_serve_refuses_to_start_without_secret(tmp_path: Path) -> None:
    env = without_settings(os.environ)
    result = subprocess.run(
        receiver_command("serve"), env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert b"RECEIVER_APP_SECRET" in result.stderr
    assert b"Traceback" not in result.stderr
