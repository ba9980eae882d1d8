"""Group commit: deliveries that arrive during a write share the next one, and its fate."""

from __future__ import annotations

import threading
from functools import partial

import pytest

from receiver.queue.web_spool import Lanes
from receiver.queue.web_store import PacketGroup, Queues


class SlowWrites:
    """A write that blocks until released, recording what each call carried."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[Queues] = []
        self.lanes: list[Lanes] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail = fail

    def __call__(self, queues: Queues, lanes: Lanes) -> None:
        self.calls.append(queues)
        self.lanes.append(lanes)
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise ConnectionError("down")


def run(
    commit: PacketGroup, queues: Queues, errors: list[BaseException], lanes: Lanes | None = None
) -> threading.Thread:
    def target() -> None:
        try:
            commit.submit(queues, lanes or {})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def wait_queued(commit: PacketGroup, count: int) -> None:
    for _ in range(1000):
        if len(commit._waiting) == count:
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} callers never queued")


def test_an_idle_writer_writes_each_delivery_at_once() -> None:
    calls: list[Queues] = []
    commit = PacketGroup(lambda queues, lanes: calls.append(queues))
    commit.submit({"q": ["a"]}, {})
    commit.submit({"q": ["b"]}, {})
    assert calls == [{"q": ["a"]}, {"q": ["b"]}]


def test_callers_arriving_during_a_write_go_together_in_the_next() -> None:
    writes = SlowWrites()
    commit = PacketGroup(writes)
    errors: list[BaseException] = []
    first = run(commit, {"q": ["a"]}, errors)
    assert writes.entered.wait(10)
    others = [
        run(commit, {"q": [p], "other": [p]}, errors, {"q": [(f"lane-{p}", p, "wake")]})
        for p in "bc"
    ]
    wait_queued(commit, 2)
    assert all(t.is_alive() for t in others)  # nobody answered before their write
    writes.release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert not errors
    assert writes.calls == [{"q": ["a"]}, {"q": ["b", "c"], "other": ["b", "c"]}]
    # Ordered items travel with their packets, in arrival order (a key's order).
    assert writes.lanes[1] == {"q": [("lane-b", "b", "wake"), ("lane-c", "c", "wake")]}


def test_a_failed_write_fails_every_caller_of_its_group_and_only_those() -> None:
    writes = SlowWrites(fail=True)
    commit = PacketGroup(writes)
    errors: list[BaseException] = []
    threads = [run(commit, {"q": ["a"]}, errors)]
    assert writes.entered.wait(10)
    threads += [run(commit, {"q": [p]}, errors) for p in "bc"]
    wait_queued(commit, 2)
    writes.release.set()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 3 and all(isinstance(e, ConnectionError) for e in errors)
    writes.fail = False
    commit.submit({"q": ["d"]}, {})  # the writer is free again
    assert writes.calls[-1] == {"q": ["d"]}


def test_any_error_of_a_lone_write_reaches_its_caller_and_frees_the_writer() -> None:
    commit = PacketGroup(lambda queues, lanes: 1 / 0)  # a bug, not a Redis error
    with pytest.raises(ZeroDivisionError):
        commit.submit({"q": ["a"]}, {})
    assert not commit._busy


def test_callers_that_arrive_during_the_leader_s_turn_join_its_write() -> None:
    """The turn (a yield under gevent) comes before the write: who queued meanwhile is in it."""
    calls: list[Queues] = []
    errors: list[BaseException] = []
    late: list[threading.Thread] = []

    def turn() -> None:  # as other greenlets would, reaching ``submit`` during the yield
        if not late:
            late.extend(run(commit, {"q": [name]}, errors) for name in ("b", "c"))
            wait_queued(commit, 2)

    commit = PacketGroup(lambda queues, lanes: calls.append(queues), (turn, threading.Lock))
    commit.submit({"q": ["a"]}, {})
    for thread in late:
        thread.join(10)
    assert not errors
    assert len(calls) == 1 and calls[0]["q"][0] == "a" and sorted(calls[0]["q"]) == ["a", "b", "c"]
    commit.submit({"q": ["d"]}, {})  # the line is free again: its own write
    assert calls[-1] == {"q": ["d"]}


def test_the_turn_is_gevent_s_only_in_a_patched_process() -> None:
    from receiver.queue.web_store import gevent_parts

    assert gevent_parts() is None  # tests run with real threads


def test_under_gevent_greenlets_ready_together_share_one_write() -> None:
    """gevent's parts (its yield and C semaphores), with greenlets: the first to arrive
    yields, the others ready in the same loop iteration join its write; who arrives
    during a write goes in the next one."""
    import gevent
    from gevent.lock import Semaphore

    calls: list[list[str]] = []

    def write(queues: Queues, lanes: Lanes) -> None:
        calls.append(list(queues["q"]))
        gevent.sleep(0.01)  # the round trip: the hub runs others meanwhile

    commit = PacketGroup(write, (partial(gevent.sleep, 0), Semaphore))
    first = [gevent.spawn(commit.submit, {"q": [name]}, {}) for name in "abc"]
    gevent.sleep(0.001)  # during the first write
    late = [gevent.spawn(commit.submit, {"q": [name]}, {}) for name in "de"]
    gevent.joinall(first + late, timeout=10, raise_error=True)
    assert calls == [["a", "b", "c"], ["d", "e"]]
