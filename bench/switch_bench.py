"""What the dashboard's integration switches cost on the ack path: ``Core.handle`` with
the dashboard off and on (``admin_password`` set, so the core asks the switches).

    .venv/bin/python bench/switch_bench.py [--count 2000] [--runs 5]

Inline no-op handler, a signed sample delivery, a private Redis (only the switches'
background reader uses it). Runs alternate; prints the median µs per delivery and
each run's figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver import Router, create_app  # noqa: E402
from receiver.core.handling import Core, Headers, Request  # noqa: E402
from receiver.core.signature import signature_headers  # noqa: E402
from receiver.testing import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"


def core_for(redis_url: str, admin: bool) -> Core:
    router = Router()
    router.connect("*", lambda event: None)
    receiver = {"redis_url": redis_url}
    if admin:
        receiver["admin_password"] = "bench-admin-password"
    config = {
        "receiver": receiver,
        "integrations": {"default": {"app_secrets": [SECRET], "verify_token": "t"}},
    }
    core = create_app(config, router=router).extensions["receiver"]
    assert isinstance(core, Core)
    return core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    body = (ROOT / "tests" / "payloads" / "group__comments__add.json").read_bytes()
    headers = Headers(signature_headers(body, SECRET))
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(folder)
        server.start()
        try:
            cores = {"dashboard off": core_for(server.url, False),
                     "dashboard on": core_for(server.url, True)}
            figures: dict[str, list[float]] = {name: [] for name in cores}
            for _ in range(args.runs):
                for name, core in cores.items():
                    started = time.perf_counter()
                    for _ in range(args.count):
                        assert core.handle(Request("POST", body, headers)).status == 200
                    figures[name].append((time.perf_counter() - started) / args.count * 1e6)
        finally:
            server.stop()
    print(f"{'':<15} {'median µs/delivery':>19}  runs")
    for name, values in figures.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<15} {statistics.median(values):>19.1f}  {runs}")


if __name__ == "__main__":
    main()
