"""``durability = "replicated"``: a delivery is acknowledged once a replica holds it.

On real servers (a master and its replica, started here, no Sentinel): the answer
comes once the replica has the packet; without live replicas a delivery is held in
the local spool (200, reason ``replication_timeout``, a metric) or refused (503 with
``spool_mode = "reject"``), and held copies go once replicas confirm them, or are
pushed again when their master is gone; concurrent deliveries share one WAIT.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from receiver import Router, create_app
from receiver.deploy.checks import check_redis
from receiver.errors import ConfigError, NotReplicated
from receiver.observe import metrics, trace
from receiver.queue import durability
from receiver.queue.durability import GroupCommit
from receiver.queue.keys import pending_key
from receiver.queue.web_spool import Spool
from receiver.queue.web_store import RedisBackend
from receiver.routing.contracts import REPLICATION_TIMEOUT, Result
from receiver.server.supported import server_version
from receiver.settings.loading import load_settings
from receiver.testing import Recorder, SignedClient, group_post, page_message
from receiver.web.health import readiness
from tests.conftest import SECRET, TOKEN
from tests.processes import wait_until
from tests.sentinels import ReplicatedRedis

QUEUE = pending_key("receiver")


# --- on real servers --------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    """A master and one replica, in sync."""
    with ReplicatedRedis(tmp_path / "redis", replicas=1, sentinels=False) as servers:
        yield servers


@pytest.fixture
def alone(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    """A master without replicas: a replicated deployment after a failover."""
    with ReplicatedRedis(tmp_path / "redis", replicas=0, sentinels=False) as servers:
        yield servers


class Receiver:
    """An app with ``durability = "replicated"`` on ``url``, a background handler, a recorder."""

    def __init__(self, url: str, tmp_path: Path, **receiver: Any) -> None:
        router = Router()
        router.on("group.posts", background=True)(lambda event: None)
        table = {"durability": "replicated", "redis_url": url, "data_dir": str(tmp_path / "data")}
        self.app = create_app(
            {
                "receiver": {**table, **receiver},
                "integrations": {"default": {"app_secrets": [SECRET], "verify_token": TOKEN}},
            },
            router=router,
        )
        self.recorder = Recorder()
        self.recorder.attach(self.app.extensions["receiver"])
        self.client = SignedClient(self.app.test_client(), secret=SECRET)

    def deliver(self, n: int) -> Result:
        response = self.client.deliver(group_post(message=str(n)))
        result = self.recorder.results[-1]
        assert response.status_code == result.status
        return result

    @property
    def spool(self) -> Spool:
        backend = self.app.extensions["receiver"].backend
        assert isinstance(backend, RedisBackend)
        return backend.spool


def timeouts(outcome: str) -> float:
    labels = {"integration": "default", "outcome": outcome}
    return metrics._OWN.get_sample_value("receiver_replication_timeouts_total", labels) or 0.0


def waits(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


@pytest.mark.redis
def test_acknowledged_once_the_replica_holds_the_delivery(
    pair: ReplicatedRedis, tmp_path: Path
) -> None:
    receiver = Receiver(pair.url, tmp_path)
    replica = redis.Redis(port=pair.replicas[0].port)
    for n in range(3):
        result = receiver.deliver(n)
        assert (result.status, result.stored, result.reason) == (200, "redis", None)
        assert replica.llen(QUEUE) == n + 1  # there before the answer: WAIT confirmed it
    assert not receiver.spool.held()


@pytest.mark.redis
def test_without_live_replicas_deliveries_are_held_then_confirmed(
    alone: ReplicatedRedis, tmp_path: Path
) -> None:
    receiver = Receiver(alone.url, tmp_path)
    master = alone.client()
    before = timeouts("spooled")
    results = [receiver.deliver(n) for n in range(3)]
    assert [(r.status, r.stored, r.reason) for r in results] == [
        (200, "spool", REPLICATION_TIMEOUT)
    ] * 3
    assert timeouts("spooled") - before == 3
    assert master.llen(QUEUE) == 3  # in Redis, so workers handle them now...
    spool = receiver.spool
    assert len(spool.held()) == 3 and not len(spool)  # ...and kept here until replicated
    ready, checks = readiness(receiver.app.extensions["receiver"])
    assert ready and checks["spool"]["held"] == 3  # every web process holds alike: still ready
    # Only the first round waited: its INFO showed no live replica, so the next did not.
    assert waits(master) == 1
    writer = receiver.app.extensions["receiver.trace"]
    writer.flush()
    record = trace.load(master, results[0].delivery_id or "")
    assert record is not None and record["reason"] == "replication_timeout"

    alone.add_replica()  # a replica joins: the held copies are confirmed and go
    wait_until(lambda: not spool.held() and not len(spool), 30, "held copies to be confirmed")
    replica = redis.Redis(port=alone.replicas[0].port)
    assert replica.llen(QUEUE) >= 3
    result = receiver.deliver(3)
    assert (result.stored, result.reason) == ("redis", None)


@pytest.mark.redis
def test_held_copies_of_a_lost_master_are_pushed_to_the_next(
    alone: ReplicatedRedis, tmp_path: Path
) -> None:
    """What ``local`` durability loses with the machine, a held copy brings back."""
    receiver = Receiver(alone.url, tmp_path)
    for n in range(3):
        assert receiver.deliver(n).stored == "spool"
    lost = alone.lose_master()  # SIGKILL, data folder deleted
    lost.start()  # an empty server where it was: another replication id
    fresh = alone.client()
    assert fresh.llen(QUEUE) == 0
    wait_until(lambda: fresh.llen(QUEUE) == 3, 30, "the held copies to be pushed again")
    spool = receiver.spool
    assert len(spool.held()) == 3 and not len(spool)  # still held: no replica confirms them
    assert {h.replid for h in spool.held()} == {fresh.info("replication")["master_replid"]}


@pytest.mark.redis
def test_reject_mode_answers_503_when_replicas_do_not_confirm(
    alone: ReplicatedRedis, tmp_path: Path
) -> None:
    receiver = Receiver(alone.url, tmp_path, spool_mode="reject")
    before = timeouts("rejected")
    result = receiver.deliver(1)
    assert (result.status, result.error, result.reason) == (
        503,
        "queue_unavailable",
        REPLICATION_TIMEOUT,
    )
    assert timeouts("rejected") - before == 1
    assert not receiver.spool.held() and not len(receiver.spool)


@pytest.mark.redis
def test_concurrent_deliveries_share_one_wait(pair: ReplicatedRedis, tmp_path: Path) -> None:
    """While a round is in flight, ten deliveries queue for the next: one WAIT serves them."""
    settings = load_settings(
        {
            "receiver": {
                "durability": "replicated",
                "redis_url": pair.url,
                "replication_timeout": 10,
            }
        },
        environ={},
        require_integrations=False,
    )
    master = pair.client()
    client = redis.Redis.from_url(pair.url, socket_timeout=30)
    commit = GroupCommit(client, settings, lambda queue, drainer: None)
    outcomes: list[str | BaseException] = []

    def store(n: int) -> None:
        try:
            outcomes.append(commit.store({"q": [f"packet {n}".encode()]}))
        except (NotReplicated, redis.RedisError) as exc:
            outcomes.append(exc)

    master.execute_command("CLIENT", "PAUSE", 60000, "WRITE")  # the first round's PUSH waits
    try:
        leader = threading.Thread(target=store, args=(0,))
        leader.start()
        wait_until(lambda: commit.rounds == 1, 30, "the first round to be in flight")
        followers = [threading.Thread(target=store, args=(n,)) for n in range(1, 11)]
        for thread in followers:
            thread.start()
        wait_until(lambda: len(commit._next.queues.get("q", [])) == 10, 30, "10 queued packets")
    finally:
        master.execute_command("CLIENT", "UNPAUSE")
    for thread in [leader, *followers]:
        thread.join(60)
    replid = master.info("replication")["master_replid"]
    assert outcomes == [replid] * 11
    assert commit.rounds == 2 and waits(master) == 2
    assert master.llen(pending_key("q")) == 11


@pytest.mark.redis
def test_a_large_round_is_pushed_in_chunks(alone: ReplicatedRedis) -> None:
    table = {"durability": "replicated", "redis_url": alone.url, "replication_timeout": 0.01}
    settings = load_settings({"receiver": table}, environ={}, require_integrations=False)
    commit = GroupCommit(alone.client(), settings, lambda queue, drainer: None)
    many = 2 * durability.PUSH_CHUNK + 1
    with pytest.raises(NotReplicated):  # no replica; but stored
        commit.store({"q": [b"packet"] * many})
    assert alone.client().llen(pending_key("q")) == many


@pytest.mark.redis
def test_check_counts_replicas_and_refuses_too_few(pair: ReplicatedRedis, tmp_path: Path) -> None:
    def settings(**receiver: Any) -> Any:
        table = {"durability": "replicated", "redis_url": pair.url, **receiver}
        return load_settings({"receiver": table}, environ={}, require_integrations=False)

    lines = check_redis(settings())
    assert "durability: replicated, 1 live replica(s), min_replicas 1, timeout 1s" in lines
    with pytest.raises(ConfigError, match="too few replicas"):
        check_redis(settings(min_replicas=2))
    found = server_version(pair.client().info("server"))
    if found.version >= durability.WAITAOF_FROM[found.name]:
        assert any(
            "fsync (WAITAOF" in line
            for line in check_redis(settings(replication_fsync=True, replication_timeout=2))
        )
    else:
        with pytest.raises(ConfigError, match="WAITAOF"):
            check_redis(settings(replication_fsync=True, replication_timeout=2))


@pytest.mark.redis
def test_ordered_items_reach_the_replica_in_order_within_the_round(
    pair: ReplicatedRedis, tmp_path: Path
) -> None:
    """Replicated rounds carry ordered handlers' lane items with the packets: a key's
    events are on the replica, in acknowledgement order, before each answer."""
    router = Router()
    router.on("page.messages", background=True, ordered_by="sender_id")(lambda event: None)
    app = create_app(
        {
            "receiver": {"durability": "replicated", "redis_url": pair.url,
                         "data_dir": str(tmp_path / "data")},
            "integrations": {"default": {"app_secrets": [SECRET], "verify_token": TOKEN}},
        },
        router=router,
    )
    client = SignedClient(app.test_client(), secret=SECRET)
    replica = redis.Redis(port=pair.replicas[0].port)
    for n in range(3):
        answer = client.deliver(page_message(text=f"message {n}", mid=f"m-{n}"))
        assert answer.status_code == 200 and answer.get_json()["queued"] == 1
        [lane] = replica.keys("receiver:lane:*")
        items = replica.lrange(lane, 0, -1)
        assert len(items) == n + 1  # on the replica before the answer
    assert [f"message {n}" in item.decode() for n, item in enumerate(items)] == [True] * 3
