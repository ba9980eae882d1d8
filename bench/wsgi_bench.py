"""The web process's CPU per request, in-process: the WSGI app called directly, no server.

    .venv/bin/python bench/wsgi_bench.py [--count 5000] [--runs 3] [--scenario inline]
                                         [--changes N] [--profile FILE] [--gevent]

What ``bench/http_bench.py`` measures less gunicorn, gevent and the kernel,
and so far steadier on a shared machine: bare Flask (``bench.reference_apps:bare``)
and the receiver as the Procfile runs it (a log line per request at INFO,
escaped text, to a file; prometheus_client's multiprocess mode; traces and
stats written by the background thread to a private Redis), with an inline
no-op handler (``inline``) or a background no-op handler (``durable``: the
packet stored in Redis before the answer; no worker runs). Each request is a
distinct signed delivery (``--changes`` group comments) on a WSGI environ as
gunicorn builds it. CPU is this process's (all threads: the trace writer's
too: traces are flushed and metrics folded once per run, before the clock stops, as
a busy process does them in large batches), per request, median of ``--runs``;
``--profile FILE`` writes a cProfile of the receiver's last run.
For instruction counts, which a busy machine does not change::

    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/wsgi_bench.py \\
        --callgrind --no-bare --scenario inline --count 200 --runs 1

(the total in callgrind's summary, divided by ``--count`` × ``--runs``).
"""

from __future__ import annotations

import sys

if "--gevent" in sys.argv:  # before anything imports threading or sockets, as gunicorn does
    from gevent import monkey

    monkey.patch_all()

import argparse
import io
import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsgi-bench-")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import SECRET, delivery, sign  # noqa: E402
from receiver.testing import RedisServer  # noqa: E402


def environ_for(body: bytes) -> dict[str, object]:
    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/webhook",
        "QUERY_STRING": "",
        "RAW_URI": "/webhook",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_HUB_SIGNATURE_256": sign(body),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }


def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
    if not status.startswith("200"):
        raise RuntimeError(status)


def run(app, environs: list[dict[str, object]]) -> float:  # type: ignore[no-untyped-def]
    start = time.process_time()
    for environ in environs:
        answer = app(environ, start_response)
        for _ in answer:
            pass
        close = getattr(answer, "close", None)
        if close is not None:
            close()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=1)
    parser.add_argument("--scenario", choices=["inline", "durable", "both"], default="both")
    parser.add_argument("--profile", default=None)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="under valgrind --tool=callgrind --instr-atstart=no: count the measured runs only",
    )
    parser.add_argument(
        "--without",
        default="",
        help="comma-separated parts left out, to attribute cost: log, metrics, trace",
    )
    parser.add_argument(
        "--no-bare", action="store_true", help="leave bare Flask out (instruction counts)"
    )
    parser.add_argument(
        "--gevent",
        action="store_true",
        help="monkey-patch with gevent first, as the Procfile's gevent workers do (its locks, "
        "threads and sockets are gevent's)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wsgi-bench-"))
    server = RedisServer(folder / "redis")
    server.start()
    try:
        os.environ.update(
            RECEIVER_APP_SECRET=SECRET,
            RECEIVER_VERIFY_TOKEN="t",
            RECEIVER_DATA_DIR=str(folder / "data"),
            REDIS_URL=server.url,
        )
        from bench.reference_apps import bare
        from receiver import Router, create_app
        from receiver.observe import logsafe, metrics
        from receiver.routing.signals import delivery_finished

        level = "WARNING" if "log" in args.without else "INFO"
        line = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
        try:  # batched, as the Procfile's gunicorn config installs it
            logsafe.install(level, line, batched=True)
        except TypeError:  # a checkout from before batched lines
            logsafe.install(level, line)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(open(folder / "log.txt", "a"))  # noqa: SIM115
        fold = getattr(metrics, "fold", None)  # None in a checkout before metrics were folded
        scenarios = ["inline", "durable"] if args.scenario == "both" else [args.scenario]
        apps = {} if args.no_bare else {"bare Flask": (bare, None)}
        for scenario in scenarios:
            handlers = "bench.inline_noop" if scenario == "inline" else "bench.noop"
            os.environ["RECEIVER_HANDLERS"] = handlers
            app = create_app(router=Router())
            trace = app.extensions["receiver.trace"]
            trace._thread = object()  # flushed by hand after each run, as a busy process would
            if "metrics" in args.without:
                delivery_finished.disconnect(metrics.observe_delivery)
            if "trace" in args.without:
                delivery_finished.disconnect(trace)
            apps[f"receiver {scenario}"] = (app, trace)
        serial = 0
        results: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(args.runs + 1):  # the first round warms up
            for name, (app, trace) in apps.items():
                environs = [
                    environ_for(delivery(serial + i * args.changes, args.changes))
                    for i in range(args.count)
                ]
                serial += args.count * args.changes
                profiler = None
                if args.profile and name != "bare Flask" and _ == args.runs:
                    import cProfile

                    profiler = cProfile.Profile(time.process_time)
                    profiler.enable()
                if _ and args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())],
                                   check=True, capture_output=True)
                cpu = run(app, environs)
                if trace is not None:
                    start = time.process_time()
                    trace.flush()
                    if fold is not None:  # this run's metrics in the files, as a scrape would
                        fold()
                    cpu += time.process_time() - start
                if _ and args.callgrind:
                    subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())],
                                   check=True, capture_output=True)
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                if _:
                    results[name].append(cpu / args.count * 1e6)
        bare_us = statistics.median(results.get("bare Flask") or [float("nan")])
        for name, values in results.items():
            median = statistics.median(values)
            print(
                f"{name:>18}: {median:7.1f} µs/request ({min(values):.1f}–{max(values):.1f})"
                f"  {median / bare_us:5.2f}× bare"
                + (f"  {median / args.changes:.1f} µs/event" if args.changes > 1 else "")
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
