"""Synchronous topics: handlers' answers become the response body."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from receiver import Event, Router, create_app
from tests.conftest import PAYLOADS, base_config, payload, signed

REQUEST = payload("link__preview__request_RECONSTRUCTED.json")
ANSWER = json.loads((PAYLOADS / "link__preview__response_RECONSTRUCTED.json").read_text())


def post(client: FlaskClient, body: bytes = REQUEST) -> Any:
    response = client.post("/webhook/link", data=body, headers=signed(body))
    assert response.status_code == 200
    return response.get_json()


def test_handler_answer_is_the_body(router: Router, client: FlaskClient) -> None:
    router.connect("link.preview", lambda e: ANSWER)
    assert post(client) == ANSWER


def test_no_answer_means_empty_data(router: Router, client: FlaskClient) -> None:
    router.connect("link.preview", lambda e: None)
    assert post(client) == {"data": []}


def test_several_answers_join_their_data(router: Router, client: FlaskClient) -> None:
    router.connect("link.preview", lambda e: {"data": [{"link": "a"}], "linked_user": True})
    router.connect("link.*", lambda e: {"data": [{"link": "b"}], "linked_user": False})
    assert post(client) == {"data": [{"link": "a"}, {"link": "b"}], "linked_user": True}


def test_failing_handler_does_not_spoil_others(router: Router, client: FlaskClient) -> None:
    def broken(event: Event) -> None:
        raise ValueError("nope")

    router.connect("link.preview", broken)
    router.connect("link.preview", lambda e: ANSWER)
    assert post(client) == ANSWER


def test_slow_handler_is_dropped_at_the_deadline(router: Router, redis_url: str) -> None:
    release = threading.Event()

    def slow(event: Event) -> dict[str, Any]:
        release.wait(10)
        return {"data": [{"link": "late"}]}

    router.connect("link.preview", slow)
    router.connect("link.preview", lambda e: {"data": [{"link": "fast"}]})
    client = create_app(
        base_config(redis_url=redis_url, answer_timeout=1.0), router=router
    ).test_client()
    try:
        assert post(client) == {"data": [{"link": "fast"}]}
    finally:
        release.set()


@pytest.mark.parametrize("pattern_url", ["https://docs.example.com/handbook/on-call-guide"])
def test_shipped_example_answers_matching_links(redis_url: str, pattern_url: str) -> None:
    import receiver

    body = json.dumps(
        {
            "object": "link",
            "entry": [
                {"time": 1, "changes": [{"field": "preview", "value": {"link": pattern_url}}]}
            ],
        }
    ).encode()
    config = base_config(redis_url=redis_url, handlers=["handlers.link_preview"])
    client = receiver.create_app(config, router=receiver.Router()).test_client()
    answer = post(client, body)
    assert answer["data"][0]["link"] == pattern_url
    assert answer["data"][0]["title"] == "On call guide"
    assert post(client, REQUEST) == {"data": []}  # not our domain
