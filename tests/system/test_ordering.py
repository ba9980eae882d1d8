"""Ordered background handlers (``ordered_by``) on real Redis and real `receiver worker`s.

Deliveries go through the app into Redis; two worker processes, 32 calls at
once each, run ``tests.plugins.ordered``, which notes in SQLite when each call
started and ended, where, and at which attempt. Order and overlap are read
from those notes (never from how long anything took): per key, each event
starts after the one before it ended, in the order the deliveries were
acknowledged (the body's order within one); across keys, calls overlap.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from receiver import create_app
from receiver.queue import handoff, keys, ordering
from tests.conftest import envelope, plugin_router, signed
from tests.integration.test_admin import admin_config, csrf_in, flush_traces, login
from tests.plugins import ordered
from tests.plugins.ordered import calls
from tests.processes import ROOT, receiver_command, wait_until
from tests.system.test_concurrency import worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HANDLERS = "tests.plugins.ordered"


@pytest.fixture
def env(worker_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "receiver.toml"
    config.write_text("[receiver]\nretry_backoff = 1.0\n")
    return {
        **worker_env,
        "RECEIVER_HANDLERS": HANDLERS,
        "RECEIVER_CONFIG": str(config),
        "FIXED_FLAG": str(tmp_path / "fixed"),
    }


@pytest.fixture
def app(
    redis_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Flask:
    """The web side (dashboard on) routes to the ordered plugin's handlers only, as the
    workers do."""
    monkeypatch.setenv("RECORDING_DB", env["RECORDING_DB"])
    router = plugin_router(ordered.__name__)
    return create_app(admin_config(redis_url, tmp_path, metrics_token="t"), router=router)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@contextmanager
def workers(env: dict[str, str], count: int = 2) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` real `receiver worker --concurrency 32` processes, stopped afterwards."""
    with ExitStack() as stack:
        yield [stack.enter_context(worker(env, "--concurrency", "32")) for _ in range(count)]


def change(field: str, sender: str, n: int, **value: Any) -> dict[str, Any]:
    return {"field": field, "value": {"from": {"id": sender}, "n": n, **value}}


def post(client: FlaskClient, *changes: dict[str, Any]) -> str:
    """One delivery of ``changes`` in this order; its delivery id."""
    body = envelope("chat", *changes, id="1")
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["delivery_id"])


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        receiver_command(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def showing(env: dict[str, str], command: str, text: str) -> str:
    """What `receiver COMMAND` prints, once it shows ``text`` (else "")."""
    out = cli(env, command)
    return out if text in out else ""


def spans(db: str, name: str) -> dict[int, list[tuple[float, float, int]]]:
    """n → ``(start, end, pid)`` of each attempt that ended (in success or failure)."""
    starts = {(n, attempt): at for _, n, _, _, attempt, at in calls(db, "start", name)}
    out: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for phase in ("end", "fail"):
        for _, n, _, pid, attempt, at in calls(db, phase, name):
            out[n].append((starts[(n, attempt)], at, pid))
    return {n: sorted(v) for n, v in out.items()}


def ended(db: str, name: str) -> set[int]:
    """The numbers of the events whose call ended in success."""
    return {n for _, n, *_ in calls(db, "end", name)}


def assert_ran_once(db: str, name: str) -> None:
    """No event's call succeeded twice (a second run would be a claim that did not hold)."""
    twice = Counter(n for _, n, *_ in calls(db, "end", name)) - Counter(ended(db, name))
    assert not twice, f"events that ran to the end more than once: {sorted(twice)}"


def assert_in_order_without_overlap(db: str, name: str, order: dict[str, list[int]]) -> None:
    """Each key's events ran one at a time, in ``order`` (every attempt of one before the next)."""
    ran = spans(db, name)
    for key, numbers in order.items():
        attempts = [span for n in numbers for span in ran[n]]
        for earlier, later in zip(attempts, attempts[1:], strict=False):
            assert earlier[1] <= later[0], f"key {key}: {earlier} overlaps {later}"
        started = [n for _, n, k, *_ in calls(db, "start", name) if k == key]
        assert list(dict.fromkeys(started)) == numbers, f"key {key} ran out of order"


def most_at_once(spans_: list[tuple[float, float, int]]) -> int:
    moments = sorted([(s, 1) for s, _, _ in spans_] + [(e, -1) for _, e, _ in spans_])
    level = peak = 0
    for _, step in moments:
        level += step
        peak = max(peak, level)
    return peak


# -- order and overlap -------------------------------------------------------------------------


def test_each_key_in_acknowledgement_order_keys_concurrently_on_two_workers(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """150 senders × 4 messages, 20 deliveries: each sender's messages in one body at a time,
    interleaved with the others'. (Which worker takes which key is a race; the tests below
    move a key from one worker to the other on purpose.)"""
    db = env["RECORDING_DB"]
    senders = [f"u{k:03d}" for k in range(150)]
    order: dict[str, list[int]] = defaultdict(list)
    n = 0
    for _ in range(4):
        for chunk in range(5):
            batch = []
            for sender in senders[chunk * 30 : (chunk + 1) * 30]:
                batch.append(change("say", sender, n, sleep=0.05))
                order[sender].append(n)
                n += 1
            post(client, *batch)
    with workers(env):
        wait_until(lambda: ended(db, "chat.say") == set(range(n)), 120, f"{n} ordered calls")
    assert_ran_once(db, "chat.say")
    assert_in_order_without_overlap(db, "chat.say", order)
    everything = [span for spans_ in spans(db, "chat.say").values() for span in spans_]
    assert len(everything) == n  # each once
    assert most_at_once(everything) > 1  # different keys ran at the same time


def test_a_key_goes_on_in_order_on_another_worker_after_a_warm_shutdown(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """The worker running ana's messages is stopped (SIGTERM) during her second one: it
    finishes that call and hands her key over; the other worker goes on from her third."""
    db = env["RECORDING_DB"]
    with workers(env) as processes:
        post(client, *[change("say", "ana", n, sleep=0.5) for n in range(1, 7)])
        [(*_, pid, _, _)] = wait_until(
            lambda: [row for row in calls(db, "start") if row[1] == 2], 60, "ana's 2 to start"
        )
        [first] = [p for p in processes if p.pid == pid]
        first.send_signal(signal.SIGTERM)  # warm: the running call ends, the rest is handed on
        assert first.wait(timeout=60) == 0
        wait_until(lambda: len(calls(db, "end")) == 6, 60, "ana's messages")
    [second] = [p for p in processes if p is not first]
    assert_in_order_without_overlap(db, "chat.say", {"ana": [1, 2, 3, 4, 5, 6]})
    ran_on = [pid for _, _, _, pid, _, _ in calls(db, "end")]
    assert ran_on == [first.pid] * 2 + [second.pid] * 4


# -- failures hold only their key --------------------------------------------------------------


def test_retries_keep_the_key_waiting_and_a_final_failure_moves_it_on(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """ana's 1 fails once (its retry succeeds), her 2 fails both attempts (filed): her 2 waits
    for 1's retry, her 3 for 2's last failure; bo goes on meanwhile."""
    db = env["RECORDING_DB"]
    post(client, change("say", "ana", 1, fail_times=1), change("say", "bo", 11))
    post(client, change("say", "ana", 2, fail_times=2), change("say", "bo", 12))
    post(client, change("say", "ana", 3), change("say", "bo", 13))
    with workers(env):
        wait_until(
            lambda: {n for _, n, *_ in calls(db, "end", "chat.say")} == {1, 3, 11, 12, 13},
            60,
            "every event but 2 to succeed",
        )
        listing = wait_until(lambda: showing(env, "failed", "ana"), 30, "event 2 to be filed")
    assert_in_order_without_overlap(db, "chat.say", {"ana": [1, 2, 3], "bo": [11, 12, 13]})
    ran = spans(db, "chat.say")
    assert [len(ran[n]) for n in (1, 2, 3)] == [2, 2, 1]  # attempts: 1 retried, 2 filed
    assert "chat.say" in listing and " 2 " in listing  # two attempts, then filed with its key


def test_a_blocking_key_waits_for_an_operator_and_holds_nothing_else(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """on_failure="block": ana's 1 and cy's 21 fail for good and hold their keys while bo's
    events all run; operators see the held keys and what waits; a requeue (once fixed)
    runs ana's 1 and lets her go on, a skip lets cy go on without his 21."""
    db = env["RECORDING_DB"]
    post(client, change("block", "ana", 1, fail_times=99), change("block", "bo", 11))
    post(client, change("block", "ana", 2), change("block", "cy", 21, fail_times=99))
    last = post(
        client, change("block", "ana", 3), change("block", "bo", 12), change("block", "cy", 22)
    )
    with workers(env):
        wait_until(lambda: {n for _, n, *_ in calls(db, "end")} >= {11, 12}, 60, "bo's events")
        queues = wait_until(lambda: showing(env, "queues", "(2 held)"), 60, "keys to be held")
        failed = cli(env, "failed")
        trace = cli(env, "trace", last)
        # Held: neither key went on behind its failed event, though bo's ran meanwhile.
        assert {n for _, n, *_ in calls(db, "start")} == {1, 11, 21, 12}
        assert "ana (held until requeued or skipped)" in failed
        rows = {line.split()[1]: line for line in queues.splitlines() if "blocked" in line}
        assert rows.keys() == {"ana", "cy"}
        assert rows["ana"].split()[2] == "2" and rows["cy"].split()[2] == "1"  # waiting
        assert "waits for key 'ana'" in trace and "2 event(s) ahead" in trace
        assert "blocked" in trace

        jobs = {
            key: line.split()[0]
            for line in failed.splitlines()[1:]
            for key in ("ana", "cy")
            if f" {key} (held" in line
        }
        assert jobs.keys() == {"ana", "cy"}, failed
        Path(env["FIXED_FLAG"]).touch()  # the handler is fixed: ana's 1 may succeed now
        assert "requeued 1 item(s)" in cli(env, "failed", "requeue", jobs["ana"])
        assert "key(s) 'cy' go on" in cli(env, "failed", "skip", jobs["cy"])
        wait_until(
            lambda: {n for _, n, *_ in calls(db, "end")} == {1, 2, 3, 11, 12, 22},
            60,
            "the held keys to go on",
        )
        wait_until(lambda: "held" not in cli(env, "queues"), 30, "no key to be held")
        assert "no failed items" in cli(env, "failed")
    assert_in_order_without_overlap(db, "chat.block", {"ana": [1, 2, 3], "cy": [21, 22]})
    assert [a for _, n, _, _, a, _ in calls(db, "end") if n == 1] == [2]  # requeued, then ok
    assert not [n for _, n, *_ in calls(db, "end") if n == 21]  # skipped, never succeeded


# -- crash safety ------------------------------------------------------------------------------


def test_a_sigkilled_worker_s_event_runs_again_elsewhere_before_its_key_goes_on(
    client: FlaskClient, env: dict[str, str]
) -> None:
    db = env["RECORDING_DB"]
    with workers(env) as processes:
        post(
            client,
            change("say", "ana", 1, stall=30),
            change("say", "ana", 2),
            change("say", "bo", 11, sleep=0.2),
            change("say", "ana", 3),
            change("say", "bo", 12),
        )
        [(_, _, _, pid, _, _)] = wait_until(
            lambda: [row for row in calls(db, "start") if row[1] == 1], 60, "ana's 1 to start"
        )
        [victim] = [p for p in processes if p.pid == pid]
        os.killpg(victim.pid, signal.SIGKILL)  # mid-call: no warm shutdown, no cleanup
        victim.wait()
        wait_until(
            lambda: {n for _, n, *_ in calls(db, "end")} == {1, 2, 3, 11, 12}, 120, "every event"
        )
    [survivor] = [p for p in processes if p is not victim]
    assert_in_order_without_overlap(db, "chat.say", {"ana": [1, 2, 3], "bo": [11, 12]})
    starts = [(n, p) for _, n, k, p, _, _ in calls(db, "start") if k == "ana"]
    assert starts == [(1, victim.pid), (1, survivor.pid), (2, survivor.pid), (3, survivor.pid)]


def test_the_dashboard_shows_held_keys_and_waiting_events_and_skips(
    app: Flask, client: FlaskClient, env: dict[str, str]
) -> None:
    db = env["RECORDING_DB"]
    post(client, change("block", "ana", 1, fail_times=99))
    waiting = post(client, change("block", "ana", 2))
    with workers(env, count=1):
        assert login(client).status_code == 303
        wait_until(
            lambda: "held-keys" in client.get("/admin/queues").text, 60, "ana's key to be held"
        )
        queues = client.get("/admin/queues").text
        assert "<code>ana</code></td><td>1</td>" in queues  # one event waits behind
        metrics = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
        assert 'receiver_queue_held_keys{queue="receiver"} 1.0' in metrics
        flush_traces(app)
        delivery = client.get(f"/admin/deliveries/{waiting}").text
        assert "waits for key &#39;ana&#39;" in delivery and "1 event(s) ahead" in delivery
        failed = client.get("/admin/failed").text
        [job] = re.findall(r'data-testid="skip-([^"]+)"', failed)
        assert "its later events wait until this one is requeued" in failed
        form = {"job_id": job, "csrf_token": csrf_in(failed)}
        assert client.post("/admin/failed/skip", data=form).status_code == 303
        wait_until(lambda: [n for _, n, *_ in calls(db, "end")] == [2], 60, "ana's 2 to run")
    assert "held-keys" not in client.get("/admin/queues").text


def test_a_lane_that_lost_its_wake_is_woken_and_spare_wakes_change_nothing(
    client: FlaskClient, env: dict[str, str], redis_url: str
) -> None:
    """Backstops: maintenance wakes a lane whose head stalled (here: its wake deleted), and
    extra wakes for one lane (a crash between two commands) run nothing twice or at once."""
    db = env["RECORDING_DB"]
    for n in (1, 2, 3):
        post(client, change("say", "ana", n, sleep=0.2))
    connection = redis.Redis.from_url(redis_url)
    [lane] = connection.zrange(keys.lanes_key("receiver"), 0, -1)
    assert connection.delete(keys.pending_key("receiver"))  # the lane's only wake
    connection.zadd(keys.lanes_key("receiver"), {lane: 0})  # stalled long ago
    with workers(env, count=1):
        wait_until(lambda: calls(db, "start"), 60, "maintenance to wake the lane")
        for _ in range(3):
            connection.rpush(keys.pending_key("receiver"), ordering.wake(lane.decode()))
        handoff.kick(connection, "receiver", 8, 180)
        wait_until(lambda: len(calls(db, "end")) == 3, 60, "ana's events")
        wait_until(lambda: not connection.exists(lane), 30, "the lane to be gone")
    assert_in_order_without_overlap(db, "chat.say", {"ana": [1, 2, 3]})
    assert len(calls(db, "start")) == 3  # each once
    assert connection.zcard(keys.lanes_key("receiver")) == 0  # nothing left per key
