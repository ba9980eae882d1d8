"""Defences that need no server: log escaping, secret masking, origin checks, internal errors.

The same defences are attacked over raw sockets through gunicorn in
``test_hostile_clients.py``.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from receiver import ConfigError, Event, Router, create_app
from receiver.observe.capture import capture_files, read_captures
from receiver.observe.logsafe import SafeFormatter, escape, mask_query_string
from receiver.routing.contracts import Work
from receiver.settings.loading import load_settings
from tests.conftest import SECRET, TOKEN, base_config, payload, signed
from tests.processes import wait_until

META_CN = "client.webhooks.fbclientcerts.com"


# --- log lines a client cannot forge -----------------------------------------------------------


@contextmanager
def alone(name: str, handler: logging.Handler, fmt: str) -> Iterator[logging.Logger]:
    """A logger at INFO whose only output is ``handler`` (formatted by ``fmt``)."""
    handler.setFormatter(SafeFormatter(fmt))
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def test_the_direct_log_line_is_the_record_path_s_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """``logsafe.emit`` writes the request line itself where it can: the same escaped text."""
    from receiver.observe import logsafe

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    args = ("delivery", "path='/w?access_token=abc&q=1' x='\n[x] forged\x1b[31m'")
    fmt = "[%(process)d] [%(levelname)s] %(name)s: %(message)s"
    with alone("receiver.test-direct-line", handler, fmt) as logger:
        assert logsafe._write_line(logger, logging.INFO, "%s %s", args)  # the direct path
        direct = stream.getvalue()
        stream.truncate(0)
        stream.seek(0)
        monkeypatch.setattr(logsafe, "_write_line", lambda *_: False)
        logsafe.emit(logger, logging.INFO, "%s %s", args, {"kind": "delivery"})
        assert direct == stream.getvalue()
        assert "abc" not in direct and direct.count("\n") == 1 and "\x1b" not in direct


def test_the_request_line_s_text_is_pinned() -> None:
    """The per-request line's bytes: operators' parsers read them (fields in this order)."""
    from receiver.core.handling import _log_answer
    from receiver.model import envelope
    from receiver.routing.contracts import Request, Result

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("receiver")
    logger.addHandler(handler)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    body = payload("group__comments__add.json")
    events = envelope.parse(body, delivery_id="a" * 32, integration="default", max_depth=64)
    delivered = Result(status=200, body=b"{}", events=events, delivery_id="a" * 32, queued=1)
    refused = Result(status=401, body=b"{}", error="bad_signature", reason="mismatch\x1b")
    delivered.seconds = refused.seconds = 0.0012345
    try:
        _log_answer(Request("POST", path="/webhook"), delivered)
        _log_answer(Request("GET", integration="x\u2028", path="/webhook"), refused)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    assert stream.getvalue() == (
        "INFO receiver: delivery method='POST' delivery_id='aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' "
        "integration='default' status=200 duration_ms=1.23 events={'group.comments': 1} "
        "queued=1\n"
        "INFO receiver: request method='GET' delivery_id=None integration='x\\u2028' status=401 "
        "duration_ms=1.23 error='bad_signature' reason='mismatch\\x1b'\n"
    )


def test_the_request_line_s_text_is_its_fields(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The line's text is written out by hand (cheaper than joining its fields): it must say
    what the fields handed to JSON logging say, field for field, whatever the result holds."""
    from receiver.core import handling
    from receiver.model import envelope
    from receiver.routing.contracts import Request, Result

    caplog.set_level(logging.INFO, logger="receiver")
    emitted: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(
        handling.logsafe,
        "emit",
        lambda _log, _level, _msg, args, fields: emitted.append((args, fields)),
    )
    body = payload("group__comments__add.json")
    events = envelope.parse(body, delivery_id="d" * 32, integration="default", max_depth=64)
    results = [
        Result(status=200, body=b"{}", events=events, delivery_id="d" * 32, queued=1),
        Result(status=401, body=b"{}", error="bad_signature", reason="mismatch"),
        Result(status=202, body=b"{}", events=events, delivery_id="e" * 32, error="x", reason="y"),
    ]
    for method, result in zip(["POST", "GET", "POST"], results, strict=True):
        handling._log_answer(Request(method, path="/webhook"), result)
    assert len(emitted) == 3
    for (kind, text), fields in emitted:
        assert kind == fields["kind"]
        assert text == " ".join(f"{k}={v!r}" for k, v in fields.items() if k != "kind")


def test_printable_text_holds_nothing_escape_would_change() -> None:
    """``escape`` returns printable text as it is: true only while every character its
    pattern replaces is unprintable, checked here over all of Unicode."""
    import sys

    from receiver.observe.logsafe import _CONTROL

    printable = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isprintable())
    assert len(printable) > 100_000
    assert _CONTROL.search(printable) is None


def test_request_lines_leave_together_and_in_order_with_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The web process's handler: request lines wait for the batch, any other line writes
    it at once, then itself."""
    from receiver.observe import logsafe

    monkeypatch.setattr(logsafe, "FLUSH_SECONDS", 0.05)
    stream = io.StringIO()
    handler = logsafe.BatchedStreamHandler(stream)
    with alone("receiver.test-batched", handler, "[%(levelname)s] %(message)s") as logger:
        assert logsafe._write_line(logger, logging.INFO, "%s %s", ("delivery", "n=1"))
        logsafe.emit(logger, logging.INFO, "%s %s", ("delivery", "n=2\n[x]"), {})
        assert stream.getvalue() == ""  # held in memory: no write per request
        logger.info("then another line")
        assert stream.getvalue() == (
            "[INFO] delivery n=1\n[INFO] delivery n=2\\n[x]\n[INFO] then another line\n"
        )
        logsafe.emit(logger, logging.INFO, "%s %s", ("delivery", "n=3"), {})
        wait_until(lambda: stream.getvalue().endswith("n=3\n"), what="the background flush")
        logsafe.emit(logger, logging.INFO, "%s %s", ("delivery", "n=4"), {})
        handler.flush()  # what logging.shutdown does at exit
        assert stream.getvalue().endswith("[INFO] delivery n=3\n[INFO] delivery n=4\n")


def formatted(*args: Any, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("[%(levelname)s] %(message)s"))
    logger = logging.getLogger("tests.logsafe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc is None:
            logger.warning(*args)
        else:
            try:
                raise exc
            except BaseException:
                logger.exception(*args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_control_characters_are_escaped() -> None:
    assert escape("a\nb\r\tc\x1b[2J\x00\x7f\x85\u2028") == r"a\nb\r\tc\x1b[2J\x00\x7f\x85\u2028"
    assert escape("plain text, é, ✓") == "plain text, é, ✓"
    assert escape("a\u202eb\u200bc\ufeffd\u2066e") == r"a\u202eb\u200bc\ufeffd\u2066e"


def test_a_message_is_one_line_whatever_its_arguments_hold() -> None:
    out = formatted("rejected %s", "x\n[CRITICAL] forged \x1b[31m")
    assert out == "[WARNING] rejected x\\n[CRITICAL] forged \\x1b[31m\n"


def test_the_development_server_start_up_text_keeps_its_lines() -> None:
    """werkzeug's own banner (no arguments) reads as lines; its request lines stay escaped."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("[%(name)s] %(message)s"))
    record = logging.makeLogRecord(
        {"name": "werkzeug", "msg": "WARNING: development server.\n * Running on http://x"}
    )
    request = logging.makeLogRecord(
        {"name": "werkzeug", "msg": '"%s" %s', "args": ("GET /x\n[CRITICAL] forged", 404)}
    )
    handler.handle(record)
    handler.handle(request)
    assert stream.getvalue().split("\n") == [
        "[werkzeug] WARNING: development server.",
        "  |  * Running on http://x",
        '[werkzeug] "GET /x\\n[CRITICAL] forged" 404',
        "",
    ]


def test_a_traceback_is_indented_and_its_messages_escaped() -> None:
    out = formatted("handler failed", exc=ValueError("boom\n[CRITICAL] forged"))
    first, *rest = out.rstrip("\n").split("\n")
    assert first == "[ERROR] handler failed"
    assert rest[0] == "  | Traceback (most recent call last):"
    assert all(line.startswith("  | ") for line in rest)
    assert rest[-1] == "  | ValueError: boom\\n[CRITICAL] forged"


@pytest.mark.parametrize(
    ("query", "masked"),
    [
        ("hub.mode=subscribe&hub.verify_token=s3cret&hub.challenge=1",
         "hub.mode=subscribe&hub.verify_token=***&hub.challenge=1"),
        ("verify_token=a&x=1", "verify_token=***&x=1"),
        ("hub%2Everify%5Ftoken=a", "hub%2Everify%5Ftoken=***"),
        ("HUB.VERIFY_TOKEN2=a", "HUB.VERIFY_TOKEN2=***"),
        ("hub.challenge=verify_token", "hub.challenge=verify_token"),
        ("a=1&b=2", "a=1&b=2"),
        ("hub.mode=subscribe;hub.verify_token=tok;hub.challenge=1",
         "hub.mode=subscribe;hub.verify_token=***;hub.challenge=1"),
    ],
)  # fmt: skip
def test_verify_tokens_are_masked_in_query_strings(query: str, masked: str) -> None:
    assert mask_query_string(query) == masked


@pytest.mark.parametrize("before", ["'", '"', "<", ">", "#", "x='y'", "%27", "q=a<b>c"])
def test_a_quote_or_bracket_earlier_in_the_query_does_not_end_the_masking(before: str) -> None:
    # The development server logs the request line with %27, %22, %3C... decoded: a
    # perfectly encoded ``?q=it%27s&access_token=...`` reaches the log as ``q=it's&...``.
    line = f'"GET /metrics?{before}&access_token=tok-after-quote&page=2 HTTP/1.1" 200 -'
    text = formatted("%s", line)
    assert "tok-after-quote" not in text
    assert "access_token=***&page=2 HTTP/1.1" in text
    # A URL quoted in running text keeps its closing quote.
    assert formatted("see '%s'", "/x?token=abc") == "[WARNING] see '/x?token=***'\n"


# --- captures ----------------------------------------------------------------------------------


class BrokenBackend:
    """A backend with a bug (not an outage): the core must still answer, and capture it."""

    connection = None
    started = True

    def submit(self, delivery_id: str, work: Work) -> str:
        raise RuntimeError("a bug in the backend")


def capturing_app(tmp_path: Path, router: Router, **kwargs: Any) -> Flask:
    config = base_config(capture_dir=str(tmp_path / "captures"))
    config["integrations"]["default"]["capture"] = True
    return create_app(config, router=router, **kwargs)


def test_an_unexpected_failure_is_answered_json_and_captured(
    tmp_path: Path, router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    router.connect("*", lambda event: None, background=True)
    app = capturing_app(tmp_path, router, backend=BrokenBackend())
    body = payload("group__comments__add.json")
    response = app.test_client().post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_error",
        "message": "the receiver failed; see its log",
    }
    [(_, record)] = list(read_captures(capture_files(tmp_path / "captures")))
    assert (record["status"], record["error"]) == (500, "internal_error")
    assert "RuntimeError: a bug in the backend" in caplog.text


def test_captures_mask_every_verify_token_key(tmp_path: Path, router: Router) -> None:
    app = capturing_app(tmp_path, router)
    app.test_client().get(
        "/webhook",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": TOKEN,
            "verify_token": TOKEN,
            "hub.challenge": "c",
        },
    )
    [(_, record)] = list(read_captures(capture_files(tmp_path / "captures")))
    assert record["query"]["hub.verify_token"] == record["query"]["verify_token"] == "***"
    assert all(TOKEN not in p.read_text() for p in capture_files(tmp_path / "captures"))


# --- mutual TLS: the proxy's verified client certificate ---------------------------------------


@pytest.fixture
def cert_app(router: Router, seen: list[Event]) -> Flask:
    return create_app(base_config(client_cert_header="X-Client-Subject"), router=router)


@pytest.mark.parametrize(
    ("subject", "status", "error"),
    [
        (None, 403, "client_cert_required"),
        ("", 403, "client_cert_required"),
        (f"CN={META_CN},O=Meta Platforms\\, Inc.,L=Menlo Park,C=US", 200, None),  # nginx
        (f"/C=US/O=Meta Platforms, Inc./CN={META_CN}", 200, None),  # openssl one-line
        (f'By=spiffe://x;Hash=ab;Subject="CN={META_CN},O=Meta";URI=', 200, None),  # Envoy XFCC
        (META_CN, 200, None),  # the bare name
        ("CN=evil.example.com,O=Meta Platforms", 403, "bad_client_cert"),
        (f"CN={META_CN}.evil.example.com", 403, "bad_client_cert"),
        (f"CN=evil.example.com,OU={META_CN}", 403, "bad_client_cert"),
        # Found by attacking the first version: Meta's CN inside another attribute's value.
        (f"CN=evil.example,O=Evil/CN={META_CN},C=US", 403, "bad_client_cert"),
        (f"CN=evil.com,O=x\\, CN={META_CN}", 403, "bad_client_cert"),
        (f"CN=evil.example,L=Menlo Park;CN={META_CN}", 403, "bad_client_cert"),
        (f'CN=evil.example,OU="x,CN={META_CN}"', 403, "bad_client_cert"),
        (f"CN=evil.com+CN={META_CN}", 403, "bad_client_cert"),
        (f'By=x;Subject="CN=evil,O=a\\, CN={META_CN}";URI=', 403, "bad_client_cert"),
    ],
)
def test_client_certificate_subject(
    cert_app: Flask, seen: list[Event], subject: str | None, status: int, error: str | None
) -> None:
    body = payload("group__comments__add.json")
    headers = signed(body)
    if subject is not None:
        headers["X-Client-Subject"] = subject
    response = cert_app.test_client().post("/webhook", data=body, headers=headers)
    assert response.status_code == status
    assert response.get_json().get("error") == error
    assert len(seen) == (1 if status == 200 else 0)


def test_client_certificate_is_not_asked_of_the_handshake(cert_app: Flask) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"}
    assert cert_app.test_client().get("/webhook", query_string=query).status_code == 200


# --- allowed networks --------------------------------------------------------------------------


def fenced_app(router: Router, trusted_proxies: int = 0) -> Flask:
    config = base_config(trusted_proxies=trusted_proxies)
    config["integrations"]["default"]["allowed_networks"] = ["10.0.0.0/8", "2001:db8::/32"]
    return create_app(config, router=router)


def deliver_from(app: Flask, remote: str, forwarded: str | None = None) -> tuple[int, Any]:
    body = payload("group__comments__add.json")
    headers = signed(body)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    response = app.test_client().post(
        "/webhook", data=body, headers=headers, environ_base={"REMOTE_ADDR": remote}
    )
    return response.status_code, response.get_json().get("error")


def test_allowed_networks_without_proxies(router: Router, seen: list[Event]) -> None:
    app = fenced_app(router)
    assert deliver_from(app, "10.1.2.3") == (200, None)
    assert deliver_from(app, "2001:db8::1") == (200, None)
    assert deliver_from(app, "192.0.2.1") == (403, "network_not_allowed")
    # Without trusted proxies, X-Forwarded-For is the client's own word: ignored.
    assert deliver_from(app, "192.0.2.1", forwarded="10.1.2.3") == (403, "network_not_allowed")
    assert len(seen) == 2


def test_allowed_networks_behind_one_trusted_proxy(router: Router, seen: list[Event]) -> None:
    app = fenced_app(router, trusted_proxies=1)
    assert deliver_from(app, "192.0.2.254", forwarded="10.9.9.9") == (200, None)
    # A client forging a first hop: the proxy appends the real address, which decides.
    assert deliver_from(app, "192.0.2.254", forwarded="10.9.9.9, 198.51.100.7") == (
        403,
        "network_not_allowed",
    )
    # No hop at all: the request did not come through the proxy.
    assert deliver_from(app, "192.0.2.254") == (403, "network_not_allowed")
    assert deliver_from(app, "192.0.2.254", forwarded="not-an-ip") == (403, "network_not_allowed")
    assert len(seen) == 1


def test_allowed_networks_apply_to_the_handshake_too(router: Router) -> None:
    query = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"}
    client = fenced_app(router).test_client()
    outside = client.get("/webhook", query_string=query, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    inside = client.get("/webhook", query_string=query, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert (outside.status_code, inside.status_code) == (403, 200)


def test_bad_network_settings_stop_start_up() -> None:
    config = base_config()
    config["integrations"]["default"]["allowed_networks"] = ["10.0.0.0/33"]
    with pytest.raises(ConfigError, match="allowed_networks.*CIDR"):
        load_settings(config, environ={})
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(base_config(trusted_proxies=-1), environ={})
    settings = load_settings(
        base_config(),
        environ={
            "RECEIVER_ALLOWED_NETWORKS": "10.0.0.0/8, 192.0.2.0/24",
            "RECEIVER_APP_SECRET": SECRET,
            "RECEIVER_VERIFY_TOKEN": TOKEN,
        },
    )
    default = settings.integration(None)
    assert default is not None and [str(n) for n in default.allowed_networks] == [
        "10.0.0.0/8",
        "192.0.2.0/24",
    ]


# --- shapes a signed body may still get wrong -------------------------------------------------


def test_changed_fields_must_name_fields(router: Router) -> None:
    app = create_app(base_config(), router=router)
    body = b'{"object":"user","entry":[{"id":"1","changed_fields":["status",1,null]}]}'
    response = app.test_client().post("/webhook", data=body, headers=signed(body))
    assert (response.status_code, response.get_json()["error"]) == (422, "bad_change")


def test_the_welcome_example_ignores_a_member_that_is_not_an_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from handlers.welcome import welcome_new_member
    from receiver import testing

    body = testing.group_membership(member="notadict")
    event = Event(
        topic="group",
        field="membership",
        value=body["entry"][0]["changes"][0]["value"],
        id="e",
        delivery_id="d",
        integration="default",
        entry_id="1001",
    )
    caplog.set_level("INFO")
    assert welcome_new_member(event) is None
    assert "would welcome None in group 1001" in caplog.text


# --- reading a body: pieces and a total deadline (pure logic, a stand-in stream) ---------------


class Trickle:
    """A body stream that returns at most ``step`` bytes per call, ``delay`` seconds apart."""

    def __init__(self, size: int, step: int, delay: float = 0.0) -> None:
        self.left, self.step, self.delay = size, step, delay
        self.asked: list[int] = []

    def read(self, size: int) -> bytes:
        self.asked.append(size)
        time.sleep(self.delay)
        given = min(size, self.step, self.left)
        self.left -= given
        return b"x" * given


def test_bodies_are_read_in_bounded_pieces() -> None:
    from receiver.web.callback import _PIECE, _read_within

    stream = Trickle(size=100_000, step=100_000)
    body = _read_within(stream, 100_000, None, time.monotonic() + 10)
    assert len(body) == 100_000
    assert max(stream.asked) <= _PIECE and len(stream.asked) == -(-100_000 // _PIECE)


def test_the_read_deadline_is_total_not_per_read() -> None:
    from receiver.web.callback import _read_within

    stream = Trickle(size=1000, step=1, delay=0.05)  # every read succeeds, slowly
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        _read_within(stream, 1000, None, started + 0.3)
    assert time.monotonic() - started < 5  # generous
