"""``durability = "replicated"``: a delivery is acknowledged once a replica holds it.

On real servers (a master and its replica, started here, no Sentinel): the answer
comes once the replica has the packet; without live replicas a delivery is held in
the local spool (200, reason ``replication_timeout``, a metric) or refused (503 with
``spool_mode = "reject"``), and held copies go once replicas confirm them, or are
pushed again when their master is gone; concurrent deliveries share one WAIT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from receiver.errors import ConfigError
from receiver.queue import durability
from receiver.queue.durability import live_replicas
from receiver.queue.web_spool import Spool, Spooled
from receiver.settings.loading import load_settings

# --- settings and pure parts: no server ------------------------------------------------------


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"durability": "quorum"}, "use 'local'"),
        ({"durability": "replicated"}, "needs REDIS_URL"),
        ({"replication_fsync": True}, "needs durability = 'replicated'"),
        (
            {"durability": "replicated", "redis_url": "redis://h/0", "replication_fsync": True},
            "2 s",
        ),
        ({"durability": "replicated", "redis_url": "redis://h/0", "min_replicas": 0}, "between 1"),
        ({"durability": "local", "replication_timeout": 0}, "more than 0"),
        ({"durability": "local", "replication_timeout": 30.0}, "at most 10"),
    ],
)
def test_durability_settings_that_cannot_work_stop_start_up(
    receiver: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"receiver": receiver}, environ={}, require_integrations=False)


def test_live_replicas_are_online_and_acknowledging() -> None:
    info = {
        "role": "master",
        "slave0": {"state": "online", "lag": 0},
        "slave1": {"state": "online", "lag": durability.LIVE_LAG + 1},  # stopped, say
        "slave2": {"state": "wait_bgsave", "lag": 0},  # first sync still running
        "slave_read_only": 1,
    }
    assert live_replicas(info) == 1


def test_a_held_file_keeps_its_mark_until_released_or_forgotten(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    waiting = spool.write("d1", {"receiver": "{}"})
    held = spool.write("d2", {"receiver": "{}"}, held=("abc123", 42))
    assert spool.files() == [waiting] and len(spool) == 1  # held copies are not "spooled"
    [copy] = spool.held()
    assert (copy.path, copy.replid, copy.offset) == (held, "abc123", 42)

    pushed: list[str] = []

    def push(spooled: Spooled) -> tuple[str, int]:
        pushed.append(spooled.delivery_id)
        return ("def456", 7)  # stored, not confirmed: keep it, held

    assert spool.flush(push) == 1 and pushed == ["d1"]
    assert not spool.files()
    assert sorted((h.replid, h.offset) for h in spool.held()) == [("abc123", 42), ("def456", 7)]
    spool.release(held)  # its master is gone: push it again
    assert [p.name for p in spool.files()] == [held.name.split(".held-")[0]]
    for copy in spool.held():
        spool.forget(copy.path)
    assert not spool.held()
