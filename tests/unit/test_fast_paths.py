"""The core's fast paths give what the slow ones give: HMAC from kept pad states, bodies
read by orjson, the shortcuts in the callback adapter and the core."""

from __future__ import annotations

import hmac
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from receiver.core import signature
from receiver.errors import PayloadRejected
from receiver.model import envelope
from receiver.model.events import Event

# -- HMAC ------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=300)
@given(
    st.text(max_size=200) | st.text(alphabet="ab", min_size=60, max_size=70),
    st.binary(max_size=300),
    st.sampled_from(["sha256", "sha1"]),
)
@example("k" * 64, b"body", "sha256")
@example("k" * 65, b"body", "sha256")
@example("é" * 40, b"", "sha1")
def test_digest_is_hmac_new(secret: str, body: bytes, algorithm: str) -> None:
    expected = hmac.new(secret.encode("utf-8"), body, algorithm).digest()
    assert signature.digest(secret, body, algorithm) == expected
    assert signature.digest(secret, body, algorithm) == expected  # from the kept states


def test_digest_keeps_a_bounded_number_of_secrets() -> None:
    for n in range(signature._PADS_KEPT * 2):
        signature.digest(f"s{n}", b"x")
    assert len(signature._PADS) <= signature._PADS_KEPT


def test_rotation_still_reports_the_secret_that_matched() -> None:
    body = b'{"object":"group","entry":[]}'
    headers = {signature.SHA256_HEADER: signature.sign(body, "old")}

    class Headers(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            return super().get(key, default)

    assert signature.verify(Headers(headers), body, ["new", "old"]) == 1
    with pytest.raises(Exception, match="does not match"):
        signature.verify(Headers(headers), body, ["new"])


# -- Bodies read by orjson -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**19), max_value=10**19)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


def _slow(body: bytes, max_depth: int = 64) -> Any:
    try:
        return envelope._json_decode(body, max_depth)
    except PayloadRejected as exc:
        return ("refused", exc.code, str(exc))


def _fast(body: bytes, max_depth: int = 64) -> Any:
    try:
        return envelope._decode(body, max_depth)
    except PayloadRejected as exc:
        return ("refused", exc.code, str(exc))


def _typed(value: Any) -> Any:
    """``value`` with each scalar's type beside it: ``1 == 1.0 == True`` here is no match."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, repr(value))


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5), st.booleans())
def test_decode_reads_objects_as_json_does(data: dict[str, Any], ascii_only: bool) -> None:
    body = json.dumps(data, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _typed(_fast(body)) == _typed(_slow(body))


@settings(deadline=None, max_examples=400)
@given(st.binary(max_size=120))
@example(b'{"a":1,"b":2,"a":3}')
@example(b'{"n":18446744073709551616}')
@example(b'{"n":[ -9223372036854775809]}')
@example(b'{"n":1E400}')
@example(b'{"s":"\\ud800"}')
@example(b'{"s":"\xed\xa0\x80"}')
@example(b'\xef\xbb\xbf{}')
@example(b'{"a":"\t"}')
@example(b'{"a":1,}')
@example(b'{"a":NaN}')
@example(b'[1]')
@example(b'{"a":[[[[[[[[[[1]]]]]]]]]]}')
def test_decode_refuses_or_reads_bytes_as_json_does(body: bytes) -> None:
    assert _typed(_fast(body, 8)) == _typed(_slow(body, 8))


@pytest.mark.parametrize(
    "body",
    [
        b'{"n":1.5}',
        b'{"n":1e5}',
        b'{"n":-2E-3}',
        b'{"n":1234567890123456789}',
        b'{"n":[0, -1234567890123456789]}',
        b'{"n":{"m":\t 1234567890123456789}}',
    ],
)
def test_floats_and_long_integers_go_to_json(body: bytes) -> None:
    assert envelope._fast_decode(body, 64) is None
    assert envelope._decode(body, 64)[1] == (b"." in body or b"e" in body.lower())


def test_a_delivery_without_floats_is_read_by_orjson() -> None:
    body = (
        b'{"entry":[{"changes":[{"field":"comments","value":{"created_time":'
        b'"2018-01-16T03:03:13+0000","message":"v1.2 e5","id":"12345678901234567890"}}],'
        b'"id":"1","time":1516071794}],"object":"group"}'
    )
    assert envelope._fast_decode(body, 64) is None  # "1.2" in a string: json, as before
    body = body.replace(b"v1.2 e5", b"hello")
    assert envelope._fast_decode(body, 64) == json.loads(body)


# -- Times: the entry's is read only when an item has none of its own --------------------------


@pytest.mark.parametrize("own", [None, "2018-01-16T03:03:13+0000", 0, "junk", 1516071794000])
@pytest.mark.parametrize("entry_time", [None, 1516071794, "bad"])
def test_event_times_are_the_item_s_or_the_entry_s(own: Any, entry_time: Any) -> None:
    value: dict[str, Any] = {"x": 1}
    if own is not None:
        value["created_time"] = own
    entry: dict[str, Any] = {"id": "1", "changes": [{"field": "f", "value": value}] * 2}
    if entry_time is not None:
        entry["time"] = entry_time
    body = json.dumps({"object": "group", "entry": [entry]}).encode()
    events = envelope.parse(body, delivery_id="d", integration="i", max_depth=64)
    expected = envelope.to_utc(own) or envelope.to_utc(entry_time)
    assert [e.time for e in events] == [expected, expected]


# -- The callback adapter's shortcuts ---------------------------------------------------------


@given(st.text(alphabet="abcXYZ-_", min_size=1, max_size=12))
def test_kept_header_keys_are_derived_ones(name: str) -> None:
    from receiver.web.callback import EnvironHeaders

    upper = name.upper().replace("-", "_")
    expected = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{upper}"
    assert EnvironHeaders._key(name) == expected
    assert EnvironHeaders._key(name) == expected  # kept
    assert EnvironHeaders({expected: "v"}).get(name) == "v"


@pytest.mark.parametrize(
    ("path", "secured"),
    [("/admin", True), ("/admin/", True), ("/admin/x", True), ("/adminx", False),
     ("/webhook", False), ("/", False), ("/x/admin", False)],
)  # fmt: skip
def test_security_headers_cover_the_same_paths(path: str, secured: bool) -> None:
    from receiver.admin import HEADERS, SecurityHeaders

    seen: list[list[tuple[str, str]]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-Frame-Options", "SAMEORIGIN")])
        return []

    SecurityHeaders(app)({"PATH_INFO": path}, lambda status, headers: seen.append(headers))
    assert (seen[0][-len(HEADERS) :] == list(HEADERS)) is secured


@settings(deadline=None, max_examples=500)
@given(
    st.text(alphabet="0123456789abcdefABCDEFg \t\n\x0b\u0660é", min_size=38, max_size=66),
    st.sampled_from(["sha256", "sha1"]),
)
@example("a" * 64, "sha256")
@example("a" * 63 + "\n", "sha256")
@example("a" * 62 + " a", "sha256")
@example("٠" * 40, "sha1")
def test_hex_digest_is_the_pattern_s_reading(text: str, algorithm: str) -> None:
    # ``verify`` strips the header first: its digest never ends in whitespace (where the
    # pattern's ``$`` would also match before a last newline).
    text = text.rstrip()
    matched = signature._HEX[algorithm].match(text)
    expected = bytes.fromhex(text) if matched else b""
    assert signature._hex_digest(text, signature._HEX_LENGTH[algorithm]) == expected


def test_new_event_is_an_event_in_every_way() -> None:
    import copy
    import pickle
    from datetime import UTC, datetime

    from receiver.model.events import Event, new_event

    when = datetime(2020, 1, 1, tzinfo=UTC)
    args: tuple[Any, ...] = ("g", "f", ["v"], "id", "d", "i", None, "1", when, False, {})
    made = new_event(*args)
    assert type(made) is Event
    assert made == Event(*args)
    assert pickle.loads(pickle.dumps(made)) == made
    assert copy.deepcopy(made) == made
    assert Event.from_dict(made.to_dict()) == made
    with pytest.raises(AttributeError):
        made.value = "other"  # type: ignore[misc]


@pytest.mark.parametrize("method", ["POST", "GET", "head", "PUT"])
def test_the_adapter_s_request_is_the_keyword_built_one(method: str) -> None:
    from dataclasses import fields
    from types import SimpleNamespace

    from receiver.routing.contracts import Request
    from receiver.web.callback import CallbackMiddleware

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/webhooks/x/t",
        "QUERY_STRING": "hub.mode=subscribe&a=",
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_RECEIVER_REPLAY": "token",
    }
    adapter = CallbackMiddleware.__new__(CallbackMiddleware)
    adapter.core = SimpleNamespace(settings=SimpleNamespace(read_timeout=5.0))  # type: ignore[assignment]
    made = adapter._request(environ, None, "x", "t")
    upper = method.upper()
    query = {"hub.mode": "subscribe", "a": ""} if upper in ("GET", "HEAD") else {}
    expected = Request(
        method=upper, query=query, integration="x", topic="t", path="/webhooks/x/t",
        replay_token="token", remote_addr="10.0.0.1",
    )  # fmt: skip
    for f in fields(Request):
        if f.name not in ("headers", "body_source"):
            assert getattr(made, f.name) == getattr(expected, f.name), f.name
    assert made.headers.get("X-Receiver-Replay") == "token"
    assert (made.body_source is not None) == (upper == "POST")


# -- Packets read by orjson (handoff.loads) ----------------------------------------------------


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.text(max_size=5), json_values | st.floats(), max_size=5),
    st.sampled_from(["dumps", "compact", "spaced", "ascii"]),
)
def test_a_packet_is_read_as_json_reads_it(data: dict[str, Any], writer: str) -> None:
    """Whoever wrote it (this version's ``dumps``, json as older versions did), with long
    integers, any double, NaN, infinities and lone surrogates."""
    from receiver.queue import handoff

    if writer == "dumps":
        text = handoff.dumps(data)
    else:
        separators = (",", ":") if writer == "compact" else None
        text = json.dumps(data, separators=separators, ensure_ascii=writer == "ascii")
    raw = text.encode("utf-8", "surrogatepass")
    assert _typed(handoff.loads(raw)) == _typed(json.loads(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n":18446744073709551616}',
        b'{"n":[1,-9223372036854775809]}',
        b'{"n": 12345678901234567890123}',
        b"123456789012345678901234",
        b'{"n":NaN,"m":Infinity}',
        b'{"s":"\\ud800"}',
        b'{"at":1796652320.496,"items":[]}',
    ],
)
def test_packets_orjson_would_misread_or_refuse_are_json_s(raw: bytes) -> None:
    from receiver.queue import handoff

    assert _typed(handoff.loads(raw)) == _typed(json.loads(raw))


events = st.builds(
    Event,
    topic=st.text(max_size=8),
    field=st.text(max_size=8),
    value=json_values,
    id=st.text(max_size=8),
    delivery_id=st.text(max_size=8),
    integration=st.text(max_size=8),
    verb=st.none() | st.text(max_size=5),
    entry_id=st.none() | st.text(max_size=5),
    time=st.none()
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))])),
    replayed=st.booleans(),
    extra=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.sampled_from([None, "name", "extra", "verb"]))
def test_an_event_read_back_from_its_dict_is_the_constructor_s(
    event: Event, without: str | None
) -> None:
    """``from_dict``'s shortcut (every key of ``to_dict``) and its general reading."""
    data = event.to_dict()
    if without is not None:
        del data[without]
    values = {k: v for k, v in data.items() if k != "name"}
    raw_time = values.get("time")
    values["time"] = datetime.fromisoformat(raw_time).astimezone(UTC) if raw_time else None
    made = Event.from_dict(data)
    expected = Event(**values)
    assert type(made) is Event and made == expected
    names = [f.name for f in fields(Event)]
    assert [repr(getattr(made, n)) for n in names] == [repr(getattr(expected, n)) for n in names]
