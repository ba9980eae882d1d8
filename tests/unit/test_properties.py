"""Property tests: any JSON body, signed, gets events or a clean 4xx, never an exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
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
