"""Nothing acknowledged is lost, nothing runs twice: faults on real Redis, gunicorn and workers.

Each test owns its redis-server (it is stopped, restarted, wiped) and its
worker processes, and counts handler side effects in SQLite.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from receiver.queue.keys import state_key
from tests.deployment import Deployment, change, numbers
from tests.plugins.recording import calls, rows, successful
from tests.processes import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]  # starts servers of its own


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    try:
        yield deployment
    finally:
        deployment.close()


def test_burst_with_redis_outage_loses_nothing(deployment: Deployment) -> None:
    """1,000 deliveries; Redis stopped for seconds mid-burst; each handled exactly once."""
    deployment.start_web()
    deployment.start_worker()
    deployment.start_worker()
    total = 1000
    sent = [0]
    statuses: dict[int, int] = {}

    def outage() -> None:
        wait_until(lambda: sent[0] >= 300, 120, "300 deliveries")
        deployment.redis.stop()
        time.sleep(3)
        deployment.redis.start()

    chaos = threading.Thread(target=outage)
    chaos.start()

    def send(n: int) -> None:
        statuses[n] = deployment.post(change("group", "posts", n=n, verb="add"))
        sent[0] += 1

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(total)))
    chaos.join()

    # As Meta would: whatever was not acknowledged is sent again until it is.
    for n in [n for n, status in statuses.items() if status != 200]:
        wait_until(
            lambda n=n: deployment.post(change("group", "posts", n=n, verb="add")) == 200,
            60,
            f"delivery {n} to be accepted",
        )
    wait_until(lambda: len(calls(deployment.db)) >= total, 180, "every delivery to be handled")
    wait_until(deployment.settled, 60, "queues to settle")
    assert numbers(deployment.db) == list(range(total))  # each once: none lost, none doubled
    assert not list((deployment.tmp / "data" / "spool").glob("*.json"))  # spool drained


def test_sigkilled_worker_job_completes_elsewhere(deployment: Deployment) -> None:
    deployment.start_web()
    first = deployment.start_worker()
    second = deployment.start_worker()
    assert deployment.post(change("group", "posts", n=1, sleep=3)) == 200

    [(_, pid)] = wait_until(
        lambda: rows(deployment.db, "SELECT event_id, pid FROM started"),
        60,
        "the slow handler to start",
    )
    victim = first if first.pid == pid else second
    assert victim.pid == pid
    os.killpg(victim.pid, signal.SIGKILL)  # mid-job: no warm shutdown, no cleanup
    victim.wait()

    wait_until(lambda: calls(deployment.db), 90, "another worker to finish the job")
    wait_until(deployment.settled, 60, "queues to settle")
    assert numbers(deployment.db) == [1]
    [(_, survivor_pid)] = successful(deployment.db, "event_id, pid")
    assert survivor_pid != pid


def test_sigkilled_worker_with_32_slow_handlers_in_flight(deployment: Deployment) -> None:
    """One delivery: 8 quick events, then 32 slow ones, on a worker running 32 at once.

    The worker is killed once the 32 slow calls are running and the 8 quick ones are
    recorded as done: the other worker runs the 32, and none of the 8 again.
    """
    deployment.start_web()
    first = deployment.start_worker("--concurrency", "32")
    second = deployment.start_worker("--concurrency", "32")
    quick = [{"field": "posts", "value": {"n": n, "verb": "add"}} for n in range(8)]
    slow = [{"field": "posts", "value": {"n": n, "sleep": 10}} for n in range(8, 40)]
    delivery = {"object": "group", "entry": [{"id": "1", "changes": quick + slow}]}
    assert deployment.post(delivery) == 200

    def all_started() -> list[Any] | None:
        got = rows(deployment.db, "SELECT event_id, pid FROM started")
        return got if len(got) == 32 else None

    started = wait_until(all_started, 60, "32 slow handlers in flight")
    [pid] = {pid for _, pid in started}
    victim = first if first.pid == pid else second
    assert victim.pid == pid
    connection = deployment.client()

    def quick_ones_recorded() -> list[str] | None:
        done = [event_id for event_id, _, _ in calls(deployment.db)]
        states = [
            connection.get(state_key("default", "tests.plugins.recording:record@*", e))
            for e in done
        ]
        return done if len(done) == 8 and all(s == b"done" for s in states) else None

    quick_ids = wait_until(quick_ones_recorded, 30, "the 8 quick events to be recorded done")
    os.killpg(victim.pid, signal.SIGKILL)  # 32 calls mid-flight: no warm shutdown, no cleanup
    victim.wait()

    wait_until(lambda: len(calls(deployment.db)) >= 40, 120, "the other worker to finish")
    wait_until(deployment.settled, 60, "queues to settle")
    assert numbers(deployment.db) == list(range(40))  # every event once
    by_event = {e: p for e, p in successful(deployment.db, "event_id, pid")}
    assert {by_event[e] for e in quick_ids} == {victim.pid}  # not run again
    survivor = second if victim is first else first
    assert {p for e, p in by_event.items() if e not in quick_ids} == {survivor.pid}


def test_same_delivery_five_times_runs_once(deployment: Deployment) -> None:
    deployment.start_web()
    deployment.start_worker()
    deployment.start_worker()
    concurrent = change("group", "comments", n=1, verb="add")
    with ThreadPoolExecutor(max_workers=5) as pool:
        assert list(pool.map(lambda _: deployment.post(concurrent), range(5))) == [200] * 5
    sequential = change("group", "comments", n=2, verb="add")
    for _ in range(5):
        assert deployment.post(sequential) == 200
        time.sleep(0.2)
    wait_until(lambda: len(calls(deployment.db)) >= 2, 60, "both events to be handled")
    wait_until(deployment.settled, 60, "queues to settle")
    assert numbers(deployment.db) == [1, 2]


def test_retries_with_backoff_then_failed_registry_and_requeue(deployment: Deployment) -> None:
    deployment.start_web()
    deployment.start_worker()
    assert deployment.post(change("faulty", "flaky", n=1, fail_times=2)) == 200
    assert deployment.post(change("faulty", "broken", n=2)) == 200

    wait_until(lambda: numbers(deployment.db) == [1], 90, "the flaky handler's third attempt")
    flaky = [
        at
        for (at,) in rows(
            deployment.db, "SELECT at FROM attempts WHERE name = 'faulty.flaky' ORDER BY at"
        )
    ]
    assert len(flaky) == 3
    # retry_backoff = 1 s, then × 4 (±20 % jitter, ≥ 3 s); RQ schedules on whole
    # seconds, so a wait may end up to 1 s early. Lower bounds only: no flaky upper bound.
    assert flaky[2] - flaky[1] >= 2.0

    def listed() -> str:
        out = deployment.cli("failed")
        return out if "faulty.broken" in out else ""

    listing = wait_until(listed, 90, "the broken handler to land in the failed registry")
    assert "broken until FIXED_FLAG exists" in listing
    assert " 3 " in listing  # attempts: first try plus two retries
    assert numbers(deployment.db) == [1]

    Path(deployment.env["FIXED_FLAG"]).touch()  # the handler is fixed
    assert "requeued 1 item(s)" in deployment.cli("failed", "requeue", "--all")
    wait_until(lambda: numbers(deployment.db) == [1, 2], 60, "the requeued item to succeed")
    wait_until(deployment.settled, 60, "queues to settle")
    assert "no failed items" in deployment.cli("failed")


def test_retries_still_run_after_redis_was_away(deployment: Deployment) -> None:
    """Retries wait in RQ's scheduled registry; its scheduler must outlive an outage.

    RQ's scheduler process exits on its first Redis error and RQ only restarts it
    every ten minutes: a retry scheduled after an outage waited that long.
    """
    deployment.start_web()
    deployment.start_worker()
    deployment.wait_for_scheduler()
    deployment.redis.stop()
    time.sleep(3)  # the scheduler beats every second: it meets the outage
    deployment.redis.start()

    assert deployment.post(change("faulty", "flaky", n=1, fail_times=1)) == 200
    wait_until(lambda: numbers(deployment.db) == [1], 60, "the retry after the outage")
    wait_until(deployment.settled, 60, "queues to settle")


def test_a_killed_scheduler_is_started_again(deployment: Deployment) -> None:
    deployment.start_web()
    deployment.start_worker()
    client = deployment.client()

    def scheduler_pid() -> int | None:
        for key in client.keys("rq:scheduler:*"):
            pid = client.hget(key, "pid")
            if pid and int(pid) and os.path.exists(f"/proc/{int(pid)}"):
                return int(pid)
        return None

    killed = wait_until(scheduler_pid, 60, "RQ's scheduler to start")
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: scheduler_pid() not in (None, killed), 60, "a new scheduler process")

    assert deployment.post(change("faulty", "flaky", n=1, fail_times=1)) == 200
    wait_until(lambda: numbers(deployment.db) == [1], 60, "the retry")


def test_another_worker_takes_over_scheduling_from_a_killed_one(deployment: Deployment) -> None:
    """Only one worker's scheduler holds the lock; once it lapses (61 s) another takes it."""
    deployment.start_web()
    first = deployment.start_worker()
    deployment.wait_for_scheduler()  # the first worker's: it holds the lock
    deployment.start_worker()
    client = deployment.client()
    wait_until(lambda: client.scard("rq:workers") == 2, 60, "the second worker")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its scheduler process
    first.wait()

    assert deployment.post(change("faulty", "flaky", n=1, fail_times=1)) == 200
    wait_until(lambda: numbers(deployment.db) == [1], 120, "the retry, scheduled elsewhere")


def test_spool_drains_into_a_redis_that_lost_its_data(deployment: Deployment) -> None:
    deployment.start_web()
    deployment.redis.stop()
    for n in range(20):
        assert deployment.post(change("group", "posts", n=n)) == 200  # acknowledged from the spool
    spool = deployment.tmp / "data" / "spool"
    assert len(list(spool.glob("*.json"))) == 20

    for leftover in (deployment.tmp / "redis").glob("appendonly*"):
        if leftover.is_dir():
            for f in leftover.iterdir():
                f.unlink()
            leftover.rmdir()
        else:
            leftover.unlink()
    deployment.redis.start()  # empty: its data is gone
    deployment.start_worker()

    wait_until(lambda: len(calls(deployment.db)) >= 20, 90, "spooled deliveries to be handled")
    wait_until(deployment.settled, 60, "queues to settle")
    assert numbers(deployment.db) == list(range(20))
    assert not list(spool.glob("*.json"))
