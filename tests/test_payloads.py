"""Every sample delivery, signed and posted, reaches a handler as the expected event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient

from receiver import Event

from .conftest import PAYLOADS, payload, signed

EXPECTED = {
    "group__comments__add.json": (
        "group.comments",
        "add",
        datetime(2018, 1, 16, 3, 3, 13, tzinfo=UTC),  # the comment's created_time
        "483499012017824",
    ),
    "group__posts__status_add.json": (
        "group.posts",
        "add",
        datetime(2018, 1, 16, 2, 59, 58, tzinfo=UTC),
        "483499012017824",
    ),
    "link__preview__request_RECONSTRUCTED.json": (
        "link.preview",
        None,
        datetime(2017, 7, 31, 15, 31, 37, 793000, tzinfo=UTC),
        None,
    ),
    "page__messages__text_workplace_bot.json": (
        "page.messages",
        None,
        datetime(1970, 1, 1, 0, 2, 3, tzinfo=UTC),
        "entry_id",
    ),
    "page__messaging_postbacks__button_workplace_bot.json": (
        "page.messaging_postbacks",
        None,
        datetime(1970, 1, 1, 0, 2, 3, tzinfo=UTC),
        "entry_id",
    ),
    "user__photos__update_graphapi_doc_example.json": (
        "user.photos",
        "update",
        datetime(2018, 3, 7, 0, 46, 11, tzinfo=UTC),
        "10210299214172187",
    ),
    "workplace_security__admin_activity__admin_deactivate_account_RECONSTRUCTED.json": (
        "workplace_security.admin_activity",
        None,
        datetime(2021, 3, 29, 12, 0, 20, tzinfo=UTC),
        "100000000000001",
    ),
}


def test_every_sample_is_covered() -> None:
    requests = {p.name for p in PAYLOADS.glob("*.json") if "__response_" not in p.name}
    assert requests == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_routes_to_handler(client: FlaskClient, seen: list[Event], name: str) -> None:
    body = payload(name)
    response = client.post("/webhook", data=body, headers=signed(body))

    assert response.status_code == 200, response.get_json()
    event_name, verb, time, entry_id = EXPECTED[name]
    assert [e.name for e in seen] == [event_name]
    event = seen[0]
    assert (event.verb, event.time, event.entry_id) == (verb, time, entry_id)
    assert event.integration == "default"
    assert len(event.id) == 32 and len(event.delivery_id) == 32
    assert event.time is not None and event.time.tzinfo is not None


def test_redelivery_keeps_event_id_but_not_delivery_id(
    client: FlaskClient, seen: list[Event]
) -> None:
    body = payload("group__comments__add.json")
    for _ in range(2):
        client.post("/webhook", data=body, headers=signed(body))
    first, second = seen
    assert first.id == second.id
    assert first.delivery_id != second.delivery_id


def test_user_entry_keeps_uid(client: FlaskClient, seen: list[Event]) -> None:
    body = payload("user__photos__update_graphapi_doc_example.json")
    client.post("/webhook", data=body, headers=signed(body))
    assert seen[0].extra == {"uid": "10210299214172187"}
    assert seen[0].value == {"verb": "update", "object_id": "10211885744794461"}


def test_event_survives_json_round_trip(client: FlaskClient, seen: list[Event]) -> None:
    import json

    body = payload("group__posts__status_add.json")
    client.post("/webhook", data=body, headers=signed(body))
    event = seen[0]
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event
