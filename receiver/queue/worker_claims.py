"""Run (event, handler) items exactly once per success, with their state in Redis.

Work travels as JSON items (``{"event": {...}, "handler": id}``). Before an
item runs it is claimed atomically; its state lives under
``receiver:state:<integration>:<handler>:<event id>`` for ``dedupe_window``:

- absent, or ``failed``      → may run (a redelivery re-runs a failure: never swallowed);
- ``running:<token>``        → running; skipped by others, unless the owner is a
                               drainer whose heartbeat has expired (it was killed);
- ``retrying:<token>``       → failed, a scheduled retry owns it; only an item carrying
                               that token as its ``owner`` may run it, others skip it;
- ``done``                   → handled; every later copy is skipped.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis, RedisError

from . import lua
from .config import Settings
from .events import Event
from .routing import Handler, Router
from .runner import Runner, resolve

log = logging.getLogger("receiver.jobs")

STATE_PREFIX = "receiver:state:"
ALIVE_PREFIX = "receiver:alive:"
STATE_PATIENCE = 300.0
"""Seconds a worker keeps trying to record an outcome while Redis is away."""

# KEYS: state keys. ARGV: token, window seconds, alive-key prefix, then one owner token
# per key ('' when the item owns no retry): the claim succeeds on 'retrying:<owner>'.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local s = redis.call('GET', key)
  local ok = false
  local owner = ARGV[3 + i] or ''
  if not s or s == 'failed' or s == 'running:' .. ARGV[1] or s == 'retrying:' .. ARGV[1]
     or (owner ~= '' and s == 'retrying:' .. owner) then
    ok = true
  elseif string.sub(s, 1, 10) == 'running:d:' then
    ok = redis.call('EXISTS', ARGV[3] .. string.sub(s, 11)) == 0
  end
  if ok then
    redis.call('SET', key, 'running:' .. ARGV[1], 'EX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


@dataclass
class WorkContext:
    """What job functions need in this process: the handlers, and where state lives."""

    router: Router
    settings: Settings
    connection: Redis | None = None
    runner: Runner | None = None
    """Runs handler calls concurrently; the worker sets it, drain jobs make one if unset."""


@dataclass
class Outcome:
    item: dict[str, Any]
    handler: Handler
    event: Event
    ran: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_context: WorkContext | None = None
context_factory: Callable[[], WorkContext] | None = None
"""How a plain ``rq worker`` builds its context from the environment; ``receiver.app``
sets it when imported (it is the layer that wires), so this module never imports it."""


def configure(context: WorkContext) -> None:
    global _context
    _context = context


def current_context() -> WorkContext:
    """The configured context; a plain ``rq worker`` builds it from the environment."""
    global _context
    if _context is None:
        if context_factory is None:
            raise RuntimeError("receiver.app was not imported; import receiver first")
        _context = context_factory()
    return _context


def state_key(event_integration: str, handler_id: str, event_id: str) -> str:
    return f"{STATE_PREFIX}{event_integration}:{handler_id}:{event_id}"


def item(event: Event, handler: Handler) -> dict[str, Any]:
    """The JSON form of one unit of background work."""
    return {"event": event.to_dict(), "handler": handler.id}


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
            _set_state(context, outcome, "done")
    return outcomes


def _claim(outcomes: list[Outcome], context: WorkContext, token: str) -> list[bool]:
    return claim(context, outcomes, token)


def outcome_key(outcome: Outcome) -> str:
    return state_key(outcome.event.integration, outcome.handler.id, outcome.event.id)


def claim(context: WorkContext, outcomes: list[Outcome], token: str) -> list[bool]:
    """Claim items in one round trip; which ones this caller may run.

    An item may carry ``owner``: the token of the scheduled retry it is (see ``drain``).
    """
    keys = [outcome_key(o) for o in outcomes]
    # Copies of one item in the same batch (a delivery posted twice) run once.
    first = {key: index for index, key in reversed(list(enumerate(keys)))}
    if context.connection is None:
        return [first[key] == index for index, key in enumerate(keys)]
    script = lua.script(context.connection, _CLAIM)
    unique = list(first)
    owners = [str(outcomes[first[key]].item.get("owner") or "") for key in unique]
    result = script(
        keys=unique, args=[token, context.settings.dedupe_window, ALIVE_PREFIX, *owners]
    )
    won = {key for key, flag in zip(unique, result, strict=True) if flag}
    return [key in won and first[key] == index for index, key in enumerate(keys)]


def record(
    context: WorkContext,
    states: list[tuple[Outcome, str]],
    then: Callable[[Any], None] | None = None,
) -> None:
    """Record outcomes in one round trip, then ``then(pipeline)``'s commands, in that order.

    Waits out a Redis outage: the handlers' side effects already happened.
    """
    connection = context.connection
    if connection is None or not (states or then):
        return
    deadline = time.monotonic() + STATE_PATIENCE
    while True:
        try:
            with connection.pipeline(transaction=False) as pipe:
                for outcome, state in states:
                    pipe.set(outcome_key(outcome), state, ex=context.settings.dedupe_window)
                if then is not None:
                    then(pipe)
                pipe.execute()
            return
        except RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _set_state(context: WorkContext, outcome: Outcome, state: str) -> None:
    record(context, [(outcome, state)])
