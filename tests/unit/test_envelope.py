"""The parser on the shapes Meta sends beyond the sample files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.errors import PayloadRejected
from receiver.model.envelope import parse, to_utc


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
        ({"payment": {"amount": {}}}, "messaging_payments"),
        ({"checkout_update": {"payload": "p"}}, "messaging_checkout_updates"),
        ({"pre_checkout": {"payload": "p"}}, "messaging_pre_checkouts"),
        ({"policy_enforcement": {"action": "block"}}, "messaging_policy_enforcement"),
        ({"policy-enforcement": {"action": "block"}}, "messaging_policy_enforcement"),
        ({"pass_thread_control": {"new_owner_app_id": "1"}}, "messaging_handovers"),
        ({"take_thread_control": {"previous_owner_app_id": "1"}}, "messaging_handovers"),
        ({"request_thread_control": {"requested_owner_app_id": "1"}}, "messaging_handovers"),
        ({"app_roles": {"1": ["primary_receiver"]}}, "messaging_handovers"),
        ({"game_play": {"game_id": "g"}}, "messaging_game_plays"),
        ({"message_edit": {"mid": "m", "text": "new", "num_edit": 1}}, "message_edits"),
        ({"something_new": {"x": 1}}, "something_new"),
        ({}, "messaging"),
    ],
)
def test_messaging_item_named_by_its_key(item: dict[str, Any], field: str) -> None:
    [event] = events(messaging(**item))
    assert event.field == field
    assert event.kind == (next(iter(item)) if item else None)
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"message": {"mid": "m", "text": "hi"}}, "messages"),
        ({"message": {"mid": "m", "text": "hi", "is_echo": True}}, "messages"),
        ({"read": {"mid": "m"}}, "messaging_seen"),
        ({"referral": {"ref": "r", "source": "ADS"}}, "messaging_referral"),
        ({"postback": {"mid": "m", "payload": "p"}}, "messaging_postbacks"),
        ({"reaction": {"mid": "m", "action": "react"}}, "message_reactions"),
        ({"pass_thread_control": {"new_owner_app_id": "1"}}, "messaging_handover"),
        ({"take_thread_control": {"previous_owner_app_id": "1"}}, "messaging_handover"),
        ({"request_thread_control": {"requested_owner_app_id": "1"}}, "messaging_handover"),
        ({"something_new": {"x": 1}}, "something_new"),
    ],
)
def test_instagram_items_use_instagram_field_names(item: dict[str, Any], field: str) -> None:
    [event] = events({**messaging(**item), "object": "instagram"})
    assert event.name == f"instagram.{field}"
    assert event.kind == next(iter(item))


def test_standby_items_keep_their_kind() -> None:
    data = messaging(postback={"payload": "p"})
    data["entry"][0]["standby"] = data["entry"][0].pop("messaging")
    [event] = events(data)
    assert (event.name, event.kind, event.sender_id) == ("page.standby", "postback", "a")


def test_zero_item_timestamp_falls_back_to_entry_time() -> None:
    data = messaging(delivery={"mids": ["m"], "watermark": 1})
    data["entry"][0]["time"] = 1472028396029
    data["entry"][0]["messaging"][0]["timestamp"] = 0
    [event] = events(data)
    assert event.time == datetime(2016, 8, 24, 8, 46, 36, 29000, tzinfo=UTC)


def test_change_value_own_time_wins_over_entry_time() -> None:
    # entry.time is when Meta sent the notification (it moves on a retry)
    [event] = events(
        {
            "object": "page",
            "entry": [
                {
                    "id": "1",
                    "time": 1608952530,
                    "changes": [{"field": "feed", "value": {"created_time": 1608952528}}],
                }
            ],
        }
    )
    assert event.time == datetime(2020, 12, 26, 3, 15, 28, tzinfo=UTC)


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


def whatsapp(**value: Any) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "100", "phone_number_id": "P1"},
                            **value,
                        },
                    }
                ],
            }
        ],
    }


def test_whatsapp_message_gets_its_own_time_and_accessors() -> None:
    [event] = events(
        whatsapp(
            contacts=[{"wa_id": "1", "profile": {"name": "A"}}],
            messages=[
                {
                    "from": "1",
                    "id": "wamid.X",
                    "timestamp": "1700000000",
                    "type": "text",
                    "text": {"body": "hello"},
                }
            ],
        )
    )
    assert event.name == "whatsapp_business_account.messages"
    assert event.entry_id == "WABA"
    assert event.time == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert (event.kind, event.sender_id, event.recipient_id) == ("message", "1", "P1")
    assert (event.message_id, event.text) == ("wamid.X", "hello")


def test_whatsapp_value_splits_into_one_event_per_message_and_status() -> None:
    text_a = {"from": "1", "id": "wamid.A", "timestamp": "1700000001", "text": {"body": "a"}}
    found = events(
        whatsapp(
            contacts=[{"wa_id": "1"}, {"wa_id": "2"}, {"wa_id": "3"}],
            messages=[
                text_a,
                {"from": "2", "id": "wamid.B", "timestamp": "1700000002", "type": "image"},
            ],
            statuses=[
                {"id": "wamid.S", "status": "sent", "timestamp": "1700000003", "recipient_id": "3"},
                {"id": "wamid.S", "status": "read", "timestamp": "1700000004", "recipient_id": "3"},
            ],
        )
    )
    assert [e.name for e in found] == ["whatsapp_business_account.messages"] * 4
    assert [e.kind for e in found] == ["message", "message", "status", "status"]
    assert [e.time.second for e in found if e.time] == [21, 22, 23, 24]
    assert [e.message_id for e in found] == ["wamid.A", "wamid.B", "wamid.S", "wamid.S"]
    assert [e.sender_id for e in found] == ["1", "2", None, None]
    assert len({e.id for e in found}) == 4  # two statuses of one message are two events
    for event in found:
        assert event.value["metadata"]["phone_number_id"] == event.recipient_id == "P1"
    assert [e.value["contacts"] for e in found] == [
        [{"wa_id": "1"}],
        [{"wa_id": "2"}],
        [{"wa_id": "3"}],
        [{"wa_id": "3"}],
    ]
    assert found[0].value["messages"] == [text_a]
    assert found[0].text == "a"
    assert "statuses" not in found[0].value and "messages" not in found[2].value


def test_whatsapp_value_without_items_is_one_event() -> None:
    [event] = events(whatsapp(messages=[]))
    assert (event.kind, event.time) == (None, None)
    assert event.value["messages"] == []


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


def _nested_deeper(data: Any, limit: int) -> bool:
    """The decoded tree's depth, walked: what the byte-level check must agree with."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict | list):
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"[[[[[["}',
        b'["\\\\",["\\"[[[["]]',
        b'[[[],[[]]],{"x\\\\":"\\"[","y":["]"],"z":"\\u005b["}]',
        b'["x[", "]", ["a\\\\\\"[["]]',
        b'{"a\\"b[":[1,[2]],"\\\\":{"\\\\\\\\":"{"}}',
        b' [ [ "][" , [ ] ] ] ',
        b'"["',
        b"1",
    ],
)
def test_depth_is_read_from_the_bytes_as_the_tree_has_it(body: bytes) -> None:
    from receiver.model.envelope import _depth_exceeds

    data = json.loads(body)
    for limit in range(1, 6):
        assert _depth_exceeds(body, limit) == _nested_deeper(data, limit), limit


def test_ids_of_an_infinite_number_are_json_dumps_ones() -> None:
    """``1e999`` reads as infinity: json.dumps writes ``Infinity`` (orjson, ``null``)."""
    from hashlib import blake2b

    body = b'{"object":"group","entry":[{"id":"1","changes":[{"field":"f","value":{"n":1e999}}]}]}'
    [event] = parse(body, delivery_id="d", integration="i", max_depth=64)
    canonical = b'["i","group","1","f",{"n":Infinity}]'
    assert event.id == blake2b(canonical, digest_size=16).hexdigest()
    assert event.value["n"] == float("inf")


def test_new_event_is_the_constructor_s_event() -> None:
    from receiver.model.events import Event, new_event

    args = ("g", "f", {"a": [1]}, "id", "d", "i", "add", "1", datetime(2020, 1, 1, tzinfo=UTC),
            True, {"uid": 3})  # fmt: skip
    made = new_event(*args)
    assert made == Event(*args)
    assert repr(made) == repr(Event(*args))
    with pytest.raises(AttributeError):
        made.topic = "other"  # type: ignore[misc]  # still frozen


@pytest.mark.parametrize(
    "value",
    [b'{"n":1e999,"m":-1e999}', b'{"big":123456789012345678901234567890}', b'{"s":"\\ud800"}',
     b'{"t":"caf\\u00e9 \\u2603","f":1.5e-07,"i":-0}'],
)  # fmt: skip
def test_packets_carry_the_events_values(value: bytes) -> None:
    """Packets are written by orjson, or json.dumps where orjson would refuse or differ."""
    from receiver.queue.handoff import packets

    change = b'{"field":"f","value":%s}' % value
    body = b'{"object":"g","entry":[{"id":"1","time":1516071794.5,"changes":[%s]}]}' % change
    [event] = parse(body, delivery_id="d", integration="i", max_depth=64)

    class Handler:
        id = "h"
        queue = None

    [(queue, text)] = packets("d", [(event, Handler())], "q").items()  # type: ignore[list-item]
    assert queue == "q"
    [item] = json.loads(text)["items"]
    assert item == {"event": event.to_dict(), "handler": "h"}
    assert item["event"]["time"] == "2018-01-16T03:03:14.500000+00:00"
    assert repr(item["event"]["value"]) == repr(event.value)  # inf stays inf, not None
