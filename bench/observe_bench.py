"""What observability costs per delivery: ``Core.handle`` plus each operator-facing layer.

    .venv/bin/python bench/observe_bench.py [--count 3000] [--runs 3] [--multiprocess]
                                            [--changes N]

Inline no-op handler, a ~500-byte signed delivery (``--changes N``: one of N
group comments, figures then per event), in-process. Adds, in turn,
the log line per request (INFO, escaped text, to a file), the metrics
(``--multiprocess``: prometheus_client's multiprocess mode, as under gunicorn)
and the trace writer (records queued per request; each run's batch written to a
private Redis by hand, its cost divided per delivery; "traces in all" adds the
queueing, measured against the metrics step, to the writes). Prints the median µs
of this process's CPU per delivery at each step (CPU time, not wall time: the
machine is shared, and a wall clock counts other processes' turns), and for
the trace and stats writes also the wall time, Redis's answer included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--multiprocess" in sys.argv:  # must be set before prometheus_client is imported
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="observe-bench-")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from receiver import Router
from receiver.core.handling import Core, Headers, Request  # noqa: E402
from receiver.core.signature import signature_headers  # noqa: E402
from receiver.observe import metrics  # noqa: E402
from receiver.observe.logsafe import SafeFormatter  # noqa: E402
from receiver.observe.trace import TraceWriter  # noqa: E402
from receiver.routing.signals import delivery_finished  # noqa: E402
from receiver.settings.loading import load_settings  # noqa: E402
from receiver.testing import RedisServer  # noqa: E402
from receiver.worker.claims import WorkContext  # noqa: E402
from receiver.worker.inline import InlineBackend  # noqa: E402

BODY = (
    Path(__file__).resolve().parent.parent / "tests/payloads/group__comments__add.json"
).read_bytes()


def batch(changes: int) -> bytes:
    """One delivery of ``changes`` distinct group comments (distinct event ids)."""
    comment = json.loads(BODY)["entry"][0]["changes"][0]
    items = [
        {**comment, "value": {**comment["value"], "comment_id": f"c{n}"}} for n in range(changes)
    ]
    return json.dumps({"object": "group", "entry": [{"id": "1", "changes": items}]}).encode()


def per_delivery(core: Core, count: int, body: bytes = BODY) -> float:
    headers = Headers(signature_headers(body, "s"))
    start = time.process_time()
    for _ in range(count):
        core.handle(Request("POST", body, headers))
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--multiprocess", action="store_true")
    parser.add_argument("--changes", type=int, default=1, help="events per delivery")
    args = parser.parse_args()
    body = BODY if args.changes == 1 else batch(args.changes)
    unit = "delivery" if args.changes == 1 else "event"
    count = max(1, args.count // args.changes)
    settings = load_settings(
        {"integrations": {"default": {"app_secrets": ["s"], "verify_token": "t"}}}, {}
    )
    router = Router()
    router.connect("*", lambda event: None)
    core = Core(settings, router, InlineBackend(WorkContext(router, settings)))

    def step(label: str) -> float:
        per_delivery(core, max(1, 200 // args.changes), body)  # warm up
        values: list[float] = [
            per_delivery(core, count, body) / args.changes for _ in range(args.runs)
        ]
        print(f"{label:>32}: {statistics.median(values):6.1f} µs/{unit}")
        return statistics.median(values)

    logging.getLogger("receiver").setLevel(logging.WARNING)
    step("core alone")
    with tempfile.TemporaryDirectory() as folder:
        handler = logging.FileHandler(Path(folder) / "log.txt")
        handler.setFormatter(SafeFormatter("[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger("receiver").setLevel(logging.INFO)
        step("+ log line per request")
        delivery_finished.connect(metrics.observe_delivery, sender=core, weak=False)
        before = step("+ metrics" + (" (multiprocess)" if args.multiprocess else ""))
        server = RedisServer(Path(folder) / "redis")
        server.start()
        try:
            connection = redis.Redis.from_url(server.url)
            writer = TraceWriter(settings.trace_ttl, lambda: connection)
            writer._thread = object()  # type: ignore[assignment]  # flushed by hand below
            delivery_finished.connect(writer, sender=core, weak=False)
            per_delivery(core, max(1, 200 // args.changes), body)  # warm up
            writer.flush()
            events = count * args.changes
            queued: list[float] = []
            cpus: list[float] = []
            walls: list[float] = []
            for _ in range(args.runs):  # each run's records queued, then written as one batch
                queued.append(per_delivery(core, count, body) / args.changes)
                start, cpu = time.perf_counter(), time.process_time()
                writer.flush()
                cpus.append((time.process_time() - cpu) / events * 1e6)
                walls.append((time.perf_counter() - start) / events * 1e6)
            queued_us, cpu_us = statistics.median(queued), statistics.median(cpus)
            print(f"{'+ traces queued':>32}: {queued_us:6.1f} µs/{unit}")
            print(
                f"{'trace and stats writes':>32}: {cpu_us:6.1f} µs/{unit} (background; "
                f"{statistics.median(walls):.1f} µs wall with Redis's answer)"
            )
            print(
                f"{'traces in all':>32}: {queued_us - before + cpu_us:6.1f} µs/{unit} "
                "(queueing on the request path, over the metrics step, plus the writes)"
            )
        finally:
            server.stop()
            logging.getLogger().removeHandler(handler)


if __name__ == "__main__":
    main()
