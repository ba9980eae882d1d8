"""What capture costs on the ack path: ``Core.handle`` with and without the journal.

    .venv/bin/python bench/capture_bench.py [--count 5000] [--runs 5]

Inline no-op handler, a ~500-byte signed delivery, the journal on a local
temporary folder. Prints median µs per delivery (and spread) for each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receiver import Router  # noqa: E402
from receiver.core.handling import Core, Headers, Request  # noqa: E402
from receiver.core.signature import signature_headers  # noqa: E402
from receiver.observe.capture import CaptureJournal  # noqa: E402
from receiver.settings.loading import load_settings  # noqa: E402
from receiver.worker.claims import WorkContext  # noqa: E402
from receiver.worker.inline import InlineBackend  # noqa: E402

BODY = (
    Path(__file__).resolve().parent.parent / "tests/payloads/group__comments__add.json"
).read_bytes()


def per_delivery(core: Core, count: int) -> float:
    request = Request("POST", BODY, Headers(signature_headers(BODY, "s")))
    start = time.perf_counter()
    for _ in range(count):
        core.handle(request)
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plain: list[float] = []
        captured: list[float] = []
        for capture in (False, True):
            settings = load_settings(
                {
                    "integrations": {
                        "default": {"app_secrets": ["s"], "verify_token": "t", "capture": capture}
                    }
                },
                {},
            )
            router = Router()
            router.connect("*", lambda event: None)
            journal = CaptureJournal(Path(folder) / "captures") if capture else None
            core = Core(settings, router, InlineBackend(WorkContext(router, settings)), journal)
            per_delivery(core, 200)  # warm up
            results = [per_delivery(core, args.count) for _ in range(args.runs)]
            (captured if capture else plain).extend(results)
        for label, values in (("without capture", plain), ("with capture", captured)):
            print(
                f"{label:>16}: {statistics.median(values):7.1f} µs/delivery "
                f"({min(values):.1f}–{max(values):.1f})"
            )
        extra = statistics.median(captured) - statistics.median(plain)
        print(f"{'capture costs':>16}: {extra:7.1f} µs/delivery")


if __name__ == "__main__":
    main()
