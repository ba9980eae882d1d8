"""Durable-queue benchmark: ack cost of background work, and worker drain rate.

    .venv/bin/python bench/queue_bench.py [--events 20000] [--runs 3]
    .venv/bin/python bench/queue_bench.py --drain-only --before /tmp/base  # before/after
    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/queue_bench.py \
        --in-process 2000 --callgrind    # instructions of one drain job, this process

Starts a private redis-server (AOF on, everysec) on a free loopback port,
and prints, in one run on this machine:

- ack cost: ``Core.handle`` of a signed delivery whose events all go to a
  background handler (verify, parse, route, one Lua round trip to Redis),
  for deliveries of 1, 10, 100 and 1,000 changes: wall ms per delivery
  (p50) and CPU µs per event;
- drain: no-op background events handled per second by `receiver worker`
  processes (1 and 2), next to plain RQ ``SimpleWorker`` draining one no-op
  job per event. Workers start idle and the clock runs from the kick until
  the queue is empty; they log as shipped (INFO: a line per attempt, to a
  file), and count and trace every attempt.

Medians of ``--runs`` runs, with the spread (min–max). Nothing but loopback.

``--in-process N`` runs one drain job over N one-event packets in this process
instead, as ``receiver worker`` runs it (its handler threads, its log line to a
file at INFO, metrics, traces), after a warm-up drain, and prints its CPU per
event; with ``--callgrind``, under ``valgrind --tool=callgrind
--instr-atstart=no``, only that drain is counted (instructions per event: the
total divided by N, which a busy machine does not change). To count another
checkout, run its copy of this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import psutil
import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver import Router, build_core  # noqa: E402
from receiver.core.handling import Headers, Request  # noqa: E402
from receiver.core.signature import signature_headers  # noqa: E402
from receiver.queue import handoff, keys  # noqa: E402
from receiver.testing import RedisServer  # noqa: E402

SECRET = "bench-secret"
QUEUE = "receiver"


def delivery(changes: int, salt: int) -> bytes:
    return json.dumps(
        {
            "object": "group",
            "entry": [
                {
                    "id": "g",
                    "time": 1700000000 + salt,
                    "changes": [
                        {
                            "field": "posts",
                            "value": {"verb": "add", "n": salt * 10000 + i, "message": "x" * 200},
                        }
                        for i in range(changes)
                    ],
                }
            ],
        }
    ).encode()


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):9.2f}  ({min(values):.2f}–{max(values):.2f})"


def ack_cost(url: str, changes: int, count: int) -> tuple[float, float]:
    """p50 wall ms per delivery, CPU µs per event."""
    router = Router()
    from bench.noop import noop

    router.connect("*", noop, background=True)
    core = build_core(
        {
            "receiver": {"redis_url": url, "max_drainers": 1},
            "integrations": {"default": {"app_secrets": [SECRET], "verify_token": "t"}},
        },
        router=router,
    )
    bodies = [delivery(changes, salt) for salt in range(count)]
    requests = [Request("POST", b, Headers(signature_headers(b, SECRET))) for b in bodies]
    walls = []
    cpu_start = time.process_time()
    for request in requests:
        start = time.perf_counter()
        result = core.handle(request)
        walls.append(time.perf_counter() - start)
        assert result.status == 200 and result.stored == "redis", result.body
    cpu = time.process_time() - cpu_start
    return statistics.median(walls) * 1000, cpu / (count * changes) * 1e6


STAGING = "bench:staging"


def preload(connection: redis.Redis, events: int, per_delivery: int) -> None:
    """Packets as the web side stores them, staged aside so no worker starts on them early."""
    from bench.noop import noop
    from receiver.model.events import Event
    from receiver.routing.handlers import Handler

    handler = Handler(func=noop, pattern="*", background=True)
    for start in range(0, events, per_delivery):
        work = [
            (
                Event(
                    topic="group",
                    field="posts",
                    value={"n": n},
                    id=f"{n:032x}",
                    delivery_id="d",
                    integration="default",
                ),
                handler,
            )
            for n in range(start, min(events, start + per_delivery))
        ]
        for packet in handoff.packets(f"d{start}", work, QUEUE).values():
            connection.rpush(STAGING, packet.encode())


LOG_LEVEL = "INFO"
"""Workers log as shipped: one line per attempt (``receiver worker --log-level``)."""


def drain_rate(
    url: str,
    events: int,
    per_delivery: int,
    processes: int,
    env: dict[str, str],
    root: Path = ROOT,
) -> tuple[float, float]:
    """Events per second of wall time, and per second of the workers' CPU.

    Workers started and idle first; the clock runs from the kick until the queue
    is empty. The CPU rate is what a process with a core to itself would reach:
    on a shared machine the wall rate also counts other processes' turns.
    """
    connection = redis.Redis.from_url(url)
    connection.flushall()
    preload(connection, events, per_delivery)
    command = [sys.executable, "-m", "receiver", "--log-level", LOG_LEVEL, "worker"]
    # The shipped level, INFO: a line per attempt, written to a file as a deployment's would be.
    with tempfile.TemporaryFile() as log:
        workers = [
            subprocess.Popen(
                command, env={**env, "PYTHONPATH": str(root)}, cwd=root, stderr=log
            )
            for _ in range(processes)
        ]
        return _timed_drain(connection, workers, events, processes)


def _timed_drain(
    connection: redis.Redis, workers: list[subprocess.Popen[bytes]], events: int, processes: int
) -> tuple[float, float]:
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=connection) < processes:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        cpu = _cpu_seconds(workers)
        start = time.perf_counter()
        connection.rename(STAGING, keys.pending_key(QUEUE))
        for _ in range(processes):
            drainer = handoff.push(connection, QUEUE, [], max_drainers=processes)
            if drainer is not None:
                handoff.start_drainer(connection, QUEUE, drainer, 180)
        while not drained(connection):
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(workers) - cpu
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    return events / elapsed, events / cpu * processes


def _cpu_seconds(workers: list[subprocess.Popen[bytes]]) -> float:
    """User and system CPU of the worker processes so far."""
    return sum(sum(psutil.Process(w.pid).cpu_times()[:2]) for w in workers)


def drained(connection: redis.Redis) -> bool:
    """Nothing pending and nothing in flight (an idle drainer lingers with an empty list)."""
    if connection.llen(keys.pending_key(QUEUE)):
        return False
    drainers = cast("list[bytes]", connection.zrange(keys.drainers_key(QUEUE), 0, -1))
    return not any(connection.llen(keys.inflight_key(d.decode())) for d in drainers)


def rq_rate(url: str, events: int, env: dict[str, str]) -> tuple[float, float]:
    """Plain RQ's events per second of wall time and per second of its CPU, as ``drain_rate``.

    The worker times its own ``work(burst=True)`` after its imports, and reports it: a
    process's start-up is not in the figure (subtracting an empty burst's time from a full
    one's, as this did before, could leave nearly nothing and print an absurd rate).
    """
    connection = redis.Redis.from_url(url)
    connection.flushall()
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    for start in range(0, events, 500):
        batch = [
            Queue.prepare_data("bench.noop.noop_job", args=(n,), result_ttl=0)
            for n in range(start, min(events, start + 500))
        ]
        queue.enqueue_many(batch)
    code = (
        "import time, redis; from rq import Queue, SimpleWorker;"
        "from rq.serializers import JSONSerializer;"
        f"c = redis.Redis.from_url({url!r});"
        f"w = SimpleWorker([Queue({QUEUE!r}, connection=c, serializer=JSONSerializer)],"
        " connection=c, serializer=JSONSerializer);"
        "t, cpu = time.perf_counter(), time.process_time();"
        "w.work(burst=True, logging_level='ERROR');"
        "print(time.perf_counter() - t, time.process_time() - cpu)"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=True, timeout=600)
    assert queue.count == 0
    elapsed, cpu = (float(part) for part in done.stdout.split())
    return events / elapsed, events / cpu


def print_drain_table(
    url: str,
    events: int,
    runs: int,
    env: dict[str, str],
    root: Path = ROOT,
    *,
    before: Path | None = None,
    plain_rq: bool = True,
) -> None:
    """Worker drain rates: plain RQ one job per event, then `receiver worker` × 1 and × 2,
    run from the checkout ``root``; with ``before``, that checkout's workers too, each of
    its runs next to one of ``root``'s (back to back, same machine state)."""
    env = {**env, "RECEIVER_HANDLERS": "bench.noop", "REDIS_URL": url}
    print(f"\nworker drain, no-op background handler, {events} events")
    print(f"{'':>48}  {'events/s':>26}  {'events per worker CPU s':>26}")
    if plain_rq:
        rq = [rq_rate(url, events // 4, env) for _ in range(runs)]
        label = "plain RQ SimpleWorker, 1 job per event"
        print(
            f"{label:>48}  {median_spread([r[0] for r in rq]):>26}"
            f"  {median_spread([r[1] for r in rq]):>26}"
        )
    roots = [(before, " (before)"), (root, "")] if before is not None else [(root, "")]
    for per_delivery in (1, 100):
        for processes in (1, 2):
            rates: dict[Path, list[tuple[float, float]]] = {r: [] for r, _ in roots}
            for _ in range(runs):
                for checkout, _ in roots:
                    rates[checkout].append(
                        drain_rate(url, events, per_delivery, processes, env, checkout)
                    )
            for checkout, which in roots:
                label = f"receiver{which}, {per_delivery} ev/delivery, {processes} proc"
                found = rates[checkout]
                print(
                    f"{label:>48}  {median_spread([r[0] for r in found]):>26}"
                    f"  {median_spread([r[1] for r in found]):>26}"
                )


def drain_in_process(url: str, events: int, callgrind: bool) -> None:
    """One drain job over ``events`` one-event packets, run here (see the module's doc)."""
    import logging

    from receiver.app import build_core, work_context
    from receiver.core.runner import Runner
    from receiver.observe import logsafe
    from receiver.worker import claims, drain
    from receiver.worker.process import WORKER_REDIS_TIMEOUT

    log_file = tempfile.TemporaryFile("w+")
    # A worker's INFO line per attempt, to a file, in batches as `receiver worker` writes them
    handler = logsafe.BatchedStreamHandler(log_file)
    handler.setFormatter(logsafe.formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(LOG_LEVEL)
    core = build_core(require_redis=True, redis_timeout=WORKER_REDIS_TIMEOUT)
    context = work_context(core)
    context.runner = Runner(context.settings.worker_concurrency)
    claims.configure(context)
    drain.BUDGET = float("inf")  # no hand-over mid-count (valgrind runs ≈ 50× slower)
    connection = redis.Redis.from_url(url)
    for count in (200, events):  # a warm-up, then the drain measured
        connection.flushall()
        preload(connection, count, 1)
        connection.rename(STAGING, keys.pending_key(QUEUE))
        if callgrind and count == events:
            _callgrind("on")
        cpu = time.process_time()
        done = drain.drain(QUEUE)
        cpu = time.process_time() - cpu
        if callgrind and count == events:
            _callgrind("off")
        assert done["events"] == count, done
    print(
        f"one drain job in this process: {events} events, {cpu:.2f} s CPU (its idle second "
        f"waiting for more costs ≈ none), {cpu / events * 1e6:.1f} µs per event"
    )


def _callgrind(state: str) -> None:
    subprocess.run(
        ["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="events per drain measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--drain-only", action="store_true", help="only the worker drain table, without plain RQ"
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another checkout whose workers drain too, run for run next to this one's",
    )
    parser.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="only one drain job of N events, in this process (CPU per event)",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="with --in-process, under valgrind --tool=callgrind --instr-atstart=no: "
        "count that drain only",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis")
        server.start()
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "RECEIVER_APP_SECRET": SECRET,
            "RECEIVER_VERIFY_TOKEN": "t",
            "RECEIVER_HANDLERS": "bench.noop",
            "RECEIVER_DATA_DIR": str(Path(folder) / "data"),
            "PYTHONPATH": str(ROOT),
        }
        os.environ["RECEIVER_DATA_DIR"] = env["RECEIVER_DATA_DIR"]
        try:
            if args.in_process:
                os.environ.update(env)
                drain_in_process(server.url, args.in_process, args.callgrind)
                return
            print(
                f"redis-server {server.binary} (AOF everysec), {os.cpu_count()} cores, "
                f"median of {args.runs} runs (min–max)\n"
            )
            sizes = () if args.drain_only else ((1, 2000), (10, 500), (100, 100), (1000, 20))
            if sizes:
                print("ack path, background no-op handler (verify + parse + route + store)")
                print(f"{'changes/delivery':>18}  {'p50 ms/delivery':>26}  {'CPU µs/event':>26}")
            for changes, count in sizes:
                results = [ack_cost(server.url, changes, count) for _ in range(args.runs)]
                redis.Redis.from_url(server.url).flushall()
                print(
                    f"{changes:>18}  {median_spread([r[0] for r in results]):>26}  "
                    f"{median_spread([r[1] for r in results]):>26}"
                )
            print_drain_table(
                server.url,
                args.events,
                args.runs,
                env,
                before=args.before.resolve() if args.before else None,
                plain_rq=not args.drain_only,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
