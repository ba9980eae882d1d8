"""The callback adapter's gunicorn shortcuts (``receiver.web.gunicorn_io``) change no byte.

Each request goes through gunicorn's own parser, environ, response and write loop
(``base_async.handle_request``'s), on a stand-in socket that records what is sent:
what leaves with the shortcuts is compared with what leaves with them turned off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import Router, create_app
from receiver.core.signature import signature_headers
from receiver.web import callback, gunicorn_io
from receiver.web.gunicorn_io import answer_whole, buffered_body
from tests.conftest import SECRET, TOKEN, base_config, envelope

CLIENT = ("127.0.0.1", 5555)
SERVER = ("127.0.0.1", "8000")


class Wire:
    """gunicorn's client socket as its response and the adapter use it: what was sent."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(util, "http_date", lambda *_: "Mon, 07 Dec 2026 12:00:00 GMT")
    monkeypatch.setattr(gunicorn_io, "_date", (0, ""))


@pytest.fixture(scope="module")
def app() -> Flask:
    router = Router()
    router.connect("*", lambda event: None)
    return create_app(base_config(), router=router)


def parser(*chunks: bytes) -> Iterator[Any]:
    return iter(RequestParser(Config(), list(chunks), CLIENT))


def serve(app: Flask, requests: Iterator[Any]) -> tuple[list[bytes], Any]:
    """The next request, served as gunicorn's gevent worker does: (sends, gunicorn's response)."""
    wire = Wire()
    response, environ = wsgi.create(next(requests), wire, CLIENT, SERVER, Config())
    answer = app(environ, response.start_response)
    try:
        for item in answer:
            response.write(item)
        response.close()
    finally:
        if hasattr(answer, "close"):
            answer.close()
    return wire.sends, response


def without_shortcuts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback, "buffered_body", lambda stream, length: None)
    monkeypatch.setattr(callback, "answer_whole", lambda *args: False)


def delivery(message: str) -> bytes:
    change = {"field": "comments", "value": {"message": message, "comment_id": "1"}}
    return envelope("group", change, id="1001", time=1700000000)


def post(body: bytes, *, secret: str = SECRET, version: str = "1.1", extra: str = "") -> bytes:
    headers = "".join(f"{k}: {v}\r\n" for k, v in signature_headers(body, secret).items())
    return (
        f"POST /webhook HTTP/{version}\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n{headers}{extra}\r\n"
    ).encode() + body


def test_a_delivery_answer_leaves_in_one_send_with_gunicorns_bytes(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = post(delivery("hi"))
    sends, response = serve(app, parser(raw))
    assert len(sends) == 1 and response.status_code == 200
    assert response.sent == len(sends[0].partition(b"\r\n\r\n")[2])
    without_shortcuts(monkeypatch)
    before, _ = serve(app, parser(raw))
    assert len(before) == 2
    assert normalised(b"".join(before)) == normalised(sends[0])


def normalised(wire: bytes) -> bytes:
    """The answer with its random delivery id (JSON bodies only) taken out."""
    head, _, body = wire.partition(b"\r\n\r\n")
    try:
        document = json.loads(body)
    except ValueError:
        return wire
    if isinstance(document, dict) and "delivery_id" in document:
        document["delivery_id"] = "-"
        body = json.dumps(document).encode()
        head = b"\r\n".join(
            line for line in head.split(b"\r\n") if not line.startswith(b"Content-Length")
        )
    return head + b"\r\n\r\n" + body


requests = st.one_of(
    st.builds(
        lambda m, v: post(delivery(m), version=v),
        st.text(max_size=40),
        st.sampled_from(["1.0", "1.1"]),
    ),
    st.builds(lambda m: post(delivery(m), secret="wrong"), st.text(max_size=20)),
    st.builds(lambda b: post(b), st.binary(max_size=64)),
    st.builds(lambda m: post(delivery(m), extra="Connection: close\r\n"), st.text(max_size=10)),
    st.just(post(delivery("x")).replace(b"POST", b"HEAD", 1)),
    st.just(
        f"GET /webhook?hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=42 "
        "HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    ),
    st.just(b"GET /webhook?hub.mode=subscribe HTTP/1.1\r\nHost: x\r\n\r\n"),
    st.just(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
    st.just(b"PUT /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),  # 405, Allow
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=requests, split=st.booleans())
def test_the_shortcuts_send_what_gunicorn_would(app: Flask, raw: bytes, split: bool) -> None:
    """Any request, its body with the headers or after them: the same answer, byte for byte."""
    head, _, body = raw.partition(b"\r\n\r\n")
    chunks = [head + b"\r\n\r\n", body] if split and body else [raw]
    with_them, response = serve(app, parser(*chunks))
    with pytest.MonkeyPatch.context() as monkeypatch:
        without_shortcuts(monkeypatch)
        plain, plain_response = serve(app, parser(*chunks))
    assert normalised(b"".join(with_them)) == normalised(b"".join(plain))
    kept = ("status", "status_code", "response_length", "chunked", "sent", "must_close")
    assert [getattr(response, k) for k in kept] == [getattr(plain_response, k) for k in kept]
    assert response.headers_sent and plain_response.headers_sent
    assert [n for n, _ in response.headers] == [n for n, _ in plain_response.headers]


def test_a_pipelined_request_after_a_buffered_body_is_parsed_whole(app: Flask) -> None:
    """gunicorn's parser is left where its own reads would leave it: the next request's
    body (its signature checked) is read whole from the same buffer."""
    requests = parser(post(delivery("one")) + post(delivery("two")))
    assert [serve(app, requests)[1].status_code for _ in range(2)] == [200, 200]


def test_buffered_body_takes_only_what_gunicorn_already_holds() -> None:
    body = delivery("held")
    whole = next(parser(post(body)))
    assert buffered_body(whole.body, len(body)) == body
    late = next(parser(post(body)[: -len(body)], body))
    assert buffered_body(late.body, len(body)) is None  # still in the socket: the deadline path
    assert late.body.read(len(body)) == body
    head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = next(parser(head + b"2\r\n{}\r\n0\r\n\r\n"))
    assert buffered_body(chunked.body, 2) is None
    assert buffered_body(object(), 0) is None


def test_answer_whole_leaves_to_gunicorn_what_it_cannot_vouch_for() -> None:
    """Nothing sent and the response not started: gunicorn's own path answers instead."""
    headers = [("Content-Type", "application/json"), ("Content-Length", "2")]
    assert answer_whole(lambda status, headers: None, "200 OK", headers, b"{}") is False
    for raw, status, extra in [
        (post(b"{}").replace(b"POST", b"HEAD", 1), "200 OK", []),  # headers only
        (post(b"{}"), "204 No Content", []),
        (post(b"{}"), "200 OK", [("X-Note", " padded")]),  # gunicorn would strip it
        (post(b"{}"), "200 OK", [("X-Note", "tab\there")]),
        (post(b"{}"), "200 OK", [("Bad Name", "x")]),
        (post(b"{}"), "200 OK", [("Connection", "close")]),  # hop-by-hop: gunicorn's own
        (post(b"{}"), "200 OK", [("content-length", "2")]),
    ]:
        wire = Wire()
        response = wsgi.Response(next(parser(raw)), wire, Config())
        assert answer_whole(response.start_response, status, headers + extra, b"{}") is False
        assert wire.sends == [] and response.status is None
    response = wsgi.Response(next(parser(post(b"{}"))), Wire(), Config())
    wrong_length = [("Content-Type", "application/json"), ("Content-Length", "3")]
    assert answer_whole(response.start_response, "200 OK", wrong_length, b"{}") is False


def test_the_date_is_gunicorns_made_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # gunicorn's own http_date, no cached date
    made: list[float] = []
    real = util.http_date
    monkeypatch.setattr(util, "http_date", lambda now: made.append(now) or real(now))
    clock = iter([1_800_000_000.1, 1_800_000_000.9, 1_800_000_001.0])
    monkeypatch.setattr(gunicorn_io.time, "time", lambda: next(clock))
    dates = [gunicorn_io._http_date() for _ in range(3)]
    assert dates == [real(1_800_000_000.1)] * 2 + [real(1_800_000_001.0)]
    assert dates[0] == "Fri, 15 Jan 2027 08:00:00 GMT" and len(made) == 2


# --- the adapter's per-request lookups, shortened: the same answers ----------------------------


@given(st.lists(st.sampled_from(["", "webhook", "webhooks", "x", "/"]), max_size=5))
def test_route_shortcut_agrees_with_the_split(pieces: list[str]) -> None:
    path = "/".join(pieces)
    assert callback.route(path) == callback._route_by_parts(path)
    assert callback.route("/webhook") == callback._route_by_parts("/webhook") == (None, None)
