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
from .config import Settings
from .ops import queue_names

log = logging.getLogger("receiver.worker")

WORKER_REDIS_TIMEOUT = 30.0
"""Workers may wait on Redis far longer than the web's fail-fast bound."""
MAINTENANCE_EVERY = 3.0
RECONNECT_WAIT_MAX = 5
"""Longest wait between reconnection attempts when Redis is away (RQ's default is 60 s)."""
RESTART_DELAY = 1.0
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
    names = queues or queue_names(core.settings, core.router)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    maintain_all(connection, names, core.settings)
    if not burst:
        _start_maintenance(connection, names, core.settings)
    count = len(core.router.handlers())
    log.info("worker listening on %s with %d handler(s)", ", ".join(names), count)
    worked = False
    while True:
        try:
            worker = ReceiverWorker(
                [Queue(n, connection=connection, serializer=JSONSerializer) for n in names],
                connection=connection,
                serializer=JSONSerializer,
            )
            worker.max_connection_wait_time = RECONNECT_WAIT_MAX
            did = worker.work(burst=burst, with_scheduler=not burst, logging_level="WARNING")
            worked = worked or did
        except redis.RedisError as exc:
            log.error("worker lost Redis (%s)", exc)
        if burst or drain.stop_requested.is_set():
            return worked
        # RQ quits on errors outside its dequeue loop (e.g. Redis gone mid-job): start afresh.
        log.warning("RQ worker loop ended unexpectedly; restarting in %.0fs", RESTART_DELAY)
        time.sleep(RESTART_DELAY)


def maintain_all(connection: redis.Redis, queues: list[str], settings: Settings) -> None:
    """Recover dead drainers' packets and make sure pending work has a drainer."""
    for queue in queues:
        try:
            reaped = drain.reap(connection, queue)
            drain.kick(connection, queue, settings.max_drainers, settings.job_timeout)
        except redis.RedisError as exc:
            log.warning("maintenance of %s skipped: %s", queue, exc)
            continue
        if reaped:
            log.warning("recovered the in-flight work of %d dead drainer(s) on %s", reaped, queue)


def _start_maintenance(connection: redis.Redis, queues: list[str], settings: Settings) -> None:
    def loop() -> None:
        while True:
            time.sleep(MAINTENANCE_EVERY)
            maintain_all(connection, queues, settings)

    threading.Thread(target=loop, name="receiver-maintenance", daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        log.info("parent %d is gone; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="receiver-parent-watch", daemon=True).start()
