"""Python-level profile of one live gunicorn worker: which functions run per request.

    .venv/bin/python bench/worker_profile.py inline|durable|bare [--worker-class gevent|sync]
        [--duration 5] [--top 60] [--keep FILE]

callgrind (``bench/worker_probe.py``) counts a worker's instructions but shows C
functions only. This serves one scenario of ``bench/http_bench.py`` with the
Procfile's config plus cProfile over the whole worker
(``bench/profiled_gunicorn_config.py``), loads it with the same ``wrk`` command,
and prints the functions called most per request (call counts are exact; times
are inflated by the profiler). The request count is gunicorn's ``handle_request``
calls, warm-up included. ``--keep`` saves the pstats file.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import http_bench as hb  # noqa: E402
from bench.worker_probe import SCENARIOS  # noqa: E402
from receiver.testing import RedisServer, free_port, gunicorn_command  # noqa: E402


def profile(lab: hb.Lab, scenario: hb.Scenario, duration: int) -> Path:
    port = free_port()
    command = gunicorn_command(
        port, 1, scenario.app, config="python:bench.profiled_gunicorn_config"
    )
    env = {**lab.env, "WORKER_PROFILE_DIR": str(lab.folder)}
    with open(lab.folder / "gunicorn.log", "ab") as log:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        hb.wait_until(
            lambda: hb.answers(port) and len(psutil.Process(server.pid).children()) >= 1,
            60,
            "gunicorn",
        )
        hb.warm_up(port)
        wrk = hb.run_wrk(lab, port, duration)
        print(f"{wrk.requests} requests from wrk")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    found = sorted(lab.folder.glob("worker-*.prof"))
    if not found:
        raise RuntimeError((lab.folder / "gunicorn.log").read_text()[-3000:])
    return found[0]


Row = tuple[str, int, str]


def per_request(path: Path) -> tuple[int, dict[Row, tuple[float, float]]]:
    """Requests handled, and each function's (calls, own seconds) per request."""
    table = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    requests = sum(
        nc
        for (file, _, name), (_, nc, *_) in table.items()
        if name == "handle_request" and file.endswith(("base_async.py", "gthread.py", "sync.py"))
    )
    return requests, {
        key: (ncalls / requests, tottime / requests)
        for key, (_, ncalls, tottime, *_) in table.items()
    }


def _name(key: Row) -> str:
    file, line, name = key
    return f"{'/'.join(file.split('/')[-2:])}:{line}({name})"


def report(path: Path, top: int, against: Path | None) -> None:
    requests, rows = per_request(path)
    if against is None:
        print(f"{requests} requests handled; calls per request, most first:")
        for key, (calls, own) in sorted(rows.items(), key=lambda kv: -kv[1][0])[:top]:
            print(f"  {calls:8.2f}  {own * 1e6:7.1f}us  {_name(key)}")
        return
    _, base = per_request(against)
    print(f"{requests} requests handled; calls per request, this minus {against}:")
    keys = set(rows) | set(base)
    diff = {k: rows.get(k, (0.0, 0.0))[0] - base.get(k, (0.0, 0.0))[0] for k in keys}
    for key in sorted(keys, key=lambda k: -abs(diff[k]))[:top]:
        print(f"  {diff[key]:+8.2f}  ({rows.get(key, (0.0, 0.0))[0]:6.2f})  {_name(key)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--worker-class", default="gevent")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--against", type=Path, help="a kept profile: print the difference")
    parser.add_argument("--show", type=Path, help="report a kept profile, serve nothing")
    args = parser.parse_args()
    if args.show is not None:
        report(args.show, args.top, args.against)
        return
    hb.require_wrk()
    scenario = SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory(prefix="worker-profile-") as name:
        folder = Path(name)
        (folder / "pool.lua").write_text(hb.WRK_SCRIPT)
        hb.write_pools(folder, hb.WRK_THREADS, args.duration * hb.POOL_RATE // hb.WRK_THREADS)
        redis_server = RedisServer(folder / "redis")
        redis_server.start()
        try:
            assert redis_server.process is not None
            env = hb.base_env(redis_server.url, folder / "data")
            env.update(GUNICORN_WORKER_CLASS=args.worker_class)
            if scenario.handlers:
                env["RECEIVER_HANDLERS"] = scenario.handlers
            lab = hb.Lab(folder, redis_server.url, redis_server.process.pid, env)
            path = profile(lab, scenario, args.duration)
            if args.keep is not None:
                shutil.copyfile(path, args.keep)
            report(path, args.top, args.against)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
