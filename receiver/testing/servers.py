"""Real processes for tests: a private Redis server, free ports, gunicorn and worker runs.

What a test needs to run the receiver as it is deployed (``RedisServer`` on a
loopback port it can stop to simulate an outage, ``gunicorn_command`` as the
Procfile runs it, ``run_worker_burst``), kept apart from the in-process helpers.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis

from receiver.server.embedded import SERVER_VARIABLE, server_binary

PORTS_FROM = 10000
"""Lowest port ``free_port`` hands out."""


def free_port() -> int:
    """A loopback port nobody listens on, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) can be taken again, between this call
    and the server's bind, as the local end of any outgoing connection; a
    restarted server (an outage test) can lose its port the same way. Ports
    below the ephemeral range are never given to outgoing connections.
    """
    low = _ephemeral_ports_from()
    pick = random.SystemRandom()  # not the ``random`` module: tests may seed it
    for _ in range(200):
        port = pick.randrange(PORTS_FROM, low) if low > PORTS_FROM else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free loopback port between {PORTS_FROM} and {low}")


def _ephemeral_ports_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default (macOS's range starts higher)


def without_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less the receiver's settings, for a process a test configures itself;
    ``RECEIVER_REDIS_SERVER`` stays, since it picks the server a whole test run is on."""
    return {
        k: v for k, v in environ.items() if not k.startswith("RECEIVER_") or k == SERVER_VARIABLE
    }


class RedisServer:
    """A private server on a free loopback port; stop and start it to simulate outages.

    Its binary is the embedded default's (``RECEIVER_REDIS_SERVER`` picks another), so
    a suite runs on whichever supported server the environment names.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.binary = binary or server_binary()
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        """More ``redis-server`` options, e.g. ``["--rename-command", "CONFIG", ""]``."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--logfile",
                str(self.folder / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return
            except redis.AuthenticationError:
                return  # up, and asking for the password ``extra_args`` set
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start; see {self.folder}/redis.log"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def gunicorn_command(
    port: int,
    workers: int = 2,
    app: str = "receiver:create_app()",
    config: str | os.PathLike[str] = "python:receiver.deploy.gunicorn_config",
) -> list[str]:
    """gunicorn as the Procfile runs it, bound to ``127.0.0.1:port``."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(config),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        app,
    ]


def run_worker_burst(env: Mapping[str, str], cwd: str | os.PathLike[str] | None = None) -> None:
    """Run a real ``receiver worker`` until the queues are empty."""
    subprocess.run(
        [sys.executable, "-m", "receiver", "--log-level", "WARNING", "worker", "--burst"],
        env=dict(env),
        cwd=cwd,
        check=True,
        timeout=300,
    )
