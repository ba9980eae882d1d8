"""Ordered background work: events with the same key run one at a time, in acknowledgement order.

A handler registered with ``ordered_by`` gives each event a key (a sender, a
conversation). Its events do not travel in packets: the web side appends each
one to its key's *lane* (``keys.lane_key``: one list per handler, integration
and key) in the same Lua script that stores the delivery, so a lane's order is
the order in which deliveries were acknowledged, and the body's order within
one. Only a lane's *head* may run; the next one becomes the head when the head
has an outcome that lets the key move on.

Who runs a head: a lane that has a runnable head has exactly one *wake*, a
small packet (``{"lane": ...}``) in the queue's pending list or in the in-flight
list of the drainer running the lane. A drainer that pops a wake runs the head,
and once it is recorded goes on with the next one (``LANE``'s ``advance``), so
a busy key costs one claim and one record per event, as unordered work does;
a lane that empties takes its wake with it. Different keys have different
wakes: they run concurrently, up to the workers' concurrency.

Failures hold only their key. A head whose retry is scheduled keeps its place
and its lane *sleeps* (no wake): later events wait, and the retry's item, run
from a packet like any retry, moves the lane on once it has an outcome. A head
that fails for good is filed in RQ's failed registry; its key moves on, unless
its handler says ``on_failure="block"``: then the lane sleeps until ``receiver
failed requeue`` runs it again, or ``receiver failed skip`` moves on. The
``held`` hash tells operators which keys wait behind which event.

Crash safety needs nothing new: a SIGKILLed drainer's wake is in its in-flight
list, which maintenance gives back to the pending list; the next drainer runs
the same head again (its claim state names a dead drainer) before anything
behind it. A stray second wake (a reply lost to an outage, a crash between
two commands) is harmless: only one drainer can claim the head, and the other
lets its wake go (``settle``). As a backstop, maintenance wakes a lane whose
head has not changed for ``STALL`` seconds and that is not held.

State per key is the lane itself: it exists while it holds waiting events and
disappears with its last one, plus an entry in ``lanes:<queue>`` (and in
``held:<queue>`` while its head fails), removed with it; every lane expires
after ``handoff.LANE_TTL`` without activity.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from receiver.model.events import Event
from receiver.queue import keys, scripts
from receiver.queue.handoff import LANE_TTL, item
from receiver.routing.contracts import Work
from receiver.routing.handlers import Handler

WAKE = "lane"
"""The field that makes a packet a lane's wake."""
CARRIED = ("entry", "lane", "key", "block")
"""An ordered item's fields that its retries and its failed job carry along."""
STALL = 60.0
"""Seconds without a new head after which maintenance wakes a lane that is not held."""
NUDGE_BATCH = 100
"""Stalled lanes looked at per queue per maintenance round."""
TRACE_SCAN = 10_000
"""Elements of a lane read at most to find where an event waits (``waiting``)."""

LANE = """
-- KEYS[1] the lane (keys.lane_key); KEYS[2] keys.pending_key(queue); KEYS[3] the caller's
-- in-flight list (keys.inflight_key; any key when it holds no wake); KEYS[4]
-- keys.held_key(queue); KEYS[5] keys.lanes_key(queue); KEYS[6] the item's claim state key.
-- ARGV[1] the mode; ARGV[2] the item's head prefix (Lane.prefix); ARGV[3] the wake the
-- caller holds for this lane ('' when none); ARGV[4] '1' when the caller goes on with the
-- next head; ARGV[5] a fresh wake, pushed when a caller holding none moves the lane on;
-- ARGV[6] seconds an idle lane lives; ARGV[7] sleep: why the lane is held (JSON);
-- ARGV[8] settle: keys.DONE; skip: the state the skipped item holds its key with.
-- Modes: advance (the item ran, or failed for good and its key moves on); sleep (its retry
-- is scheduled, or it blocks: the key waits, without a wake); settle (the caller could not
-- claim the head: done already means advance, anything else that another runs the lane);
-- skip (an operator moves the key on; the item's state is cleared so a redelivery may run).
-- Returns the next head when the caller goes on with it, else false.
local lane, pending, inflight = KEYS[1], KEYS[2], KEYS[3]
local mode, prefix, wake = ARGV[1], ARGV[2], ARGV[3]
local head = redis.call('LINDEX', lane, 0)
local mine = head and string.sub(head, 1, #prefix) == prefix
local function release()
  if wake ~= '' then redis.call('LREM', inflight, 1, wake) end
  return false
end
if mode == 'settle' then
  if not (mine and redis.call('GET', KEYS[6]) == ARGV[8]) then return release() end
elseif mode == 'skip' then
  if redis.call('GET', KEYS[6]) == ARGV[8] then redis.call('DEL', KEYS[6]) end
elseif mode == 'sleep' then
  if mine then redis.call('HSET', KEYS[4], lane, ARGV[7]) end
  return release()
end
if mine then
  redis.call('LPOP', lane)
  redis.call('HDEL', KEYS[4], lane)
end
if redis.call('LLEN', lane) == 0 then
  redis.call('ZREM', KEYS[5], lane)
  return release()
end
redis.call('EXPIRE', lane, ARGV[6])
if mine then redis.call('ZADD', KEYS[5], tonumber(redis.call('TIME')[1]), lane) end
if wake == '' then
  if mine then redis.call('LPUSH', pending, ARGV[5]) end
  return false
end
if ARGV[4] == '1' then return redis.call('LINDEX', lane, 0) end
redis.call('LREM', inflight, 1, wake)
redis.call('LPUSH', pending, wake)
return false
"""


@dataclass(frozen=True)
class Lane:
    """Where an ordered item stands: its lane, its entry in it, its key and failure policy."""

    lane: str
    entry: str
    key: str
    block: bool

    @classmethod
    def of(cls, item: dict[str, Any]) -> Lane | None:
        lane = item.get("lane")
        if not isinstance(lane, str):
            return None
        entry, key = str(item.get("entry", "")), str(item.get("key", ""))
        return cls(lane, entry, key, bool(item.get("block")))

    @property
    def prefix(self) -> str:
        """How the lane element of this entry begins: the scripts compare heads by it."""
        return '{"entry":' + json.dumps(self.entry) + ","


def carried(item: dict[str, Any]) -> dict[str, Any]:
    """The ordering fields an item's retry (or failed job) keeps."""
    return {k: item[k] for k in CARRIED if k in item}


def wake(lane: str) -> str:
    """A wake packet for ``lane`` (``at``: for the oldest-pending gauge)."""
    return json.dumps({WAKE: lane, "at": round(time.time(), 3)}, separators=(",", ":"))


# --- web side -----------------------------------------------------------------------------------


def split(work: Work) -> tuple[list[tuple[Event, Handler, str]], list[tuple[Event, Handler]]]:
    """The delivery's ordered pairs with their keys, and the rest, each in the body's order."""
    ordered: list[tuple[Event, Handler, str]] = []
    unordered: list[tuple[Event, Handler]] = []
    for event, handler in work:
        key = None if handler.ordered_by is None else handler.order_key(event)
        if key is None:
            unordered.append((event, handler))
        else:
            ordered.append((event, handler, key))
    return ordered, unordered


def elements(
    delivery_id: str, ordered: Iterable[tuple[Event, Handler, str]], default_queue: str
) -> dict[str, list[tuple[str, str, str]]]:
    """Per queue, ``(lane, element, wake)`` for each ordered pair, for ``handoff.push``."""
    by_queue: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for event, handler, key in ordered:
        lane = keys.lane_key(handler.id, event.integration, key)
        body: dict[str, Any] = {"entry": f"{delivery_id}.{event.id}", "lane": lane, "key": key}
        if handler.on_failure == "block":
            body["block"] = True
        body.update(item(event, handler))
        element = json.dumps(body, separators=(",", ":"))
        by_queue[handler.queue or default_queue].append((lane, element, wake(lane)))
    return dict(by_queue)


# --- worker side --------------------------------------------------------------------------------


def heads(connection: Redis, lanes: list[str]) -> list[bytes | None]:
    """The head of each lane (``None``: the lane is empty; its wake was stray)."""
    with connection.pipeline(transaction=False) as pipe:
        for lane in lanes:
            pipe.lindex(lane, 0)
        return list(pipe.execute())


@dataclass
class Step:
    """What happens to a lane once one of its items has an outcome (or could not be claimed)."""

    lane: Lane
    mode: str
    """``advance``, ``sleep`` or ``settle`` (see ``LANE``)."""
    wake: str = ""
    """The wake the drainer holds for this lane (``""``: it runs a retry, and holds none)."""
    state_key: str = ""
    """The item's claim state key (``settle``, ``skip``)."""
    state: str = ""
    """``settle``: ``keys.DONE``; ``skip``: the state the skipped item holds its key with."""
    held: str = ""
    """``sleep``: why the key waits, as operators see it (``held_info``)."""


def step_command(
    connection: Redis, pipe: Any, step: Step, queue: str, inflight: str, go_on: bool
) -> None:
    """Add ``step`` to ``pipe`` (of ``connection``); its reply is the next head when ``go_on``."""
    scripts.script(connection, LANE)(
        keys=[
            step.lane.lane,
            keys.pending_key(queue),
            inflight,
            keys.held_key(queue),
            keys.lanes_key(queue),
            step.state_key or step.lane.lane,
        ],
        args=[
            step.mode,
            step.lane.prefix,
            step.wake,
            "1" if go_on else "0",
            wake(step.lane.lane),
            LANE_TTL,
            step.held,
            step.state,
        ],
        client=pipe,
    )


def held_info(event: Event, handler: str, lane: Lane, why: str, attempts: int, job: str) -> str:
    """What ``held:<queue>`` says of a key whose head waits for a retry or an operator."""
    return json.dumps(
        {
            "key": lane.key,
            "handler": handler,
            "event_id": event.id,
            "event_name": event.name,
            "delivery_id": event.delivery_id,
            "why": why,
            "attempts": attempts,
            "job_id": job,
            "since": datetime.now(UTC).isoformat(),
        },
        separators=(",", ":"),
    )


def nudge(connection: Redis, queue: str) -> int:
    """Wake lanes whose head has not changed for ``STALL`` seconds and that are not held.

    A backstop: a lane keeps its wake by construction. A spare wake costs one claim
    that fails; a lane left without one would wait for ever. Not while the queue has a
    backlog: then a lane's wake may simply be waiting its turn.
    """
    if connection.llen(keys.pending_key(queue)) >= NUDGE_BATCH:
        return 0
    index = keys.lanes_key(queue)
    stalled = [
        lane.decode() if isinstance(lane, bytes) else str(lane)
        for lane in connection.zrangebyscore(
            index, "-inf", time.time() - STALL, start=0, num=NUDGE_BATCH
        )
    ]
    if not stalled:
        return 0
    with connection.pipeline(transaction=False) as pipe:
        for lane in stalled:
            pipe.llen(lane)
            pipe.hexists(keys.held_key(queue), lane)
        found = pipe.execute()
    woken = 0
    now = time.time()
    with connection.pipeline(transaction=False) as pipe:
        for lane, length, held in zip(stalled, found[::2], found[1::2], strict=True):
            if not length:
                pipe.zrem(index, lane)
                continue
            pipe.zadd(index, {lane: now})
            if not held:
                pipe.rpush(keys.pending_key(queue), wake(lane))
                woken += 1
        pipe.execute()
    return woken


# --- operators ----------------------------------------------------------------------------------


@dataclass
class HeldKey:
    """A key whose head waits for a retry or an operator, and how many events wait behind it."""

    queue: str
    key: str
    handler: str
    event_id: str
    event_name: str
    why: str
    """``retrying`` (a retry is scheduled) or ``blocked`` (``on_failure="block"``)."""
    attempts: int
    job_id: str
    since: str
    waiting: int


def held(connection: Redis, queues: list[str]) -> list[HeldKey]:
    """Keys held by a failing head, per queue, oldest first (entries of vanished lanes go)."""
    out: list[HeldKey] = []
    for queue in queues:
        entries = {
            _text(lane): json.loads(info)
            for lane, info in connection.hgetall(keys.held_key(queue)).items()
        }
        if not entries:
            continue
        with connection.pipeline(transaction=False) as pipe:
            for lane in entries:
                pipe.llen(lane)
            lengths = pipe.execute()
        for (lane, info), length in zip(entries.items(), lengths, strict=True):
            if not length:
                connection.hdel(keys.held_key(queue), lane)
                continue
            out.append(
                HeldKey(
                    queue=queue,
                    key=str(info.get("key", "")),
                    handler=str(info.get("handler", "")),
                    event_id=str(info.get("event_id", "")),
                    event_name=str(info.get("event_name", "")),
                    why=str(info.get("why", "")),
                    attempts=int(info.get("attempts", 0)),
                    job_id=str(info.get("job_id", "")),
                    since=str(info.get("since", "")),
                    waiting=int(length) - 1,
                )
            )
    return sorted(out, key=lambda h: h.since)


def active(connection: Redis, queue: str) -> int:
    """Keys of ``queue`` with events waiting or running."""
    return int(connection.zcard(keys.lanes_key(queue)))


def skip(connection: Redis, queue: str, carried_item: dict[str, Any], job_id: str) -> bool:
    """Move a failed item's key on past it (when it still holds it); True if it did."""
    lane = Lane.of(carried_item)
    if lane is None:
        return False
    event = carried_item["event"]
    state = keys.state_key(event["integration"], carried_item["handler"], event["id"])
    before = connection.lindex(lane.lane, 0)
    step = Step(lane, "skip", state_key=state, state=keys.retrying(keys.retry_token(job_id)))
    with connection.pipeline(transaction=False) as pipe:
        step_command(connection, pipe, step, queue, keys.inflight_key("-"), False)
        pipe.execute()
    return before is not None and _text(before).startswith(lane.prefix)


def waiting(connection: Redis, record: dict[str, Any]) -> list[dict[str, Any]]:
    """For a delivery's trace: where each of its ordered events waits, and behind what.

    ``record["ordered"]`` lists ``[handler, event id, key, queue]``; an event no longer in
    its lane (it ran, or is running) is left out. ``text`` says it in one line.
    """
    out: list[dict[str, Any]] = []
    integration = str(record.get("integration") or "")
    for handler, event_id, key, queue in record.get("ordered") or []:
        entry = f"{record.get('delivery_id')}.{event_id}"
        lane = Lane(keys.lane_key(handler, integration, key), entry, key, False)
        elements = [_text(e) for e in connection.lrange(lane.lane, 0, TRACE_SCAN - 1)]
        ahead = next((n for n, e in enumerate(elements) if e.startswith(lane.prefix)), None)
        if ahead is None:
            continue
        head = json.loads(elements[0])
        info = connection.hget(keys.held_key(queue), lane.lane)
        why = json.loads(info)["why"] if info else _claim(connection, integration, handler, head)
        head_id = head["event"].get("id", "?")
        if ahead == 0:
            text = f"next of key {key!r} ({handler}): {why}"
        else:
            text = (
                f"waits for key {key!r} ({handler}): {ahead} event(s) ahead, "
                f"first {head_id} ({head['event'].get('topic')}.{head['event'].get('field')}), "
                f"{why}"
            )
        out.append(
            {
                "handler": handler,
                "event_id": event_id,
                "key": key,
                "ahead": ahead,
                "head_event_id": head_id,
                "head": why,
                "text": text,
            }
        )
    return out


def _claim(connection: Redis, integration: str, handler: str, head: dict[str, Any]) -> str:
    state = connection.get(keys.state_key(integration, handler, str(head["event"].get("id"))))
    return "running" if state is not None and keys.is_running(_text(state)) else "to run"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
