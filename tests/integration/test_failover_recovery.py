"""What a drainer and a retry job leave behind when the Redis master is lost, and how it
comes back.

After a Sentinel failover the promoted replica holds a prefix of the lost master's writes,
in the order the master applied them. A drainer schedules a failed item's retry (or files
it) before it removes the item's packet from its in-flight list, so a new master that
lacks the retry still holds the packet in flight: it must run again, not be dropped. A
retry job whose worker lost Redis mid-job must still hand its item over. Each test here
plays one such loss on a real Redis, deterministically, and failed on the code before.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.utils import utcformat

from receiver.model.events import Event
from receiver.queue import handoff, keys, scripts
from receiver.routing.handlers import Handler, Router
from receiver.settings.loading import load_settings
from receiver.testing import RedisServer
from receiver.worker import claims, retries
from receiver.worker import drain as worker_drain
from receiver.worker.claims import WorkContext

pytestmark = pytest.mark.redis

QUEUE = "receiver"


def event(n: int) -> Event:
    return Event(
        topic="group",
        field="posts",
        value={"n": n},
        id=f"e{n}",
        delivery_id=f"d{n}",
        integration="default",
    )


def context(url: str, router: Router) -> WorkContext:
    settings = load_settings({"receiver": {"dev_mode": True, "redis_url": url}})
    return WorkContext(router, settings, redis.Redis.from_url(url))


def only_handler(router: Router) -> Handler:
    [handler] = router.handlers()
    return handler


def packet(*items: dict[str, Any]) -> bytes:
    return json.dumps({"delivery_id": "d", "items": list(items)}).encode()


# -- the drainer's end: packets still in flight -------------------------------------------------


def test_finish_puts_packets_still_in_flight_back_at_the_front_of_the_queue(
    redis_url: str,
) -> None:
    """The old FINISH deleted the in-flight list with whatever it still held."""
    connection = redis.Redis.from_url(redis_url)
    inflight = keys.inflight_key("x")
    connection.rpush(inflight, b"first", b"second")
    connection.rpush(keys.pending_key(QUEUE), b"waiting")
    connection.zadd(keys.drainers_key(QUEUE), {"x": time.time() + 10})
    done_keys = [keys.pending_key(QUEUE), keys.drainers_key(QUEUE), inflight]
    assert scripts.run(connection, scripts.FINISH, done_keys, ["x"]) == -2
    assert connection.lrange(keys.pending_key(QUEUE), 0, -1) == [b"first", b"second", b"waiting"]
    assert not connection.exists(inflight)
    assert connection.zscore(keys.drainers_key(QUEUE), "x") is not None  # still draining
    connection.delete(keys.pending_key(QUEUE))
    assert scripts.run(connection, scripts.FINISH, done_keys, ["x"]) == 1
    assert connection.zcard(keys.drainers_key(QUEUE)) == 0


def lose_last_writes(monkeypatch: pytest.MonkeyPatch, rollback: Any) -> list[bool]:
    """After the drainer's first flush that removes a packet (``_flush``, or the success
    path's ``_flush_done``), ``rollback(drainer, raws)`` undoes what a promoted replica
    would not have had; returns a list that is non-empty once it did."""
    done: list[bool] = []

    def losing(original: Any) -> Any:
        def flush(self: Any, *args: Any, **kwargs: Any) -> Any:
            finished = list(self.finished)
            result = original(self, *args, **kwargs)
            if finished and not self.finished and not done:
                done.append(True)
                rollback(self, finished)
            return result

        return flush

    for name in ("_flush", "_flush_done"):
        monkeypatch.setattr(worker_drain._Drain, name, losing(getattr(worker_drain._Drain, name)))
    return done


def test_a_failed_item_whose_retry_and_removal_a_failover_lost_runs_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master acknowledged the retry, the claim state and the packet's removal, and was
    lost before its replica had any of them: the drainer finds the packet in flight at its
    end, runs the item again (it fails again) and schedules its retry. The old drainer
    deleted the packet: no retry, no packet, the item lost."""
    calls: list[int] = []

    def fails(e: Event) -> None:
        calls.append(e.value["n"])
        raise RuntimeError("fails on purpose")

    router = Router()
    router.connect("group.posts", fails, background=True, retry=3)
    work = context(redis_url, router)
    connection = work.connection
    assert connection is not None
    item = handoff.item(event(1), only_handler(router))
    handoff.push(connection, QUEUE, [packet(item)], 1)
    job_id = retries.retry_job_id(item)
    queue = keys.rq_queue(QUEUE, connection)

    def rollback(drainer: Any, raws: list[bytes]) -> None:
        state = keys.state_key("default", item["handler"], "e1")
        assert connection.get(state) == keys.retrying(keys.retry_token(job_id)).encode()
        connection.delete(state, Job.key_for(job_id))
        ScheduledJobRegistry(queue=queue).remove(job_id)
        connection.rpush(drainer.inflight, *raws)

    lost = lose_last_writes(monkeypatch, rollback)
    claims.configure(work)
    worker_drain.drain(QUEUE)
    assert lost
    assert calls == [1, 1]  # ran again: a duplicate at a failover, never a loss
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [job_id]
    assert not connection.keys(f"{keys.INFLIGHT}*")
    assert connection.llen(keys.pending_key(QUEUE)) == 0


def test_a_succeeded_items_packet_back_in_flight_is_not_run_twice(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the removal was lost, its ``done`` state was not: the packet goes round again
    and the claim skips the item (no second run outside what a failover lost)."""
    calls: list[int] = []
    router = Router()
    router.connect("group.posts", lambda e: calls.append(e.value["n"]), background=True)
    work = context(redis_url, router)
    connection = work.connection
    assert connection is not None
    handoff.push(connection, QUEUE, [packet(handoff.item(event(2), only_handler(router)))], 1)
    lost = lose_last_writes(monkeypatch, lambda d, raws: connection.rpush(d.inflight, *raws))
    claims.configure(work)
    worker_drain.drain(QUEUE)
    assert lost
    assert calls == [2]
    assert not connection.keys(f"{keys.INFLIGHT}*")
    assert connection.llen(keys.pending_key(QUEUE)) == 0


# -- a retry job whose worker loses Redis -------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own, to stop and start (the session's stays up)."""
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.start()
    yield server
    server.stop()


def test_a_retry_job_waits_out_an_outage_to_hand_its_item_over(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes away as the job starts and comes back a moment later: the item is handed
    over. The old job failed at once, and RQ, unable to record that either, left the job
    'started' until its ten-minute maintenance filed it as failed."""
    router = Router()
    router.connect("group.posts", lambda e: None, background=True)
    work = context(own_server.url, router)
    connection = work.connection
    assert connection is not None
    claims.configure(work)
    item = {**handoff.item(event(3), only_handler(router)), "attempts": 1}
    own_server.stop()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(retries.retry_item(item))
        except BaseException as exc:  # reported below
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while "waiting for Redis" not in caplog.text and thread.is_alive():
        assert time.monotonic() < deadline, "the job neither waited nor ended"
        time.sleep(0.05)
    own_server.start()
    thread.join(60)
    assert outcome == ["handed to a drainer"]
    [raw] = connection.lrange(keys.pending_key(QUEUE), 0, -1)
    assert json.loads(raw)["items"] == [item]


def test_a_retry_job_gives_up_after_its_patience(
    own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``HAND_OVER_PATIENCE`` it fails, while RQ's own time limit can still end it."""
    assert retries.HAND_OVER_PATIENCE < retries.RETRY_JOB_TIMEOUT
    monkeypatch.setattr(retries, "HAND_OVER_PATIENCE", 0.0)
    router = Router()
    router.connect("group.posts", lambda e: None, background=True)
    work = context(own_server.url, router)
    claims.configure(work)
    own_server.stop()
    with pytest.raises(redis.ConnectionError):
        retries.retry_item({**handoff.item(event(4), only_handler(router)), "attempts": 1})


def started_retry_job(connection: redis.Redis, n: int, expires: float) -> Job:
    """A retry job as a worker that lost Redis mid-job leaves it: ``started``, its execution
    in the started registry until ``expires``."""
    router = Router()
    router.connect("group.posts", lambda e: None, background=True)
    item = {**handoff.item(event(n), only_handler(router)), "attempts": 1}
    queue = keys.rq_queue(QUEUE, connection)
    job = retries._retry_job(queue, retries.retry_job_id(item), item, "a retry")
    queue.enqueue_job(job)
    connection.lrem(queue.key, 1, job.id)
    job.set_status(JobStatus.STARTED)
    connection.zadd(StartedJobRegistry(queue=queue).key, {f"{job.id}:execution": expires})
    return job


def test_a_retry_job_a_worker_left_started_is_queued_again(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    job = started_retry_job(connection, 5, time.time() - 1)
    queue = keys.rq_queue(QUEUE, connection)
    assert retries.recover_abandoned(connection, QUEUE) == 1
    assert queue.job_ids == [job.id]
    assert connection.zcard(StartedJobRegistry(queue=queue).key) == 0
    assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.QUEUED
    assert retries.recover_abandoned(connection, QUEUE) == 0  # once


def test_a_running_retry_job_and_other_jobs_are_left_alone(redis_url: str) -> None:
    """Not expired: its worker may still be running it (a retry job never outlives its
    execution's expiry). A drain job's packets come back through its in-flight list."""
    connection = redis.Redis.from_url(redis_url)
    started_retry_job(connection, 6, time.time() + 60)
    queue = keys.rq_queue(QUEUE, connection)
    handoff.start_drainer(connection, QUEUE, "a-drainer", 30)
    connection.lrem(queue.key, 1, "a-drainer")
    Job.fetch("a-drainer", connection=connection).set_status(JobStatus.STARTED)
    connection.zadd(StartedJobRegistry(queue=queue).key, {"a-drainer:execution": time.time() - 1})
    assert retries.recover_abandoned(connection, QUEUE) == 0
    assert connection.zcard(StartedJobRegistry(queue=queue).key) == 2
    assert queue.job_ids == []


def test_an_earlier_attempts_leftover_entry_goes_and_requeues_nothing(redis_url: str) -> None:
    """The job id is the same for every attempt of an item: an abandoned entry of an earlier
    attempt, whose job is scheduled again by now, must not queue the next attempt early
    (nor, once that one starts, count it as abandoned)."""
    connection = redis.Redis.from_url(redis_url)
    job = started_retry_job(connection, 7, time.time() - 1)
    job.set_status(JobStatus.SCHEDULED)
    assert retries.recover_abandoned(connection, QUEUE) == 0
    queue = keys.rq_queue(QUEUE, connection)
    assert connection.zcard(StartedJobRegistry(queue=queue).key) == 0
    assert queue.job_ids == []


def queued_retry_job(connection: redis.Redis, n: int) -> Job:
    router = Router()
    router.connect("group.posts", lambda e: None, background=True)
    item = {**handoff.item(event(n), only_handler(router)), "attempts": 1}
    queue = keys.rq_queue(QUEUE, connection)
    return queue.enqueue_job(retries._retry_job(queue, retries.retry_job_id(item), item, "r"))


def taken(connection: redis.Redis, job: Job) -> None:
    """As a worker's dequeue leaves it: out of its queue, in RQ's intermediate list."""
    queue = keys.rq_queue(QUEUE, connection)
    connection.lrem(queue.key, 1, job.id)
    connection.rpush(queue.intermediate_queue_key, job.id)


def watched_for_long(connection: redis.Redis, job: Job) -> None:
    """As if it had been enqueued long ago and this process's maintenance had first seen it
    in the intermediate list a minute ago (no test waits)."""
    patience = retries.INTERMEDIATE_PATIENCE
    enqueued = datetime.fromtimestamp(time.time() - 3 * patience, UTC)
    connection.hset(job.key, "enqueued_at", utcformat(enqueued))
    retries._first_seen[(QUEUE, job.id)] = time.time() - 2 * patience


def test_a_retry_job_stranded_between_queue_and_start_is_queued_again(redis_url: str) -> None:
    """A worker took it (RQ moved it to its intermediate list) and the master was lost
    before the start was recorded: queued again once it has sat there long enough. RQ
    itself would file it as failed at its ten-minute maintenance."""
    connection = redis.Redis.from_url(redis_url)
    job = queued_retry_job(connection, 8)
    queue = keys.rq_queue(QUEUE, connection)
    taken(connection, job)
    assert retries.recover_abandoned(connection, QUEUE) == 0  # first seen now
    assert retries.recover_abandoned(connection, QUEUE) == 0  # not long enough
    watched_for_long(connection, job)
    assert retries.recover_abandoned(connection, QUEUE) == 1
    assert queue.job_ids == [job.id]
    assert connection.llen(queue.intermediate_queue_key) == 0
    assert retries.recover_abandoned(connection, QUEUE) == 0


def test_intermediate_entries_that_are_not_stranded_are_left_alone(redis_url: str) -> None:
    """A worker on several queues leaves entries behind after running a job (RQ removes
    them only for one queue): the job is queued again meanwhile (in its queue, or taken
    since that enqueue), started, or gone. None of them is queued twice."""
    connection = redis.Redis.from_url(redis_url)
    queue = keys.rq_queue(QUEUE, connection)
    waiting = queued_retry_job(connection, 9)  # its next attempt waits in the queue
    connection.rpush(queue.intermediate_queue_key, waiting.id)
    running = queued_retry_job(connection, 10)
    taken(connection, running)
    running.set_status(JobStatus.STARTED)
    connection.rpush(queue.intermediate_queue_key, "retry-gone")
    retaken = queued_retry_job(connection, 11)
    for job in (waiting, running, retaken):
        watched_for_long(connection, job)
    # The old entry's job was enqueued again and taken just now: its watch starts again.
    connection.hset(retaken.key, "enqueued_at", utcformat(datetime.now(UTC)))
    taken(connection, retaken)
    assert retries.recover_abandoned(connection, QUEUE) == 0
    assert queue.job_ids == [waiting.id]
    assert connection.llen(queue.intermediate_queue_key) == 4
