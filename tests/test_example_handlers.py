"""The shipped example handlers, tested the way a handler author would: with the pytest plugin."""

from __future__ import annotations

import logging

import pytest

from receiver import testing


@pytest.fixture
def receiver_handlers() -> list[str]:
    return ["handlers.log_events", "handlers.link_preview", "handlers.welcome"]


def test_log_events_logs_every_event(
    receiver_client: testing.SignedClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="handlers.log_events"):
        assert receiver_client.deliver(testing.group_comment(message="hi")).status_code == 200
    assert "group.comments verb=add" in caplog.text


def test_link_preview_answers_our_links(receiver_client: testing.SignedClient) -> None:
    answer = receiver_client.deliver(
        testing.link_preview("https://docs.example.com/on-call")
    ).get_json()
    assert answer["data"][0]["title"] == "On call"
    assert receiver_client.deliver(testing.link_preview("https://elsewhere.org/x")).get_json() == {
        "data": []
    }


def test_welcome_runs_in_background_for_joins_only(
    receiver_client: testing.SignedClient, receiver_recorder: testing.Recorder
) -> None:
    receiver_client.deliver(testing.group_membership(verb="add", member={"id": "7", "name": "Bo"}))
    receiver_client.deliver(testing.group_membership(verb="remove"))
    [call] = receiver_recorder.calls("welcome_new_member")
    assert call.ok and call.event_id == receiver_recorder.events[0].id


def test_handshake_with_the_test_token(receiver_client: testing.SignedClient) -> None:
    assert receiver_client.handshake(challenge="42").get_data(as_text=True) == "42"


@pytest.mark.parametrize("name", sorted(testing.load_payloads("tests/payloads")))
def test_every_sample_is_accepted(receiver_client: testing.SignedClient, name: str) -> None:
    body = testing.load_payloads("tests/payloads")[name]
    expected = 422 if "__response_" in name else 200
    assert receiver_client.deliver(body).status_code == expected
