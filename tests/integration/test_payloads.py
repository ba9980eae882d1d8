"""Every sample delivery, signed and posted, reaches a handler as the expected event."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from receiver import Event
from tests.conftest import payload, signed
from tests.unit.test_payloads import EXPECTED


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
