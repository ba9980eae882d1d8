"""The worker side of background work: drain jobs pull many deliveries per RQ job.

One RQ job per event costs ~57 Redis commands and caps a worker near 200
jobs/s, so deliveries are not RQ jobs. The web side appends each delivery
as one *packet* to ``receiver:pending:<queue>`` and, when fewer than
``max_drainers`` drainers are alive, enqueues one *drain job*. A drain job
moves packets to its own in-flight list, runs their items (claimed one by
one in Redis, see ``jobs``), and stops when the list is empty or its time
budget is spent (then hands its slot to a fresh drain job).

Failures leave the fast path: a failed item becomes its own RQ job
(``retry_item``), scheduled with exponential backoff and jitter, and lands
in RQ's failed registry, with the event and the traceback, once retries run out.

A drainer proves it is alive with a heartbeat key; when a worker is
SIGKILLed the key expires, and any other worker's maintenance moves the dead
drainer's in-flight packets back to the front of the queue and starts a drainer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis import Redis
from rq import Queue, Retry, get_current_job
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from . import lua
from .errors import HandlerFailed
from .jobs import ALIVE_PREFIX, Outcome, WorkContext, current_context, execute

log = logging.getLogger("receiver.drain")

PENDING = "receiver:pending:"
DRAINERS = "receiver:drainers:"
INFLIGHT = "receiver:inflight:"

HEARTBEAT_TTL = 10
"""Seconds without a heartbeat after which a drainer counts as dead."""
HEARTBEAT_EVERY = 2.0
SLOT_GRACE = 60
"""Seconds a newly enqueued drain job may wait in the queue before its slot lapses."""
BUDGET = 20.0
"""Seconds one drain job runs before handing over: keeps RQ's job heartbeat honest."""
POP_PACKETS = 50
BACKLOG_PER_DRAINER = 2 * POP_PACKETS
"""Another drainer starts only when this many packets wait per live one."""
LINGER = 1
"""Seconds an idle drainer waits for the next delivery before it ends: under steady
traffic one drainer stays up instead of the web side starting one per burst."""
OUTAGE_PAUSE = 1.0
"""Seconds a drainer waits before trying Redis again."""
DRAIN_FUNCTION = "receiver.drain.drain"
RETRY_FUNCTION = "receiver.drain.retry_item"

stop_requested = threading.Event()
"""Set by the worker on SIGTERM: drainers stop after their current packets."""

PUSH = """
if #ARGV > 4 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 5)) end
local now = tonumber(redis.call('TIME')[1])
local live = redis.call('ZCOUNT', KEYS[2], now, '+inf')
if live == 0 or (live < tonumber(ARGV[1])
                 and redis.call('LLEN', KEYS[1]) > live * tonumber(ARGV[4])) then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
  return 1
end
return 0
"""

POP = """
local packets = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #packets > 0 then
  redis.call('LTRIM', KEYS[1], #packets, -1)
  redis.call('RPUSH', KEYS[2], unpack(packets))
end
return packets
"""

FINISH = """
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""

REAP = """
local now = tonumber(redis.call('TIME')[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for _, id in ipairs(dead) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    local key = ARGV[1] .. id
    local packets = redis.call('LRANGE', key, 0, -1)
    for i = #packets, 1, -1 do redis.call('LPUSH', KEYS[1], packets[i]) end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[2], id)
  end
end
return #dead
"""


def pending_key(queue: str) -> str:
    return PENDING + queue


def drainers_key(queue: str) -> str:
    return DRAINERS + queue


def push(connection: Redis, queue: str, packets: list[bytes], max_drainers: int) -> str | None:
    """Append packets (one round trip); return a new drainer id when one should be started."""
    candidate = uuid.uuid4().hex
    script = lua.script(connection, PUSH)
    wanted = script(
        keys=[pending_key(queue), drainers_key(queue)],
        args=[max_drainers, candidate, SLOT_GRACE, BACKLOG_PER_DRAINER, *packets],
    )
    return candidate if wanted else None


def start_drainer(connection: Redis, queue: str, drainer_id: str, settings_timeout: int) -> None:
    Queue(queue, connection=connection, serializer=JSONSerializer).enqueue_call(
        DRAIN_FUNCTION,
        args=(queue,),
        job_id=drainer_id,
        timeout=int(BUDGET) + settings_timeout + 60,
        result_ttl=0,
        failure_ttl=24 * 3600,
        description=f"drain {queue}",
    )


def kick(connection: Redis, queue: str, max_drainers: int, job_timeout: int) -> bool:
    """Start a drainer if work is pending and fewer than ``max_drainers`` are alive."""
    if not connection.llen(pending_key(queue)):
        return False
    drainer = push(connection, queue, [], max_drainers)
    if drainer is not None:
        start_drainer(connection, queue, drainer, job_timeout)
        return True
    return False


def reap(connection: Redis, queue: str) -> int:
    """Give dead drainers' in-flight packets back to the queue, oldest first."""
    script = lua.script(connection, REAP)
    return int(
        script(keys=[pending_key(queue), drainers_key(queue)], args=[INFLIGHT, ALIVE_PREFIX])
    )


class _Heartbeat:
    def __init__(self, connection: Redis, queue: str, drainer: str) -> None:
        self.connection = connection
        self.queue = queue
        self.drainer = drainer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-heartbeat", daemon=True)

    def beat(self) -> None:
        expires = time.time() + HEARTBEAT_TTL
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.set(ALIVE_PREFIX + self.drainer, 1, ex=HEARTBEAT_TTL)
            pipe.zadd(drainers_key(self.queue), {self.drainer: expires})
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self.beat()
            except Exception:  # a missed beat is survivable; the next one may succeed
                log.warning("drainer %s missed a heartbeat", self.drainer, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.delete(ALIVE_PREFIX + self.drainer)


def drain(queue: str) -> dict[str, int]:
    """RQ job function: run pending deliveries of ``queue`` until none are left."""
    context = current_context()
    connection = context.connection
    assert connection is not None, "drain jobs need Redis"
    job = get_current_job()
    drainer = job.id if job is not None else uuid.uuid4().hex
    inflight = INFLIGHT + drainer
    pop = lua.script(connection, POP)
    finish = lua.script(connection, FINISH)
    counts = {"packets": 0, "events": 0, "failed": 0}
    started = time.monotonic()
    done_keys = [pending_key(queue), drainers_key(queue), inflight]
    with _Heartbeat(connection, queue, drainer):
        reap(connection, queue)
        while True:
            try:
                # Packets already in flight first: a retried job, or a reply lost to an outage.
                packets = connection.lrange(inflight, 0, -1)
                if not packets:
                    if stop_requested.is_set() or time.monotonic() - started > BUDGET:
                        if not finish(keys=done_keys, args=[drainer]):
                            _hand_over(connection, queue, drainer, context)
                        break
                    packets = pop(keys=[pending_key(queue), inflight], args=[POP_PACKETS])
                    if not packets:
                        # Block briefly for the next delivery; it lands in flight, read above.
                        if connection.blmove(pending_key(queue), inflight, LINGER, "LEFT", "RIGHT"):
                            continue
                        if finish(keys=done_keys, args=[drainer]):
                            break
                        continue
                items = [i for p in packets for i in json.loads(p)["items"]]
                outcomes = run_items(items, context, token=f"d:{drainer}")
                connection.delete(inflight)
            except redis.RedisError as exc:
                # Keep the claim on what is in flight; carry on once Redis is back.
                log.warning("drainer %s waiting for Redis: %s", drainer, exc)
                if stop_requested.wait(OUTAGE_PAUSE):
                    raise
                continue
            counts["packets"] += len(packets)
            counts["events"] += len(items)
            counts["failed"] += sum(1 for o in outcomes if not o.ok)
    return counts


def _hand_over(connection: Redis, queue: str, drainer: str, context: WorkContext) -> None:
    """Budget spent (or shutting down): a fresh drain job takes this slot if work remains."""
    successor = uuid.uuid4().hex
    with connection.pipeline() as pipe:
        pipe.zadd(drainers_key(queue), {successor: time.time() + SLOT_GRACE})
        pipe.zrem(drainers_key(queue), drainer)
        pipe.execute()
    start_drainer(connection, queue, successor, context.settings.job_timeout)


def run_items(items: list[dict[str, Any]], context: WorkContext, *, token: str) -> list[Outcome]:
    """First attempt of each item; failures move to their own scheduled RQ retry jobs."""
    return execute(items, context, token=token, failed_state=lambda o: _after_failure(o, context))


def _after_failure(outcome: Outcome, context: WorkContext) -> str:
    settings = context.settings
    handler = outcome.handler
    retries = settings.job_retries if handler.retry is None else handler.retry
    connection = context.connection
    if connection is None:
        return "failed"
    queue = Queue(
        handler.queue or settings.queue_name, connection=connection, serializer=JSONSerializer
    )
    job_id = retry_job_id(outcome.item)
    job = queue.create_job(
        RETRY_FUNCTION,
        args=(outcome.item,),
        job_id=job_id,
        timeout=handler.timeout or settings.job_timeout,
        result_ttl=0,
        description=f"{handler.id} on event {outcome.event.id} ({outcome.event.name})",
        meta={"retries": retries},
        retry=Retry(max=retries - 1, interval=backoff(retries, settings.retry_backoff)[1:])
        if retries > 1
        else None,
    )
    if retries == 0:
        FailedJobRegistry(queue=queue).add(job, exc_string=outcome.error or "")
        return "failed"
    delay = backoff(1, settings.retry_backoff)[0]
    queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay))
    return f"retrying:r:{job_id}"


def retry_job_id(item: dict[str, Any]) -> str:
    digest = hashlib.blake2b(
        f"{item['handler']}|{item['event']['integration']}|{item['event']['id']}".encode(),
        digest_size=12,
    ).hexdigest()
    return f"retry-{digest}"


def retry_item(item: dict[str, Any]) -> str:
    """RQ job function for a failed item's later attempts; raising lets RQ retry or fail it."""
    job = get_current_job()
    token = f"r:{job.id}" if job is not None else f"r:{retry_job_id(item)}"
    final = job is None or not job.retries_left
    [outcome] = execute(
        [item],
        current_context(),
        token=token,
        failed_state=lambda o: "failed" if final else f"retrying:{token}",
    )
    if outcome.error is not None:
        raise HandlerFailed(
            f"{outcome.handler.id} failed on event {outcome.event.id} ({outcome.event.name}):\n"
            f"{outcome.error}"
        )
    return "done" if outcome.ran else "skipped (already handled)"


def backoff(retries: int, base: float) -> list[int]:
    """Exponential waits (base × 4ⁿ, capped at an hour) with ±20 % jitter."""
    return [
        max(1, round(min(3600.0, base * 4**n) * random.uniform(0.8, 1.2))) for n in range(retries)
    ]


def job_item(job: Job) -> dict[str, Any] | None:
    """The item a retry job carries, for the operators' CLI."""
    if job.func_name != RETRY_FUNCTION or not job.args:
        return None
    value = job.args[0]
    return value if isinstance(value, dict) else None
