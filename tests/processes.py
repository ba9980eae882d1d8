"""Helpers for tests that run real processes: gunicorn, `receiver worker`, `receiver serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests

from receiver import testing

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def receiver_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "receiver", *args]


gunicorn_command = testing.gunicorn_command


def wait_until(
    check: Callable[[], T],
    timeout: float = 30.0,
    what: str = "condition",
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds,
    with ``context()`` (a process's log, say) in the message when given."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            shown = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{shown}")
        time.sleep(0.1)


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before answering")
        try:
            return requests.get(url, timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    wait_until(ready, timeout, f"{url} to answer")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with one line on stderr, ``Error: ...``, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def stop(process: subprocess.Popen[bytes], signal_number: int | None = None) -> int:
    if process.poll() is None:
        if signal_number is None:
            process.terminate()
        else:
            process.send_signal(signal_number)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started in a session of its own, with its children (a worker's
    scheduler); SIGKILL them all if they are not gone within 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Served:
    """A gunicorn started by ``gunicorn_on_own_redis``."""

    url: str
    log_path: Path
    redis: testing.RedisServer
    env: dict[str, str]
    """Its environment: for a worker or a command beside it."""

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextmanager
def gunicorn_on_own_redis(
    folder: Path, env: dict[str, str], workers: int = 2
) -> Iterator[Served]:
    """The Procfile's gunicorn on a free port, with a Redis of its own, answering /healthz.

    ``env`` adds to the test process's environment stripped of ``RECEIVER_*`` (it must
    hold the secrets); gunicorn's output goes to ``folder/gunicorn.log``.
    """
    server = testing.RedisServer(folder / "redis")
    server.start()
    full = testing.without_settings(os.environ)
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the config makes a fresh one per start
    full.update(
        REDIS_URL=server.url,
        RECEIVER_DATA_DIR=str(folder / "data"),
        PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]),
        **env,
    )
    port = testing.free_port()
    log_path = folder / "gunicorn.log"
    with open(log_path, "wb") as log_file:
        web = subprocess.Popen(
            gunicorn_command(port, workers), env=full, cwd=ROOT, stdout=log_file, stderr=log_file
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web)
        yield Served(f"http://127.0.0.1:{port}", log_path, server, full)
    finally:
        stop(web)
        server.stop()
