"""Concurrency without a worker process: the settings, and the runner on its own.

The runner runs each attempt under a limit (real threads and a real event loop); the
tests of a real ``receiver worker`` running handlers concurrently are in
``tests/system/test_concurrency.py``.
"""

from __future__ import annotations

import threading

import pytest

from receiver import Router
from receiver.core.runner import Attempt, Runner
from receiver.errors import ConfigError, PluginError
from receiver.settings.loading import load_settings
from tests.conftest import SECRET, TOKEN
from tests.processes import (
    wait_until,
)


def test_handler_concurrency_must_be_positive() -> None:
    with pytest.raises(PluginError, match="concurrency must be >= 1"):
        Router().connect("group.posts", lambda e: None, background=True, concurrency=0)


def test_worker_concurrency_setting() -> None:
    environ = {"RECEIVER_APP_SECRET": SECRET, "RECEIVER_VERIFY_TOKEN": TOKEN}
    assert load_settings({}, environ).worker_concurrency == 32
    assert load_settings({"receiver": {"worker_concurrency": 32}}, environ).worker_concurrency == 32
    overridden = {**environ, "RECEIVER_WORKER_CONCURRENCY": "8"}
    assert (
        load_settings({"receiver": {"worker_concurrency": 32}}, overridden).worker_concurrency == 8
    )
    with pytest.raises(ConfigError, match="worker_concurrency must be between 1 and 1024"):
        load_settings({"receiver": {"worker_concurrency": 0}}, environ)


# -- the runner on its own (real threads and a real event loop) ------------------------------


def _collect(runner: Runner, count: int) -> list[Attempt]:
    done = [runner.done.get(timeout=10) for _ in range(count)]
    for attempt in done:
        runner.finish(attempt)
    return done


def test_runner_reports_outcomes_and_frees_slots() -> None:
    runner = Runner(2)

    def boom(x: int) -> None:
        raise ValueError(f"bad {x}")

    first = runner.start(Attempt(func=lambda x: x, arg=1, key="ok", timeout=5))
    second = runner.start(Attempt(func=boom, arg=2, key="boom", timeout=5))
    assert runner.free == 0
    _collect(runner, 2)
    assert first.ok and not second.ok
    assert "ValueError: bad 2" in (second.error or "")
    assert runner.free == 2 and runner.running("ok") == 0
    runner.close()


def test_runner_abandons_a_thread_past_its_deadline() -> None:
    runner = Runner(1, abandon_limit=1)
    release = threading.Event()
    stuck = runner.start(Attempt(func=lambda _: release.wait(10), arg=None, key="h", timeout=0.1))
    wait_until(lambda: stuck._thread is not None, 5, "the call to start")
    assert runner.expire(stuck)
    assert stuck.timed_out and "did not finish within 0.1s" in (stuck.error or "")
    assert runner.free == 1 and runner.abandoned == 1 and not runner.exhausted
    after = runner.start(Attempt(func=lambda x: x, arg=2, key="h", timeout=5))
    assert _collect(runner, 1) == [after]  # a fresh thread took the slot
    release.set()
    wait_until(lambda: runner.abandoned == 0, 5, "the abandoned thread to return")
    assert runner.done.empty()  # its late outcome is dropped
    runner.close()


def test_runner_counts_abandoned_threads_until_exhausted() -> None:
    runner = Runner(1, abandon_limit=1)
    release = threading.Event()
    for _ in range(2):
        attempt = runner.start(
            Attempt(func=lambda _: release.wait(10), arg=None, key="h", timeout=0.1)
        )
        wait_until(lambda a=attempt: a._thread is not None, 5, "the call to start")
        runner.expire(attempt)
    assert runner.abandoned == 2 and runner.exhausted
    release.set()
    runner.close()


def test_runner_runs_coroutines_on_one_loop_and_cancels_late_ones() -> None:
    import asyncio

    runner = Runner(4)
    loops: list[int] = []
    cancelled = threading.Event()

    async def quick(x: int) -> None:
        loops.append(id(asyncio.get_running_loop()))

    async def slow(x: int) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    for n in range(3):
        runner.start(Attempt(func=quick, arg=n, key="quick", timeout=5))
    late = runner.start(Attempt(func=slow, arg=0, key="slow", timeout=5))
    assert all(a.ok for a in _collect(runner, 3))
    assert len(set(loops)) == 1
    assert runner.expire(late)
    assert cancelled.wait(5)
    assert runner.free == 4 and runner.abandoned == 0
    runner.close()


def test_a_runner_s_kept_coroutine_answers_are_inspect_s() -> None:
    """``Runner.start`` asks once per function; unhashable callables are asked each time."""
    import functools
    import inspect

    async def coroutine(_: object) -> None:
        return None

    def plain(_: object) -> None:
        return None

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, _: object) -> None:
            return None

    runner = Runner(1)
    for func in (coroutine, plain, functools.partial(coroutine), Unhashable(), plain, coroutine):
        assert runner._coroutine_function(func) is inspect.iscoroutinefunction(func)
