"""Times in a verified body: any value routes (unrepresentable → ``time=None``), none is in an id.

A correctly signed body may carry anything where a time belongs (a 400-digit
number, year 9999 at UTC-1, a list); the parser must never answer 5xx for it.
And Meta's retries change ``entry.time``, so it must not change an event's id.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import Event, Router
from receiver.core.handling import Core, Headers, Request
from receiver.core.signature import signature_headers
from receiver.errors import PayloadRejected
from receiver.model.envelope import parse, to_utc
from receiver.settings.loading import load_settings
from receiver.worker.claims import WorkContext
from receiver.worker.inline import InlineBackend

SECRET = "s"
SETTINGS = load_settings(
    {"integrations": {"default": {"app_secrets": [SECRET], "verify_token": "t"}}}, {}
)
ROUTER = Router()
SEEN: list[Event] = []
ROUTER.connect("*", SEEN.append)
CORE = Core(SETTINGS, ROUTER, InlineBackend(WorkContext(ROUTER, SETTINGS)))
HUGE = int("9" * 400)


def deliver(body: bytes) -> tuple[int, list[Event]]:
    """Post a signed body to the core; the status and the events a catch-all handler saw."""
    SEEN.clear()
    result = CORE.handle(Request("POST", body, Headers(signature_headers(body, SECRET))))
    assert json.loads(result.body)  # always a JSON answer
    return result.status, list(SEEN)


def messaging(timestamp: Any, entry_time: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": "1",
        "messaging": [
            {
                "sender": {"id": "a"},
                "recipient": {"id": "b"},
                "timestamp": timestamp,
                "message": {"mid": "m", "text": "x"},
            }
        ],
    }
    if entry_time is not None:
        entry["time"] = entry_time
    return {"object": "page", "entry": [entry]}


def feed(created_time: Any, entry_time: Any = None) -> dict[str, Any]:
    value = {"item": "post"} if created_time is None else {"created_time": created_time}
    entry: dict[str, Any] = {"id": "2", "changes": [{"field": "feed", "value": value}]}
    if entry_time is not None:
        entry["time"] = entry_time
    return {"object": "page", "entry": [entry]}


EXTREMES = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    HUGE,
    -HUGE,
    str(HUGE),
    1e308,
    -1e308,
]


@pytest.mark.parametrize("raw", EXTREMES, ids=repr)
@pytest.mark.parametrize("where", ["entry.time", "messaging.timestamp", "value.created_time"])
def test_unrepresentable_time_routes_with_time_none(raw: Any, where: str) -> None:
    data = {
        "entry.time": feed(None, entry_time=raw),
        "messaging.timestamp": messaging(raw),
        "value.created_time": feed(raw),
    }[where]
    status, [event] = deliver(json.dumps(data).encode())
    assert status == 200
    assert event.time is None
    assert to_utc(raw) is None


def test_unrepresentable_item_time_falls_back_to_entry_time() -> None:
    status, [event] = deliver(json.dumps(messaging(HUGE, entry_time=1700000000)).encode())
    assert status == 200
    assert event.time is not None and event.time.year == 2023


def test_number_too_large_for_a_float_in_json_text() -> None:
    # 1e400 is valid JSON; Python reads it as infinity
    body = json.dumps(messaging("@")).encode().replace(b'"@"', b"1e400")
    status, [event] = deliver(body)
    assert (status, event.time) == (200, None)


# --- properties ---

iso_like = st.builds(
    "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
    st.integers(0, 99999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["", "Z", "+00:00", "-01:00", "+01:00", "+23:59", "-23:59", "+0000", "+24:00"]),
)
digits = st.text("0123456789", min_size=1, max_size=4000)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | digits.map(int)
    | digits.map(lambda d: -int(d))
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-300, max_value=1e-300)
    | st.text(max_size=30)
    | digits
    | iso_like
)
time_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=5,
)


def whatsapp(entry_time: Any, a: Any, b: Any, c: Any) -> dict[str, Any]:
    def message(n: int, timestamp: Any) -> dict[str, Any]:
        return {"from": "1", "id": f"wamid.{n}", "timestamp": timestamp, "type": "text"}

    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "W",
                "time": entry_time,
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "P"},
                            "contacts": [{"wa_id": "1"}],
                            "messages": [message(1, a), message(2, b)],
                            "statuses": [{"id": "wamid.1", "timestamp": c, "recipient_id": "1"}],
                        },
                    }
                ],
            }
        ],
    }


def every_position(t: list[Any]) -> list[tuple[dict[str, Any], int]]:
    """Deliveries with a value in every time-bearing position, and how many events each has."""
    both = feed(t[3], entry_time=t[2])
    both["entry"][0]["changes"][0]["value"]["timestamp"] = t[4]
    standby = messaging(t[6], entry_time=t[5])
    standby["entry"][0]["standby"] = standby["entry"][0].pop("messaging")
    return [
        (messaging(t[1], entry_time=t[0]), 1),
        (both, 1),
        (standby, 1),
        (whatsapp(t[7], t[8], t[9], t[10]), 3),
    ]


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(time_values, min_size=11, max_size=11))
def test_any_value_in_any_time_position_routes(values: list[Any]) -> None:
    for data, count in every_position(values):
        status, events = deliver(json.dumps(data).encode())
        assert status == 200
        assert len(events) == count
        for event in events:
            assert event.time is None or event.time.tzinfo is UTC
            assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


@settings(deadline=None, max_examples=300)
@given(time_values)
def test_to_utc_never_raises(raw: Any) -> None:
    found = to_utc(raw)
    assert found is None or found.tzinfo is UTC


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
items = st.dictionaries(
    st.sampled_from(["sender", "recipient", "timestamp", "message", "read", "reaction", "x"]),
    json_values,
    max_size=4,
)
wa_values = st.fixed_dictionaries(
    {},
    optional={
        "metadata": json_values,
        "contacts": st.lists(json_values, max_size=2),
        "messages": st.lists(items | json_values, max_size=3),
        "statuses": st.lists(items | json_values, max_size=3),
    },
)
entries = st.fixed_dictionaries(
    {"id": st.text(max_size=4)},
    optional={
        "changes": st.lists(
            st.fixed_dictionaries(
                {"field": st.sampled_from(["messages", "feed", "posts"])},
                optional={"value": wa_values | json_values},
            ),
            max_size=3,
        ),
        "messaging": st.lists(items, max_size=3),
        "standby": st.lists(items, max_size=2),
        "changed_fields": st.lists(st.text(max_size=5), max_size=2),
        "uid": json_values,
    },
)
bodies = st.fixed_dictionaries(
    {
        "object": st.sampled_from(["page", "instagram", "whatsapp_business_account", "group"]),
        "entry": st.lists(entries, min_size=1, max_size=3),
    }
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, time_values, time_values)
def test_bodies_differing_only_in_entry_time_get_equal_ids(
    data: dict[str, Any], first: Any, second: Any
) -> None:
    found = []
    for entry_time in (first, second):
        for entry in data["entry"]:
            entry["time"] = entry_time
        body = json.dumps(data).encode()
        try:
            found.append(parse(body, delivery_id="d", integration="i", max_depth=64))
        except PayloadRejected:
            found.append(None)
    one, other = found
    assert (one is None) == (other is None)
    if one is not None and other is not None:
        assert [(e.name, e.id) for e in one] == [(e.name, e.id) for e in other]
