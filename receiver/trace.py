"""What happened to a delivery, and how much traffic an integration had: kept in Redis.

A *trace* per delivery (for ``trace_ttl``, 24 h): when it came, for which
integration, the answer, its events, each inline handler's outcome, and
each background attempt as workers record it. *Stats* per integration: the
last delivery and handshake, and per-day counts by topic for ``STATS_DAYS``.

The web side never waits for any of it: records are queued in memory and
written by a background thread in one pipeline every 200 ms (best effort:
a process killed in between loses at most that much trace, never a
delivery). Workers append their attempts directly, after recording the
outcome that matters.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis

from . import defaults
from .contracts import REPLICATION_TIMEOUT, Request, Result
from .events import Event

log = logging.getLogger("receiver.trace")

PREFIX = "receiver:trace:"
STATS_PREFIX = "receiver:stats:"
FLUSH_EVERY = 0.2
FLUSH_CHUNK = 500
"""Requests written per pipeline: bounds the CPU one write spends between I/O waits."""
MAX_PENDING = 10_000
"""Records held while Redis is away; older ones are dropped first."""
RECENT = 1000
"""Most recent traced deliveries listed (``recent``), across integrations."""
RECENT_KEY = f"{PREFIX}recent"


def delivery_key(delivery_id: str) -> str:
    return f"{PREFIX}d:{delivery_id}"


def attempts_key(delivery_id: str) -> str:
    return f"{PREFIX}d:{delivery_id}:attempts"


def event_key(event_id: str) -> str:
    return f"{PREFIX}e:{event_id}"


INDEX_EVENTS = """
-- KEYS: one list per event of a delivery; ARGV[1]: the delivery id, ARGV[2]: ttl seconds
for _, key in ipairs(KEYS) do
  redis.call('RPUSH', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
end
return #KEYS
"""
"""One call per delivery, not two commands per event: a 1,000-change delivery's index
costs the writing process one command to pack instead of 2,000."""
INDEX_SCRIPT_FROM = 8
"""Events in a delivery from which the script is cheaper than RPUSH+EXPIRE pairs (measured
with ``bench/observe_bench.py --changes N``: for one event, the script costs more)."""


def day_key(integration: str, day: date) -> str:
    return f"{STATS_PREFIX}{integration}:{day.isoformat()}"


def last_key(integration: str) -> str:
    return f"{STATS_PREFIX}{integration}:last"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def live_connection(backend: object) -> redis.Redis | None:
    """The Redis a core's backend uses, if any; never starts the embedded default for it."""
    if not getattr(backend, "started", True):
        return None
    found = getattr(backend, "connection", None)
    return found if isinstance(found, redis.Redis) else None


def delivery_record(request: Request, result: Result) -> dict[str, Any]:
    return {
        "delivery_id": result.delivery_id,
        "integration": result.integration or request.integration,
        "received_at": datetime.fromtimestamp(result.received_at, UTC).isoformat(),
        "status": result.status,
        "error": result.error,
        "reason": result.reason,
        "replayed": request.replayed,
        "duration_ms": _ms(result.seconds),
        "events": [[e.name, e.id] for e in result.events],
        "inline": [
            {
                "handler": r.handler,
                "event_id": r.event_id,
                "outcome": "ok" if r.ok else ("timeout" if r.error == "timeout" else "failed"),
                "error": r.error,
                "duration_ms": _ms(r.seconds),
            }
            for r in result.results
        ],
        "queued": result.queued,
        "stored": result.stored,
        "secret_index": result.secret_index,
    }


class TraceWriter:
    """The ``delivery_finished`` receiver of a web process: queue now, write in the background."""

    def __init__(self, settings_ttl: int, connection: Callable[[], redis.Redis | None]) -> None:
        self.ttl = settings_ttl
        self.connection = connection
        self._pending: deque[tuple[Request, Result]] = deque(maxlen=MAX_PENDING)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: a caller's flush waits for ours

    @classmethod
    def for_backend(cls, ttl: int, backend: object) -> TraceWriter:
        """Writes to the backend's Redis once it has one (the embedded default starts late)."""
        return cls(ttl, lambda: live_connection(backend))

    def __call__(self, sender: Any, request: Request, result: Result, **_: Any) -> None:
        if result.integration is None:
            return  # unknown integration: nobody's stats, nobody's trace
        self._pending.append((request, result))
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="receiver-trace", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let tracing take anything down
                log.exception("trace writer failed; carrying on")

    def flush(self) -> int:
        """Write what is queued; return how many requests were written.

        Serialised with the background thread's flush, so when it returns, everything queued
        before the call is in Redis (or kept for a retry), not half-way in the other thread.
        """
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        if not self._pending:
            return 0
        try:
            connection = self.connection()
        except (redis.RedisError, OSError) as exc:
            log.debug("trace not written yet: %s", exc)
            return 0
        if connection is None:
            self._pending.clear()
            return 0
        written = 0
        while self._pending:
            count = min(len(self._pending), FLUSH_CHUNK)
            batch = [self._pending.popleft() for _ in range(count)]
            pipe = connection.pipeline(transaction=False)
            _write(pipe, batch, self.ttl)
            try:
                pipe.execute()  # under gevent, other requests run while Redis answers
            except redis.RedisError as exc:
                log.debug("trace not written (%s); kept for the next try", exc)
                self._pending.extendleft(reversed(batch))
                return written
            written += count
        return written


def _write(pipe: Any, batch: list[tuple[Request, Result]], ttl: int) -> None:
    """A batch's traces and stats: a few commands per delivery, the rest summed."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    lasts: dict[str, dict[str, Any]] = defaultdict(dict)
    recent: list[str] = []
    for request, result in batch:
        integration = result.integration or "default"
        when = datetime.fromtimestamp(result.received_at, UTC)
        last = lasts[integration]
        if request.method != "POST":
            last.update(handshake_at=when.isoformat(), handshake_status=result.status)
            continue
        day = day_key(integration, when.date())
        if 200 <= result.status < 300 and result.events:
            counts[(integration, day)][result.events[0].topic] += 1
        elif result.reason is not None and result.reason != REPLICATION_TIMEOUT:
            counts[(integration, day)]["!signature_failures"] += 1
        else:
            counts[(integration, day)]["!rejected"] += 1
        last.update(at=when.isoformat(), status=result.status)
        if result.secret_index is not None:
            last.update(secret_index=result.secret_index, secret_index_at=when.isoformat())
        if result.delivery_id is None:
            continue
        last["delivery_id"] = result.delivery_id
        record = json.dumps(delivery_record(request, result), separators=(",", ":"))
        pipe.set(delivery_key(result.delivery_id), record, ex=ttl)
        recent.append(result.delivery_id)
        if len(result.events) >= INDEX_SCRIPT_FROM:
            index = [event_key(e.id) for e in result.events]
            pipe.eval(INDEX_EVENTS, len(index), *index, result.delivery_id, ttl)
        else:
            for event in result.events:
                pipe.rpush(event_key(event.id), result.delivery_id)
                pipe.expire(event_key(event.id), ttl)
    for (_, day), fields in counts.items():
        for field, count in fields.items():
            pipe.hincrby(day, field, count)
        pipe.expire(day, (defaults.STATS_DAYS + 1) * 86400)
    for integration, mapping in lasts.items():
        pipe.hset(last_key(integration), mapping=mapping)
    if recent:
        pipe.lpush(RECENT_KEY, *recent)  # the newest ends up first
        pipe.ltrim(RECENT_KEY, 0, RECENT - 1)


def record_attempt(
    connection: redis.Redis,
    event: Event,
    handler: str,
    *,
    attempt: int,
    outcome: str,
    error: str | None,
    seconds: float,
    ttl: int,
) -> None:
    """A worker's background attempt, appended to its delivery's trace (best effort)."""
    entry = {
        "handler": handler,
        "event_id": event.id,
        "attempt": attempt,
        "outcome": outcome,
        "error": error,
        "at": datetime.now(UTC).isoformat(),
        "duration_ms": _ms(seconds),
    }
    key = attempts_key(event.delivery_id)
    try:
        pipe = connection.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(entry))
        pipe.expire(key, ttl)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("attempt not traced: %s", exc)


# --- reading -----------------------------------------------------------------------------------


def load(connection: redis.Redis, delivery_id: str) -> dict[str, Any] | None:
    """A delivery's trace with its background attempts, or ``None`` once expired (or unknown)."""
    raw = connection.get(delivery_key(delivery_id))
    attempts = [json.loads(a) for a in connection.lrange(attempts_key(delivery_id), 0, -1)]
    if raw is None and not attempts:
        return None
    trace: dict[str, Any] = json.loads(raw) if raw is not None else {"delivery_id": delivery_id}
    trace["background"] = attempts
    return trace


def recent(connection: redis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The newest traced deliveries first (those whose trace has not expired)."""
    ids = [_text(d) for d in connection.lrange(RECENT_KEY, 0, max(0, limit - 1))]
    if not ids:
        return []
    raws = connection.mget([delivery_key(d) for d in ids])
    return [json.loads(raw) for raw in raws if raw is not None]


def deliveries_of(connection: redis.Redis, event_id: str) -> list[str]:
    """The deliveries that carried an event, newest first."""
    return [_text(d) for d in reversed(connection.lrange(event_key(event_id), 0, -1))]


def stats(
    connection: redis.Redis, integrations: Iterable[str], days: int = defaults.STATS_DAYS
) -> dict[str, dict[str, Any]]:
    """Per integration: the ``last`` hash and ``{day: {topic: count}}`` for the last ``days``."""
    today = datetime.now(UTC).date()
    wanted = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    out: dict[str, dict[str, Any]] = {}
    for name in integrations:
        pipe = connection.pipeline(transaction=False)
        pipe.hgetall(last_key(name))
        for day in wanted:
            pipe.hgetall(day_key(name, day))
        last, *counts = pipe.execute()
        out[name] = {
            "last": {_text(k): _text(v) for k, v in last.items()},
            "days": {
                day.isoformat(): {_text(k): int(v) for k, v in c.items()}
                for day, c in zip(wanted, counts, strict=True)
            },
        }
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
