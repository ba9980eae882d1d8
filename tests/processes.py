"""Helpers for tests that run real processes: gunicorn, `receiver worker`, `receiver serve`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

from receiver import testing

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def receiver_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "receiver", *args]


def gunicorn_command(port: int, workers: int = 2) -> list[str]:
    return testing.gunicorn_command(port, workers, config=ROOT / "config" / "gunicorn.conf.py")


def wait_until(check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
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
