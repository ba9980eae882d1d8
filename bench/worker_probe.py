"""A gunicorn worker's cost per request: system calls (strace) or instructions (callgrind).

    .venv/bin/python bench/worker_probe.py syscalls bare|inline|durable [--worker-class gevent]
    .venv/bin/python bench/worker_probe.py instructions bare|inline|durable [--root PATH]
                                                [--keep FILE]

Serves one scenario of ``bench/http_bench.py`` (bare Flask, the receiver with an
inline no-op handler, or with a background no-op handler: the durable ack, no
worker draining) with the Procfile's gunicorn config on a private Redis, loads
it with the same ``wrk`` command and pool of distinct signed deliveries, and
prints per request:

- ``syscalls``: ``strace -c -f`` attached to every gunicorn worker for the load
  (two workers): each system call's count per request. strace slows the
  workers; the counts per request are what it is for.
- ``instructions``: one worker run under ``valgrind --tool=callgrind``,
  instrumented only during the load: user-space instructions per request,
  gunicorn's and gevent's included. Unlike CPU time, a busy machine does not
  change them; valgrind makes the worker ≈ 50× slower, so fewer requests are sent.

``--root`` serves another checkout's receiver (``git worktree add /tmp/base-ref
<commit>``): before and after. Every process started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import http_bench as hb  # noqa: E402
from receiver.testing import RedisServer, free_port, gunicorn_command  # noqa: E402

SCENARIOS = {"bare": hb.SCENARIOS[0], "inline": hb.SCENARIOS[2], "durable": hb.SCENARIOS[3]}


def syscalls(lab: hb.Lab, scenario: hb.Scenario, root: Path, duration: int) -> None:
    with hb.gunicorn(lab, scenario.app, lab.env, root) as (port, master):
        hb.warm_up(port)
        out = lab.folder / "strace.txt"
        command = ["strace", "-c", "-f", "-o", str(out)]
        for worker in psutil.Process(master).children():
            command += ["-p", str(worker.pid)]
        tracer = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # attached to every thread
            wrk = hb.run_wrk(lab, port, duration)
            time.sleep(0.5)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
    print(f"{wrk.requests} requests; system calls per request (strace -c -f on the workers):")
    total = 0
    for line in out.read_text().splitlines():
        parts = line.split()  # % time, seconds, usecs/call, calls, [errors,] name
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            total += int(parts[3])
            if int(parts[3]) / wrk.requests >= 0.01:
                print(f"  {parts[-1]:<16} {int(parts[3]) / wrk.requests:7.2f}")
    print(f"  {'total':<16} {total / wrk.requests:7.2f}")


def instructions(
    lab: hb.Lab, scenario: hb.Scenario, root: Path, duration: int, keep: Path | None
) -> None:
    port = free_port()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",
        f"--callgrind-out-file={lab.folder / 'callgrind-%p.out'}",
        *gunicorn_command(port, 1, scenario.app),
    ]
    with open(lab.folder / "gunicorn.log", "ab") as log:
        server = subprocess.Popen(command, env=lab.env, cwd=root, stdout=log, stderr=log)
    try:
        hb.wait_until(
            lambda: hb.answers(port) and len(psutil.Process(server.pid).children()) >= 1,
            300,
            "gunicorn under valgrind",
        )
        for i in range(20):
            hb.post(port, hb.delivery(hb.WARMUP_BASE + i))
        worker = psutil.Process(server.pid).children()[0].pid
        control = ["callgrind_control", "-i"]
        subprocess.run([*control, "on", str(worker)], check=True, capture_output=True)
        wrk = hb.run_wrk(lab, port, duration)
        subprocess.run([*control, "off", str(worker)], check=True, capture_output=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    text = (lab.folder / f"callgrind-{worker}.out").read_text()
    total = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:"))
    print(f"{wrk.requests} requests; {total / wrk.requests:,.0f} instructions per request "
          "(one worker, user space, callgrind)")
    if keep is not None:
        keep.write_text(text)
        print(f"callgrind profile kept in {keep} (callgrind_annotate --inclusive=yes {keep})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["syscalls", "instructions"])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--worker-class", default="gevent")
    parser.add_argument("--duration", type=int, default=None, help="seconds of wrk load")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument(
        "--keep", type=Path, help="instructions: save the worker's callgrind profile here"
    )
    args = parser.parse_args()
    hb.require_wrk()
    scenario = SCENARIOS[args.scenario]
    duration = args.duration or (5 if args.what == "syscalls" else 10)
    root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="worker-probe-") as name:
        folder = Path(name)
        (folder / "pool.lua").write_text(hb.WRK_SCRIPT)
        hb.write_pools(folder, hb.WRK_THREADS, duration * hb.POOL_RATE // hb.WRK_THREADS)
        redis_server = RedisServer(folder / "redis")
        redis_server.start()
        try:
            assert redis_server.process is not None
            env = hb.base_env(redis_server.url, folder / "data")
            env.update(GUNICORN_WORKER_CLASS=args.worker_class, PYTHONPATH=str(root))
            if scenario.handlers:
                env["RECEIVER_HANDLERS"] = scenario.handlers
            lab = hb.Lab(folder, redis_server.url, redis_server.process.pid, env)
            print(f"{args.scenario}, {root}, {args.worker_class} (Procfile config): ", end="")
            if args.what == "syscalls":
                syscalls(lab, scenario, root, duration)
            else:
                instructions(lab, scenario, root, duration, args.keep)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
