"""A drainer's turn in one round trip (``scripts.Batch``, ``scripts.DONE``), on a real Redis.

A drain job runs in this process, as ``receiver worker`` runs it, over packets stored
as the web side stores them: successes take the batched path, failures the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from receiver import Router, build_core
from receiver.app import work_context
from receiver.model.events import Event
from receiver.observe import trace
from receiver.queue import handoff, keys, scripts
from receiver.routing.handlers import Handler
from receiver.worker import claims, drain
from tests.conftest import base_config

QUEUE = "receiver"

COUNT = """
-- KEYS[1] a counter. Returns it, incremented.
return redis.call('INCR', KEYS[1])
"""


FAILING = {170}
RAN: list[int] = []
"""The events ``flaky`` was called with, in this process (list.append: thread-safe)."""


def flaky(event: Event) -> None:
    """Fails for the events in ``FAILING``: the turn that ends them takes the failure path,
    the others the batched one."""
    RAN.append(event.value["n"])
    if event.value["n"] in FAILING:
        raise ValueError("flaky")


@pytest.fixture
def connection(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def context(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[claims.WorkContext]:
    """What ``receiver worker`` configures, with ``flaky`` as the one background handler."""
    router = Router()
    router.connect("*", flaky, background=True)
    core = build_core(base_config(redis_url=redis_url), router=router)
    made = work_context(core)
    monkeypatch.setattr(claims, "_context", made)
    monkeypatch.setattr(drain, "LINGER", 0.05)  # an idle drainer ends at once
    RAN.clear()
    yield made
    if made.runner is not None:
        made.runner.close()


def store(connection: redis.Redis, handler: Handler, deliveries: list[list[int]]) -> list[str]:
    """One packet per delivery, as the web side appends them; their delivery ids."""
    ids = []
    for index, numbers in enumerate(deliveries):
        delivery = f"{index:032x}"
        work = [
            (
                Event("group", "posts", {"n": n}, f"{n:032x}", delivery, "default"),
                handler,
            )
            for n in numbers
        ]
        [packet] = handoff.packets(delivery, work, QUEUE).values()
        connection.rpush(keys.pending_key(QUEUE), packet.encode())
        ids.append(delivery)
    return ids


def test_a_drain_records_every_outcome_and_empties_its_inflight_list(
    context: claims.WorkContext, connection: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    [handler] = context.router.handlers()
    deliveries = [[n] for n in range(150)] + [list(range(150, 190))]  # > 1 turn of 32 slots
    ids = store(connection, handler, deliveries)
    left_in_flight: list[list[bytes]] = []  # when the drainer gives its list up (FINISH)
    run = scripts.run

    def spy(client: redis.Redis, source: str, script_keys: Any, args: Any) -> Any:
        if source == scripts.FINISH:
            left_in_flight.append(client.lrange(script_keys[2], 0, -1))
        return run(client, source, script_keys, args)

    monkeypatch.setattr(scripts, "run", spy)
    counts = drain.drain(QUEUE)
    assert left_in_flight == [[]]  # every packet had left it, once its items had outcomes
    assert counts["events"] == 190
    assert counts["packets"] == len(deliveries)
    states: dict[int, Any] = {
        n: connection.get(keys.state_key("default", handler.id, f"{n:032x}")) for n in range(190)
    }
    assert {n for n, state in states.items() if state == b"done"} == set(range(190)) - FAILING
    assert all(states[n].startswith(keys.RETRYING.encode()) for n in FAILING)
    assert connection.llen(keys.pending_key(QUEUE)) == 0
    assert not connection.keys(keys.inflight_key("*"))
    assert connection.ttl(keys.state_key("default", handler.id, f"{0:032x}")) > 0
    for delivery, numbers in zip(ids, deliveries, strict=True):
        found = trace.load(connection, delivery)
        assert found is not None
        attempts = sorted((a["event_id"], a["outcome"]) for a in found["background"])
        assert attempts == sorted(
            (f"{n:032x}", "failed" if n in FAILING else "ok") for n in numbers
        )


def test_an_item_recorded_done_is_not_run_again_by_a_later_drain(
    context: claims.WorkContext, connection: redis.Redis
) -> None:
    [handler] = context.router.handlers()
    store(connection, handler, [[0], [1]])
    assert drain.drain(QUEUE)["events"] == 2
    store(connection, handler, [[0], [1], [2]])  # a redelivery, and one new event
    assert drain.drain(QUEUE)["events"] == 1


def test_a_turn_whose_reply_is_lost_still_runs_every_event_once(
    context: claims.WorkContext, connection: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after Redis ran a turn's batch (states, claim, a POP): the POP's
    packets are found in flight again and run, the claimed items start, nothing runs twice."""
    [handler] = context.router.handlers()
    store(connection, handler, [[n] for n in range(120)])
    execute = scripts.Batch.execute
    lost: list[Any] = []

    def lose_a_reply(batch: scripts.Batch, client: redis.Redis) -> list[Any]:
        replies = execute(batch, client)
        if not lost and any(call and call[0] == scripts.POP for call in batch.scripts):
            lost.append(replies[-1])
            raise redis.ConnectionError("the reply was lost")
        return replies

    monkeypatch.setattr(scripts.Batch, "execute", lose_a_reply)
    drain.drain(QUEUE)
    assert lost and lost[0]  # that POP had moved packets
    assert sorted(RAN) == list(range(120))
    assert connection.llen(keys.pending_key(QUEUE)) == 0


def test_done_writes_the_states_and_removes_one_copy_of_each_packet(
    connection: redis.Redis,
) -> None:
    inflight = keys.inflight_key("d1")
    connection.rpush(inflight, b"p1", b"p2", b"p1", b"p3")
    removed = scripts.run(
        connection, scripts.DONE, [inflight, "s1", "s2"], [keys.DONE, 60, b"p1", b"p3"]
    )
    assert removed == 2
    assert connection.lrange(inflight, 0, -1) == [b"p2", b"p1"]
    assert connection.mget("s1", "s2") == [b"done", b"done"]
    assert 0 < connection.ttl("s1") <= 60


def test_a_batch_runs_again_only_the_scripts_redis_forgot(connection: redis.Redis) -> None:
    """After a Redis restart (here SCRIPT FLUSH) each script of a batch runs once, in order,
    after the commands that did run: none twice."""
    scripts.run(connection, COUNT, ["n"], [])  # known to Redis, then forgotten
    connection.script_flush()
    batch = scripts.Batch()
    batch.script(COUNT, ["n"], [])
    batch.command("GET", "n")
    batch.script(COUNT, ["n"], [])
    assert batch.execute(connection) == [2, b"1", 3]
    assert connection.get("n") == b"3"


def test_a_batch_reads_every_reply_before_raising_an_error_reply(
    connection: redis.Redis,
) -> None:
    connection.set("text", "not a number")
    batch = scripts.Batch()
    batch.command("SET", "a", 1)
    batch.command("INCR", "text")
    batch.rpush("list", b"x")
    batch.expire("list", 60)
    with pytest.raises(redis.ResponseError):
        batch.execute(connection)
    assert connection.get("a") == b"1"
    assert connection.lrange("list", 0, -1) == [b"x"]
    assert scripts.run(connection, COUNT, ["n"], []) == 1  # the pooled connection is in step
