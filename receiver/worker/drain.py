"""Worker side: drain jobs pull many deliveries per RQ job.

One RQ job per event costs ~57 Redis commands and caps a worker near 200
jobs/s, so deliveries are not RQ jobs. The web side appends each delivery
as one *packet* to ``keys.pending_key(queue)`` and, when fewer than
``max_drainers`` drainers are alive, enqueues one *drain job*. A drain job
moves packets to its own in-flight list and starts their items (claimed in
Redis, see ``jobs``) on the process's ``Runner``, up to ``worker_concurrency``
at once, each under its handler's time limit; a packet leaves the in-flight
list once all its items have an outcome. The job stops when the queue is
empty or its time budget is spent (then hands its slot to a fresh drain job
and the packets it had not started back to the queue).

A turn whose outcomes are all successes costs one round trip: their states, the
finished packets' removal (``scripts.DONE``, states first), their trace entries,
the claim of the items the freed slots take next and the next POP travel as one
``scripts.Batch``. Failures leave the fast path: a failed or timed-out item's next
attempt is scheduled, or the item filed as failed, by ``retries``, and the turn's
outcomes are written through a pipeline (``_flush``).

Ordered items (``ordering``) wait in their keys' lanes instead of packets; a
packet that is a lane's *wake* makes this drainer run the lane's head and,
once its outcome is recorded, the next one, until the lane empties, its head
waits for a retry or an operator, or the drainer winds down (the wake then
goes back to the queue).

A drainer proves it is alive with a heartbeat key; when a worker is
SIGKILLed the key expires, and any other worker's maintenance moves the dead
drainer's in-flight packets back to the front of the queue and starts a drainer.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from queue import Empty
from typing import Any

import redis
from redis import Redis
from rq import get_current_job
from rq.job import Job

from receiver.core.runner import Attempt, Runner
from receiver.errors import PluginError
from receiver.model.events import Event
from receiver.observe import outcomes
from receiver.queue import handoff, keys, ordering, scripts
from receiver.queue.handoff import POP_PACKETS, SLOT_GRACE, start_drainer
from receiver.queue.keys import drainers_key, pending_key
from receiver.routing.handlers import Handler
from receiver.worker.claims import (
    STATE_PATIENCE,
    Outcome,
    WorkContext,
    WorkerControl,
    claim,
    claim_call,
    current_context,
    outcome_key,
    record,
)
from receiver.worker.retries import after_failure, file_unrunnable, retry_job_id

log = logging.getLogger("receiver.drain")  # the logger's name stays: operators filter on it

HEARTBEAT_TTL = 10
"""Seconds without a heartbeat after which a drainer counts as dead."""
HEARTBEAT_EVERY = 2.0
BUDGET = 20.0
"""Seconds one drain job runs before handing over: keeps RQ's job heartbeat honest."""
LINGER = 1
"""Seconds an idle drainer waits for the next delivery before it ends: under steady
traffic one drainer stays up instead of the web side starting one per burst."""
OUTAGE_PAUSE = 1.0
"""Seconds a drainer waits before trying Redis again."""
POLL = 0.02
"""Seconds between looks at the queue while calls run and slots are free."""
READ_AHEAD = 2
"""Packets are popped while fewer than this many items per slot could start now."""
MAX_WAITING_PER_SLOT = 16
"""At most this many items per slot wait in one drainer: enough to reach a fast
handler's events behind a slow handler's backlog, few enough to share work with
other worker processes."""


def reap(connection: Redis, queue: str) -> int:
    """Give dead drainers' in-flight packets back to the queue, oldest first."""
    script = scripts.script(connection, scripts.REAP)
    return int(
        script(keys=[pending_key(queue), drainers_key(queue)], args=[keys.INFLIGHT, keys.ALIVE])
    )


class _Heartbeat:
    def __init__(
        self, connection: Redis, queue: str, drainer: str, job: Job | None, control: WorkerControl
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.drainer = drainer
        self.job = job
        self.control = control
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-heartbeat", daemon=True)

    def beat(self) -> None:
        expires = time.time() + HEARTBEAT_TTL
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.set(keys.alive_key(self.drainer), 1, ex=HEARTBEAT_TTL)
            pipe.zadd(drainers_key(self.queue), {self.drainer: expires})
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self.beat()
                keepalive = self.control.keepalive
                if keepalive is not None:
                    keepalive(self.job)
            except redis.RedisError as exc:  # a missed beat is survivable; the next may succeed
                log.warning("drainer %s missed a heartbeat: %s", self.drainer, exc)
            except Exception:
                log.warning("drainer %s missed a heartbeat", self.drainer, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.connection.delete(keys.alive_key(self.drainer))


class _Packet:
    """One popped packet: its bytes (to remove it from the in-flight list) and items left."""

    __slots__ = ("raw", "left", "started")

    def __init__(self, raw: bytes, left: int) -> None:
        self.raw = raw
        self.left = left
        self.started = False


class _Work:
    __slots__ = ("outcome", "packet", "seq", "lane", "wake")

    def __init__(
        self,
        outcome: Outcome,
        packet: _Packet,
        seq: int,
        lane: ordering.Lane | None = None,
        wake: str = "",
    ) -> None:
        self.outcome = outcome
        self.packet = packet
        self.seq = seq
        self.lane = lane
        """Set for an ordered item: the lane it is (or was) the head of."""
        self.wake = wake
        """The lane's wake packet, when this drainer runs the item as the lane's holder."""


def drain(queue: str) -> dict[str, int]:
    """RQ job function: run pending deliveries of ``queue`` until none are left."""
    context = current_context()
    connection = context.connection
    assert connection is not None, "drain jobs need Redis"
    if context.runner is None:
        context.runner = Runner(context.settings.worker_concurrency)
    job = get_current_job()
    drainer = job.id if job is not None else uuid.uuid4().hex
    with _Heartbeat(connection, queue, drainer, job, context.control):
        reap(connection, queue)
        return _Drain(connection, queue, drainer, context, context.runner).run()


class _Drain:
    """One drain job's loop: pop packets, start items as slots free up, record outcomes.

    Items wait per handler; a free slot goes to the handler with the fewest calls
    running, so a slow handler's backlog never holds a fast handler's events back.
    A packet leaves the in-flight list once every item in it has an outcome.
    """

    def __init__(
        self, connection: Redis, queue: str, drainer: str, context: WorkContext, runner: Runner
    ) -> None:
        self.connection = connection
        self.queue = queue
        self.drainer = drainer
        self.token = keys.drainer_token(drainer)
        self.context = context
        self.control = context.control
        self.runner = runner
        self.inflight = keys.inflight_key(drainer)
        self.done_keys = [pending_key(queue), drainers_key(queue), self.inflight]
        self.waiting: dict[str, deque[_Work]] = {}
        self.n_waiting = 0
        self.open: dict[int, _Packet] = {}
        self.attempts: dict[Attempt, _Work] = {}
        self.deadlines: list[tuple[float, int, Attempt]] = []
        self.active: set[str] = set()
        """State keys this drainer claimed and has not recorded yet: copies wait their turn."""
        self.states: list[tuple[Outcome, str]] = []
        self.failures: list[_Work] = []
        """Failed items whose next attempt is not scheduled yet (kept across a Redis outage)."""
        self.steps: list[tuple[ordering.Step, _Packet | None]] = []
        """Lanes to move on or put to sleep with the next outcomes written (``ordering``)."""
        self.finished: list[bytes] = []
        self.traced: list[dict[str, Any]] = []
        """Attempts to append to their deliveries' traces with the next outcomes written."""
        self.seq = itertools.count()
        self.counts = {"packets": 0, "events": 0, "failed": 0}
        self.began = time.monotonic()
        self.resync = True

    def run(self) -> dict[str, int]:
        while True:
            try:
                if self._step():
                    return self.counts
            except redis.RedisError as exc:
                # Keep the claim on what is in flight; carry on once Redis is back.
                log.warning("drainer %s waiting for Redis: %s", self.drainer, exc)
                self.resync = True
                if self.control.stop.wait(OUTAGE_PAUSE) and not self.attempts:
                    raise

    def _step(self) -> bool:
        """One turn of the loop; True once this drain job is done."""
        if self.resync:
            # Packets already in flight first: a retried job, or a reply lost to an outage.
            self._take(self._unknown(list(self.connection.lrange(self.inflight, 0, -1))))
            self.resync = False
        self._collect(self._wait())
        self._expire()
        popped = self._flush_done(go_on=not self._winding())
        if popped:
            self._take(popped)  # even when winding down now: they are in flight, ours
        self._flush()
        winding = self._winding()
        if winding:
            self._give_back_untouched()
        elif popped is None and self._want_more():
            self._take(
                scripts.run(
                    self.connection, scripts.POP, [pending_key(self.queue), self.inflight],
                    [POP_PACKETS],
                )
            )
        self._dispatch()
        busy = self.attempts or self.n_waiting or self.states or self.failures or self.steps
        if busy or self.finished or self.resync:  # resync: what is in flight may be ours
            return False
        if winding:
            if not self._finish():
                _hand_over(self.connection, self.queue, self.drainer, self.context)
            if self.runner.exhausted:
                self.control.request_restart()
            return True
        # Idle: block briefly for the next delivery; it lands in flight.
        moved = self.connection.blmove(
            pending_key(self.queue), self.inflight, LINGER, "LEFT", "RIGHT"
        )
        if moved:
            self._take([moved])
            return False
        return self._finish()

    def _finish(self) -> bool:
        """Give up the slot if nothing waits (True). Packets left in flight although this
        drainer removed every one it finished go back to the queue first (``FINISH``): a
        failover's promoted replica had not seen their removal, and an item whose retry
        or filing it had not seen either must run again rather than be lost."""
        done = int(scripts.run(self.connection, scripts.FINISH, self.done_keys, [self.drainer]))
        if done < 0:
            log.warning(
                "drainer %s found %d packet(s) still in flight at its end; back to the queue",
                self.drainer,
                -done,
            )
        return done == 1

    def _winding(self) -> bool:
        """Stopping, restarting, or out of budget: start nothing new, hand the rest back."""
        return (
            self.control.stop.is_set()
            or self.runner.exhausted
            or time.monotonic() - self.began > BUDGET
        )

    def _wait(self) -> float:
        """How long to wait for a call to end before looking at the queue again."""
        if not self.attempts:
            return 0.0
        if self.runner.free > 0 and not self.n_waiting:
            return POLL
        return max(0.0, min(0.5, self.deadlines[0][0] - time.monotonic()))

    def _unknown(self, raws: list[Any]) -> list[bytes]:
        known: dict[bytes, int] = {}
        for packet in self.open.values():
            known[packet.raw] = known.get(packet.raw, 0) + 1
        out = []
        for raw in raws:
            if known.get(raw):
                known[raw] -= 1
            else:
                out.append(raw)
        return out

    def _take(self, raws: list[Any]) -> None:
        wakes: list[tuple[bytes, str]] = []
        for raw in raws:
            data = handoff.loads(raw)
            if ordering.WAKE in data:
                wakes.append((raw, data[ordering.WAKE]))
                continue
            items = data["items"]
            packet = _Packet(raw, len(items))
            self.counts["packets"] += 1
            if not items:
                self.finished.append(raw)
                continue
            self.open[id(packet)] = packet
            for item in items:
                self._queue_item(item, packet)
        if wakes:
            self._take_lanes(wakes)

    def _take_lanes(self, wakes: list[tuple[bytes, str]]) -> None:
        """Wakes: this drainer now runs those lanes, from their heads (``ordering``)."""
        heads = ordering.heads(self.connection, [lane for _, lane in wakes])
        for (raw, _), head in zip(wakes, heads, strict=True):
            packet = _Packet(raw, 1)
            self.counts["packets"] += 1
            if head is None:
                self.finished.append(raw)  # a stray wake: its lane emptied meanwhile
                continue
            self.open[id(packet)] = packet
            self._queue_item(handoff.loads(head), packet, wake=raw.decode())

    def _queue_item(self, item: dict[str, Any], packet: _Packet, wake: str = "") -> None:
        """One item waits for a slot; one whose handler is not loaded is filed at once."""
        lane = ordering.Lane.of(item)
        try:
            handler = self.context.router.handler(item["handler"])
        except PluginError as exc:
            self._file_unrunnable(item, str(exc))
            if lane is not None and lane.block:
                event, attempts = Event.from_dict(item["event"]), int(item.get("attempts", 0))
                why = ordering.held_info(
                    event, str(item["handler"]), lane, "blocked", attempts, retry_job_id(item)
                )
                self._lane_step(lane, "sleep", packet, wake, held=why)
            elif lane is not None:
                self._lane_step(lane, "advance", packet, wake)
            if not wake:
                self._packet_done(packet)
            return
        outcome = Outcome(item, handler, Event.from_dict(item["event"]), ran=False)
        handler_id = handler.id  # a property that formats the id: once per item
        queue = self.waiting.get(handler_id)
        if queue is None:
            queue = self.waiting[handler_id] = deque()
        queue.append(_Work(outcome, packet, next(self.seq), lane, wake))
        self.n_waiting += 1

    def _lane_step(
        self,
        lane: ordering.Lane,
        mode: str,
        packet: _Packet | None,
        wake: str,
        state_key: str = "",
        held: str = "",
    ) -> None:
        state = keys.DONE if mode == "settle" else ""
        step = ordering.Step(lane, mode, wake, state_key, state, held)
        self.steps.append((step, packet if wake else None))

    def _file_unrunnable(self, item: dict[str, Any], error: str) -> None:
        queue = keys.rq_queue(self.queue, self.connection)
        self.traced.append(file_unrunnable(queue, item, error))
        self.counts["failed"] += 1

    def _cap(self, handler: Handler) -> int:
        limit = self.runner.concurrency
        return min(handler.concurrency, limit) if handler.concurrency else limit

    def _want_more(self) -> bool:
        if self.n_waiting >= MAX_WAITING_PER_SLOT * self.runner.concurrency:
            return False
        # Items that could fill a slot: a handler at its cap (or holding every slot) counts
        # only for what its cap leaves, so its backlog never stops the read-ahead.
        startable = 0
        for handler_id, queue in self.waiting.items():
            if queue:
                room = self._cap(queue[0].outcome.handler) - self.runner.running(handler_id)
                startable += min(len(queue), max(0, room))
        return startable < READ_AHEAD * self.runner.concurrency

    def _dispatch(self) -> None:
        batch = self._pick()
        if not batch:
            return
        try:
            won = claim(self.context, [w.outcome for w in batch], self.token)
        except redis.RedisError:
            self._unpick(batch)
            raise
        self._start(batch, won)

    def _pick(self) -> list[_Work]:
        """Items for the free slots: the handler with the fewest calls running first."""
        free = self.runner.free
        if free <= 0 or not self.n_waiting:
            return []
        running = {h: self.runner.running(h) for h in self.waiting}
        batch: list[_Work] = []
        while free > 0:
            best: tuple[int, int] | None = None
            pick = None
            for handler_id, queue in self.waiting.items():
                if not queue:
                    continue
                head = queue[0]
                if running[handler_id] >= self._cap(head.outcome.handler):
                    continue
                rank = (running[handler_id], head.seq)
                if best is None or rank < best:
                    best, pick = rank, handler_id
            if pick is None:
                break
            work = self.waiting[pick].popleft()
            self.n_waiting -= 1
            key = outcome_key(work.outcome)
            if key in self.active:
                # A copy of an item already running here (a delivery posted twice): run it
                # after that one is recorded, when its state decides.
                self.waiting[pick].append(work)
                self.n_waiting += 1
                if all(outcome_key(w.outcome) in self.active for w in self.waiting[pick]):
                    running[pick] = self.runner.concurrency  # nothing startable there now
                continue
            self.active.add(key)
            batch.append(work)
            running[pick] += 1
            free -= 1
        for handler_id in [h for h, q in self.waiting.items() if not q]:
            del self.waiting[handler_id]
        return batch

    def _unpick(self, batch: list[_Work]) -> None:
        """A batch whose claim did not reach Redis waits again, in front."""
        for work in reversed(batch):
            self.active.discard(outcome_key(work.outcome))
            self.waiting.setdefault(work.outcome.handler.id, deque()).appendleft(work)
            self.n_waiting += 1

    def _start(self, batch: list[_Work], won: list[bool]) -> None:
        """Start the claimed items; those another run holds are skipped as duplicates."""
        settings = self.context.settings
        for work, mine in zip(batch, won, strict=True):
            work.packet.started = True
            if not mine:
                self.active.discard(outcome_key(work.outcome))
                self.traced.append(
                    outcomes.duplicate_skipped(work.outcome.event, work.outcome.handler.id)
                )
                if work.wake and work.lane is not None:
                    # Ran already (the key moves on), or another drainer holds the lane.
                    key = outcome_key(work.outcome)
                    self._lane_step(work.lane, "settle", work.packet, work.wake, key)
                else:
                    self._packet_done(work.packet)
                continue
            handler = work.outcome.handler
            attempt = self.runner.start(
                Attempt(
                    func=handler.func,
                    arg=work.outcome.event,
                    key=handler.id,
                    timeout=float(handler.timeout or settings.job_timeout),
                )
            )
            self.attempts[attempt] = work
            heapq.heappush(self.deadlines, (attempt.deadline, next(self.seq), attempt))

    def _collect(self, timeout: float) -> None:
        done = self.runner.done
        try:
            attempt = done.get(timeout=timeout) if timeout > 0 else done.get_nowait()
        except Empty:
            return
        while True:
            self.runner.finish(attempt)
            work = self.attempts.pop(attempt, None)
            if work is not None:
                self._ended(work, attempt)
            try:
                attempt = done.get_nowait()
            except Empty:
                return

    def _expire(self) -> None:
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, attempt = heapq.heappop(self.deadlines)
            if attempt in self.attempts and self.runner.expire(attempt):
                self._ended(self.attempts.pop(attempt), attempt)  # logged there, as a timeout
        if not self.attempts:
            self.deadlines.clear()

    def _ended(self, work: _Work, attempt: Attempt) -> None:
        outcome = work.outcome
        outcome.ran = True
        outcome.error = error = attempt.error
        self.counts["events"] += 1
        number = int(outcome.item.get("attempts", 0)) + 1
        seconds = max(0.0, time.monotonic() - attempt.started) if attempt.started else 0.0
        self.traced.append(  # the attempt's key is its handler's id
            outcomes.attempt_ended(outcome.event, attempt.key, number, error, seconds)
        )
        if error is None:
            self.states.append((outcome, keys.DONE))
            if work.lane is not None:
                self._lane_step(work.lane, "advance", work.packet, work.wake)
        else:
            self.counts["failed"] += 1
            self.failures.append(work)
        if not work.wake:
            self._packet_done(work.packet)

    def _packet_done(self, packet: _Packet) -> None:
        packet.left -= 1
        if packet.left == 0:
            self.open.pop(id(packet), None)
            self.finished.append(packet.raw)

    def _flush_done(self, go_on: bool) -> list[Any] | None:
        """The success path's ``_flush``, with the next claim and POP in its round trip.

        When every outcome to record is a success and no lane moves, the states and the
        finished packets' removal (``scripts.DONE``: states first, in one script), the
        attempts' trace entries, the claim of the items the free slots take next and,
        unless winding down (``go_on`` false), the next POP go as one ``scripts.Batch``,
        without redis-py's pipeline: one round trip a turn instead of three. Anything
        else (a failure, a lane's step) is left to ``_flush``. Returns the popped
        packets, or None when nothing was popped. Waits out a Redis outage as
        ``record`` does; what it claimed then waits again, and what a POP whose reply
        was lost moved is found by the next resync (the batch is never sent twice as
        it was).
        """
        if self.failures or self.steps or not (self.states or self.finished):
            return None
        done = keys.DONE
        if any(state != done for _, state in self.states):
            return None
        state_keys = [outcome_key(outcome) for outcome, _ in self.states]
        settings = self.context.settings
        picked = self._pick()
        pop = go_on and self._want_more()
        deadline = time.monotonic() + STATE_PATIENCE
        failed = 0
        while True:
            batch = scripts.Batch()
            batch.script(
                scripts.DONE,
                [self.inflight, *state_keys],
                [done, settings.dedupe_window, *self.finished],
            )
            outcomes.trace_commands(batch, self.traced, settings.trace_ttl)
            if picked:
                claim_keys, claim_args, won = claim_call(
                    self.context, [w.outcome for w in picked], self.token
                )
                batch.script(scripts.CLAIM, claim_keys, claim_args)
            if pop:
                batch.script(scripts.POP, [pending_key(self.queue), self.inflight], [POP_PACKETS])
            try:
                replies = batch.execute(self.connection)
                break
            except redis.RedisError as exc:
                if picked:  # claimed or not, they are claimed again by this token later
                    self._unpick(picked)
                    picked = []
                if pop:  # its reply may be what was lost: look at the in-flight list again
                    pop = False
                    self.resync = True
                if time.monotonic() > deadline:
                    raise
                if failed:  # the first failure is tried again at once (a dropped connection)
                    log.warning("drainer %s waiting for Redis: %s", self.drainer, exc)
                    time.sleep(0.5)
                failed += 1
        for key in state_keys:
            self.active.discard(key)
        self.states = []
        self.finished = []
        self.traced = []
        if picked:
            self._start(picked, won(replies[-2 if pop else -1]))
        return list(replies[-1]) if pop else None

    def _flush(self) -> None:
        """Outcomes first, then finished packets leave the in-flight list: one round trip."""
        while self.failures:
            work = self.failures[0]
            state, final = after_failure(work.outcome, self.context)
            self.states.append((work.outcome, state))
            if work.lane is not None:
                self._failed_in_lane(work, state, final)
            self.failures.pop(0)
        if not (self.states or self.finished or self.steps):
            return
        finished = self.finished
        traced = self.traced
        steps = self.steps
        go_on = not self._winding()

        def remove(pipe: Any) -> None:
            for raw in finished:
                pipe.lrem(self.inflight, 1, raw)
            outcomes.trace_commands(pipe, traced, self.context.settings.trace_ttl)
            for step, _ in steps:
                ordering.step_command(
                    self.connection, pipe, step, self.queue, self.inflight, go_on
                )

        replies = record(self.context, self.states, remove)
        for outcome, _ in self.states:
            self.active.discard(outcome_key(outcome))
        self.states = []
        self.finished = []
        self.traced = []
        self.steps = []
        for (_, packet), head in zip(steps, replies[len(replies) - len(steps) :], strict=True):
            if packet is None:
                continue
            if head:
                packet.started = False  # the lane's next head: given back if winding
                self._queue_item(handoff.loads(head), packet, wake=packet.raw.decode())
            else:
                self.open.pop(id(packet), None)  # its wake went with the lane's step

    def _failed_in_lane(self, work: _Work, state: str, final: bool) -> None:
        """A failed head: its key moves on, or waits for its retry or an operator."""
        lane = work.lane
        assert lane is not None
        if state == keys.FAILED:
            self._lane_step(lane, "advance", work.packet, work.wake)
            return
        outcome = work.outcome
        why = "blocked" if final else "retrying"
        attempts = int(outcome.item.get("attempts", 0)) + 1
        held = ordering.held_info(
            outcome.event, outcome.handler.id, lane, why, attempts, retry_job_id(outcome.item)
        )
        self._lane_step(lane, "sleep", work.packet, work.wake, held=held)

    def _give_back_untouched(self) -> None:
        """Hand-over: packets none of whose items started go back to the front of the queue."""
        untouched = [p for p in self.open.values() if not p.started]
        if not untouched:
            return
        with self.connection.pipeline(transaction=True) as pipe:
            for packet in reversed(untouched):
                pipe.lrem(self.inflight, 1, packet.raw)  # type: ignore[arg-type]
                pipe.lpush(pending_key(self.queue), packet.raw)
            pipe.execute()
        for packet in untouched:
            del self.open[id(packet)]
            self.counts["packets"] -= 1
        for handler_id, queue in list(self.waiting.items()):
            kept = deque(w for w in queue if w.packet.started)
            self.n_waiting -= len(queue) - len(kept)
            self.waiting[handler_id] = kept


def _hand_over(connection: Redis, queue: str, drainer: str, context: WorkContext) -> None:
    """Budget spent (or shutting down): a fresh drain job takes this slot if work remains."""
    successor = uuid.uuid4().hex
    with connection.pipeline() as pipe:
        pipe.zadd(drainers_key(queue), {successor: time.time() + SLOT_GRACE})
        pipe.zrem(drainers_key(queue), drainer)
        pipe.execute()
    start_drainer(connection, queue, successor, context.settings.job_timeout)
