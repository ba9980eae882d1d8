"""What the Graph client adds to a call: ``GraphClient.get`` against bare ``httpx.Client.get``.

    .venv/bin/python bench/graph_bench.py [--count 2000] [--runs 5]

Both talk to the same local HTTP server (werkzeug, in a child process, on
loopback) that answers a small JSON body with usage headers, over one
kept-alive connection; runs alternate, after a warm-up. The difference is the
client's own work per call: proof parameter, path building, usage-header
parsing, retry bookkeeping. Prints median wall and client-CPU µs per call.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from werkzeug import Request, Response
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver.graph.calls import GraphClient, GraphConfig  # noqa: E402
from receiver.testing import free_port  # noqa: E402

BODY = b'{"id": "1001", "name": "Ada"}'
USAGE = '{"call_count": 10, "total_time": 5, "total_cputime": 3}'


@Request.application
def answer(request: Request) -> Response:
    return Response(BODY, content_type="application/json", headers={"X-App-Usage": USAGE})


def timed(call: Callable[[], object], count: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / count * 1e6, cpu / count * 1e6


def serve(port: int) -> None:
    logging.disable(logging.INFO)
    make_server("127.0.0.1", port, answer, threaded=True).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # httpx logs every request at INFO
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    config = GraphConfig(access_token="bench-token", app_secret="bench-secret", base_url=base)
    results: dict[str, list[tuple[float, float]]] = {"bare httpx": [], "GraphClient": []}
    try:
        with GraphClient(config) as ours, httpx.Client(base_url=base) as bare:
            headers = {"Authorization": "Bearer bench-token"}
            calls: dict[str, Callable[[], object]] = {
                "bare httpx": lambda: bare.get("/v23.0/me", headers=headers).json(),
                "GraphClient": lambda: ours.get("/me"),
            }
            for _ in range(50):  # warm-up, and wait for the server to listen
                try:
                    calls["bare httpx"]()
                except httpx.ConnectError:
                    time.sleep(0.1)
            for call in calls.values():
                call()
            for _ in range(args.runs):
                for name, call in calls.items():
                    results[name].append(timed(call, args.count))
    finally:
        server.terminate()
    print(f"{'client':<14}{'wall µs/call':>14}{'client CPU µs/call':>20}{'CPU min–max':>14}")
    medians = {}
    for name, values in results.items():
        wall = statistics.median(v[0] for v in values)
        cpus = [v[1] for v in values]
        medians[name] = statistics.median(cpus)
        spread = f"{min(cpus):.0f}–{max(cpus):.0f}"
        print(f"{name:<14}{wall:>14.0f}{medians[name]:>20.0f}{spread:>14}")
    extra = medians["GraphClient"] - medians["bare httpx"]
    print(f"GraphClient overhead: {extra:+.0f} µs of client CPU per call")


if __name__ == "__main__":
    main()
