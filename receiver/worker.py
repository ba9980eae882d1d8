"""``receiver worker``: a real RQ worker with the handler modules loaded once.

``SimpleWorker`` runs jobs in the worker process itself instead of forking a
work-horse per job: a fork costs milliseconds, and since handler modules are
imported once at start-up a fresh fork would reset nothing. Crash safety
does not rest on the fork either: drain jobs prove they are alive with a
heartbeat, and a maintenance thread here gives a dead drainer's work back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from . import drain, jobs
from .app import build_core

log = logging.getLogger("receiver.worker")

WORKER_REDIS_TIMEOUT = 30.0
"""Workers may wait on Redis far longer than the web's fail-fast bound."""
MAINTENANCE_EVERY = 3.0
"""Seconds between checks for dead drainers and pending work nobody drains."""


class ReceiverWorker(SimpleWorker):
    """SimpleWorker whose warm shutdown also tells a running drain job to stop early."""

    def request_stop(self, signum: Any, frame: Any) -> None:
        drain.stop_requested.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run_worker(
    queues: list[str] | None = None, *, burst: bool = False, parent_pid: int | None = None
) -> bool:
    core = build_core(require_redis=True, redis_timeout=WORKER_REDIS_TIMEOUT)
    context = core.work_context()
    connection = context.connection
    assert connection is not None
    jobs.configure(context)
    names = queues or sorted(
        {core.settings.queue_name}
        | {h.queue for h in core.router.handlers() if h.background and h.queue}
    )
    worker = ReceiverWorker(
        [Queue(n, connection=connection, serializer=JSONSerializer) for n in names],
        connection=connection,
        serializer=JSONSerializer,
    )
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    for name in names:
        maintain(connection, name, core.settings.max_drainers, core.settings.job_timeout)
    if not burst:
        _start_maintenance(connection, names, core.settings.max_drainers, core.settings.job_timeout)
    log.info(
        "worker listening on %s with %d handler(s)", ", ".join(names), len(core.router.handlers())
    )
    return bool(worker.work(burst=burst, with_scheduler=not burst, logging_level="WARNING"))


def maintain(connection: redis.Redis, queue: str, max_drainers: int, job_timeout: int) -> None:
    """Recover dead drainers' packets and make sure pending work has a drainer."""
    reaped = drain.reap(connection, queue)
    if reaped:
        log.warning("recovered the in-flight work of %d dead drainer(s) on %s", reaped, queue)
    drain.kick(connection, queue, max_drainers, job_timeout)


def _start_maintenance(
    connection: redis.Redis, queues: list[str], max_drainers: int, job_timeout: int
) -> None:
    def loop() -> None:
        while True:
            time.sleep(MAINTENANCE_EVERY)
            for queue in queues:
                try:
                    maintain(connection, queue, max_drainers, job_timeout)
                except redis.RedisError as exc:
                    log.warning("maintenance skipped: %s", exc)

    threading.Thread(target=loop, name="receiver-maintenance", daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        log.info("parent %d is gone; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="receiver-parent-watch", daemon=True).start()
