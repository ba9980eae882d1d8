"""The shipped example handlers, tested the way a handler author would: with the pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from handlers import bot_reply, mention_ack, welcome
from receiver import graph, testing
from receiver.core.signature import appsecret_proof
from receiver.model import replay_mark
from tests.fakegraph import FakeGraph, graph_error


@pytest.fixture
def receiver_handlers() -> list[str]:
    return ["handlers.log_events", "handlers.link_preview", "handlers.welcome"]


# --- the examples that call the Graph API, against a fake Graph server on loopback ---

GRAPH_TOKEN = "EAAG-example-handlers-token"


@pytest.fixture
def fake_graph(httpserver: HTTPServer) -> Iterator[FakeGraph]:
    yield FakeGraph(httpserver, GRAPH_TOKEN, testing.TEST_SECRET)
    graph.close_all()


class TestCallingBack:
    """The integration has an access token and points at the fake Graph server."""

    @pytest.fixture
    def receiver_handlers(self) -> list[str]:
        return [
            "handlers.welcome",
            "handlers.bot_reply",
            "handlers.mention_ack",
            "handlers.link_preview",
        ]

    @pytest.fixture
    def receiver_config(
        self, receiver_handlers: list[str], tmp_path: Path, fake_graph: FakeGraph
    ) -> dict[str, Any]:
        return {
            "receiver": {
                "handlers": receiver_handlers,
                "data_dir": str(tmp_path / "receiver-data"),
                "graph_backoff": 0.001,
            },
            "integrations": {
                "default": {
                    "app_secrets": [testing.TEST_SECRET],
                    "verify_token": testing.TEST_TOKEN,
                    "access_token": GRAPH_TOKEN,
                    "graph_base_url": fake_graph.url,
                }
            },
        }

    def test_welcome_posts_in_the_group_with_proof(
        self,
        receiver_client: testing.SignedClient,
        receiver_recorder: testing.Recorder,
        fake_graph: FakeGraph,
    ) -> None:
        fake_graph.answer("POST", "/v23.0/1001/feed", {"id": "1001_77"})
        receiver_client.deliver(
            testing.group_membership(verb="add", member={"id": "7", "name": "Bo"})
        )
        [call] = fake_graph.calls
        assert call.form == {"message": "Welcome to the group, Bo!"}
        assert call.args["appsecret_proof"] == appsecret_proof(GRAPH_TOKEN, testing.TEST_SECRET)
        assert receiver_recorder.calls("welcome_new_member")[0].ok

    def test_welcome_comments_on_the_welcome_post_when_one_is_set(
        self,
        receiver_client: testing.SignedClient,
        fake_graph: FakeGraph,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(welcome, "WELCOME_POST_ID", "1001_5")
        fake_graph.answer("POST", "/v23.0/1001_5/comments", {"id": "1001_5_9"})
        receiver_client.deliver(testing.group_membership(verb="add"))
        assert [c.form for c in fake_graph.calls] == [{"message": "Welcome to the group, Ada!"}]

    def test_the_bot_answers_a_page_message_through_the_send_api(
        self, receiver_client: testing.SignedClient, fake_graph: FakeGraph
    ) -> None:
        fake_graph.answer("POST", "/v23.0/me/messages", {"recipient_id": "2001"})
        receiver_client.deliver(testing.page_message("ping"))
        [call] = fake_graph.calls
        assert call.json == {"recipient": {"id": "2001"}, "message": {"text": "pong"}}

    def test_a_throttled_reply_is_retried_and_lands(
        self,
        receiver_client: testing.SignedClient,
        receiver_recorder: testing.Recorder,
        fake_graph: FakeGraph,
    ) -> None:
        fake_graph.answer(
            "POST",
            "/v23.0/me/messages",
            graph_error(613, "Calls to this api have exceeded the rate limit"),
            {"recipient_id": "2001"},
        )
        receiver_client.deliver(testing.page_message("help"))
        assert len(fake_graph.calls) == 2
        assert fake_graph.calls[1].json["message"] == {"text": bot_reply.HELP}
        assert receiver_recorder.calls("reply_to_message")[0].ok

    def test_a_refused_reply_fails_the_handler_with_graphs_fields(
        self,
        receiver_client: testing.SignedClient,
        receiver_recorder: testing.Recorder,
        fake_graph: FakeGraph,
    ) -> None:
        fake_graph.answer(
            "POST",
            "/v23.0/me/messages",
            graph_error(100, "No matching user found", subcode=2018001),
        )
        assert receiver_client.deliver(testing.page_message("hi")).status_code == 200
        [call] = receiver_recorder.calls("reply_to_message")
        assert not call.ok and call.error is not None
        assert "GraphRequestError" in call.error and "No matching user found" in call.error
        assert "code 100, subcode 2018001" in call.error and GRAPH_TOKEN not in call.error
        assert len(fake_graph.calls) == 1  # a permanent 400 is not retried

    def test_a_mention_in_a_comment_is_acknowledged_under_that_comment(
        self, receiver_client: testing.SignedClient, fake_graph: FakeGraph
    ) -> None:
        fake_graph.answer("POST", "/v23.0/1001_4001_6001/comments", {"id": "c"})
        fake_graph.answer("POST", "/v23.0/1001_4001/comments", {"id": "c"})
        receiver_client.deliver(testing.page_mention(item="comment", comment_id="1001_4001_6001"))
        receiver_client.deliver(testing.page_mention())  # in the post itself
        assert [c.path for c in fake_graph.calls] == [
            "/v23.0/1001_4001_6001/comments",
            "/v23.0/1001_4001/comments",
        ]
        assert fake_graph.calls[0].form == {"message": mention_ack.MESSAGE}

    def test_ids_in_a_signed_payload_cannot_steer_the_call(
        self,
        receiver_client: testing.SignedClient,
        receiver_recorder: testing.Recorder,
        fake_graph: FakeGraph,
    ) -> None:
        receiver_client.deliver(testing.group_membership(group_id="../../../x"))
        receiver_client.deliver(testing.page_mention(post_id="1001_4001?fields=x"))
        receiver_client.deliver(testing.page_mention(post_id="1001_4001#x"))
        assert fake_graph.calls == []  # nothing was sent anywhere
        failures = receiver_recorder.calls("welcome_new_member") + receiver_recorder.calls(
            "acknowledge_mention"
        )
        assert len(failures) == 3 and not any(call.ok for call in failures)
        assert all("GraphBadId" in str(call.error) for call in failures)

    def test_replays_never_post(
        self, receiver_client: testing.SignedClient, fake_graph: FakeGraph
    ) -> None:
        replay = {replay_mark.HEADER: replay_mark.token(replay_mark.key_for(testing.TEST_SECRET))}
        receiver_client.deliver(testing.group_membership(verb="add"), headers=replay)
        receiver_client.deliver(testing.page_message("ping"), headers=replay)
        receiver_client.deliver(testing.page_mention(), headers=replay)
        assert fake_graph.calls == []
