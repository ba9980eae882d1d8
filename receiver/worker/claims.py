"""Worker side: run (event, handler) items exactly once per success, with their state in Redis.

Work travels as JSON items (``{"event": {...}, "handler": id}``). Before an
item runs it is claimed atomically (``scripts.CLAIM``); its state lives under
``keys.state_key(integration, handler, event id)`` for ``dedupe_window``:

- absent, or ``failed``      → may run (a redelivery re-runs a failure: never swallowed);
- ``running:<token>``        → running; skipped by others, unless the owner is a
                               drainer whose heartbeat has expired (it was killed);
- ``retrying:<token>``       → failed, a scheduled retry owns it; only an item carrying
                               that token as its ``owner`` may run it, others skip it;
- ``done``                   → handled; every later copy is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import Redis, RedisError

from receiver.core.runner import Runner, resolve
from receiver.model.events import Event
from receiver.queue import keys, scripts
from receiver.routing.handlers import Handler, Router
from receiver.settings.model import Settings

if TYPE_CHECKING:
    from rq.job import Job

log = logging.getLogger("receiver.jobs")

STATE_PATIENCE = 300.0
"""Seconds a worker keeps trying to record an outcome while Redis is away."""


class WorkerControl:
    """A worker process's stop and restart state, which its drain jobs obey.

    ``receiver worker`` sets it (``process.run_worker``); it reaches drain jobs in the
    ``WorkContext``. A context made elsewhere has its own, which nothing sets.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        """Set on SIGTERM: drainers stop after their current packets."""
        self.restart = threading.Event()
        """Set when too many handler threads were abandoned: the worker restarts once the
        drain job ends."""
        self.keepalive: Callable[[Job | None], None] | None = None
        """Keeps RQ's own worker and job heartbeats alive during a long drain."""
        self.on_restart: Callable[[], None] | None = None
        """How the worker stops warmly so that it can restart."""

    def request_restart(self) -> None:
        """Ask the worker to restart (once): a drain job that gave its work back."""
        if self.restart.is_set():
            return
        self.restart.set()
        if self.on_restart is not None:
            self.on_restart()


@dataclass
class WorkContext:
    """What job functions need in this process: the handlers, and where state lives."""

    router: Router
    settings: Settings
    connection: Redis | None = None
    runner: Runner | None = None
    """Runs handler calls concurrently; the worker sets it, drain jobs make one if unset."""
    control: WorkerControl = field(default_factory=WorkerControl)
    """The worker's stop and restart state (``receiver worker`` sets it)."""


@dataclass
class Outcome:
    item: dict[str, Any]
    handler: Handler
    event: Event
    ran: bool
    error: str | None = None
    key: str = ""
    """Its state key, once ``outcome_key`` worked it out (a drainer asks several times)."""

    @property
    def ok(self) -> bool:
        return self.error is None


_context: WorkContext | None = None


def configure(context: WorkContext) -> None:
    global _context
    _context = context


def current_context() -> WorkContext:
    """The context ``receiver worker`` configured before taking jobs."""
    if _context is None:
        raise RuntimeError(
            "no work context: run receiver's jobs with `receiver worker` (a plain `rq worker` "
            "does not load the handlers or settings)"
        )
    return _context


def execute(
    items: list[dict[str, Any]],
    context: WorkContext,
    *,
    token: str,
    failed_state: Callable[[Outcome], str],
) -> list[Outcome]:
    """Claim, run and record each item; a failure is recorded with ``failed_state(outcome)``."""
    router = context.router
    outcomes = [
        Outcome(i, router.handler(i["handler"]), Event.from_dict(i["event"]), ran=False)
        for i in items
    ]
    claimed = _claim(outcomes, context, token)
    for outcome, mine in zip(outcomes, claimed, strict=True):
        if not mine:
            continue
        outcome.ran = True
        try:
            resolve(outcome.handler.func(outcome.event))
        except Exception:
            outcome.error = traceback.format_exc()
            log.exception(
                "background handler %s failed on event %s", outcome.handler.id, outcome.event.id
            )
            _set_state(context, outcome, failed_state(outcome))
        else:
            _set_state(context, outcome, keys.DONE)
    return outcomes


def _claim(outcomes: list[Outcome], context: WorkContext, token: str) -> list[bool]:
    return claim(context, outcomes, token)


def outcome_key(outcome: Outcome) -> str:
    key = outcome.key
    if not key:
        event = outcome.event
        key = outcome.key = keys.state_key(event.integration, outcome.handler.id, event.id)
    return key


def claim(context: WorkContext, outcomes: list[Outcome], token: str) -> list[bool]:
    """Claim items in one round trip; which ones this caller may run.

    An item may carry ``owner``: the token of the scheduled retry it is (see ``drain``).
    """
    script_keys, args, won = claim_call(context, outcomes, token)
    if context.connection is None:
        return won([])
    return won(scripts.run(context.connection, scripts.CLAIM, script_keys, args))


def claim_call(
    context: WorkContext, outcomes: list[Outcome], token: str
) -> tuple[list[str], list[Any], Callable[[list[Any]], list[bool]]]:
    """``claim`` in parts, for a caller that sends the script with other commands:
    ``scripts.CLAIM``'s KEYS and ARGV, and what turns its reply into ``claim``'s answer."""
    state_keys = [outcome_key(o) for o in outcomes]
    # Copies of one item in the same batch (a delivery posted twice) run once.
    first = {key: index for index, key in reversed(list(enumerate(state_keys)))}
    unique = list(first)
    owners = [str(outcomes[first[key]].item.get("owner") or "") for key in unique]
    args: list[Any] = [
        token,
        context.settings.dedupe_window,
        keys.ALIVE,
        keys.RUNNING,
        keys.RETRYING,
        keys.RUNNING_IN_DRAINER,
        keys.FAILED,
        *owners,
    ]

    def won(result: list[Any]) -> list[bool]:
        if context.connection is None:  # nothing to claim against: copies still run once
            return [first[key] == index for index, key in enumerate(state_keys)]
        flags = {key for key, flag in zip(unique, result, strict=True) if flag}
        return [key in flags and first[key] == index for index, key in enumerate(state_keys)]

    return unique, args, won


def record(
    context: WorkContext,
    states: list[tuple[Outcome, str]],
    then: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Record outcomes in one round trip, then ``then(pipeline)``'s commands, in that order;
    return the replies (``then``'s are the last ones).

    Waits out a Redis outage: the handlers' side effects already happened.
    """
    connection = context.connection
    if connection is None or not (states or then):
        return []
    deadline = time.monotonic() + STATE_PATIENCE
    while True:
        try:
            with connection.pipeline(transaction=False) as pipe:
                for outcome, state in states:
                    pipe.set(outcome_key(outcome), state, ex=context.settings.dedupe_window)
                if then is not None:
                    then(pipe)
                return list(pipe.execute())
        except RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _set_state(context: WorkContext, outcome: Outcome, state: str) -> None:
    record(context, [(outcome, state)])
