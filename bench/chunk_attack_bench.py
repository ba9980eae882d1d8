"""Does costly chunked framing hold a web worker? ``/healthz`` latency under one-byte chunks.

    .venv/bin/python bench/chunk_attack_bench.py [--clients 4] [--bytes 4194304] [--rounds 2]

Starts a private Redis and the Procfile's gunicorn (2 workers) on free
loopback ports; ``--clients`` connections each send an unsigned POST whose
body is ``--bytes`` one-byte chunks (six bytes on the wire per byte), as an
attacker without the secret could, ``--rounds`` times; meanwhile a probe
asks ``/healthz`` every half second. Prints the probe's latencies. Bounded:
every attack request ends within the receiver's ``read_timeout``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.testing import RedisServer, free_port, gunicorn_command, without_settings  # noqa: E402


def exchange(port: int, data: bytes, timeout: float) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the server hung up on the attack: that is the point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    head = (
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    attack = head + b"1\r\nx\r\n" * args.bytes + b"0\r\n\r\n"
    probe = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis")
        server.start()
        port = free_port()
        env = {
            **without_settings(os.environ),
            "REDIS_URL": server.url,
            "RECEIVER_APP_SECRET": "bench-secret",
            "RECEIVER_VERIFY_TOKEN": "bench-token",
            "RECEIVER_DATA_DIR": str(Path(folder) / "data"),
            "RECEIVER_LOG_LEVEL": "warning",
        }
        web = subprocess.Popen(gunicorn_command(port), env=env, cwd=ROOT)
        try:
            time.sleep(3)
            latencies: list[float] = []
            done = threading.Event()

            def attacker() -> None:
                for _ in range(args.rounds):
                    exchange(port, attack, timeout=120)

            def prober() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    exchange(port, probe, timeout=60)
                    latencies.append(time.monotonic() - started)
                    done.wait(0.5)

            attackers = [threading.Thread(target=attacker) for _ in range(args.clients)]
            watcher = threading.Thread(target=prober)
            began = time.monotonic()
            for thread in (*attackers, watcher):
                thread.start()
            for thread in attackers:
                thread.join()
            done.set()
            watcher.join()
            print(
                f"{args.clients} clients × {args.rounds} bodies of {args.bytes} one-byte chunks "
                f"took {time.monotonic() - began:.1f} s; /healthz during it: "
                f"{len(latencies)} probes, median {statistics.median(latencies):.2f} s, "
                f"max {max(latencies):.2f} s"
            )
        finally:
            web.terminate()
            web.wait(timeout=30)
            server.stop()


if __name__ == "__main__":
    main()
