"""Realistic background handlers: each waits 50 ms on a loopback HTTP service.

    .venv/bin/python bench/slow_bench.py [--seconds 5] [--runs 1] [--concurrency 1,8,32]
    .venv/bin/python bench/slow_bench.py --ordered [--concurrency 32]

Starts a private redis-server and ``bench/slow_service.py`` (answers every
request after 50 ms, HTTP/1.1 keep-alive, real loopback sockets), then prints
events handled per second by ONE worker process, and its peak RSS, for:

- ``receiver worker --concurrency C`` running ``bench.slow_handlers.call`` (a
  plain function posting each event through a kept-alive httpx client), for
  each C; and ``call_async`` (``async def``, httpx.AsyncClient) at the largest C;
- the same worker with a no-op handler (``bench.noop``), 20,000 events;
- plain RQ, one job per event running the same call: ``SimpleWorker``, and
  ``rq worker-pool -n 2`` (per process: its total / 2).

Events are staged in Redis first, as the web side stores them, one per
delivery; the clock runs from the moment the worker (started and idle) is
kicked until nothing is pending or in flight, or, for RQ, from the burst
worker's start minus its start-up time measured on an empty queue. ``--ordered``
compares ``bench.slow_handlers.call_ordered`` (``ordered_by``) with 1,000 keys
to the same call unordered, and one hot key to unordered at concurrency 1. Every run
also checks that nothing failed or was scheduled for a retry. Nothing but
loopback; the machine's other load is not controlled, so read spreads, not digits.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import redis
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.model.events import Event  # noqa: E402
from receiver.queue import handoff, keys, ordering  # noqa: E402
from receiver.routing.handlers import Handler, HandlerFunc  # noqa: E402
from receiver.testing import RedisServer, free_port  # noqa: E402

QUEUE = "receiver"
STAGING = "bench:staging"


def stage(
    connection: redis.Redis, func: HandlerFunc, pattern: str, events: int, keys_: int = 0
) -> None:
    """One delivery per event, staged aside so no worker starts on them early.

    With ``keys_``, the handler is ordered by the event's ``k`` (``n`` modulo ``keys_``):
    its events go to their lanes at once and the lanes' wakes are staged instead.
    """
    topic, field = pattern.split(".") if "." in pattern else ("bench", "noop")
    ordered_by = (lambda event: event.value["k"]) if keys_ else None
    handler = Handler(func=func, pattern=pattern, background=True, ordered_by=ordered_by)
    woken: set[str] = set()
    with connection.pipeline(transaction=False) as pipe:
        for n in range(events):
            event = Event(
                topic=topic,
                field=field,
                value={"n": n, "k": str(n % keys_) if keys_ else None},
                id=f"{n:032x}",
                delivery_id=f"d{n}",
                integration="default",
            )
            ordered, unordered = ordering.split([(event, handler)])
            for packet in handoff.packets(f"d{n}", unordered, QUEUE).values():
                pipe.rpush(STAGING, packet.encode())
            for lane, element, wake in ordering.elements(f"d{n}", ordered, QUEUE).get(QUEUE, []):
                pipe.rpush(lane, element)
                if lane not in woken:
                    woken.add(lane)
                    pipe.rpush(STAGING, wake)
                    pipe.zadd(keys.lanes_key(QUEUE), {lane: time.time()})
        pipe.execute()


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def in_flight(connection: redis.Redis) -> bool:
    if connection.llen(keys.pending_key(QUEUE)):
        return True
    drainers = cast("list[bytes]", connection.zrange(keys.drainers_key(QUEUE), 0, -1))
    return any(connection.llen(keys.inflight_key(d.decode())) for d in drainers)


def check_clean(connection: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    failed = FailedJobRegistry(queue=queue).count
    retries = ScheduledJobRegistry(queue=queue).count  # type: ignore[no-untyped-call]
    assert failed == 0 and retries == 0, f"{failed} failed, {retries} retrying: not a clean run"


def receiver_rate(
    url: str,
    env: dict[str, str],
    func: HandlerFunc,
    pattern: str,
    events: int,
    concurrency: int,
    keys_: int = 0,
) -> tuple[float, float]:
    """Events/s of one `receiver worker --concurrency C`, and its peak RSS in MB (``keys_``:
    ordered by that many keys, see ``stage``)."""
    connection = redis.Redis.from_url(url)
    connection.flushall()
    stage(connection, func, pattern, events, keys_)
    command = [sys.executable, "-m", "receiver", "--log-level", "ERROR", "worker"]
    worker = subprocess.Popen([*command, "--concurrency", str(concurrency)], env=env, cwd=ROOT)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_mb(worker.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=connection) < 1:
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.05)
        sampler.start()
        start = time.perf_counter()
        connection.rename(STAGING, keys.pending_key(QUEUE))
        drainer = handoff.push(connection, QUEUE, [], max_drainers=1)
        if drainer is not None:
            handoff.start_drainer(connection, QUEUE, drainer, 180)
        while in_flight(connection):
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        peak[0] = max(peak[0], rss_mb(worker.pid))
        check_clean(connection)
        handled = sum(1 for _ in connection.scan_iter(match="receiver:state:*", count=1000))
        assert handled == events, f"{handled} of {events} events handled"
    finally:
        done.set()
        worker.terminate()
        worker.wait(timeout=60)
    return events / elapsed, peak[0]


def rq_rate(url: str, env: dict[str, str], events: int, command: list[str], workers: int) -> float:
    """Events/s of plain RQ workers running one `call_job` per event.

    Measured as the receiver is: workers started and idle first, then the jobs are
    enqueued, and the clock runs until none is queued or running.
    """
    connection = redis.Redis.from_url(url)
    connection.flushall()
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=connection) < workers:
            assert time.monotonic() < deadline, "RQ workers did not start"
            time.sleep(0.05)
        jobs = [
            Queue.prepare_data("bench.slow_handlers.call_job", args=(n,), result_ttl=0)
            for n in range(events)
        ]
        start = time.perf_counter()
        queue.enqueue_many(jobs)
        started = StartedJobRegistry(queue=queue)
        while queue.count or started.count:
            time.sleep(0.005)
        elapsed = time.perf_counter() - start
        assert FailedJobRegistry(queue=queue).count == 0, "RQ jobs failed: not a clean run"
    finally:
        # Not RQ's warm shutdown: a pool may take long to wind down, and nothing is left to do.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    return events / elapsed


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="rough length of each run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--delay", type=float, default=0.05, help="the service's answer delay")
    parser.add_argument(
        "--ordered", action="store_true", help="ordered_by: 1,000 keys and one hot key instead"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from bench.noop import noop
    from bench.slow_handlers import call, call_async

    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder) / "redis")
        server.start()
        port = free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "bench.slow_service", str(port), str(args.delay)], cwd=ROOT
        )
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "RECEIVER_APP_SECRET": "bench",
            "RECEIVER_VERIFY_TOKEN": "bench",
            "RECEIVER_HANDLERS": "bench.slow_handlers,bench.noop",
            "RECEIVER_DATA_DIR": str(Path(folder) / "data"),
            "SLOW_SERVICE_URL": f"http://127.0.0.1:{port}",
            "PYTHONPATH": str(ROOT),
        }
        os.environ["RECEIVER_DATA_DIR"] = env["RECEIVER_DATA_DIR"]
        try:
            time.sleep(0.5)
            ideal = 1 / args.delay
            print(
                f"{os.cpu_count()} cores; handler waits {args.delay * 1000:.0f} ms on loopback "
                f"HTTP; events/s per worker process, {args.runs} run(s) (median (min–max))\n"
            )
            print(f"{'':>46}  {'events/s':>22}  {'× ideal 1-at-a-time':>20}  {'peak RSS MB':>11}")

            def row(label: str, rates: list[float], rss: list[float] | None = None) -> None:
                ratio = statistics.median(rates) / ideal
                memory = f"{max(rss):.0f}" if rss else "-"
                print(f"{label:>46}  {spread(rates):>22}  {ratio:>20.1f}  {memory:>11}", flush=True)

            def receiver_row(
                label: str, func: HandlerFunc, pattern: str, c: int, n: int, keys_: int = 0
            ) -> float:
                results = [
                    receiver_rate(server.url, env, func, pattern, n, c, keys_)
                    for _ in range(args.runs)
                ]
                row(label, [r[0] for r in results], [r[1] for r in results])
                return statistics.median(r[0] for r in results)

            if args.ordered:
                ordered_rows(receiver_row, levels, ideal, args.seconds)
                return
            for c in levels:
                n = max(50, int(min(c, 40) * ideal * args.seconds * 0.8))
                receiver_row(
                    f"receiver worker, sync handler, concurrency {c}", call, "bench.sync", c, n
                )
            top = max(levels)
            # httpx.AsyncClient slows down past ~32 requests at once here, even in a bare
            # asyncio.gather without the receiver: the async row stays at 32.
            at = min(top, 32)
            n = max(50, int(min(at, 40) * ideal * args.seconds * 0.8))
            receiver_row(
                f"receiver worker, async handler, concurrency {at}",
                call_async,
                "bench.async",
                at,
                n,
            )
            rq = str(Path(sys.executable).with_name("rq"))
            common = ["-q", "-u", server.url, "-S", "rq.serializers.JSONSerializer", QUEUE]
            n = max(20, int(ideal * args.seconds * 0.8))
            simple = [rq, "worker", "-w", "rq.worker.SimpleWorker", *common]
            rates = [rq_rate(server.url, env, n, simple, 1) for _ in range(args.runs)]
            row("plain RQ SimpleWorker, 1 job per event", rates)
            pool = [rq, "worker-pool", "-n", "2", *common]
            rates = [rq_rate(server.url, env, 2 * n, pool, 2) / 2 for _ in range(args.runs)]
            row("rq worker-pool -n 2, per process", rates)
            for c in sorted({16, top}):
                receiver_row(
                    f"receiver worker, no-op handler, concurrency {c}", noop, "*", c, 20000
                )
        finally:
            service.terminate()
            service.wait(timeout=10)
            server.stop()


def ordered_rows(receiver_row: Any, levels: list[int], ideal: float, seconds: float) -> None:
    """``--ordered``: the same handler ordered by 1,000 keys next to it unordered, at each
    concurrency; then one hot key (one at a time) next to unordered at concurrency 1."""
    from bench.slow_handlers import call, call_ordered

    for c in levels:
        n = max(50, int(min(c, 40) * ideal * seconds * 0.8))
        free = receiver_row(f"unordered, concurrency {c}", call, "bench.sync", c, n)
        keyed = receiver_row(
            f"ordered by 1,000 keys, concurrency {c}", call_ordered, "bench.ordered", c, n, 1000
        )
        print(f"{'':>46}  ordered / unordered: {keyed / free:.2f}", flush=True)
    n = max(20, int(ideal * seconds * 0.8))
    alone = receiver_row("unordered, concurrency 1", call, "bench.sync", 1, n)
    top = max(levels)
    hot = receiver_row(
        f"one hot key, concurrency {top}", call_ordered, "bench.ordered", top, n, 1
    )
    print(f"{'':>46}  hot key / one at a time: {hot / alone:.2f}", flush=True)


if __name__ == "__main__":
    main()
