"""Property tests: any JSON body, signed, gets events or a clean 4xx, never an exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from receiver import Router
from receiver.core.handling import Core, Headers, Request
from receiver.core.signature import signature_headers
from receiver.errors import PayloadRejected
from receiver.model.envelope import parse
from receiver.settings.loading import load_settings
from receiver.worker.claims import WorkContext
from receiver.worker.inline import InlineBackend

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
changes = st.fixed_dictionaries(
    {"field": st.text(min_size=1, max_size=10)}, optional={"value": json_values}
)
messaging = st.dictionaries(
    st.sampled_from(["sender", "message", "postback", "read", "timestamp", "x"]),
    json_values,
    max_size=4,
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "time": json_values,
        "changes": st.lists(changes, max_size=3) | json_values,
        "messaging": st.lists(messaging, max_size=3) | json_values,
    },
)
envelopes = st.fixed_dictionaries(
    {
        "object": st.text(max_size=10) | json_values,
        "entry": st.lists(entries | json_values, max_size=3) | json_values,
    }
)


def check(body: bytes) -> None:
    try:
        events = parse(body, delivery_id="d", integration="i", max_depth=64)
    except PayloadRejected as exc:
        assert 400 <= exc.status < 500
        return
    for event in events:
        json.dumps(event.to_dict())  # plain data, ready for a worker


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes)
def test_envelope_shaped_json(data: dict[str, Any]) -> None:
    check(json.dumps(data).encode())


@settings(deadline=None, max_examples=300)
@given(json_values)
def test_any_json(data: Any) -> None:
    check(json.dumps(data).encode())


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    check(data)


ROUTER = Router()
SETTINGS = load_settings(
    {"integrations": {"default": {"app_secrets": ["s"], "verify_token": "t"}}}, {}
)
CORE = Core(SETTINGS, ROUTER, InlineBackend(WorkContext(ROUTER, SETTINGS)))
ROUTER.connect("*", lambda e: None)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes | json_values)
def test_core_answers_200_or_4xx(data: Any) -> None:
    body = json.dumps(data).encode()
    result = CORE.handle(Request("POST", body, Headers(signature_headers(body, "s"))))
    assert result.status == 200 or 400 <= result.status < 500
    assert json.loads(result.body)


ascii_heavy = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(max_codepoint=0x80), max_size=8) | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=0x80), max_size=6),
                          children, max_size=4)
    ),
    max_leaves=30,
)


@settings(deadline=None, max_examples=1000)
@given(ascii_heavy, st.text(max_size=6) | st.none())
def test_event_ids_are_those_json_dumps_made(item: Any, entry_id: str | None) -> None:
    """Event ids are dedupe keys stored in Redis: a faster encoder must give the same bytes.

    Through the parser, which tells ``event_id`` whether its body held floats (the
    orjson text is used only when it held none), and directly (any item).
    """
    from hashlib import blake2b

    from receiver.model.envelope import event_id

    canonical = json.dumps(
        ["i", "group", entry_id, "comments", item],
        sort_keys=True, separators=(",", ":"), ensure_ascii=True,
    )
    expected = blake2b(canonical.encode("ascii"), digest_size=16).hexdigest()
    assert event_id("i", "group", entry_id, "comments", item) == expected
    entry = {"changes": [{"field": "comments", "value": item}]}
    if entry_id is not None:
        entry["id"] = entry_id
    for ensure_ascii in (True, False):
        body = json.dumps({"object": "group", "entry": [entry]}, ensure_ascii=ensure_ascii)
        [event] = parse(body.encode(), delivery_id="d", integration="i", max_depth=64)
        assert event.id == expected


@settings(deadline=None, max_examples=300)
@given(ascii_heavy | json_values)
def test_depth_read_from_bytes_is_the_tree_s(data: Any) -> None:
    """The byte-level depth check agrees with a walk of the decoded tree, any strings."""
    from receiver.model.envelope import _depth_exceeds

    def deeper(node: Any, limit: int, depth: int = 1) -> bool:
        if not isinstance(node, dict | list):
            return False
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        return any(deeper(child, limit, depth + 1) for child in children)

    for ensure_ascii in (True, False):
        body = json.dumps(data, ensure_ascii=ensure_ascii).encode()
        for limit in range(1, 5):
            assert _depth_exceeds(body, limit) == deeper(data, limit)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(deadline=None, max_examples=1000)
@given(any_json)
def test_packets_read_back_as_json_dumps_s_text_would(value: Any) -> None:
    """A packet's text (orjson where it means the same) reads back as json.dumps's would:
    infinities, NaN, integers past 64 bits and lone surrogates included."""
    import math

    from receiver.queue.handoff import dumps

    def same(a: Any, b: Any) -> bool:  # NaN is not equal to itself
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
            return math.isnan(b)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return type(a) is type(b) and a == b

    data = {"delivery_id": "d", "at": 1.5, "items": [{"event": {"value": value}}]}
    assert same(json.loads(dumps(data)), json.loads(json.dumps(data, separators=(",", ":"))))
    assert same(json.loads(dumps([1e999, 2**70, "\ud800"])), [math.inf, 2**70, "\ud800"])


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=12), st.integers(min_value=0, max_value=2000), st.booleans())
@example("\x7f", 0, False)  # ASCII that json escapes and orjson does not: found by this test
def test_the_acknowledgement_s_bytes_are_json_dumps_s(handler: str, events: int, ok: bool) -> None:
    from receiver.core.handling import _json

    body = {"delivery_id": "ab12", "events": events, "queued": 0, "handlers": [[handler, "e", ok]]}
    expected = json.dumps(body, separators=(",", ":")).encode()
    assert _json(200, body, same_in_orjson=True).body == expected


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_drainer_ids_are_uuid4_s(random: int) -> None:
    """A drainer id is what ``uuid.UUID(version=4)`` makes of the same 128 random bits."""
    import uuid
    from unittest import mock

    from receiver.queue.handoff import uuid4_hex

    with mock.patch("receiver.queue.handoff._random_bits", return_value=random):
        assert uuid4_hex() == uuid.UUID(int=random, version=4).hex

