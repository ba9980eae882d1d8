"""The Graph API client against a fake Graph server on loopback: proof, retries, pages, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from receiver import graph
from receiver.core.signature import appsecret_proof
from receiver.errors import (
    ConfigError,
    GraphAuthError,
    GraphError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
    ReceiverError,
)
from receiver.graph.calls import AsyncGraphClient, GraphClient, GraphConfig
from receiver.graph.ratelimit import RetryPolicy
from receiver.model.events import Event, use_graph
from receiver.settings import active as runtime
from receiver.settings.loading import load_settings
from receiver.settings.model import Integration
from receiver.testing import free_port
from tests.fakegraph import Answer, FakeGraph, graph_error
from tests.unit.test_graph import SECRET

TOKEN = "EAAG-test-access-token"
OLD_SECRET = "older-app-secret"


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeGraph:
    return FakeGraph(httpserver, TOKEN, SECRET)


class Sleeps(list[float]):
    """An injectable sleep that records the waits instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(fake: FakeGraph, sleeps: Sleeps, **policy: Any) -> GraphClient:
    integration = Integration(
        name="hr-bot",
        app_secrets=(SECRET, OLD_SECRET),
        access_token=TOKEN,
        graph_base_url=fake.url,
    )
    config = GraphConfig.for_integration(integration)
    config = GraphConfig(
        access_token=config.access_token,
        app_secret=config.app_secret,
        base_url=config.base_url,
        policy=RetryPolicy(**{"backoff": 0.01, **policy}),
        integration="hr-bot",
    )
    return GraphClient(config, sleep=sleeps)


@pytest.fixture
def client(fake: FakeGraph, sleeps: Sleeps) -> Iterator[GraphClient]:
    with make_client(fake, sleeps) as c:
        yield c


def test_every_call_carries_the_newest_secrets_proof_and_the_token_in_a_header(
    fake: FakeGraph, client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.answer("GET", "/v23.0/me", {"id": "42", "name": "Bot"})
    fake.answer("POST", "/v23.0/1001_2/comments", {"id": "1001_2_9"})
    with caplog.at_level(logging.DEBUG):
        assert client.get("/me") == {"id": "42", "name": "Bot"}
        assert client.comment("1001_2", "Thanks!") == {"id": "1001_2_9"}
    for call in fake.calls:
        assert call.args["appsecret_proof"] == appsecret_proof(TOKEN, SECRET)
        assert call.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "access_token" not in call.args
    assert fake.calls[1].form == {"message": "Thanks!"}
    assert "/v23.0/me" in caplog.text  # httpx logged the requests...
    assert TOKEN not in caplog.text  # ...without the token


def test_the_fake_refuses_a_wrong_proof_and_the_client_says_how_to_fix_it(
    httpserver: HTTPServer, sleeps: Sleeps
) -> None:
    fake = FakeGraph(httpserver, TOKEN, "the-secret-graph-expects")
    fake.answer("GET", "/v23.0/me", {"id": "42"})
    with make_client(fake, sleeps) as client, pytest.raises(GraphAuthError) as caught:
        client.get("/me")
    assert caught.value.code == 100 and "appsecret_proof" in str(caught.value)
    assert len(fake.calls) == 1 and sleeps == []


def test_throttling_errors_are_retried_with_backoff_then_succeed(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.answer(
        "GET",
        "/v23.0/1001/members",
        graph_error(4, "Application request limit reached"),
        graph_error(17, "User request limit reached"),
        graph_error(80001, "There have been too many calls to this Page account"),
        Answer(200, {"data": []}),
    )
    assert client.get("/1001/members") == {"data": []}
    assert len(fake.calls) == 4
    policy = client.config.policy
    sleeps = fake_sleeps(client)
    assert len(sleeps) == 3
    for attempt, waited in enumerate(sleeps, start=1):
        ceiling = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
        assert ceiling / 2 <= waited <= ceiling  # equal jitter: half fixed, half random


def fake_sleeps(client: GraphClient) -> Sleeps:
    sleep = client._sleep
    assert isinstance(sleep, Sleeps)
    return sleep


def test_retry_after_is_a_lower_bound_on_the_wait(fake: FakeGraph, client: GraphClient) -> None:
    fake.answer(
        "POST",
        "/v23.0/1001/feed",
        graph_error(613, "Calls to this api have exceeded the rate limit", status=429,
                    headers={"Retry-After": "7"}),
        Answer(200, {"id": "1001_5"}),
    )
    assert client.post_to_group("1001", "hello") == {"id": "1001_5"}
    assert fake_sleeps(client) == [7.0]


def test_5xx_and_transient_errors_are_retried_until_the_retries_run_out(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.answer(
        "GET",
        "/v23.0/me",
        graph_error(2, "Service temporarily unavailable", status=503, type="FacebookApiException"),
    )
    with pytest.raises(GraphUnavailable) as caught:
        client.get("/me")
    retries = client.config.policy.retries
    assert len(fake.calls) == retries + 1 and len(fake_sleeps(client)) == retries
    assert caught.value.status == 503 and caught.value.code == 2
    assert isinstance(caught.value, GraphError) and isinstance(caught.value, ReceiverError)


def test_a_permanent_400_is_raised_at_once_with_grahps_fields(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.answer(
        "GET",
        "/v23.0/nope",
        graph_error(
            100,
            "Unsupported get request. Object with ID 'nope' does not exist",
            subcode=33,
            type="GraphMethodException",
            fbtrace_id="A1b2C3",
        ),
        Answer(200, {"never": "reached"}),
    )
    with pytest.raises(GraphRequestError) as caught:
        client.get("/nope")
    error = caught.value
    assert (error.status, error.code, error.error_subcode) == (400, 100, 33)
    assert (error.type, error.fbtrace_id) == ("GraphMethodException", "A1b2C3")
    assert (error.method, error.path) == ("GET", "/v23.0/nope")
    assert len(fake.calls) == 1 and fake_sleeps(client) == []


def test_an_expired_token_is_an_auth_error_and_not_retried(
    fake: FakeGraph, client: GraphClient
) -> None:
    fake.answer("GET", "/v23.0/me", graph_error(190, "Error validating access token", subcode=463))
    with pytest.raises(GraphAuthError) as caught:
        client.get("/me")
    assert caught.value.error_subcode == 463 and "access_token" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(fake.calls) == 1


def test_a_graph_error_echoing_the_token_is_scrubbed_in_every_line_and_field(
    fake: FakeGraph, client: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy (or a broken Graph) echoing the token or proof: the retry lines carry neither."""
    proof = appsecret_proof(TOKEN, SECRET)
    fake.answer(
        "GET",
        "/v23.0/me",
        graph_error(
            2,
            f"upstream said: Bearer {TOKEN} proof={proof}",
            status=503,
            fbtrace_id=f"trace-{TOKEN}-{proof}",
        ),
    )
    caplog.set_level(logging.WARNING, logger="receiver.graph")
    with pytest.raises(GraphUnavailable) as caught:
        client.get("/me")
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == client.config.policy.retries
    error = caught.value
    shown = [caplog.text, str(error), error.message, str(error.fbtrace_id)]
    for text in shown:
        assert TOKEN not in text and proof not in text and SECRET not in text
    assert error.fbtrace_id == "trace-***-***" and "upstream said: Bearer ***" in error.message


@pytest.mark.parametrize(
    ("helper", "bad"),
    [
        ("post_to_group", "../../../x"),
        ("post_to_group", "1001/../../x"),
        ("comment", "123#fragment"),
        ("comment", "123?fields=access_token"),
        ("comment", "%2e%2e"),
        ("member", "7/feed"),
        ("member", ""),
    ],
)
def test_payload_ids_cannot_steer_a_helpers_path(
    fake: FakeGraph, client: GraphClient, helper: str, bad: str
) -> None:
    from receiver.errors import GraphBadId  # new: imported here so main's code fails the test

    call = getattr(client, helper)
    with pytest.raises(GraphBadId) as caught:
        call(bad) if helper == "member" else call(bad, "hello")
    assert isinstance(caught.value, GraphRequestError) and caught.value.value == bad
    assert "not a Graph id" in str(caught.value)
    assert fake.calls == []  # nothing was sent


def test_paths_built_from_payload_ids_cannot_climb_or_be_cut_short(
    fake: FakeGraph, client: GraphClient
) -> None:
    from receiver.errors import GraphBadId

    for path in ("/../../x/feed", "/1001/%2E%2E/x", "/1001#/feed", "/./me"):
        with pytest.raises(GraphBadId):
            client.post(path, {"message": "hi"})
    assert fake.calls == []
    fake.answer("POST", "/v23.0/1001_5_9/comments", {"id": "c"})  # post and comment ids pass
    assert client.comment("1001_5_9", "hi") == {"id": "c"}


def test_a_retry_after_longer_than_max_wait_raises_instead_of_holding_the_worker(
    fake: FakeGraph, sleeps: Sleeps
) -> None:
    fake.answer("GET", "/v23.0/me", graph_error(4, "limit", headers={"Retry-After": "600"}))
    with make_client(fake, sleeps, max_wait=60.0) as client, pytest.raises(GraphThrottled) as c:
        client.get("/me")
    assert c.value.retry_after == 600.0 and c.value.code == 4
    assert len(fake.calls) == 1 and sleeps == []


def test_usage_headers_pace_the_next_call(fake: FakeGraph, client: GraphClient) -> None:
    fake.answer(
        "GET",
        "/v23.0/me",
        Answer(200, {"id": "1"}, {"X-App-Usage": '{"call_count":90,"total_time":20}'}),
        Answer(200, {"id": "1"}),
    )
    client.get("/me")
    assert fake_sleeps(client) == []  # the first call had no usage to go by
    client.get("/me")
    [paused] = fake_sleeps(client)
    policy = client.config.policy
    expected = policy.pace * (90 - policy.slow_down_at) / (100 - policy.slow_down_at)
    assert paused == pytest.approx(expected, rel=0.05)


def test_business_use_case_usage_at_the_limit_stops_calls_until_access_returns(
    fake: FakeGraph, client: GraphClient
) -> None:
    header = '{"1001": [{"type": "pages", "call_count": 100, "total_cputime": 10, '
    header += '"total_time": 10, "estimated_time_to_regain_access": 5}]}'
    fake.answer("GET", "/v23.0/me", Answer(200, {"id": "1"}, {"X-Business-Use-Case-Usage": header}))
    client.get("/me")
    with pytest.raises(GraphThrottled) as caught:
        client.get("/me")  # 5 minutes to wait: over max_wait, so not sent at all
    assert caught.value.retry_after == pytest.approx(300, abs=2)
    assert len(fake.calls) == 1


def test_pagination_follows_cursors_and_never_forwards_a_token(
    fake: FakeGraph, client: GraphClient
) -> None:
    next_url = f"{fake.url}/v23.0/1001/feed?access_token=LEAKED&limit=2&after=CURSOR2"
    fake.answer(
        "GET",
        "/v23.0/1001/feed",
        {
            "data": [{"id": "p1"}, {"id": "p2"}],
            "paging": {"cursors": {"before": "C1", "after": "CURSOR2"}, "next": next_url},
        },
        {"data": [{"id": "p3"}], "paging": {"cursors": {"before": "CURSOR2", "after": "C3"}}},
    )
    items = client.paginate("/1001/feed", {"limit": 2})
    assert next(items) == {"id": "p1"}
    assert len(fake.calls) == 1  # lazy: the next page is fetched only when needed
    assert [i["id"] for i in items] == ["p2", "p3"]
    first, second = fake.calls
    assert first.args["limit"] == "2" and "after" not in first.args
    assert second.args["after"] == "CURSOR2" and "access_token" not in second.args


def test_helpers_send_workplace_shapes(fake: FakeGraph, client: GraphClient) -> None:
    fake.answer("POST", "/v23.0/me/messages", {"recipient_id": "7", "message_id": "m.1"})
    fake.answer("GET", "/v23.0/7", {"id": "7", "name": "Bo", "email": "bo@example.com"})
    fake.answer("DELETE", "/v23.0/1001_2", {"success": True})
    client.send_message("7", "hello")
    client.send_message(thread_key="t_99", message={"text": "hi all", "quick_replies": []})
    assert client.member("7", fields=("id", "name", "email"))["name"] == "Bo"
    assert client.delete("/1001_2") == {"success": True}
    one, group, member, _ = fake.calls
    assert one.json == {"recipient": {"id": "7"}, "message": {"text": "hello"}}
    assert group.json["recipient"] == {"thread_key": "t_99"}
    assert member.args["fields"] == "id,name,email"
    with pytest.raises(ValueError):
        client.send_message("7")


def test_a_server_that_is_not_there_is_unavailable_after_retries(sleeps: Sleeps) -> None:
    config = GraphConfig(
        access_token=TOKEN,
        app_secret=SECRET,
        base_url=f"http://127.0.0.1:{free_port()}",
        policy=RetryPolicy(retries=2, backoff=0.01),
        timeout=2.0,
    )
    with GraphClient(config, sleep=sleeps) as client, pytest.raises(GraphUnavailable) as caught:
        client.get("/me")
    assert len(sleeps) == 2 and caught.value.status == 0
    assert "graph_base_url" in str(caught.value)


def test_urls_are_refused_so_the_token_only_goes_to_graph(client: GraphClient) -> None:
    with pytest.raises(ValueError, match="Graph path"):
        client.get("https://attacker.example/collect")


def test_the_async_client_shares_the_configuration(fake: FakeGraph) -> None:
    fake.answer("GET", "/v23.0/me", graph_error(32, "Page request limit reached"), {"id": "42"})
    fake.answer(
        "GET",
        "/v23.0/1001/feed",
        {"data": [1, 2], "paging": {"next": f"{fake.url}/v23.0/1001/feed?after=X"}},
        {"data": [3]},
    )
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    config = GraphConfig(
        access_token=TOKEN, app_secret=SECRET, base_url=fake.url, policy=RetryPolicy(backoff=0.01)
    )

    async def main() -> tuple[Any, list[Any]]:
        async with AsyncGraphClient(config, sleep=sleep) as client:
            me = await client.get("/me")
            feed = [item async for item in client.paginate("/1001/feed")]
            return me, feed

    me, feed = asyncio.run(main())
    assert me == {"id": "42"} and feed == [1, 2, 3] and len(waits) == 1
    assert all(c.args["appsecret_proof"] == appsecret_proof(TOKEN, SECRET) for c in fake.calls)


def test_handlers_get_a_pooled_client_per_integration(fake: FakeGraph) -> None:
    def settings(token: str) -> Any:
        return load_settings(
            {
                "integrations": {
                    "hr-bot": {
                        "app_secrets": [SECRET],
                        "verify_token": "v",
                        "access_token": token,
                        "graph_base_url": fake.url,
                    }
                }
            },
            {},
        )

    event = Event("group", "comments", {}, "e1", "d1", "hr-bot")
    try:
        runtime.activate(settings(TOKEN))
        use_graph(graph.client)  # what the app does when it is built
        assert event.graph is graph.client("hr-bot") is graph.client("hr-bot")
        fake.answer("GET", "/v23.0/me", {"id": "42"})
        assert event.graph.get("/me") == {"id": "42"}
        first = event.graph
        runtime.activate(settings("rotated-token"))  # a new token: a new client
        assert event.graph is not first and event.graph.config.access_token == "rotated-token"
        with pytest.raises(ConfigError, match="no integration named 'other'"):
            graph.client("other")

        async def from_a_coroutine() -> Any:
            async with graph.async_client("hr-bot") as client:
                return await client.get("/me")

        fake.token = "rotated-token"  # Graph now knows only the new token
        assert asyncio.run(from_a_coroutine()) == {"id": "42"}
        assert fake.calls[-1].headers["Authorization"] == "Bearer rotated-token"
    finally:
        graph.close_all()
