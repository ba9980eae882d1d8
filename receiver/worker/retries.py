"""Worker side: what becomes of an item whose attempt failed (drain jobs call this).

Failures leave the fast path: a failed or timed-out item gets a scheduled RQ
job (``retry_item``) with exponential backoff and jitter, which puts it back
in a packet when due, so that every attempt runs in a drain job like the
first; once its attempts run out it lands in RQ's failed registry as a failed
job with the event and the traceback, where ``receiver failed requeue`` (or
the dashboard) finds it. So does an item for a handler the worker does not
load (``file_unrunnable``).

Nothing here writes a failed item's next step by itself: ``after_failure`` and
``file_unrunnable`` return the commands, which the drainer puts in the one
MULTI/EXEC that also records the item's state and removes its packet from the
in-flight list. A replica holds a prefix of its master's writes, so after a
failover the new master has both or neither: the retry (or the filing), or the
packet still in flight, which runs again. A retry job that a worker started and
never finished (it lost Redis or died mid-job) is run again by
``recover_abandoned``: it only hands its item back, and a second hand-over runs
nothing twice (the item's claim state decides).

RQ jobs name ``receiver.worker.retries.retry_item`` (``keys.RETRY_FUNCTION``);
the paths earlier versions stored run through ``keys.JOB_ALIASES``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis import Redis
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from receiver.model.events import Event
from receiver.observe import outcomes
from receiver.queue import keys, ordering
from receiver.queue.handoff import push, start_drainer
from receiver.worker.claims import Outcome, WorkContext, current_context

RETRY_JOB_TIMEOUT = 60
"""Seconds a retry job may take: it only puts its item back in a packet."""
FAILURE_TTL = 24 * 3600 * 7
"""How long failed items stay in RQ's failed registry."""
INTERMEDIATE_PATIENCE = timedelta(minutes=1)
"""How long a retry job may sit in RQ's intermediate list (taken from its queue, not yet
started: normally microseconds) before it counts as lost with a worker's Redis."""
INTERMEDIATE_MARK_TTL = 24 * 3600


def _nothing(*_: Any) -> None:
    return None


@dataclass
class NextStep:
    """What becomes of a failed item, decided but not yet written."""

    state: str
    """The item's claim state."""
    final: bool
    """Whether it failed for good (filed, not retried)."""
    write: Callable[[Any], None] = _nothing
    """Adds the commands that schedule its retry or file it to the caller's transaction
    pipeline, which also records ``state`` and removes the item's packet (``drain._flush``).
    May be called again with a fresh pipeline when a round trip fails."""
    report: Callable[[], None] = field(default=_nothing)
    """The log line and metric, once the transaction is written."""


def after_failure(outcome: Outcome, context: WorkContext) -> NextStep:
    """The item's next attempt as a scheduled RQ job, or its filing as failed; its state,
    and whether it failed for good. Writes nothing: the caller puts ``write`` in the
    transaction that removes the item's packet.

    The item counts its attempts; the scheduled job only puts it back in a packet
    when due (``retry_item``), so every attempt runs in a drainer, concurrently
    and under its time limit. An item requeued by an operator is ``final``: one more
    attempt, then back to the failed registry. An ordered item whose handler blocks on
    failure is filed for as long as it takes an operator, and keeps a state only its
    requeued job may claim: its key waits for it.
    """
    settings = context.settings
    handler = outcome.handler
    retries = settings.job_retries if handler.retry is None else handler.retry
    connection = context.connection
    if connection is None:
        return NextStep(keys.FAILED, True)
    made = int(outcome.item.get("attempts", 0)) + 1
    job_id = retry_job_id(outcome.item)
    token = keys.retry_token(job_id)
    follow = {
        "event": outcome.item["event"],
        "handler": outcome.item["handler"],
        "attempts": made,
        "owner": token,
        **ordering.carried(outcome.item),
    }
    queue = keys.rq_queue(handler.queue or settings.queue_name, connection)
    description = f"{handler.id} on event {outcome.event.id} ({outcome.event.name})"
    if outcome.item.get("final") or made > retries:
        follow["final"] = True
        blocks = bool(follow.get("block"))
        error = outcome.error or ""

        def file(pipe: Any) -> None:
            file_failed(queue, job_id, follow, error, description, blocks, pipeline=pipe)

        def failed() -> None:
            outcomes.failed_for_good(outcome.event, handler.id, made, outcome.error)

        return NextStep(keys.retrying(token) if blocks else keys.FAILED, True, file, failed)
    delay = backoff(made, settings.retry_backoff)[-1]
    when = datetime.now(UTC) + timedelta(seconds=delay)

    def schedule(pipe: Any) -> None:
        queue.schedule_job(_retry_job(queue, job_id, follow, description), when, pipeline=pipe)

    def scheduled() -> None:
        outcomes.retry_scheduled(outcome.event, handler.id, made, delay)

    return NextStep(keys.retrying(token), False, schedule, scheduled)


def _retry_job(queue: Queue, job_id: str, item: dict[str, Any], description: str) -> Job:
    """The RQ job that carries an item's next attempt (or, filed failed, its last one)."""
    return queue.create_job(
        keys.RETRY_FUNCTION,
        args=(item,),
        job_id=job_id,
        timeout=RETRY_JOB_TIMEOUT,
        result_ttl=0,
        failure_ttl=FAILURE_TTL,
        description=description,
        meta={"attempts": item["attempts"]},
    )


def file_failed(
    queue: Queue,
    job_id: str,
    item: dict[str, Any],
    error: str,
    description: str,
    blocks: bool = False,
    *,
    pipeline: Any = None,
) -> None:
    """A job with status ``failed`` and the traceback in RQ's failed registry; in
    ``pipeline`` when given (the caller executes it), else in a transaction of its own.

    One that ``blocks`` its key stays until an operator requeues or skips it (RQ keeps
    what it files with a negative ttl for ever): the key must not lose its way out.
    """
    ttl = -1 if blocks else FAILURE_TTL
    job = _retry_job(queue, job_id, item, description)
    job.ended_at = datetime.now(UTC)
    if pipeline is None:
        with queue.connection.pipeline() as pipe:
            file_failed(queue, job_id, item, error, description, blocks, pipeline=pipe)
            pipe.execute()
        return
    job.set_status(JobStatus.FAILED, pipeline=pipeline)
    FailedJobRegistry(queue=queue).add(job, ttl=ttl, exc_string=error, pipeline=pipeline)
    Result.create_failure(job, ttl, exc_string=error, pipeline=pipeline)


def file_unrunnable(
    queue: Queue, item: dict[str, Any], error: str
) -> tuple[dict[str, Any], Callable[[Any], None]]:
    """An item for a handler this worker does not load (its module was removed from
    the configuration, or this worker's differs): filed as failed, where ``receiver
    failed requeue`` finds it once the module is loaded again. Never retried blindly,
    and never left to fail every drain job behind it. Returns its trace entry, and the
    filing for the caller's transaction (the one that removes its packet)."""
    event = Event.from_dict(item["event"])
    follow = {**item, "attempts": int(item.get("attempts", 0)), "final": True}
    description = f"{item['handler']} on event {event.id} ({event.name}): not loaded"
    job_id, blocks = retry_job_id(item), bool(item.get("block"))

    def file(pipe: Any) -> None:
        file_failed(queue, job_id, follow, error, description, blocks, pipeline=pipe)

    entry = outcomes.trace_entry(event, str(item["handler"]), 0, "failed", error, 0)
    outcomes.failed_for_good(event, str(item["handler"]), follow["attempts"], error)
    return entry, file


def retry_job_id(item: dict[str, Any]) -> str:
    digest = hashlib.blake2b(
        f"{item['handler']}|{item['event']['integration']}|{item['event']['id']}".encode(),
        digest_size=12,
    ).hexdigest()
    return f"retry-{digest}"


def retry_item(item: dict[str, Any]) -> str:
    """RQ job function, run when an item's next attempt is due: hand it to a drainer.

    The attempt itself runs in a drain job like any first attempt (concurrently,
    under its time limit); the item's ``owner`` token lets that drainer claim it.
    """
    context = current_context()
    connection = context.connection
    assert connection is not None, "retries need Redis"
    job = get_current_job()
    queue = job.origin if job is not None else context.settings.queue_name
    packet = json.dumps(
        {"delivery_id": f"{retry_job_id(item)}:{item.get('attempts', 0)}", "items": [item]},
        separators=(",", ":"),
    ).encode()
    drainer = push(connection, queue, [packet], context.settings.max_drainers)
    if drainer is not None:
        start_drainer(connection, queue, drainer, context.settings.job_timeout)
    return "handed to a drainer"


def recover_abandoned(connection: Redis, queue_name: str) -> int:
    """Put back in their queue the retry jobs a worker took and never finished; return how
    many.

    A worker that loses Redis mid-job (the master is lost: the job's hand-over fails, and so
    does RQ's recording of the failure) leaves the job ``started`` in RQ's started registry,
    where RQ only files it as failed (abandoned), at its maintenance every ten minutes: the
    item would wait for an operator. Its execution expires a minute and a half after the
    worker's last word (RQ's heartbeat ttl), and then it is queued again here. So is one
    left in RQ's intermediate list (taken from the queue, never started) for over a minute.
    Only retry jobs: a drain job's packets come back from its in-flight list (``drain.reap``).
    """
    queue = keys.rq_queue(queue_name, connection)
    registry = StartedJobRegistry(queue=queue)
    recovered = 0
    for raw in connection.zrangebyscore(registry.key, 0, time.time()):
        entry = raw.decode() if isinstance(raw, bytes) else str(raw)
        job = _retry_job_in(connection, registry.parse_job_id(entry), JobStatus.STARTED)
        if job is not None and _requeue(connection, queue, job, registry.key, entry):
            recovered += 1
    intermediate = queue.intermediate_queue
    for job_id in intermediate.get_job_ids():
        job = _retry_job_in(connection, job_id, JobStatus.QUEUED)
        if job is None:
            continue
        seen = intermediate.get_first_seen(job_id)
        if seen is None or (job.enqueued_at is not None and seen < job.enqueued_at):
            # First seen now (an earlier attempt's mark, of the same job id, does not count).
            first_seen = intermediate.get_first_seen_key(job_id)
            connection.set(first_seen, datetime.now(UTC).timestamp(), ex=INTERMEDIATE_MARK_TTL)
            continue
        if datetime.now(UTC) - seen < INTERMEDIATE_PATIENCE or job_id in registry:
            continue
        if _requeue(connection, queue, job, intermediate.key, job_id):
            connection.delete(intermediate.get_first_seen_key(job_id))
            recovered += 1
    return recovered


def _retry_job_in(connection: Redis, job_id: str, status: JobStatus) -> Job | None:
    """The retry job ``job_id`` if it is one and has that status (else a finished job's
    leftovers, or no retry job: RQ's own cleanup deals with those)."""
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None
    if job.func_name not in (keys.RETRY_FUNCTION, *keys.LEGACY_RETRY_FUNCTIONS):
        return None
    return job if job.get_status(refresh=False) == status else None


def _requeue(connection: Redis, queue: Queue, job: Job, key: str, entry: str) -> bool:
    """Take ``entry`` out of ``key`` (the started registry, else the intermediate list) and
    queue ``job`` again, in one transaction."""
    started = key == StartedJobRegistry(queue=queue).key
    with connection.pipeline() as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]  # another worker may get there first
            if started:
                present = pipe.zscore(key, entry) is not None
            else:
                present = entry.encode() in pipe.lrange(key, 0, -1)
            if not present:
                return False
            pipe.multi()
            if started:
                pipe.zrem(key, entry)
            else:
                pipe.lrem(key, 1, entry)
            job.started_at = None
            queue.enqueue_job(job, pipeline=pipe)
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def backoff(retries: int, base: float) -> list[int]:
    """Exponential waits (base × 4ⁿ, capped at an hour) with ±20 % jitter."""
    return [
        max(1, round(min(3600.0, base * 4**n) * random.uniform(0.8, 1.2))) for n in range(retries)
    ]
