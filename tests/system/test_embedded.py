"""The embedded default's life: one owner at a time, restarts that come back healthy.

Real processes: ``receiver serve`` (web, worker and embedded server) started,
stopped with Ctrl-C and started again at once, as a developer does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from receiver.core.signature import signature_headers
from receiver.server.embedded import EmbeddedRedis
from receiver.testing import free_port, group_comment, without_settings
from tests.conftest import SECRET, TOKEN
from tests.plugins import recording
from tests.processes import ROOT, stop, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]


class Serve:
    """``receiver serve`` in a folder of its own, its output in ``log``."""

    def __init__(self, workdir: Path, port: int, db: str, name: str) -> None:
        self.log = workdir / f"{name}.log"
        env = {
            **without_settings(os.environ),
            "RECEIVER_APP_SECRET": SECRET,
            "RECEIVER_VERIFY_TOKEN": TOKEN,
            "RECEIVER_HANDLERS": "tests.plugins.recording",
            "RECEIVER_DATA_DIR": str(workdir / ".receiver"),
            "RECORDING_DB": db,
            "PYTHONPATH": str(ROOT),
        }
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "receiver", "serve", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
            )
        self.url = f"http://127.0.0.1:{port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def deliver(self, comment_id: str) -> dict[str, object]:
        body = json.dumps(group_comment(comment_id=comment_id, message=comment_id)).encode()
        answer = requests.post(
            f"{self.url}/webhook", data=body, headers=signature_headers(body, SECRET), timeout=30
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, object] = answer.json()
        return result

    def deliver_and_wait(self, comment_id: str, db: str) -> None:
        """A background delivery, acknowledged as queued, then handled by serve's worker."""
        assert self.deliver(comment_id)["queued"] == 1
        wait_until(
            lambda: comment_id in _handled(db),
            timeout=60,
            what=f"delivery {comment_id} to be handled",
            context=self.text,
        )


@pytest.fixture
def workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="re-", dir="/tmp"))  # short: unix socket limit
    yield folder
    EmbeddedRedis(folder / ".receiver").stop()


def _port_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _handled(db: str) -> set[str]:
    return {json.loads(data)["value"]["comment_id"] for (data,) in recording.successful(db, "data")}


def test_serve_restarted_at_once_comes_back_healthy(workdir: Path) -> None:
    """Ctrl-C, then ``serve`` again as soon as the port is free: the new process waits for the
    old one to stop its server, instead of adopting a server about to be shut down."""
    port = free_port()
    db = str(workdir / "calls.sqlite")
    first = Serve(workdir, port, db, "first")
    second = None
    try:
        wait_until(first.ready, timeout=60, what="the first serve", context=first.text)
        assert first.deliver("before")["queued"] == 1
        wait_until(lambda: "before" in _handled(db), timeout=60, what="the first delivery")

        first.process.send_signal(signal.SIGINT)
        wait_until(lambda: _port_closed(port), timeout=30, what="the first serve to let go")
        second = Serve(workdir, port, db, "second")
        assert first.process.wait(timeout=60) == 0
        wait_until(second.ready, timeout=60, what="the second serve", context=second.text)

        # The old process's shutdown came 1.3 s after the new start on the old code: give it
        # time to do harm, then ask again.
        time.sleep(3)
        assert second.ready(), second.text()
        second.deliver_and_wait("after", db)
        # Its server never went away under it (the watchdog would have had to step in).
        assert "stopped answering" not in second.text(), second.text()
        assert "spool" not in second.text().lower(), second.text()
    finally:
        stop(first.process, signal.SIGINT)
        if second is not None:
            assert stop(second.process, signal.SIGINT) == 0, second.text()
    assert not EmbeddedRedis(workdir / ".receiver").running(), "serve left its server running"


def test_a_folder_has_one_owner_and_the_next_waits_for_it(workdir: Path) -> None:
    from receiver.errors import ConfigError

    owner = EmbeddedRedis(workdir / ".receiver")
    owner.claim()
    try:
        assert owner.owner() == os.getpid()
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}.*RECEIVER_DATA_DIR"):
            EmbeddedRedis(workdir / ".receiver").claim(wait=0.3)
    finally:
        owner.release()
    assert owner.owner() is None
    successor = EmbeddedRedis(workdir / ".receiver")
    successor.claim(wait=0.3)
    successor.release()


def test_serve_starts_its_server_again_when_it_dies(workdir: Path) -> None:
    port = free_port()
    db = str(workdir / "calls.sqlite")
    serve = Serve(workdir, port, db, "serve")
    try:
        wait_until(serve.ready, timeout=60, what="serve", context=serve.text)
        pidfile = workdir / ".receiver" / "redis" / "redis.pid"
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        wait_until(
            lambda: "stopped answering; starting it again" in serve.text(),
            timeout=30,
            what="the watchdog",
            context=serve.text,
        )
        wait_until(serve.ready, timeout=30, what="readiness again", context=serve.text)
        serve.deliver_and_wait("revived", db)
    finally:
        assert stop(serve.process, signal.SIGINT) == 0, serve.text()


def test_embedded_command_shows_and_stops_the_server_unless_serve_owns_it(workdir: Path) -> None:
    env = {
        **without_settings(os.environ),
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_DATA_DIR": str(workdir / ".receiver"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "receiver", "embedded", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    server = EmbeddedRedis(workdir / ".receiver")
    server.ensure_running()
    assert "  running  " in run().stdout
    server.claim()  # as `serve` does
    try:
        refused = run("stop")
        assert refused.returncode == 1 and f"pid {os.getpid()}" in refused.stderr
        assert server.running()
    finally:
        server.release()
    stopped = run("stop")
    assert stopped.returncode == 0 and "stopped; data kept" in stopped.stdout, stopped.stderr
    assert not server.running()
    assert "  stopped  " in run().stdout
