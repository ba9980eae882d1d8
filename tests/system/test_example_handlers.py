"""The shipped example handlers, tested the way a handler author would: with the pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from receiver import graph, testing
from receiver.core.signature import appsecret_proof
from receiver.routing.handlers import default_router
from tests.fakegraph import FakeGraph
from tests.integration.test_example_handlers import GRAPH_TOKEN

pytestmark = pytest.mark.redis  # the worker and its Redis are servers of its own


@pytest.fixture
def receiver_handlers() -> list[str]:
    return ["handlers.log_events", "handlers.link_preview", "handlers.welcome"]


# --- the examples that call the Graph API, against a fake Graph server on loopback ---


@pytest.fixture
def fake_graph(httpserver: HTTPServer) -> Iterator[FakeGraph]:
    yield FakeGraph(httpserver, GRAPH_TOKEN, testing.TEST_SECRET)
    graph.close_all()


class TestInARealWorker:
    """The welcome handler in a real ``receiver worker`` process, calling the fake Graph."""

    @pytest.fixture
    def receiver_background(self) -> str:
        return "worker"

    @pytest.fixture
    def receiver_handlers(self) -> list[str]:
        return ["handlers.welcome"]

    @pytest.fixture(autouse=True)
    def only_these_handlers(self, receiver_handlers: list[str]) -> Iterator[None]:
        """Earlier tests in this process left handlers on the default router that the
        worker would not load; set them aside so only the examples' events are queued."""
        with default_router.set_aside(lambda h: h.func.__module__ not in receiver_handlers):
            yield

    @pytest.mark.slow
    def test_the_worker_posts_the_welcome_with_proof(
        self,
        receiver_client: testing.SignedClient,
        fake_graph: FakeGraph,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("RECEIVER_ACCESS_TOKEN", GRAPH_TOKEN)
        monkeypatch.setenv("RECEIVER_GRAPH_URL", fake_graph.url)
        fake_graph.answer("POST", "/v23.0/1001/feed", {"id": "1001_78"})
        response = receiver_client.deliver(testing.group_membership(verb="add"))
        assert response.status_code == 200 and response.get_json()["queued"] == 1
        [call] = fake_graph.calls
        assert call.form == {"message": "Welcome to the group, Ada!"}
        assert call.args["appsecret_proof"] == appsecret_proof(GRAPH_TOKEN, testing.TEST_SECRET)
