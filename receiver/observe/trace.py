"""What happened to a delivery, and how much traffic an integration had: kept in Redis.

A *trace* per verified delivery (for ``trace_ttl``, 24 h): when it came, for
which integration, the answer, its events, each inline handler's outcome, and
each background attempt as workers record it. *Stats* per integration: the
last delivery and handshake, and per-day counts by topic for ``STATS_DAYS``.

A *refused* delivery (its signature never verified: anyone on the internet can
send one) gets no trace key of its own: a trace per request turned 1,000
forged POSTs a second into ≈ 25 GiB of Redis a day. It is counted per
integration, minute and reason (one hash per integration and day), and only
the newest ``REFUSED_SAMPLE`` are kept as records, in a capped list per
integration; the last one is remembered apart from the last verified delivery,
so forged traffic can neither grow Redis nor hide genuine deliveries.

The web side never waits for Redis for any of it: records are made as plain
values when a delivery is answered (``entry``), queued in memory and written
by a background thread in one pipeline every 200 ms (best effort:
a process killed in between loses at most that much trace, never a
delivery). Workers append their attempts directly, after recording the
outcome that matters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
import redis
from redis.exceptions import NoScriptError

from receiver.model.events import time_text
from receiver.routing.contracts import Backend, Request, Result
from receiver.settings import defaults

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
REFUSED_SAMPLE = 100
"""Refused deliveries kept as records per integration (newest first); the rest are counts."""


def delivery_key(delivery_id: str) -> str:
    return f"{PREFIX}d:{delivery_id}"


def attempts_key(delivery_id: str) -> str:
    return f"{PREFIX}d:{delivery_id}:attempts"


def event_key(event_id: str) -> str:
    return f"{PREFIX}e:{event_id}"


WRITE_DELIVERIES = """
-- ARGV[1] ttl seconds; ARGV[2] the delivery key prefix; ARGV[3] the event key prefix;
-- ARGV[4] the recent list's key; ARGV[5] how many it keeps; ARGV[6] one line per delivery:
-- its record (compact_record: a JSON array, which holds no raw newline), opening with
-- 1, the delivery id and the list of its event ids (hex strings: no quote, no bracket).
-- Each record is SET with the ttl, each event's list gets the delivery id appended, and
-- the recent list the id in front. Returns how many were written.
local ttl = ARGV[1]
local written = 0
for record in string.gmatch(ARGV[6], '([^\\n]+)\\n') do
  local id, events = string.match(record, '^%[1,"([^"]*)",%[([^%]]*)%]')
  if id ~= nil then
    redis.call('SET', ARGV[2] .. id, record, 'EX', ttl)
    redis.call('LPUSH', ARGV[4], id)
    written = written + 1
    for event in string.gmatch(events, '"([^"]*)"') do
      local key = ARGV[3] .. event
      redis.call('RPUSH', key, id)
      redis.call('EXPIRE', key, ttl)
    end
  end
end
if written > 0 then redis.call('LTRIM', ARGV[4], 0, tonumber(ARGV[5]) - 1) end
return written
"""
"""One command per flush for every verified delivery's record and event index, with one
argument, instead of a SET and two commands per event (or a script call per delivery):
redis-py encodes and packs every argument in Python. Trace and stats writes went from
48.3 to 13.5 µs of the web process's CPU per one-event delivery (``bench/observe_bench.py
--multiprocess``, medians of three alternations, orjson records included); Redis does the
per-event work instead (≈ 21 µs of its CPU per delivery, 12–14 before). Delivery and event
ids are hex, and the record opens with them: the script finds them there, so the web
process writes no separate line of ids (≈ 1,500 instructions a delivery)."""


WRITE_DELIVERIES_SHA = hashlib.sha1(WRITE_DELIVERIES.encode()).hexdigest()


APPEND_ATTEMPTS = """
-- ARGV[1] ttl seconds; ARGV[2], ARGV[3] what goes before and after a delivery id to make
-- its attempts key (attempts_key); ARGV[4] two lines per attempt: its delivery's id, then
-- its entry (JSON, which holds no raw newline). Each entry is appended to its delivery's
-- attempts list, and the list given the ttl. Returns how many were appended.
local appended = 0
for id, entry in string.gmatch(ARGV[4], '([^\\n]*)\\n([^\\n]*)\\n') do
  local key = ARGV[2] .. id .. ARGV[3]
  redis.call('RPUSH', key, entry)
  redis.call('EXPIRE', key, ARGV[1])
  appended = appended + 1
end
return appended
"""
"""A worker's attempts of one flush, in one command of one argument, not an RPUSH and an
EXPIRE per attempt. With the attempt log line through ``logsafe.emit`` and the metrics'
direct writes, one worker went from 7,945 to 10,375 no-op events per second of its CPU
(``bench/http_bench.py``'s drain table, one event per delivery, 2026-12-07)."""


def attempt_commands(pipe: Any, entries: list[dict[str, Any]], ttl: int) -> None:
    """Append attempt entries to their deliveries' traces, in the caller's pipeline."""
    lines: list[bytes] = []
    for entry in entries:
        delivery_id = str(entry["delivery_id"])
        if not delivery_id or "\n" in delivery_id:  # not one the core made: plain commands
            key = attempts_key(delivery_id)
            pipe.rpush(key, record_json(entry))
            pipe.expire(key, ttl)
            continue
        lines += (delivery_id.encode(), b"\n", record_json(entry), b"\n")
    if lines:
        before, _, after = attempts_key("\n").partition("\n")
        pipe.eval(APPEND_ATTEMPTS, 0, ttl, before, after, b"".join(lines))


def day_key(integration: str, day: date) -> str:
    return f"{STATS_PREFIX}{integration}:{day.isoformat()}"


def last_key(integration: str) -> str:
    return f"{STATS_PREFIX}{integration}:last"


def refused_key(integration: str) -> str:
    """The capped list of an integration's newest refused deliveries."""
    return f"{PREFIX}refused:{integration}"


def refused_counts_key(integration: str, day: date) -> str:
    """Refusals of one day, counted in fields ``"HH:MM error[/reason]"``."""
    return f"{STATS_PREFIX}{integration}:refused:{day.isoformat()}"


def refused(request: Request, result: Result) -> bool:
    """A POST whose signature never verified: what an attacker can send without the secret."""
    return request.method == "POST" and result.verified not in ("ok", "unchecked")


def _ms(seconds: float) -> float:
    """Milliseconds to two decimals, half up: ``round(x, 2)`` formats and parses text
    (≈ 2,500 instructions, a tenth of a record's cost)."""
    return int(seconds * 100_000 + 0.5) / 100


def live_connection(backend: Backend) -> redis.Redis | None:
    """The Redis a core's backend uses, if any; never starts the embedded default for it."""
    return backend.connection if backend.started else None


def _outcome(ok: bool, error: str | None) -> str:
    return "ok" if ok else ("timeout" if error == "timeout" else "failed")


COMPACT = 1
"""The first item of a record stored as a JSON array (``compact_record``); one stored as
an object (before it, kept 24 h) is read as it was written."""


def compact_record(request: Request, result: Result) -> bytes:
    """A verified delivery's record as stored: one JSON array of its plain values.

    ``[1, delivery_id, [event_id, ...], integration, received_at (epoch seconds), status,
    error, reason, replayed, seconds, [[topic, field], ...], [[handler, event_id, ok,
    error, seconds], ...], queued, ordered, stored, secret_index]``. ``load`` (``expand``)
    makes the record readers always got: the datetime text, milliseconds,
    event names and outcomes are made when a trace is read, not for every delivery. A
    dict of 13 keys and a dict per handler cost ≈ 4,500 instructions to build and ≈ 7,000
    to serialise (orjson asks the datetime's tzinfo in Python), a tuple of the same values
    ≈ 3,000 in all. The ids come first, for ``WRITE_DELIVERIES`` to find.
    """
    events = result.events
    results = result.results
    if len(events) == 1:
        event = events[0]
        ids: Any = (event.id,)
        names: Any = ((event.topic, event.field),)
    else:
        ids = [e.id for e in events]
        names = [(e.topic, e.field) for e in events]
    if len(results) == 1:
        run = results[0]
        runs: Any = ((run.handler, run.event_id, run.ok, run.error, run.seconds),)
    else:
        runs = [(r.handler, r.event_id, r.ok, r.error, r.seconds) for r in results]
    record = (
        COMPACT, result.delivery_id, ids, result.integration or request.integration,
        result.received_at, result.status, result.error, result.reason, request.replayed,
        result.seconds, names, runs, result.queued, result.ordered, result.stored,
        result.secret_index,
    )  # fmt: skip
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:  # a lone surrogate in an error: json escapes it
        return json.dumps(record, separators=(",", ":")).encode()


def expand(stored: Any) -> dict[str, Any]:
    """A stored record as readers get it: a compact one expanded to the object records
    were stored as before them (an older one is that object, as it is)."""
    if not isinstance(stored, list) or not stored or stored[0] != COMPACT:
        return stored  # type: ignore[no-any-return]
    (_, delivery_id, ids, integration, received_at, status, error, reason, replayed, seconds,
     names, runs, queued, ordered, stored_in, secret_index) = stored  # fmt: skip
    record: dict[str, Any] = {
        "delivery_id": delivery_id,
        "integration": integration,
        "received_at": datetime.fromtimestamp(received_at, UTC).isoformat(),
        "status": status,
        "error": error,
        "reason": reason,
        "replayed": replayed,
        "duration_ms": _ms(seconds),
        "events": [[f"{topic}.{field}", i] for (topic, field), i in zip(names, ids, strict=True)],
        "inline": [
            {
                "handler": handler,
                "event_id": event_id,
                "outcome": _outcome(ok, run_error),
                "error": run_error,
                "duration_ms": _ms(run_seconds),
            }
            for handler, event_id, ok, run_error, run_seconds in runs
        ],
        "queued": queued,
    }
    if ordered:
        record["ordered"] = ordered
    record["stored"] = stored_in
    record["secret_index"] = secret_index
    return record


Entry = tuple[
    bool, str, float, int, bool, str | None, str | None, str | None, int | None,
    str | None, bytes | None, tuple[str | None, bool, float] | None,
]  # fmt: skip
"""What the writer keeps of a delivery until it is written (``entry``)."""


def entry(request: Request, result: Result) -> Entry:
    """What the writer keeps of an answered request: plain values, the trace record made.

    Keeping the request and result themselves until the flush (up to ``FLUSH_EVERY``)
    kept every delivery's objects (its body, events, their values) alive past the
    collector's young generations: the full collections that followed cost ≈ 25,000
    instructions a delivery, more than the trace itself. A tuple of strings, numbers
    and bytes is untracked by the collector at its first pass, and the request's
    objects are freed with the answer. A verified delivery's record is made here,
    once; a refused one keeps only what its record needs (it never reached parsing:
    no events, handlers or queue), made only if it is among the sample kept.

    ``(handshake, integration, received (epoch seconds), status, refused, error, reason,
    topic counted, secret_index, delivery_id, stored record, refused record's fields)``.
    The time stays a number: the writer makes text of the newest only.
    """
    integration = result.integration or "default"
    when = result.received_at
    if request.method != "POST":
        return (True, integration, when, result.status, False, None, None, None, None, None,
                None, None)  # fmt: skip
    delivery_id = result.delivery_id
    if refused(request, result):
        kept = (delivery_id, request.replayed, result.seconds)
        return (False, integration, when, result.status, True, result.error, result.reason,
                None, None, delivery_id, None, kept)  # fmt: skip
    events = result.events
    topic = events[0].topic if events and 200 <= result.status < 300 else None
    record = compact_record(request, result) if delivery_id is not None else None
    return (False, integration, when, result.status, False, result.error, result.reason, topic,
            result.secret_index, delivery_id, record, None)  # fmt: skip


class TraceWriter:
    """The ``delivery_finished`` receiver of a web process: queue now, write in the background."""

    def __init__(self, settings_ttl: int, connection: Callable[[], redis.Redis | None]) -> None:
        self.ttl = settings_ttl
        self.connection = connection
        self._pending: deque[Entry] = deque(maxlen=MAX_PENDING)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: a caller's flush waits for ours

    @classmethod
    def for_backend(cls, ttl: int, backend: Backend) -> TraceWriter:
        """Writes to the backend's Redis once it has one (the embedded default starts late)."""
        return cls(ttl, lambda: live_connection(backend))

    def __call__(self, sender: Any, request: Request, result: Result, **_: Any) -> None:
        if result.integration is None:
            return  # unknown integration: nobody's stats, nobody's trace
        try:
            self._pending.append(entry(request, result))
        except Exception:  # never let tracing take a request down
            log.exception("trace of delivery %s not kept", result.delivery_id)
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
        # What is queued now, not what arrives meanwhile: with threads (gthread), requests
        # kept adding records during each round trip, and the loop went on writing them a
        # few at a time, a pipeline each (≈ 7 pipelines a flush, ≈ 1 Redis command a
        # request); they wait for the next turn instead, and leave in one pipeline.
        left = len(self._pending)
        while left > 0 and self._pending:
            count = min(left, len(self._pending), FLUSH_CHUNK)
            left -= count
            batch = [self._pending.popleft() for _ in range(count)]
            pipe = connection.pipeline(transaction=False)
            traces = _write(pipe, batch, self.ttl)
            try:
                # under gevent, other requests run while Redis answers
                results = pipe.execute(raise_on_error=False)
            except redis.RedisError as exc:
                log.debug("trace not written (%s); kept for the next try", exc)
                self._pending.extendleft(reversed(batch))
                return written
            written += count
            if traces is not None and isinstance(results[0], NoScriptError):
                try:  # a restarted or flushed Redis: EVAL once, and it has the script again
                    connection.eval(WRITE_DELIVERIES, *traces)
                except redis.RedisError as exc:  # the stats are in: the traces are dropped
                    log.debug("traces not written: %s", exc)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed and not isinstance(failed[0], NoScriptError):
                log.debug("trace partly not written: %s", failed[0])
        return written


def record_json(record: dict[str, Any]) -> bytes:
    """A trace record as compact JSON: orjson, ≈ 8× json.dumps on these small dicts.

    json.loads reads back the same values (non-ASCII text comes as UTF-8 rather
    than ``\\u`` escapes); what orjson refuses (a lone surrogate in an error
    message) goes through json.dumps as before.
    """
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return json.dumps(record, separators=(",", ":"), default=time_text).encode()


def _write(pipe: Any, batch: list[Entry], ttl: int) -> tuple[Any, ...] | None:
    """A batch's traces and stats: one script call for every trace, the stats summed.

    Returns the script's arguments (for an EVAL when Redis does not know it yet), if any.
    A verified delivery costs a few steps here: its topic counted under its day (found
    from the epoch seconds, ``_day``), the newest of each integration remembered and made
    text once (``_newest``).
    """
    counts: dict[tuple[str, int, str | None], int] = {}
    others: list[Entry] = []  # handshakes and refusals, in order
    written: list[bytes] = []
    run: tuple[str, int, str | None] = ("", 0, None)  # deliveries alike in a row, counted once
    alike = 0
    start = end = 0.0  # the run's day, as epoch seconds surely in it
    for item in batch:
        (handshake, integration, when, _, is_refused, _, _, topic, _, _, record, _) = item
        if handshake or is_refused:
            others.append(item)
            continue
        if not start <= when < end or topic != run[2] or integration != run[0]:
            counts[run] = counts.get(run, 0) + alike
            day = int(when // 86400)
            if when - day * 86400 >= _LAST_MICROSECOND:
                day = _day(when)
            run, alike = (integration, day, topic), 0
            start, end = day * 86400.0, day * 86400.0 + _LAST_MICROSECOND
        alike += 1
        if record is not None:
            written.append(record)
    counts[run] = counts.get(run, 0) + alike
    traces = None
    if written:  # the script by its SHA: its text was sent with every flush
        written.append(b"")  # each record ends with a newline
        joined = b"\n".join(written)
        traces = (0, ttl, delivery_key(""), event_key(""), RECENT_KEY, RECENT, joined)
        pipe.evalsha(WRITE_DELIVERIES_SHA, *traces)
    integrations = {integration for integration, _, _ in counts if integration}
    lasts: dict[str, dict[str, Any]] = defaultdict(dict)
    for integration, item in _newest(batch, integrations, None).items():
        lasts[integration].update(at=_text_of(item[2]), status=item[3])
    for integration, item in _newest(batch, integrations, 8).items():
        lasts[integration].update(secret_index=item[8], secret_index_at=_text_of(item[2]))
    for integration, item in _newest(batch, integrations, 9).items():
        lasts[integration]["delivery_id"] = item[9]
    days: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (integration, day, field), count in counts.items():
        if count:
            key = day_key(integration, _EPOCH + timedelta(days=day))
            days[key][field if field is not None else "!rejected"] += count
    refusals = _others(others, days, lasts)
    _add_counts(pipe, days, (defaults.STATS_DAYS + 1) * 86400)
    _add_counts(pipe, refusals.pop(""), ttl)  # kept as long as the traces they stand in for
    for integration, mapping in lasts.items():
        pipe.hset(last_key(integration), mapping=mapping)
    for integration, refusal in refusals.items():
        key = refused_key(integration)
        records = [
            record_json(_refused_record(item))
            for item in refusal[-REFUSED_SAMPLE:]  # only what the list keeps is serialised
        ]
        pipe.lpush(key, *records)
        pipe.ltrim(key, 0, REFUSED_SAMPLE - 1)
        pipe.expire(key, ttl)
    return traces


_EPOCH = date(1970, 1, 1)
_LAST_MICROSECOND = 86400 - 0.0000005
"""Seconds into a day from which the time's microseconds may round up to the next day."""


def _newest(batch: list[Entry], integrations: set[str], field: int | None) -> dict[str, Entry]:
    """The newest verified delivery of each integration (with ``field`` set, if given):
    looked for from the end, so a batch of one integration costs a step or two."""
    found: dict[str, Entry] = {}
    for item in reversed(batch):
        if item[0] or item[4] or item[1] in found or (field is not None and item[field] is None):
            continue
        found[item[1]] = item
        if len(found) == len(integrations):
            break
    return found


def _day(when: float) -> int:
    """The day (since the epoch) of ``datetime.fromtimestamp(when, UTC)``, rounding included."""
    return (datetime.fromtimestamp(when, UTC).date() - _EPOCH).days


@lru_cache(maxsize=16)
def _text_of(when: float) -> str:
    """The newest delivery's time as text, made once when it is also the newest keyed one."""
    return datetime.fromtimestamp(when, UTC).isoformat()


def _others(
    items: list[Entry], days: dict[str, dict[str, int]], lasts: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Count handshakes and refusals; returns the refused entries by integration, and
    under ``""`` the per-minute counts of refusals."""
    refusals: dict[str, Any] = defaultdict(list)
    minutes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        handshake, integration, seconds, status, _, error, reason, *_ = item
        when = datetime.fromtimestamp(seconds, UTC)
        last = lasts[integration]
        if handshake:
            last.update(handshake_at=when.isoformat(), handshake_status=status)
            continue
        why = error or "refused"
        day = day_key(integration, when.date())
        days[day]["!signature_failures" if reason is not None else "!rejected"] += 1
        minute = f"{when:%H:%M} {why}" + (f"/{reason}" if reason else "")
        minutes[refused_counts_key(integration, when.date())][minute] += 1
        last.update(
            refused_at=when.isoformat(),
            refused_status=status,
            refused_error=why,
            refused_reason=reason or "",
        )
        refusals[integration].append(item)
    refusals[""] = minutes
    return refusals


def _refused_record(item: Entry) -> dict[str, Any]:
    """A refused delivery's record (the object a verified one expands to), from what its
    entry kept."""
    _, integration, when, status, _, error, reason, _, _, _, _, kept = item
    assert kept is not None
    delivery_id, replayed, seconds = kept
    return {
        "delivery_id": delivery_id,
        "integration": integration,
        "received_at": datetime.fromtimestamp(when, UTC),
        "status": status,
        "error": error,
        "reason": reason,
        "replayed": replayed,
        "duration_ms": _ms(seconds),
        "events": [],
        "inline": [],
        "queued": 0,
        "stored": None,
        "secret_index": None,
    }


def _add_counts(pipe: Any, counts: dict[str, dict[str, int]], ttl: int) -> None:
    for key, fields in counts.items():
        for field, count in fields.items():
            pipe.hincrby(key, field, count)
        pipe.expire(key, ttl)


# --- reading -----------------------------------------------------------------------------------


def load(
    connection: redis.Redis, delivery_id: str, refused_in: Iterable[str] = ()
) -> dict[str, Any] | None:
    """A delivery's trace with its background attempts, or ``None`` once expired (or unknown).

    A refused delivery is looked for in the samples of the integrations ``refused_in``.
    """
    raw = connection.get(delivery_key(delivery_id))
    attempts = [json.loads(a) for a in connection.lrange(attempts_key(delivery_id), 0, -1)]
    if raw is None and not attempts:
        for record in refused_recent(connection, refused_in):
            if record.get("delivery_id") == delivery_id:
                return {**record, "background": []}
        return None
    trace: dict[str, Any] = (
        expand(json.loads(raw)) if raw is not None else {"delivery_id": delivery_id}
    )
    trace["background"] = attempts
    return trace


def recent(connection: redis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The newest traced deliveries first (those whose trace has not expired)."""
    ids = [_text(d) for d in connection.lrange(RECENT_KEY, 0, max(0, limit - 1))]
    if not ids:
        return []
    raws = connection.mget([delivery_key(d) for d in ids])
    return [expand(json.loads(raw)) for raw in raws if raw is not None]


def refused_recent(connection: redis.Redis, integrations: Iterable[str]) -> list[dict[str, Any]]:
    """The kept sample of refused deliveries of these integrations, newest first."""
    pipe = connection.pipeline(transaction=False)
    for name in integrations:
        pipe.lrange(refused_key(name), 0, REFUSED_SAMPLE - 1)
    records = [json.loads(raw) for found in pipe.execute() for raw in found]
    return sorted(records, key=lambda r: str(r.get("received_at")), reverse=True)


def refusals(
    connection: redis.Redis, integration: str, minutes: int = 60, now: datetime | None = None
) -> dict[str, int]:
    """Refusals of the last ``minutes`` (at most a day) by ``error[/reason]``."""
    now = now or datetime.now(UTC)
    since = now - timedelta(minutes=minutes)
    days = sorted({since.date(), now.date()})
    pipe = connection.pipeline(transaction=False)
    for day in days:
        pipe.hgetall(refused_counts_key(integration, day))
    out: dict[str, int] = defaultdict(int)
    for day, counted in zip(days, pipe.execute(), strict=True):
        for field, count in counted.items():
            minute, _, why = _text(field).partition(" ")
            at = datetime.fromisoformat(f"{day.isoformat()}T{minute}").replace(tzinfo=UTC)
            if since < at <= now:
                out[why] += int(count)
    return dict(out)


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
