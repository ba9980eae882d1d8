"""``receiver worker``: a real RQ worker with the handler modules loaded once.

``SimpleWorker`` runs jobs in the worker process itself instead of forking a
work-horse per job: a fork costs milliseconds, and since handler modules are
imported once at start-up a fresh fork would reset nothing. Crash safety
does not rest on the fork either: drain jobs prove they are alive with a
heartbeat, and a maintenance thread here gives a dead drainer's work back.

Handler calls run on one ``Runner`` per process (``--concurrency``). When
threads abandoned past their time limit pile up beyond the concurrency, the
drain job hands its unstarted work back, the worker stops warmly and then
replaces itself with a fresh copy of the same command (``exec``: same pid,
so a supervisor or a parent watching it sees no exit; no thread survives).

Retries wait in RQ's scheduled registry until RQ's scheduler process moves
them to their queue. RQ's own scheduler exits on its first Redis error and RQ
starts another only every ten minutes; ours waits an outage out, and the
maintenance thread starts it again should it die anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from receiver.core.runner import Runner
from receiver.queue import handoff, keys, ordering
from receiver.queue.ops import queue_names
from receiver.settings.model import Settings
from receiver.worker import claims as worker_claims
from receiver.worker import drain as worker_drain
from receiver.worker import retries as worker_retries
from receiver.worker.claims import WorkContext, WorkerControl

log = logging.getLogger("receiver.worker")

WORKER_REDIS_TIMEOUT = 30.0
"""Workers may wait on Redis far longer than the web's fail-fast bound."""
MAINTENANCE_EVERY = 3.0
RECONNECT_WAIT_MAX = 5
"""Longest wait between reconnection attempts when Redis is away (RQ's default is 60 s)."""
RESTART_DELAY = 1.0
"""Seconds between checks for dead drainers and pending work nobody drains."""
RQ_HEARTBEAT_TTL = 90
"""Seconds RQ's worker and job keys live between the drainer's keep-alive beats."""
PUBSUB_POLL = 1.0
"""Seconds RQ's command listener blocks per read. RQ asks for 60, and redis-py joins that
thread without a timeout on shutdown, so an idle worker took up to a minute to exit."""


class PatientScheduler(RQScheduler):
    """RQ's scheduler (its own process), but one that waits Redis out instead of exiting."""

    def work(self) -> None:
        while not self._stop_requested:
            try:
                super().work()  # type: ignore[no-untyped-call]
                return
            except redis.RedisError as exc:
                log.warning("scheduler waiting for Redis: %s", exc)
                time.sleep(self.interval)


class AliasedJob(Job):
    """RQ's job, which also runs jobs stored under a dotted path that has since moved
    (``keys.JOB_ALIASES``): work queued before an upgrade is not lost."""

    @property
    def func(self) -> Any:
        moved = keys.JOB_ALIASES.get(self.func_name or "")
        return import_attribute(moved) if moved else super().func


class ReceiverWorker(SimpleWorker):
    """SimpleWorker whose warm shutdown also tells a running drain job to stop early,
    and whose scheduler of retries keeps running."""

    job_class = AliasedJob

    def __init__(self, *args: Any, control: WorkerControl | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = control if control is not None else WorkerControl()
        """The stop and restart state this process's drain jobs obey."""
        self._scheduler_guard = threading.Lock()
        self._scheduler_stopped = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.control.stop.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def subscribe(self) -> None:
        """RQ's command listener (``rq`` suspend/stop commands), polling every ``PUBSUB_POLL`` s."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_POLL, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = "",
        log_format: str = "",
    ) -> None:
        """RQ's, with a ``PatientScheduler`` (the scheduler runs only outside bursts)."""
        self.scheduler = PatientScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level or "WARNING",
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    def keep_scheduler_running(self) -> None:
        """Start the scheduler again if it died, or take over from another worker's
        once that one's lock lapsed (RQ itself checks every ten minutes)."""
        with self._scheduler_guard:
            scheduler = self.scheduler
            if scheduler is None or self._scheduler_stopped:
                return
            process = scheduler._process
            if process is not None and process.is_alive():
                return
            restarted = scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]
            if restarted and process is not None:
                log.warning("scheduler had stopped (exit code %s); started again", process.exitcode)
            elif restarted:
                log.info("took over scheduling retries on %s", ", ".join(sorted(restarted)))

    def stop_scheduler(self) -> None:
        with self._scheduler_guard:
            self._scheduler_stopped = True
        super().stop_scheduler()  # type: ignore[no-untyped-call]


def run_worker(
    context: WorkContext,
    queues: list[str] | None = None,
    *,
    burst: bool = False,
    parent_pid: int | None = None,
    concurrency: int | None = None,
) -> bool:
    """Take jobs until stopped (or, with ``burst``, until the queues are empty), with the
    handlers and settings of ``context``, which the app builds (``receiver.app.run_worker``)."""
    connection = context.connection
    assert connection is not None
    settings, router = context.settings, context.router
    runner = Runner(concurrency or settings.worker_concurrency)
    context.runner = runner
    control = context.control
    control.on_restart = request_restart
    worker_claims.configure(context)
    names = queues or queue_names(settings, router)
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    maintain_all(connection, names, settings)
    current: list[ReceiverWorker] = []
    if not burst:
        _start_maintenance(connection, names, settings, current)
    count = len(router.handlers())
    log.info(
        "worker listening on %s with %d handler(s), %d call(s) at once",
        ", ".join(names),
        count,
        runner.concurrency,
    )
    worked = False
    while True:
        try:
            worker = ReceiverWorker(
                [
                    Queue(
                        n, connection=connection, serializer=JSONSerializer, job_class=AliasedJob
                    )
                    for n in names
                ],
                connection=connection,
                serializer=JSONSerializer,
                control=control,
            )
            worker.max_connection_wait_time = RECONNECT_WAIT_MAX
            current[:] = [worker]
            control.keepalive = _keepalive(worker)
            did = worker.work(burst=burst, with_scheduler=not burst, logging_level="WARNING")
            worked = worked or did
        except redis.RedisError as exc:
            if burst:
                raise  # a burst that could not reach Redis did not do its work: exit 1, one line
            log.error("worker lost Redis (%s)", exc)
        if control.restart.is_set():
            _restart(runner)
        if burst or control.stop.is_set():
            return worked
        # RQ quits on errors outside its dequeue loop (e.g. Redis gone mid-job): start afresh.
        log.warning("RQ worker loop ended unexpectedly; restarting in %.0fs", RESTART_DELAY)
        time.sleep(RESTART_DELAY)


def _keepalive(worker: SimpleWorker) -> Any:
    """RQ refreshes its heartbeats only between jobs; a drain job may run for minutes."""

    def beat(job: Job | None) -> None:
        worker.heartbeat(RQ_HEARTBEAT_TTL)
        if job is not None:
            job.heartbeat(datetime.now(UTC), RQ_HEARTBEAT_TTL)

    return beat


def request_restart() -> None:
    """Warm stop now (the drain job has handed its work back); ``run_worker`` then restarts."""
    os.kill(os.getpid(), signal.SIGTERM)


def _restart(runner: Runner) -> None:
    log.error(
        "%d handler threads are stuck past their time limit (limit %d); restarting this worker",
        runner.abandoned,
        runner.abandon_limit,
    )
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, "-m", "receiver", *sys.argv[1:]])


def maintain_all(connection: redis.Redis, queues: list[str], settings: Settings) -> None:
    """Recover dead drainers' packets and abandoned retry jobs, wake stalled lanes, make sure
    pending work has a drainer."""
    for queue in queues:
        try:
            reaped = worker_drain.reap(connection, queue)
            rerun = worker_retries.recover_abandoned(connection, queue)
            ordering.nudge(connection, queue)
            handoff.kick(connection, queue, settings.max_drainers, settings.job_timeout)
        except redis.RedisError as exc:
            log.warning("maintenance of %s skipped: %s", queue, exc)
            continue
        if reaped:
            log.warning("recovered the in-flight work of %d dead drainer(s) on %s", reaped, queue)
        if rerun:
            log.warning("queued again %d retry job(s) a worker left unfinished on %s", rerun, queue)


def _start_maintenance(
    connection: redis.Redis, queues: list[str], settings: Settings, current: list[ReceiverWorker]
) -> None:
    def loop() -> None:
        while True:
            time.sleep(MAINTENANCE_EVERY)
            maintain_all(connection, queues, settings)
            for worker in current:
                try:
                    worker.keep_scheduler_running()
                except redis.RedisError as exc:
                    log.warning("scheduler check skipped: %s", exc)

    threading.Thread(target=loop, name="receiver-maintenance", daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        log.info("parent %d is gone; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="receiver-parent-watch", daemon=True).start()
