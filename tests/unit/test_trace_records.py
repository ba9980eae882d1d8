"""Trace records stored compact read back as the records ``delivery_record`` (here) describes.

A record is stored as one JSON array (``trace.compact_record``); ``trace.expand``, which
``load`` and ``recent`` use, gives back the dict that was stored before (a JSON object),
and a record stored that older way reads back unchanged. The writer's stats find a
delivery's day from its epoch seconds as ``datetime.fromtimestamp`` does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from receiver import Event
from receiver.observe import trace
from receiver.routing.contracts import HandlerResult, Request, Result

text = st.text(max_size=12)  # lone surrogates included: orjson refuses those, json writes them
hexes = st.text("0123456789abcdef", min_size=1, max_size=32)
times = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False)
deliveries = st.builds(
    lambda delivery_id, integration, when, status, error, reason, replayed, took, events, runs,
    queued, ordered, stored, secret: (
        Request(method="POST", integration="fallback", replayed=replayed),
        Result(
            status=status, body=b"", delivery_id=delivery_id, integration=integration,
            received_at=when, error=error, reason=reason, seconds=took, queued=queued,
            events=[Event(t, f, {}, i, delivery_id, "x") for t, f, i in events],
            results=[HandlerResult(h, e, ok, err, s) for h, e, ok, err, s in runs],
            ordered=ordered, stored=stored, secret_index=secret, verified="ok",
        ),
    ),
    hexes, st.sampled_from([None, "default", "é"]), times, st.sampled_from([200, 500, 503]),
    st.none() | text, st.none() | text, st.booleans(), st.floats(0, 100),
    st.lists(st.tuples(text, text, hexes), max_size=3),
    st.lists(
        st.tuples(text, hexes, st.booleans(), st.sampled_from([None, "timeout"]) | text,
                  st.floats(0, 100)),
        max_size=3,
    ),
    st.integers(0, 5), st.lists(st.lists(text, max_size=3), max_size=2),
    st.sampled_from([None, "redis", "spool"]), st.none() | st.integers(0, 3),
)  # fmt: skip


def delivery_record(
    request: Request, result: Result, received: datetime | None = None
) -> dict[str, Any]:
    """A delivery's record as it was stored before compact records (a JSON object), the
    form readers still get: the oracle ``expand`` is held to."""
    record: dict[str, Any] = {
        "delivery_id": result.delivery_id,
        "integration": result.integration or request.integration,
        "received_at": (received or datetime.fromtimestamp(result.received_at, UTC)).isoformat(),
        "status": result.status,
        "error": result.error,
        "reason": result.reason,
        "replayed": request.replayed,
        "duration_ms": trace._ms(result.seconds),
        "events": [[f"{e.topic}.{e.field}", e.id] for e in result.events],
        "inline": [
            {
                "handler": r.handler,
                "event_id": r.event_id,
                "outcome": trace._outcome(r.ok, r.error),
                "error": r.error,
                "duration_ms": trace._ms(r.seconds),
            }
            for r in result.results
        ],
        "queued": result.queued,
    }
    if result.ordered:
        record["ordered"] = result.ordered
    record["stored"] = result.stored
    record["secret_index"] = result.secret_index
    return record




def as_stored_before(request: Request, result: Result) -> Any:
    """What a reader got from a record written as a JSON object (before compact records)."""
    return json.loads(trace.record_json(delivery_record(request, result)))


@given(deliveries)
@example(
    (
        Request(method="POST"),
        Result(
            status=200,
            body=b"",
            delivery_id="d1",
            integration="default",
            received_at=1_800_000_000.5,
            results=[HandlerResult("h", "e", False, "\ud800")],
            verified="ok",
        ),
    )  # fmt: skip
)
def test_a_compact_record_reads_back_as_the_record(delivery: tuple[Request, Result]) -> None:
    request, result = delivery
    stored = trace.compact_record(request, result)
    assert b"\n" not in stored  # the script frames records by lines
    assert trace.expand(json.loads(stored)) == as_stored_before(request, result)


@given(deliveries)
def test_a_record_stored_the_older_way_reads_back_unchanged(
    delivery: tuple[Request, Result],
) -> None:
    old = as_stored_before(*delivery)
    assert trace.expand(old) == old


def test_the_script_finds_the_ids_where_the_record_opens() -> None:
    event = Event("group", "comments", {}, "e1", "d1", "default")
    other = Event("group", "posts", {}, "e2", "d1", "default")
    result = Result(status=200, body=b"", delivery_id="d1", integration="default",
                    events=[event, other], verified="ok")  # fmt: skip
    assert trace.compact_record(Request(method="POST"), result).startswith(b'[1,"d1",["e1","e2"],')


class Pipe:
    """Records what ``trace._write`` asks of a pipeline."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


@given(st.lists(st.tuples(st.integers(0, 40_000), st.sampled_from([0.0, -1e-6, -4e-7, -6e-7, 0.3])
                          | st.floats(-1, 86_401)), min_size=1, max_size=8))  # fmt: skip
def test_stats_count_each_delivery_on_its_day(moments: list[tuple[int, float]]) -> None:
    """Near midnight too: a time whose microseconds round up is counted on the next day."""
    batch: list[trace.Entry] = []
    expected: dict[str, int] = {}
    for day, offset in moments:
        when = max(0.0, day * 86400 + offset)
        batch.append((False, "default", when, 200, False, None, None, "group", None, "d", None,
                      None))  # fmt: skip
        key = trace.day_key("default", datetime.fromtimestamp(when, UTC).date())
        expected[key] = expected.get(key, 0) + 1
    pipe = Pipe()
    trace._write(pipe, batch, 60)
    counted = {args[0]: args[2] for name, args, _ in pipe.calls if name == "hincrby"}
    assert counted == expected
    [(_, (_,), last)] = [c for c in pipe.calls if c[0] == "hset"]
    newest = datetime.fromtimestamp(batch[-1][2], UTC).isoformat()
    assert last["mapping"] == {"at": newest, "status": 200, "delivery_id": "d"}
