"""`receiver subscribe` against the fake Graph server; a real receiver answers the handshake."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug.serving import make_server

from receiver import create_app
from receiver.cli import main
from receiver.core.signature import appsecret_proof
from tests.conftest import SECRET, TOKEN, base_config
from tests.fakegraph import FakeGraph

APP_ID = "1234567890"
APP_TOKEN = f"{APP_ID}|{SECRET}"
PATH = f"/v23.0/{APP_ID}/subscriptions"


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeGraph:
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", TOKEN)
    monkeypatch.setenv("RECEIVER_APP_ID", APP_ID)
    monkeypatch.setenv("RECEIVER_GRAPH_URL", httpserver.url_for("/").rstrip("/"))
    return FakeGraph(httpserver, APP_TOKEN, SECRET)


@pytest.fixture
def callback_url(redis_url: str) -> Iterator[str]:
    """A real receiver over HTTP on loopback, as Meta would reach it."""
    server = make_server("127.0.0.1", 0, create_app(base_config(redis_url=redis_url)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/webhook"
    server.shutdown()
    server.server_close()
    thread.join(5)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["subscribe", *args])
    return result.exit_code, result.output


def test_dry_run_prints_the_request_and_sends_nothing(fake: FakeGraph) -> None:
    code, output = run(
        "--dry-run", "add", "page", "--fields", "messages,mention",
        "--callback-url", "https://receiver.example.com/webhook",
    )
    assert code == 0, output
    assert f"POST {fake.url}{PATH}?appsecret_proof=" in output
    assert "object=page&callback_url=https://receiver.example.com/webhook" in output
    assert "fields=messages,mention" in output and "verify_token=***" in output
    assert f"Authorization: Bearer {APP_ID}|***" in output
    assert SECRET not in output and TOKEN not in output
    assert fake.calls == []


def test_add_checks_the_handshake_then_subscribes(fake: FakeGraph, callback_url: str) -> None:
    fake.answer("POST", PATH, {"success": True})
    code, output = run(
        "add", "page", "--fields", "messages,mention", "--callback-url", callback_url
    )
    assert code == 0, output
    [call] = fake.calls
    assert call.form == {
        "object": "page",
        "callback_url": callback_url,
        "fields": "messages,mention",
        "verify_token": TOKEN,
        "include_values": "true",
    }
    assert "subscribed page" in output


def test_add_refuses_a_callback_that_fails_the_handshake(
    fake: FakeGraph, callback_url: str
) -> None:
    fake.answer("POST", PATH, {"success": True})
    code, output = run(
        "add", "page", "--fields", "messages", "--callback-url", callback_url,
        "--verify-token", "not-the-receivers-token",
    )
    assert code == 1
    assert "HTTP 403" in output and "verify token" in output
    assert fake.calls == []


def test_list_and_remove(fake: FakeGraph) -> None:
    fake.answer(
        "GET",
        PATH,
        {
            "data": [
                {
                    "object": "page",
                    "callback_url": "https://receiver.example.com/webhook",
                    "active": True,
                    "fields": [{"name": "messages", "version": "v23.0"}, {"name": "mention"}],
                }
            ]
        },
    )
    fake.answer("DELETE", PATH, {"success": True})
    code, output = run()
    assert code == 0, output
    assert "page    messages,mention  https://receiver.example.com/webhook  true" in output
    code, output = run("remove", "page", "--fields", "mention")
    assert code == 0, output
    delete = fake.calls_to("DELETE", PATH)[0]
    assert delete.args["object"] == "page" and delete.args["fields"] == "mention"


def test_without_app_id_it_says_what_to_set(
    fake: FakeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECEIVER_APP_ID")
    code, output = run("list")
    assert code == 1 and "RECEIVER_APP_ID" in output


def test_no_output_line_carries_the_proof_or_a_token(fake: FakeGraph) -> None:
    """httpx logs every request URL at INFO, ``appsecret_proof`` included: not in our output."""
    fake.answer("GET", PATH, {"data": []})
    result = CliRunner().invoke(main, ["--log-level", "INFO", "subscribe", "list"])
    assert result.exit_code == 0, result.output
    assert fake.calls  # the call was made, with its proof
    for secret in (appsecret_proof(APP_TOKEN, SECRET), SECRET, TOKEN):
        assert secret not in result.output
    dry = CliRunner().invoke(main, ["subscribe", "--dry-run", "list"])
    assert "?appsecret_proof=*** " in dry.output.replace("\n", " ")
    assert appsecret_proof(APP_TOKEN, SECRET) not in dry.output
