"""``receiver worker``: a real RQ worker with the handler modules loaded once.

``SimpleWorker`` runs jobs in the worker process itself instead of forking a
work-horse per job: forking costs milliseconds per job, and since handler
modules are imported once at start-up there is nothing a fresh fork would
reset. A SIGKILLed worker's job is still found by RQ's abandoned-job
cleanup and retried while it has retries left.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from . import jobs
from .app import build_core

log = logging.getLogger("receiver.worker")


def run_worker(
    queues: list[str] | None = None, *, burst: bool = False, parent_pid: int | None = None
) -> bool:
    core = build_core(require_redis=True)
    context = core.work_context()
    connection = context.connection
    assert isinstance(connection, redis.Redis)
    jobs.configure(context)
    warn_if_not_persistent(connection)
    names = queues or sorted(
        {core.settings.queue_name}
        | {h.queue for h in core.router.handlers() if h.background and h.queue}
    )
    worker = SimpleWorker(
        [Queue(n, connection=connection, serializer=JSONSerializer) for n in names],
        connection=connection,
        serializer=JSONSerializer,
    )
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    log.info(
        "worker listening on %s with %d handler(s)", ", ".join(names), len(core.router.handlers())
    )
    return bool(worker.work(burst=burst, with_scheduler=True, logging_level="WARNING"))


def warn_if_not_persistent(connection: redis.Redis) -> None:
    """Acknowledged work survives only what Redis keeps: say so when it keeps nothing."""
    try:
        info = connection.info("persistence")
    except redis.RedisError:
        return
    if (
        not info.get("aof_enabled")
        and not info.get("rdb_bgsave_in_progress")
        and connection.config_get("save").get("save", "") in ("", None)
    ):
        log.warning(
            "the Redis this process uses has persistence off (no AOF, no RDB snapshots): "
            "a Redis restart loses queued events; enable appendonly yes"
        )


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        log.info("parent %d is gone; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="receiver-parent-watch", daemon=True).start()
