"""What ``durability = "replicated"`` adds to the acknowledgement, next to ``local``.

    .venv/bin/python bench/durability_bench.py [--duration 10] [--runs 3]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Starts a private master
(AOF on, everysec) and one replica of it on free loopback ports, then serves
the receiver with a background no-op handler (``bench.noop``) under gunicorn
as the Procfile does (``--workers 2``, the config's gevent workers), with one
``receiver worker`` beside it, once per durability:

- ``local``: acknowledged once the master holds the packet;
- ``replicated``: once the replica has confirmed it too (``WAIT 1 1000``);
- ``replicated+fsync``: once the master and the replica have fsynced it to
  their append-only files (``WAITAOF 1 1 2000``: ``replication_timeout`` 2 s),
  where the server has it; ``replicated+fsync/always`` runs it again with
  ``appendfsync always`` on both servers instead of ``everysec``.

Two loads per scenario, as ``bench/http_bench.py`` runs them:

- concurrent: ``wrk -t2 -c16`` for ``--duration`` seconds, distinct signed
  ~509-byte group.comments deliveries: req/s, p50/p99 latency, CPU µs per
  request (gunicorn master + workers), and WAITs per request (Redis's
  ``cmdstat_wait``/``cmdstat_waitaof`` calls over the requests): under
  ``replicated`` one WAIT serves every delivery that arrived while the
  previous one was in flight (group commit), so this is well under 1;
- sequential: one client posting one delivery at a time (fresh connection
  each) for ``--duration`` seconds: ack p50/p99 and CPU µs per request, where
  every delivery pays its own WAIT.

Every scenario and run gets flushed servers and fresh processes; ``--runs N``
reports medians (min–max). wrk, gunicorn, the worker, the master and the
replica share this machine's cores: the replica's acknowledgement costs
loopback round trips here, a network round trip in a real deployment.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import (  # noqa: E402
    POOL_RATE,
    RECEIVER_APP,
    WARMUP_REQUESTS,
    WRK_CONNECTIONS,
    WRK_SCRIPT,
    WRK_THREADS,
    Lab,
    base_env,
    cell,
    cpu_seconds,
    delivery,
    gunicorn,
    percentile,
    post,
    receiver_worker,
    require_wrk,
    run_wrk,
    wait_drained,
    warm_up,
    write_pools,
    wrk_version,
)
from receiver.queue.durability import WAITAOF_FROM  # noqa: E402
from receiver.server.supported import server_version  # noqa: E402
from receiver.testing import RedisServer  # noqa: E402

SEQUENTIAL_BASE = 800_000_000
"""Comment numbers of the sequential deliveries: apart from wrk's pool and the warm-up's."""


@dataclass(frozen=True)
class Scenario:
    label: str
    settings: dict[str, str]
    appendfsync: str = "everysec"
    """The master's and the replica's ``appendfsync`` for this scenario."""


FSYNC = {
    "RECEIVER_DURABILITY": "replicated",
    "RECEIVER_REPLICATION_FSYNC": "1",
    "RECEIVER_REPLICATION_TIMEOUT": "2",
}
SCENARIOS = (
    Scenario("local", {"RECEIVER_DURABILITY": "local"}),
    Scenario("replicated", {"RECEIVER_DURABILITY": "replicated"}),
    Scenario("replicated+fsync", FSYNC),
    Scenario("replicated+fsync/always", FSYNC, appendfsync="always"),
)


@dataclass(frozen=True)
class Outcome:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    waits_per_request: float
    non2xx: int
    seq_p50_ms: float
    seq_p99_ms: float
    seq_cpu_us: float


def waits(connection: redis.Redis) -> int:
    stats = connection.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("wait", "waitaof"))


def sequential(port: int, master: int, duration: int) -> tuple[list[float], float]:
    """One delivery at a time for ``duration`` seconds: walls, and CPU µs per request."""
    walls: list[float] = []
    cpu = cpu_seconds(master)
    deadline = time.monotonic() + duration
    n = SEQUENTIAL_BASE
    while time.monotonic() < deadline:
        status, wall = post(port, delivery(n))
        if status != 200:
            raise RuntimeError(f"sequential delivery answered {status}")
        walls.append(wall)
        n += 1
    return walls, (cpu_seconds(master) - cpu) / len(walls) * 1e6


def measure(lab: Lab, replica: redis.Redis, scenario: Scenario, duration: int) -> Outcome:
    lab.connection.flushall()
    for server in (lab.connection, replica):
        server.config_set("appendfsync", scenario.appendfsync)
    wait_until_replicated(lab.connection, replica)
    env = {**lab.env, "RECEIVER_HANDLERS": "bench.noop", **scenario.settings}
    with receiver_worker(lab, env), gunicorn(lab, RECEIVER_APP, env) as (port, master):
        warm_up(port)
        before, cpu = waits(lab.connection), cpu_seconds(master)
        wrk = run_wrk(lab, port, duration)
        cpu = cpu_seconds(master) - cpu
        waited = waits(lab.connection) - before
        walls, seq_cpu = sequential(port, master, duration)
        if wait_drained(lab.connection, timeout=max(60.0, 10.0 * duration)) is None:
            raise RuntimeError("the worker did not drain the queue")
    return Outcome(
        rate=wrk.rate,
        p50_ms=wrk.p50_us / 1000,
        p99_ms=wrk.p99_us / 1000,
        cpu_us=cpu / wrk.requests * 1e6,
        waits_per_request=waited / wrk.requests,
        non2xx=wrk.non2xx,
        seq_p50_ms=statistics.median(walls) * 1000,
        seq_p99_ms=percentile(walls, 0.99) * 1000,
        seq_cpu_us=seq_cpu,
    )


def wait_until_replicated(master: redis.Redis, replica: redis.Redis) -> None:
    """The replica online in the master's view, so ``replicated`` waits for it from the start."""
    deadline = time.monotonic() + 60
    while True:
        seen = master.info("replication").get("slave0")
        if isinstance(seen, dict) and seen.get("state") == "online" and replica.ping():
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not come online")
        time.sleep(0.1)


@contextlib.contextmanager
def servers(folder: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    fast = ["--repl-diskless-sync-delay", "0"]
    master = RedisServer(folder / "master", extra_args=fast)
    master.start()
    replica = RedisServer(folder / "replica", extra_args=fast)
    replica.extra_args += ["--replicaof", "127.0.0.1", str(master.port)]
    try:
        replica.start()
        yield master, replica
    finally:
        for server in (replica, master):
            if server.process is not None:
                server.process.kill()
                server.process.wait()


def print_table(results: dict[str, list[Outcome]]) -> None:
    header = (
        f"{'durability':<24}{'req/s':>18}{'p50 ms':>18}{'p99 ms':>18}{'CPU µs/req':>18}"
        f"{'WAITs/req':>18}{'non-2xx':>9}  |{'seq p50 ms':>18}{'seq p99 ms':>18}"
        f"{'seq CPU µs/req':>20}"
    )
    print(header)
    print("-" * len(header))
    for label, runs in results.items():
        print(
            f"{label:<24}"
            f"{cell([r.rate for r in runs]):>18}"
            f"{cell([r.p50_ms for r in runs], 2):>18}"
            f"{cell([r.p99_ms for r in runs], 2):>18}"
            f"{cell([r.cpu_us for r in runs]):>18}"
            f"{cell([r.waits_per_request for r in runs], 2):>18}"
            f"{sum(r.non2xx for r in runs):>9}  |"
            f"{cell([r.seq_p50_ms for r in runs], 2):>18}"
            f"{cell([r.seq_p99_ms for r in runs], 2):>18}"
            f"{cell([r.seq_cpu_us for r in runs]):>20}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of each load per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    require_wrk()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="durability-bench-") as name:
        folder = Path(name)
        (folder / "pool.lua").write_text(WRK_SCRIPT)
        write_pools(folder, WRK_THREADS, args.duration * POOL_RATE // WRK_THREADS)
        with servers(folder) as (master, replica):
            assert master.process is not None
            env = base_env(master.url, folder / "data")
            lab = Lab(folder, master.url, master.process.pid, env)
            found = server_version(lab.connection.info("server"))
            scenarios = [
                s
                for s in SCENARIOS
                if "RECEIVER_REPLICATION_FSYNC" not in s.settings
                or found.version >= WAITAOF_FROM.get(found.name, (999,))
            ]
            print(
                f"{os.cpu_count()} cores; {wrk_version()}; {found} ({master.binary}), master "
                "AOF everysec + 1 replica on loopback; gunicorn --workers 2 (gevent), 1 worker\n"
                f"concurrent: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.duration}s after "
                f"{WARMUP_REQUESTS} warm-up requests; sequential: one client, "
                f"{args.duration}s; "
                + (f"median of {args.runs} runs (min–max)" if args.runs > 1 else "1 run")
                + "\n"
            )
            client = redis.Redis(port=replica.port, socket_timeout=10)
            results: dict[str, list[Outcome]] = {s.label: [] for s in scenarios}
            for _ in range(args.runs):
                for scenario in scenarios:
                    results[scenario.label].append(measure(lab, client, scenario, args.duration))
            print_table(results)


if __name__ == "__main__":
    main()
