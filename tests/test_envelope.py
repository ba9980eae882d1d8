"""The parser on the shapes Meta sends beyond the sample files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.envelope import parse, to_utc
from receiver.errors import PayloadRejected


def events(data: Any) -> list[Any]:
    return parse(json.dumps(data).encode(), delivery_id="d", integration="i", max_depth=64)


def messaging(**item: Any) -> dict[str, Any]:
    return {
        "object": "page",
        "entry": [
            {
                "id": "1",
                "time": 1,
                "messaging": [
                    {
                        "sender": {"id": "a"},
                        "recipient": {"id": "b"},
                        "timestamp": 1700000000000,
                        **item,
                    }
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"message": {"mid": "m", "text": "hi"}}, "messages"),
        ({"message": {"mid": "m", "is_echo": True}}, "message_echoes"),
        ({"postback": {"payload": "p"}}, "messaging_postbacks"),
        ({"delivery": {"mids": ["m"]}}, "message_deliveries"),
        ({"read": {"watermark": 1}}, "message_reads"),
        ({"reaction": {"reaction": "like"}}, "message_reactions"),
        ({"optin": {"ref": "r"}}, "messaging_optins"),
        ({"referral": {"ref": "r"}}, "messaging_referrals"),
        ({"account_linking": {"status": "linked"}}, "messaging_account_linking"),
        ({"something_new": {"x": 1}}, "something_new"),
        ({}, "messaging"),
    ],
)
def test_messaging_item_named_by_its_key(item: dict[str, Any], field: str) -> None:
    [event] = events(messaging(**item))
    assert event.field == field
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_batch_of_many_entries_and_changes_keeps_order() -> None:
    data = {
        "object": "group",
        "entry": [
            {
                "id": str(e),
                "time": 1600000000 + e,
                "changes": [
                    {
                        "field": "posts" if c % 2 else "comments",
                        "value": {"n": e * 10 + c, "verb": "add"},
                    }
                    for c in range(5)
                ],
            }
            for e in range(200)
        ],
    }
    found = events(data)
    assert len(found) == 1000
    assert [e.value["n"] for e in found] == [e * 10 + c for e in range(200) for c in range(5)]
    assert len({e.id for e in found}) == 1000


def test_whatsapp_style_changes_route_by_field() -> None:
    data = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "messages": [
                                {
                                    "from": "1",
                                    "id": "wamid.X",
                                    "timestamp": "1700000000",
                                    "type": "text",
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    [event] = events(data)
    assert event.name == "whatsapp_business_account.messages"
    assert event.entry_id == "WABA"
    assert event.time is None  # no entry time, and the value's own timestamp is nested


def test_entry_without_id_or_time() -> None:
    [event] = events({"object": "group", "entry": [{"changes": [{"field": "posts", "value": {}}]}]})
    assert (event.entry_id, event.time) == (None, None)


def test_time_falls_back_to_value_created_time() -> None:
    [event] = events(
        {
            "object": "group",
            "entry": [
                {
                    "changes": [
                        {"field": "posts", "value": {"created_time": "2018-01-16T02:59:58+0000"}}
                    ]
                }
            ],
        }
    )
    assert event.time == datetime(2018, 1, 16, 2, 59, 58, tzinfo=UTC)


def test_changed_fields_style_entries() -> None:
    found = events(
        {
            "object": "user",
            "entry": [{"uid": "7", "id": "7", "time": 1, "changed_fields": ["status", "events"]}],
        }
    )
    assert [e.name for e in found] == ["user.status", "user.events"]
    assert found[0].value == {"uid": "7", "id": "7", "time": 1}


def test_standby_items_and_bare_entries_are_not_dropped() -> None:
    found = events(
        {
            "object": "page",
            "entry": [
                {"id": "1", "standby": [{"sender": {"id": "a"}, "message": {"text": "x"}}]},
                {"id": "2", "time": 5, "novel": True},
            ],
        }
    )
    assert [e.name for e in found] == ["page.standby", "page.entry"]


def test_same_item_same_id_even_reordered_keys() -> None:
    a = events(
        {
            "object": "group",
            "entry": [
                {"id": "1", "time": 2, "changes": [{"field": "posts", "value": {"a": 1, "b": 2}}]}
            ],
        }
    )
    b = events(
        {
            "entry": [
                {"changes": [{"value": {"b": 2, "a": 1}, "field": "posts"}], "time": 2, "id": "1"}
            ],
            "object": "group",
        }
    )
    assert a[0].id == b[0].id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1516071794, datetime(2018, 1, 16, 3, 3, 14, tzinfo=UTC)),
        (1501515097793, datetime(2017, 7, 31, 15, 31, 37, 793000, tzinfo=UTC)),
        ("1516071794", datetime(2018, 1, 16, 3, 3, 14, tzinfo=UTC)),
        ("2018-01-16T03:03:13+0000", datetime(2018, 1, 16, 3, 3, 13, tzinfo=UTC)),
        ("2018-01-16T03:03:13Z", datetime(2018, 1, 16, 3, 3, 13, tzinfo=UTC)),
        ("2018-01-16T05:03:13+02:00", datetime(2018, 1, 16, 3, 3, 13, tzinfo=UTC)),
        (None, None),
        (True, None),
        (-5, None),
        ("soon", None),
        (1e300, None),
        ([1], None),
    ],
)
def test_time_normalisation(raw: Any, expected: datetime | None) -> None:
    assert to_utc(raw) == expected


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xfe", "invalid_encoding"),
        (b"{not json", "invalid_json"),
        (b'{"object": "group", "entry": [NaN]}', "invalid_json"),
        (b"[]", "not_an_envelope"),
        (b'{"field": "posts", "value": {}}', "not_an_envelope"),
        (b'{"object": "group"}', "not_an_envelope"),
        (b'{"object": 5, "entry": []}', "not_an_envelope"),
        (b'{"object": "group", "entry": {}}', "bad_entry"),
        (b'{"object": "group", "entry": [1]}', "bad_entry"),
        (b'{"object": "group", "entry": [{"changes": {}}]}', "bad_entry"),
        (b'{"object": "group", "entry": [{"changes": [{"value": 1}]}]}', "bad_change"),
        (b'{"object": "group", "entry": [{"messaging": [3]}]}', "bad_change"),
        (b'{"object": "g", "entry": [' + b"[" * 100 + b"]" * 100 + b"]}", "too_deep"),
        (b"[" * 100000 + b"]" * 100000, "too_deep"),
    ],
)
def test_not_an_envelope_is_rejected(body: bytes, code: str) -> None:
    with pytest.raises(PayloadRejected) as info:
        parse(body, delivery_id="d", integration="i", max_depth=64)
    assert info.value.code == code
    assert 400 <= info.value.status < 500
