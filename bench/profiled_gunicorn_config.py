"""The Procfile's gunicorn config, plus cProfile over a whole worker (``bench/worker_profile.py``).

Profiling starts once the worker has booted and ends when it exits; the stats go
to ``$WORKER_PROFILE_DIR/worker-<pid>.prof``. Under gevent every greenlet runs on
the main thread, so the profile holds gunicorn's request handling, the app and the
background greenlets (trace writer, log flusher, read watchdog) alike. With gthread
each thread started after boot (the request threads) gets a profiler of its own,
merged into the one file on exit.
"""

from __future__ import annotations

import cProfile
import importlib
import os
import threading
from typing import Any

# Imported by name, not ``from ... import *``: tests/unit/test_bench_imports.py resolves a
# bench's static imports, and this one patches everything with gevent when imported.
_procfile = importlib.import_module("receiver.deploy.gunicorn_config")
globals().update({k: v for k, v in vars(_procfile).items() if not k.startswith("__")})
worker_class: str = _procfile.worker_class

_profilers: list[cProfile.Profile] = []


def _profile_this_thread() -> None:
    profiler = cProfile.Profile()
    _profilers.append(profiler)
    profiler.enable()


def post_worker_init(worker: Any) -> None:
    _profile_this_thread()
    if worker_class != "gevent":
        original = threading.Thread.run

        def run(self: threading.Thread) -> None:
            _profile_this_thread()
            original(self)

        threading.Thread.run = run  # type: ignore[method-assign]


def worker_exit(server: Any, worker: Any) -> None:
    import pstats

    for profiler in _profilers:
        profiler.disable()
    folder = os.environ["WORKER_PROFILE_DIR"]
    stats = pstats.Stats(_profilers[0])
    for other in _profilers[1:]:
        stats.add(other)
    stats.dump_stats(os.path.join(folder, f"worker-{os.getpid()}.prof"))
