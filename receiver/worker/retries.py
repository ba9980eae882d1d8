"""Worker side: what becomes of an item whose attempt failed (drain jobs call this).

Failures leave the fast path: a failed or timed-out item gets a scheduled RQ
job (``retry_item``) with exponential backoff and jitter, which puts it back
in a packet when due, so that every attempt runs in a drain job like the
first; once its attempts run out it lands in RQ's failed registry as a failed
job with the event and the traceback, where ``receiver failed requeue`` (or
the dashboard) finds it. So does an item for a handler the worker does not
load (``file_unrunnable``).

A Redis master lost while a retry job runs: ``retry_item`` waits the failover out
and hands its item to the new master (``HAND_OVER_PATIENCE``); a retry job a worker
left ``started`` anyway (the hand-over was written to the lost master only, then RQ
could not record the job's end) is queued again by the workers' maintenance once its
execution has expired (``recover_abandoned``), where RQ itself would only file it
as failed at its own ten-minute maintenance; so is one stranded in RQ's intermediate
list (taken from its queue, its start never recorded). A second hand-over runs nothing twice
that ran: the item's claim state decides.

RQ jobs name ``receiver.worker.retries.retry_item`` (``keys.RETRY_FUNCTION``);
the paths earlier versions stored run through ``keys.JOB_ALIASES``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
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
RETRY_JOB_PREFIX = "retry-"
HAND_OVER_PATIENCE = 45.0
"""Seconds a retry job keeps trying to hand its item over while Redis is away (a Sentinel
failover): less than ``RETRY_JOB_TIMEOUT``, so RQ can still record the job's end."""
INTERMEDIATE_PATIENCE = 30.0
"""Seconds a retry job may sit in RQ's intermediate list (taken from its queue, its start
not recorded: normally a round trip) before it counts as stranded by a lost master."""
OUTAGE_PAUSE = 0.5
"""Seconds between two tries of a hand-over while Redis is away."""

log = logging.getLogger("receiver.retries")


def after_failure(outcome: Outcome, context: WorkContext) -> tuple[str, bool]:
    """Schedule the item's next attempt as an RQ job, or file it as failed; return its state,
    and whether it failed for good.

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
        return keys.FAILED, True
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
        file_failed(queue, job_id, follow, outcome.error or "", description, blocks)
        outcomes.failed_for_good(outcome.event, handler.id, made, outcome.error)
        return (keys.retrying(token) if blocks else keys.FAILED), True
    job = _retry_job(queue, job_id, follow, description)
    delay = backoff(made, settings.retry_backoff)[-1]
    queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay))
    outcomes.retry_scheduled(outcome.event, handler.id, made, delay)
    return keys.retrying(token), False


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
) -> None:
    """A job with status ``failed`` and the traceback in RQ's failed registry.

    One that ``blocks`` its key stays until an operator requeues or skips it (RQ keeps
    what it files with a negative ttl for ever): the key must not lose its way out.
    """
    ttl = -1 if blocks else FAILURE_TTL
    job = _retry_job(queue, job_id, item, description)
    job.ended_at = datetime.now(UTC)
    with queue.connection.pipeline() as pipe:
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        FailedJobRegistry(queue=queue).add(job, ttl=ttl, exc_string=error, pipeline=pipe)
        Result.create_failure(job, ttl, exc_string=error, pipeline=pipe)
        pipe.execute()


def file_unrunnable(queue: Queue, item: dict[str, Any], error: str) -> dict[str, Any]:
    """An item for a handler this worker does not load (its module was removed from
    the configuration, or this worker's differs): filed as failed, where ``receiver
    failed requeue`` finds it once the module is loaded again. Never retried blindly,
    and never left to fail every drain job behind it. Returns its trace entry."""
    event = Event.from_dict(item["event"])
    follow = {**item, "attempts": int(item.get("attempts", 0)), "final": True}
    description = f"{item['handler']} on event {event.id} ({event.name}): not loaded"
    file_failed(queue, retry_job_id(item), follow, error, description, bool(item.get("block")))
    entry = outcomes.trace_entry(event, str(item["handler"]), 0, "failed", error, 0)
    outcomes.failed_for_good(event, str(item["handler"]), follow["attempts"], error)
    return entry


def retry_job_id(item: dict[str, Any]) -> str:
    digest = hashlib.blake2b(
        f"{item['handler']}|{item['event']['integration']}|{item['event']['id']}".encode(),
        digest_size=12,
    ).hexdigest()
    return f"{RETRY_JOB_PREFIX}{digest}"


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
    drainer = _push_patiently(connection, queue, packet, context.settings.max_drainers)
    if drainer is not None:
        try:
            start_drainer(connection, queue, drainer, context.settings.job_timeout)
        except redis.RedisError as exc:  # the item is handed over: never fail the job now
            log.warning("no drain job started for %s (%s); maintenance starts one", queue, exc)
    return "handed to a drainer"


def _push_patiently(connection: Redis, queue: str, packet: bytes, max_drainers: int) -> str | None:
    """``push``, tried again while Redis is away for up to ``HAND_OVER_PATIENCE`` seconds.

    A master lost mid-job would otherwise fail the job while RQ cannot record it either:
    the job stays ``started`` on the promoted replica. A push the lost master applied but
    whose reply never came is pushed twice; the claim state runs the item once.
    """
    deadline = time.monotonic() + HAND_OVER_PATIENCE
    while True:
        try:
            return push(connection, queue, [packet], max_drainers)
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("retry waiting for Redis to hand its item over: %s", exc)
            time.sleep(OUTAGE_PAUSE)


def recover_abandoned(connection: Redis, queue_name: str) -> int:
    """Queue again the retry jobs a worker took and never finished; return how many.

    A worker that loses Redis mid-job longer than ``HAND_OVER_PATIENCE`` (or whose
    hand-over only the lost master saw) leaves the job ``started``, where RQ only files
    it as failed (abandoned) at its ten-minute maintenance: the item would wait for an
    operator. Its execution expires a minute after the job's own time limit (RQ's
    heartbeat), which no running retry job outlives; then it is queued again here. Only
    retry jobs: a drain job's packets come back from its in-flight list (``drain.reap``).
    So are retry jobs stranded between RQ's queue and its started registry
    (``_recover_intermediate``).
    """
    queue = keys.rq_queue(queue_name, connection)
    registry = StartedJobRegistry(queue=queue)
    recovered = 0
    for raw in connection.zrangebyscore(registry.key, 0, time.time()):
        entry = raw.decode() if isinstance(raw, bytes) else str(raw)
        job_id = registry.parse_job_id(entry)
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            if job_id.startswith(RETRY_JOB_PREFIX):
                connection.zrem(registry.key, entry)  # see below
            continue
        if job.func_name not in (keys.RETRY_FUNCTION, *keys.LEGACY_RETRY_FUNCTIONS):
            continue  # a drain job: RQ's own cleanup
        if job.get_status(refresh=False) != JobStatus.STARTED:
            # An earlier attempt's leftover: the next attempt has the same job id, and
            # once started must not be taken for this abandoned one.
            connection.zrem(registry.key, entry)
            continue
        if _requeue(connection, queue, job, registry.key, entry):
            recovered += 1
    return recovered + _recover_intermediate(connection, queue)


_first_seen: dict[tuple[str, str], float] = {}
"""(queue, retry job id) → when this process's maintenance first saw it in RQ's
intermediate list for its current enqueue (epoch seconds)."""


def _recover_intermediate(connection: Redis, queue: Queue) -> int:
    """Queue again the retry jobs stranded in RQ's intermediate list for over
    ``INTERMEDIATE_PATIENCE`` seconds of this process's watch.

    A worker moves a job from its queue to that list, then records its start: a master
    lost in between leaves it there on the promoted replica, neither queued nor started,
    until RQ's ten-minute maintenance files it as failed. A worker listening on several
    queues leaves a job's entry there after running it (RQ removes it only for one
    queue): such an entry names a job that is gone, or no longer merely queued, or whose
    current enqueue came after the entry was first seen; none of them counts.
    """
    intermediate = queue.intermediate_queue
    ids = [i for i in intermediate.get_job_ids() if i.startswith(RETRY_JOB_PREFIX)]
    for key in [k for k in _first_seen if k[0] == queue.name and k[1] not in ids]:
        del _first_seen[key]
    recovered = 0
    for job_id in dict.fromkeys(ids):
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            continue  # ran (a retry job keeps no result): RQ's cleanup drops the entry
        if job.get_status(refresh=False) != JobStatus.QUEUED:
            continue
        key = (queue.name, job_id)
        enqueued = job.enqueued_at.timestamp() if job.enqueued_at is not None else 0.0
        seen = _first_seen.get(key)
        if seen is None or seen < enqueued:
            _first_seen[key] = time.time()
            continue
        if time.time() - seen < INTERMEDIATE_PATIENCE:
            continue
        if _requeue_stranded(connection, queue, job):
            del _first_seen[key]
            recovered += 1
    return recovered


def _requeue_stranded(connection: Redis, queue: Queue, job: Job) -> bool:
    """Move ``job`` from the intermediate list back to its queue, unless it is in the queue
    already; one transaction, False when another worker got there first."""
    intermediate = queue.intermediate_queue_key
    with connection.pipeline() as pipe:
        try:
            pipe.watch(intermediate, queue.key)  # type: ignore[no-untyped-call]
            if pipe.lpos(intermediate, job.id) is None or pipe.lpos(queue.key, job.id) is not None:
                return False
            pipe.multi()
            pipe.lrem(intermediate, 0, job.id)
            queue.enqueue_job(job, pipeline=pipe)
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def _requeue(connection: Redis, queue: Queue, job: Job, key: str, entry: str) -> bool:
    """Take ``entry`` out of the started registry and queue ``job`` again, in one
    transaction; False when another worker's maintenance got there first."""
    with connection.pipeline() as pipe:
        try:
            pipe.watch(key)  # type: ignore[no-untyped-call]
            if pipe.zscore(key, entry) is None:
                return False
            pipe.multi()
            pipe.zrem(key, entry)
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
