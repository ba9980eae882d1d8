"""Accessors and the filters on them, through the factories a handler author tests with."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from receiver import Event, Router, testing
from tests.conftest import signed


def post(client: FlaskClient, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()


FACTORIES = [
    # factory, name, kind, sender_id, recipient_id, message_id, text
    (testing.page_message("hi"), "page.messages", "message", "2001", "page-1", "m-1", "hi"),
    (
        testing.page_postback("GO"),
        "page.messaging_postbacks",
        "postback",
        "2001",
        "page-1",
        "m-2",
        None,
    ),
    (
        testing.instagram_message("oi"),
        "instagram.messages",
        "message",
        "ig-user-1",
        "ig-account-1",
        "ig-m-1",
        "oi",
    ),
    (
        testing.whatsapp_message("olá"),
        "whatsapp_business_account.messages",
        "message",
        testing.WHATSAPP_USER,
        testing.WHATSAPP_PHONE_ID,
        "wamid.test-1",
        "olá",
    ),
    (
        testing.whatsapp_status("read"),
        "whatsapp_business_account.messages",
        "status",
        None,
        testing.WHATSAPP_PHONE_ID,
        "wamid.sent-1",
        None,
    ),
    (testing.group_post(), "group.posts", None, "2001", None, "1001_4001", "hello"),
    (testing.group_comment(), "group.comments", None, "2001", None, "5001", "a comment"),
    (
        testing.page_mention("@Bot hi"),
        "page.mention",
        "post",
        "2001",
        None,
        "1001_4001",
        "@Bot hi",
    ),
]


@pytest.mark.parametrize(
    ("payload", "name", "kind", "sender", "recipient", "message", "text"), FACTORIES
)
def test_factories_deliver_items_with_accessors_set(
    client: FlaskClient,
    seen: list[Event],
    payload: dict[str, Any],
    name: str,
    kind: str | None,
    sender: str | None,
    recipient: str | None,
    message: str | None,
    text: str | None,
) -> None:
    post(client, payload)
    [event] = seen
    assert (event.name, event.kind, event.sender_id) == (name, kind, sender)
    assert (event.recipient_id, event.message_id, event.text) == (recipient, message, text)
    assert event.time is not None
    again = Event.from_dict(json.loads(json.dumps(event.to_dict())))
    assert (again.kind, again.sender_id, again.text) == (kind, sender, text)


def test_whatsapp_factories_take_overrides(client: FlaskClient, seen: list[Event]) -> None:
    post(client, testing.whatsapp_message(id="wamid.other", timestamp="1600000000"))
    post(client, testing.whatsapp_status("failed", errors=[{"code": 131026}]))
    message, status = seen
    assert message.message_id == "wamid.other"
    assert message.time is not None and message.time.year == 2020
    assert status.value["statuses"][0]["errors"] == [{"code": 131026}]


def test_kind_filter_tells_standby_items_apart(
    router: Router, client: FlaskClient, seen: list[Event]
) -> None:
    postbacks: list[Event] = []
    router.connect("page.standby", postbacks.append, kind="postback")
    for payload in (testing.page_postback("GO"), testing.page_message("hi")):
        entry = payload["entry"][0]
        entry["standby"] = entry.pop("messaging")
        post(client, payload)
    assert [e.name for e in seen] == ["page.standby", "page.standby"]
    assert [e.kind for e in postbacks] == ["postback"]


def test_sender_id_filter(router: Router, client: FlaskClient) -> None:
    from_admin: list[Event] = []
    router.connect("page.messages", from_admin.append, sender_id="ADMIN")
    post(client, testing.page_message("from ada"))
    admin = testing.page_message("from admin")
    admin["entry"][0]["messaging"][0]["sender"] = {"id": "ADMIN"}
    post(client, admin)
    assert [e.text for e in from_admin] == ["from admin"]
