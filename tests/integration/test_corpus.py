"""Every corpus body (real deliveries other projects published), signed and posted.

``tests/corpus/`` is a copy of the shared corpus (its ``SOURCES.md`` says where
each body came from). The table holds what a catch-all handler must see per
file: event names, their count, and per event the time and the accessors;
``FRAGMENT__*`` pieces of deliveries get their clean 4xx instead.
"""

# ruff: noqa: E501  (the table keeps one event per line; ids and texts are long)

from __future__ import annotations

import json
from datetime import UTC

import pytest
from flask.testing import FlaskClient

from receiver import Event
from tests.conftest import signed
from tests.unit.test_corpus import CORPUS, EXPECTED, E

RETRY = (
    "social_selling__instagram_messaging_seen_read_captured.json",
    "social_selling__instagram_messaging_seen_read_captured_2nd_delivery.json",
)


def seen_as(event: Event) -> E:
    return E(
        event.name,
        event.time.replace(tzinfo=None).isoformat(timespec="milliseconds").removesuffix(".000")
        if event.time
        else None,
        event.kind,
        event.sender_id,
        event.recipient_id,
        event.message_id,
        event.text,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_body(client: FlaskClient, seen: list[Event], name: str) -> None:
    body = (CORPUS / name).read_bytes()
    response = client.post("/webhook", data=body, headers=signed(body))

    expected = EXPECTED[name]
    if isinstance(expected, tuple):
        assert (response.status_code, response.get_json()["error"]) == expected
        assert seen == []
        return
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["events"] == len(expected)
    assert [seen_as(e) for e in seen] == expected
    for event in seen:
        assert event.time is None or event.time.tzinfo is UTC
        assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


def test_instagram_retry_gets_the_same_id(client: FlaskClient, seen: list[Event]) -> None:
    bodies = [(CORPUS / name).read_bytes() for name in RETRY]
    times = [json.loads(b)["entry"][0]["time"] for b in bodies]
    assert times[1] - times[0] == 18662  # ms: the envelope changed between the two

    for body in bodies:
        assert client.post("/webhook", data=body, headers=signed(body)).status_code == 200

    first, second = seen
    assert first.id == second.id
    assert first.delivery_id != second.delivery_id
