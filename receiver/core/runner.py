"""Run background handler calls concurrently in one worker process, each under a time limit.

Background handlers exist for slow work that mostly waits on I/O, so one
worker process runs up to ``concurrency`` calls at once: plain functions on
threads, ``async def`` functions on one event loop (a thread of its own),
both counted against the same limit. The runner does no Redis I/O and knows
nothing of drain jobs; it starts calls and reports when each one ends.

A call past its deadline is reported as timed out. A coroutine is cancelled;
a thread cannot be, so it is *abandoned*: its slot goes to a fresh thread,
its eventual result is dropped, and it is counted until it returns. When
more threads are abandoned than ``abandon_limit`` the runner says so
(``exhausted``): the worker then hands its work back and restarts itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import inspect
import itertools
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("receiver.runner")

_STOP = object()


@dataclass(eq=False)
class Attempt:
    """One handler call: what ran, until when it may run, and how it ended."""

    func: Callable[[Any], Any]
    arg: Any
    key: str
    """Groups calls for per-handler limits (the handler id)."""
    timeout: float
    tag: Any = None
    """The caller's own bookkeeping, returned untouched."""
    deadline: float = 0.0
    started: float = 0.0
    error: str | None = None
    timed_out: bool = False
    finished: bool = False
    _future: concurrent.futures.Future[Any] | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None


def resolve(value: Any) -> Any:
    """Run an awaitable returned by a handler to completion here (inline and test paths).

    A fresh event loop per call (``asyncio.run``): inline handlers run on web threads
    that have none, and a loop left open per thread would outlive its handler.
    Under gevent the loop runs on a native thread of gevent's pool.
    """
    if value is None or not inspect.isawaitable(value):  # None: most handlers, no ABC check
        return value
    coroutine = _await(value)
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        # gevent web workers: asyncio allows one running loop per OS thread, and every
        # greenlet shares it; run the coroutine on a native thread, waiting cooperatively.
        hub = importlib.import_module("gevent").get_hub()
        ok, result = hub.threadpool.apply(_run_caught, (coroutine,))
        if not ok:
            raise result
        return result
    return asyncio.run(coroutine)


def _run_caught(coroutine: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """The handler's exception travels back as a value (gevent's pool would print it)."""
    try:
        return True, asyncio.run(coroutine)
    except BaseException as exc:
        return False, exc


async def _await(value: Any) -> Any:
    return await value


_KEPT_FUNCTIONS = 256
"""How many functions a runner remembers as coroutine functions or not."""


class Runner:
    """Up to ``concurrency`` handler calls at once; completions go to ``done``."""

    def __init__(self, concurrency: int, *, abandon_limit: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        self.abandon_limit = concurrency if abandon_limit is None else abandon_limit
        self.done: queue.SimpleQueue[Attempt] = queue.SimpleQueue()
        self._tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._abandoned: set[threading.Thread] = set()
        self._running: dict[str, int] = {}
        self._in_flight = 0
        self._names = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._coroutines: dict[Any, bool] = {}

    # -- capacity --------------------------------------------------------------------------

    @property
    def free(self) -> int:
        return self.concurrency - self._in_flight

    def running(self, key: str) -> int:
        return self._running.get(key, 0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def abandoned(self) -> int:
        """Abandoned threads that have not returned yet."""
        with self._lock:
            return len(self._abandoned)

    @property
    def exhausted(self) -> bool:
        return self.abandoned > self.abandon_limit

    # -- running -----------------------------------------------------------------------------

    def start(self, attempt: Attempt) -> Attempt:
        """Start a call now; the caller keeps within ``free`` slots."""
        attempt.started = time.monotonic()
        attempt.deadline = attempt.started + attempt.timeout
        self._in_flight += 1
        self._running[attempt.key] = self._running.get(attempt.key, 0) + 1
        if self._coroutine_function(attempt.func):
            coroutine = attempt.func(attempt.arg)
            future = asyncio.run_coroutine_threadsafe(self._guard(coroutine), self._event_loop())
            attempt._future = future
            future.add_done_callback(functools.partial(self._coroutine_done, attempt))
        else:
            if len(self._threads) < self.concurrency:  # else all there: no lock to take
                self._ensure_threads()
            self._tasks.put(attempt)
        return attempt

    def _coroutine_function(self, func: Any) -> bool:
        """``inspect.iscoroutinefunction(func)``, kept per function: a drainer starts the
        same few handlers' calls again and again (0.45 µs a call instead of ≈ 0.05)."""
        try:
            return self._coroutines[func]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable
            return inspect.iscoroutinefunction(func)
        if len(self._coroutines) >= _KEPT_FUNCTIONS:  # made on the fly: keep none for long
            self._coroutines.clear()
        found = self._coroutines[func] = inspect.iscoroutinefunction(func)
        return found

    def expire(self, attempt: Attempt) -> bool:
        """Past its deadline: free its slot, never report it. False if it had just finished."""
        with self._lock:
            if attempt.finished or attempt.timed_out:
                return False
            attempt.timed_out = True
            thread = attempt._thread
            if thread is not None and thread in self._threads:
                self._threads.discard(thread)
                self._abandoned.add(thread)
                log.error(
                    "abandoned a thread running %s past its %gs limit (%d abandoned)",
                    attempt.key,
                    attempt.timeout,
                    len(self._abandoned),
                )
        attempt.error = (
            f"timeout: {attempt.key} did not finish within {attempt.timeout:g}s; "
            "the attempt counts as failed"
        )
        self._release(attempt)
        if attempt._future is not None:
            attempt._future.cancel()
        else:
            self._ensure_threads()
        return True

    def close(self) -> None:
        """Stop idle threads and the event loop (abandoned threads are left to themselves)."""
        with self._lock:
            for _ in self._threads:
                self._tasks.put(_STOP)
            self._threads.clear()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    # -- internals ---------------------------------------------------------------------------

    def _release(self, attempt: Attempt) -> None:
        self._in_flight -= 1
        left = self._running[attempt.key] - 1
        if left:
            self._running[attempt.key] = left
        else:
            del self._running[attempt.key]

    def finish(self, attempt: Attempt) -> None:
        """Called by the consumer of ``done`` for each attempt it takes: frees the slot."""
        self._release(attempt)

    def _ensure_threads(self) -> None:
        with self._lock:
            while len(self._threads) < self.concurrency:
                thread = threading.Thread(
                    target=self._work, name=f"receiver-handler-{next(self._names)}", daemon=True
                )
                self._threads.add(thread)
                thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            attempt = self._tasks.get()
            if attempt is _STOP:
                return
            with self._lock:
                attempt._thread = me
                skip = attempt.timed_out
            if not skip:
                try:
                    resolve(attempt.func(attempt.arg))
                except BaseException:
                    error: str | None = traceback.format_exc()
                else:
                    error = None
            with self._lock:
                if me in self._abandoned:
                    self._abandoned.discard(me)
                    log.warning(
                        "an abandoned call of %s returned after %.1fs; its outcome is ignored",
                        attempt.key,
                        time.monotonic() - attempt.started,
                    )
                    return
                attempt._thread = None
                if attempt.timed_out:
                    continue
                attempt.error = error
                attempt.finished = True
            self.done.put(attempt)

    async def _guard(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return await coroutine

    def _coroutine_done(self, attempt: Attempt, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if attempt.timed_out:
                return
            if future.cancelled():
                attempt.error = "cancelled"
            else:
                exc = future.exception()
                attempt.error = (
                    "".join(traceback.format_exception(exc)) if exc is not None else None
                )
            attempt.finished = True
        self.done.put(attempt)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            threading.Thread(target=run, name="receiver-event-loop", daemon=True).start()
            ready.wait()
            self._loop = loop
        return self._loop
