"""`receiver serve` prints a hint that works pasted into a new shell, from any directory."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from receiver.cli.serving import banner
from receiver.server.embedded import EmbeddedRedis
from receiver.testing import free_port
from tests.processes import ROOT, stop, wait_until

pytestmark = pytest.mark.redis  # starts servers of its own

SECRET = "s3 cr$t'`x"  # quotes, a dollar and a backtick: the hint must survive a shell


class Terminal:
    """A pseudo-terminal a child writes to, as a developer's screen; everything it shows."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # the child closed its side
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        os.close(self.master)


def _clean_shell(cwd: Path, **extra: str) -> dict[str, str]:
    """A new shell: nothing of the receiver's set, no venv on PATH."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **extra}


def test_serve_hint_works_pasted_into_a_new_shell(tmp_path: Path) -> None:
    executable = Path(sys.executable).parent / "receiver"
    assert executable.exists(), "run the tests with the venv's python (the script sits beside it)"
    workdir = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))  # short: unix socket path limit
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": "token",
        "RECEIVER_HANDLERS": "handlers.welcome",
        "PYTHONPATH": str(ROOT),  # the example handlers live in the checkout
    }
    terminal = Terminal()
    server = subprocess.Popen(
        [str(executable), "serve", "--port", str(port)],
        stdin=terminal.slave,
        stdout=terminal.slave,
        stderr=terminal.slave,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    terminal.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        hint = wait_until(
            lambda: next((ln.strip() for ln in terminal.text.splitlines() if "| sh" in ln), None),
            timeout=60,
            what="the serve banner",
        )
        assert hint.startswith(f"{executable} sign --secret ")
        sample = hint.split()[-3]
        assert sample.endswith("group__membership__add.json") and Path(sample).is_absolute()
        wait_until(lambda: "Running on" in terminal.text, timeout=30, what="the server")

        pasted = subprocess.run(
            ["bash", "-c", hint],
            env=_clean_shell(elsewhere),
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
        )
        answer = json.loads(pasted.stdout)  # a 200 answers {delivery_id, events, queued}
        assert answer["events"] == 1 and answer["queued"] == 1, (answer, pasted.stderr)
        wait_until(
            lambda: "would welcome 100016022019646" in terminal.text,
            timeout=60,
            what="the example background handler handlers.welcome to run",
        )

        # Where stderr is no terminal the hint reads the secret from the environment.
        logged = banner("127.0.0.1", port, SECRET, show_secret=False)
        assert SECRET not in logged and '--secret "$RECEIVER_APP_SECRET"' in logged
        logged_hint = next(ln.strip() for ln in logged.splitlines() if "| sh" in ln)
        pasted = subprocess.run(
            ["bash", "-c", logged_hint],
            env=_clean_shell(elsewhere, RECEIVER_APP_SECRET=SECRET),
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(pasted.stdout)["events"] == 1, pasted.stderr
    finally:
        stop(server)
        terminal.close()
        EmbeddedRedis(workdir / ".receiver").stop()
        shutil.rmtree(workdir, ignore_errors=True)
