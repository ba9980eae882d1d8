"""What the Graph client adds to a call: ``GraphClient.get`` against bare ``httpx.Client.get``.

    .venv/bin/python bench/graph_bench.py [--count 2000] [--runs 3]

Both talk to the same local HTTP server (werkzeug, threaded, loopback) that
answers a small JSON body with usage headers, over one kept-alive connection.
The difference is the client's own work per call: proof parameter, path
building, usage-header parsing, retry bookkeeping, JSON decoding (bare httpx
decodes too). Prints median µs per call, the spread, and the overhead.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from werkzeug import Request, Response
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver.graph import GraphClient, GraphConfig  # noqa: E402

BODY = b'{"id": "1001", "name": "Ada"}'
USAGE = '{"call_count": 10, "total_time": 5, "total_cputime": 3}'


@Request.application
def answer(request: Request) -> Response:
    return Response(BODY, content_type="application/json", headers={"X-App-Usage": USAGE})


def timed(call: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # httpx logs every request at INFO
    server = make_server("127.0.0.1", 0, answer, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    config = GraphConfig(access_token="bench-token", app_secret="bench-secret", base_url=base)
    bare_times, ours_times = [], []
    with GraphClient(config) as ours, httpx.Client(base_url=base) as bare:
        headers = {"Authorization": "Bearer bench-token"}
        for _ in range(args.runs):
            bare_times.append(
                timed(lambda: bare.get("/v23.0/me", headers=headers).json(), args.count)
            )
            ours_times.append(timed(lambda: ours.get("/me"), args.count))
    server.shutdown()
    bare_median, ours_median = statistics.median(bare_times), statistics.median(ours_times)
    print(f"{'client':<14}{'µs/call':>10}{'min–max':>18}")
    for name, values in (("bare httpx", bare_times), ("GraphClient", ours_times)):
        spread = f"{min(values):.0f}–{max(values):.0f}"
        print(f"{name:<14}{statistics.median(values):>10.0f}{spread:>18}")
    print(f"overhead: {ours_median - bare_median:+.0f} µs/call ({ours_median / bare_median:.2f}×)")


if __name__ == "__main__":
    main()
