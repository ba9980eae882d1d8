"""The shipped example handlers, tested the way a handler author would: with the pytest plugin."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers import link_preview
from receiver import testing


@pytest.fixture
def receiver_handlers() -> list[str]:
    # Named here, not left to whichever test imported them first: alone, this file
    # would otherwise load no handler at all.
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


class TestAuthenticatedLinkPreview:
    DOCS = {
        "linked_users": ["2001", "2002"],
        "documents": {
            "https://docs.corp.example/roadmap": {
                "title": "Roadmap 2027",
                "description": "Plans",
                "viewers": ["2001"],
            },
            "https://docs.corp.example/handbook": {"title": "Handbook"},
        },
    }

    @pytest.fixture
    def receiver_handlers(self) -> list[str]:
        return ["handlers.link_preview"]

    @pytest.fixture(autouse=True)
    def documents(self, tmp_path: Path) -> Iterator[None]:
        path = tmp_path / "documents.json"
        path.write_text(json.dumps(self.DOCS))
        previous = link_preview.use(link_preview.JsonFileSource(path))
        yield
        link_preview.use(previous)

    def ask(self, client: testing.SignedClient, link: str, user: str) -> Any:
        return client.deliver(testing.link_preview(link, user={"id": user})).get_json()

    def test_a_viewer_gets_the_documents_card(self, receiver_client: testing.SignedClient) -> None:
        answer = self.ask(receiver_client, "https://docs.corp.example/roadmap", "2001")
        assert answer == {
            "data": [
                {
                    "link": "https://docs.corp.example/roadmap",
                    "title": "Roadmap 2027",
                    "description": "Plans",
                    "type": "DOCUMENT",
                    "privacy": "ORGANIZATION",
                }
            ],
            "linked_user": True,
        }

    def test_a_linked_user_who_may_not_see_it_gets_no_title(
        self, receiver_client: testing.SignedClient
    ) -> None:
        answer = self.ask(receiver_client, "https://docs.corp.example/roadmap", "2002")
        assert answer == {"data": [], "linked_user": True}
        open_doc = self.ask(receiver_client, "https://docs.corp.example/handbook", "2002")
        assert open_doc["data"][0]["title"] == "Handbook"

    def test_an_unlinked_user_is_offered_account_linking(
        self, receiver_client: testing.SignedClient
    ) -> None:
        answer = self.ask(receiver_client, "https://docs.corp.example/roadmap", "9999")
        assert answer == {"data": [], "linked_user": False}

    def test_links_the_source_does_not_own_get_no_answer(
        self, receiver_client: testing.SignedClient
    ) -> None:
        assert self.ask(receiver_client, "https://elsewhere.org/x", "2001") == {"data": []}
