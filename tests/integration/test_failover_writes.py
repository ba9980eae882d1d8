"""What a drainer writes for a failed item, and when it removes the item's packet.

After a failover the promoted replica holds a prefix of the lost master's writes, in
the order the master applied them, a MULTI/EXEC whole or not at all. So an item whose
packet leaves the in-flight list must have what it depends on (its scheduled retry,
or its filing as failed) written in the same transaction: these tests read the
commands a drain job sends (``MONITOR``) and check they are. A packet the new master
still holds in flight runs again; a retry job a worker started and never finished
runs again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import utcformat

from receiver.model.events import Event
from receiver.queue import handoff, keys, scripts
from receiver.routing.handlers import Router
from receiver.settings.loading import load_settings
from receiver.worker import claims, retries
from receiver.worker import drain as worker_drain
from receiver.worker.claims import WorkContext

pytestmark = pytest.mark.redis  # uses the session's Redis

QUEUE = "receiver"


def fails(event: Event) -> None:
    raise RuntimeError("fails on purpose")


def event(n: int) -> Event:
    return Event(
        topic="group", field="posts", value={"n": n}, id=f"e{n}", delivery_id=f"d{n}",
        integration="default",
    )


def context(url: str, router: Router) -> WorkContext:
    settings = load_settings({"receiver": {"dev_mode": True, "redis_url": url}})
    return WorkContext(router, settings, redis.Redis.from_url(url))


class Monitor:
    """Every command the server runs meanwhile, as lists of strings (``MONITOR``)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.commands: list[list[str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for line in monitor.listen():
                command = line["command"]
                if "QUIT-MONITOR" in command:
                    return
                self.commands.append(split(command))

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        redis.Redis(connection_pool=self.client.connection_pool).echo("QUIT-MONITOR")
        self._thread.join(5)


def split(command: str) -> list[str]:
    """redis-py's MONITOR line: arguments separated by spaces, each in quotes when quoted."""
    out, word, quoted, escaped = [], "", False, False
    for ch in command:
        if escaped:
            word += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            out.append(word)
            word = ""
        else:
            word += ch
    out.append(word)
    return out


def transactions(commands: list[list[str]]) -> list[list[list[str]]]:
    """The MULTI … EXEC blocks among ``commands``."""
    blocks: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for command in commands:
        name = command[0].upper()
        if name == "MULTI":
            current = []
        elif name == "EXEC" and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(command)
    return blocks


def touches(command: list[str], key: str) -> bool:
    return any(key in argument for argument in command[1:])


def drain_once(work: WorkContext, items: list[dict[str, Any]]) -> None:
    assert work.connection is not None
    packet = json.dumps({"delivery_id": "d", "items": items}).encode()
    handoff.push(work.connection, QUEUE, [packet], 1)
    claims.configure(work)
    worker_drain.drain(QUEUE)


@pytest.fixture
def router() -> Router:
    router = Router()
    router.connect("group.posts", fails, background=True, retry=3)
    router.connect("group.comments", fails, background=True, retry=0)
    return router


@pytest.fixture
def monitored(redis_url: str) -> Iterator[Monitor]:
    with Monitor(redis_url) as monitor:
        yield monitor


def test_a_retry_is_scheduled_in_the_transaction_that_removes_its_packet(
    redis_url: str, router: Router, monitored: Monitor
) -> None:
    work = context(redis_url, router)
    [handler] = [h for h in router.handlers() if h.retry == 3]
    drain_once(work, [handoff.item(event(1), handler)])
    blocks = transactions(monitored.commands)
    scheduled = f"rq:scheduled:{QUEUE}"
    [block] = [b for b in blocks if any(touches(c, scheduled) for c in b)]
    names = [(c[0].upper(), c[1] if len(c) > 1 else "") for c in block]
    assert ("LREM", keys.INFLIGHT) in [(n, k[: len(keys.INFLIGHT)]) for n, k in names]
    assert any(n == "SET" and k.startswith(keys.STATE) for n, k in names)  # the claim state
    assert retries.retry_job_id(handoff.item(event(1), handler)) in str(block)
    assert work.connection is not None
    assert work.connection.zcard(scheduled) == 1


def test_filing_a_failed_item_is_in_the_transaction_that_removes_its_packet(
    redis_url: str, router: Router, monitored: Monitor
) -> None:
    work = context(redis_url, router)
    [handler] = [h for h in router.handlers() if h.retry == 0]
    unloaded = {**handoff.item(event(3), handler), "handler": "gone:handler@x"}
    drain_once(work, [handoff.item(event(2), handler), unloaded])
    blocks = transactions(monitored.commands)
    failed = f"rq:failed:{QUEUE}"
    filed = [b for b in blocks if any(touches(c, failed) for c in b)]
    assert filed, "nothing filed in a transaction"
    for block in filed:
        assert any(c[0].upper() == "LREM" and touches(c, keys.INFLIGHT) for c in block)
    assert work.connection is not None
    assert work.connection.zcard(failed) == 2


def test_a_drainer_does_not_drop_packets_a_new_master_still_holds_in_flight(
    redis_url: str,
) -> None:
    """FINISH refuses while the in-flight list is not empty: what a lost master had seen
    removed, and the promoted replica still holds, is taken again, not deleted."""
    connection = redis.Redis.from_url(redis_url)
    inflight = keys.inflight_key("gone")
    connection.rpush(inflight, b"packet")
    finish = scripts.script(connection, scripts.FINISH)
    done_keys = [keys.pending_key(QUEUE), keys.drainers_key(QUEUE), inflight]
    assert finish(keys=done_keys, args=["gone"]) == -1
    assert connection.lrange(inflight, 0, -1) == [b"packet"]
    connection.delete(inflight)
    assert finish(keys=done_keys, args=["gone"]) == 1


def test_a_packet_back_in_flight_runs_again(redis_url: str) -> None:
    """As after a failover: the drainer removed a finished packet, the new master still has
    it in flight; the drainer takes it again before it ends."""
    seen: list[int] = []
    router = Router()
    router.connect("group.posts", lambda e: seen.append(e.value["n"]), background=True)
    work = context(redis_url, router)
    assert work.connection is not None
    [handler] = router.handlers()
    packet = json.dumps({"delivery_id": "d", "items": [handoff.item(event(4), handler)]})
    handoff.push(work.connection, QUEUE, [packet.encode()], 1)
    claims.configure(work)

    original = worker_drain._Drain._flush
    resurrected: list[bool] = []

    def flush(self: Any) -> None:
        finished = list(self.finished)
        original(self)
        if finished and not resurrected:  # the removal is lost with the master
            resurrected.append(True)
            self.connection.delete(claims.outcome_key(self_outcome(self, finished)))
            self.connection.rpush(self.inflight, *finished)

    def self_outcome(drainer: Any, finished: list[bytes]) -> claims.Outcome:
        item = json.loads(finished[0])["items"][0]
        return claims.Outcome(item, handler, Event.from_dict(item["event"]), ran=True)

    worker_drain._Drain._flush = flush  # type: ignore[method-assign]
    try:
        worker_drain.drain(QUEUE)
    finally:
        worker_drain._Drain._flush = original  # type: ignore[method-assign]
    assert seen == [4, 4]  # ran again, not lost
    assert not work.connection.keys(f"{keys.INFLIGHT}*")


def test_a_retry_job_a_worker_left_started_runs_again(redis_url: str, router: Router) -> None:
    """A worker lost Redis mid-job: RQ could record neither the hand-over nor the failure,
    and the job stays ``started``. Once its execution expired it is queued again."""
    connection = redis.Redis.from_url(redis_url)
    [handler] = [h for h in router.handlers() if h.retry == 3]
    item = {**handoff.item(event(5), handler), "attempts": 1}
    queue = keys.rq_queue(QUEUE, connection)
    job = retries._retry_job(queue, retries.retry_job_id(item), item, "a retry")
    queue.enqueue_job(job)
    registry = StartedJobRegistry(queue=queue)
    [job_id] = queue.job_ids
    connection.lrem(queue.key, 1, job_id)
    job.set_status(JobStatus.STARTED)
    connection.zadd(registry.key, {f"{job_id}:execution": time.time() - 1})
    assert retries.recover_abandoned(connection, QUEUE) == 1
    assert queue.job_ids == [job_id]
    assert connection.zcard(registry.key) == 0
    assert Job.fetch(job_id, connection=connection).get_status() == JobStatus.QUEUED
    assert retries.recover_abandoned(connection, QUEUE) == 0


def test_a_started_retry_job_whose_worker_is_alive_is_left_alone(
    redis_url: str, router: Router
) -> None:
    connection = redis.Redis.from_url(redis_url)
    [handler] = [h for h in router.handlers() if h.retry == 3]
    item = {**handoff.item(event(6), handler), "attempts": 1}
    queue = keys.rq_queue(QUEUE, connection)
    job = retries._retry_job(queue, retries.retry_job_id(item), item, "a retry")
    queue.enqueue_job(job)
    connection.lrem(queue.key, 1, job.id)
    job.set_status(JobStatus.STARTED)
    registry = StartedJobRegistry(queue=queue)
    connection.zadd(registry.key, {f"{job.id}:execution": time.time() + 60})
    assert retries.recover_abandoned(connection, QUEUE) == 0
    assert connection.zcard(registry.key) == 1


def test_a_retry_job_taken_from_the_queue_and_never_started_runs_again(
    redis_url: str, router: Router
) -> None:
    """Taken (RQ moves it to an intermediate list), then the master was lost before the
    worker recorded its start: queued again once it has been there for over a minute."""
    connection = redis.Redis.from_url(redis_url)
    [handler] = [h for h in router.handlers() if h.retry == 3]
    item = {**handoff.item(event(7), handler), "attempts": 1}
    queue = keys.rq_queue(QUEUE, connection)
    job = retries._retry_job(queue, retries.retry_job_id(item), item, "a retry")
    queue.enqueue_job(job)
    connection.lmove(queue.key, queue.intermediate_queue_key)
    first_seen = queue.intermediate_queue.get_first_seen_key(job.id)
    connection.set(first_seen, time.time() - 3600)  # an earlier attempt's mark: not this one's
    assert retries.recover_abandoned(connection, QUEUE) == 0  # first seen now
    assert queue.job_ids == []
    assert float(connection.get(first_seen) or 0) > time.time() - 60
    assert retries.recover_abandoned(connection, QUEUE) == 0  # not a minute yet
    enqueued = datetime.now(UTC) - timedelta(minutes=3)
    connection.hset(job.key, "enqueued_at", utcformat(enqueued))
    connection.set(first_seen, time.time() - 120)
    assert retries.recover_abandoned(connection, QUEUE) == 1
    assert not connection.exists(first_seen)
    assert queue.job_ids == [job.id]
    assert connection.llen(queue.intermediate_queue_key) == 0
