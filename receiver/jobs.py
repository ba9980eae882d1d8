"""What a worker runs: batches of (event, handler) items, each deduplicated in Redis.

A job carries JSON data only (events as dicts, handlers by id). Each item's
state lives in Redis under ``receiver:state:<integration>:<handler>:<event>``:

- absent or ``failed``   → the item may run (a redelivery re-runs a failure);
- ``running:<job>``      → another job has it; skipped (the same job may reclaim it);
- ``retrying:<job>``     → failed, and that job will retry it; others skip it;
- ``done``               → handled; every later copy is skipped.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from .errors import ReceiverError
from .events import Event
from .routing import Handler, Router

log = logging.getLogger("receiver.jobs")

STATE_PREFIX = "receiver:state:"

_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local s = redis.call('GET', key)
  if (not s) or s == 'failed' or s == 'running:' .. ARGV[1] or s == 'retrying:' .. ARGV[1] then
    redis.call('SET', key, 'running:' .. ARGV[1], 'EX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


class HandlerFailures(ReceiverError):
    """Some items of a batch failed; RQ retries the job, which re-runs only those."""

    def __init__(self, failures: Sequence[dict[str, str]]) -> None:
        lines = [f"{len(failures)} handler call(s) failed:"]
        for failure in failures:
            lines.append(f"- {failure['handler']} on event {failure['event_id']}:")
            lines.append(failure["traceback"])
        super().__init__("\n".join(lines))
        self.failures = list(failures)


@dataclass
class WorkContext:
    """What the job functions need in this process: handlers and where state lives."""

    router: Router
    connection: Redis | None = None
    dedupe_window: int = 24 * 3600
    calls: list[dict[str, Any]] = field(default_factory=list)


_context: WorkContext | None = None


def configure(context: WorkContext) -> None:
    global _context
    _context = context


def current_context() -> WorkContext:
    """The configured context; a plain ``rq worker`` builds it from the environment."""
    global _context
    if _context is None:
        from .app import build_core  # late: the worker path imports Flask only if needed

        core = build_core()
        _context = core.work_context()
    return _context


def state_key(event: Event, handler: Handler) -> str:
    return f"{STATE_PREFIX}{event.integration}:{handler.id}:{event.id}"


def item(event: Event, handler: Handler) -> dict[str, Any]:
    """The JSON form of one unit of background work."""
    return {"event": event.to_dict(), "handler": handler.id}


def run_batch(items: list[dict[str, Any]]) -> dict[str, int]:
    """RQ job function: run every item not already handled; raise if any failed."""
    from rq import get_current_job

    job = get_current_job()
    job_id = job.id if job is not None else "inline"
    final = job is None or not job.retries_left
    return execute(items, current_context(), job_id=job_id, final_attempt=final)


def execute(
    items: list[dict[str, Any]], context: WorkContext, *, job_id: str, final_attempt: bool
) -> dict[str, int]:
    pairs = [(Event.from_dict(i["event"]), context.router.handler(i["handler"])) for i in items]
    runnable = _claim(pairs, context, job_id)
    failures: list[dict[str, str]] = []
    done = 0
    for (event, handler), claimed in zip(pairs, runnable, strict=True):
        if not claimed:
            continue
        try:
            handler.func(event)
        except Exception:
            log.exception("background handler %s failed on event %s", handler.id, event.id)
            failures.append(
                {"handler": handler.id, "event_id": event.id, "traceback": traceback.format_exc()}
            )
            _set_state(context, event, handler, "failed" if final_attempt else f"retrying:{job_id}")
        else:
            done += 1
            _set_state(context, event, handler, "done")
    if failures:
        raise HandlerFailures(failures)
    return {"done": done, "skipped": len(pairs) - sum(runnable)}


def _claim(pairs: list[tuple[Event, Handler]], context: WorkContext, job_id: str) -> list[bool]:
    if context.connection is None:
        return [True] * len(pairs)
    keys = [state_key(event, handler) for event, handler in pairs]
    claim = context.connection.register_script(_CLAIM)
    result = claim(keys=keys, args=[job_id, context.dedupe_window])
    return [bool(flag) for flag in result]


def _set_state(context: WorkContext, event: Event, handler: Handler, state: str) -> None:
    if context.connection is not None:
        context.connection.set(state_key(event, handler), state, ex=context.dedupe_window)
