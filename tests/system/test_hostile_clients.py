"""A hostile client against the Procfile's gunicorn, over raw sockets.

One real gunicorn (``receiver/deploy/gunicorn_config.py``, its own Redis) takes every
attack an outside client can make: broken chunked framing, smuggling,
size edges, odd methods and paths, handshake variants, log forging,
forged replay markers and stalled connections. Each case asserts the exact
status, never a 5xx, no traceback in the server's log, and a healthy server
afterwards.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.core.signature import signature_headers
from tests.conftest import SECRET, TOKEN, payload
from tests.processes import gunicorn_on_own_redis, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]  # starts servers of its own

LIMIT = 8192  # RECEIVER_MAX_BODY_BYTES for this server: size edges stay cheap


@dataclass
class Server:
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hostile")
    config = folder / "receiver.toml"
    config.write_text(
        "[integrations.fenced]\n"
        f'app_secrets = ["{SECRET}"]\n'
        f'verify_token = "{TOKEN}"\n'
        'allowed_networks = ["10.0.0.0/8"]\n'
    )
    with gunicorn_on_own_redis(folder, {
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_CONFIG": str(config),
        "RECEIVER_HANDLERS": "handlers.log_events,tests.plugins.hostile",
        "RECEIVER_MAX_BODY_BYTES": str(LIMIT),
        "RECEIVER_ACCESS_LOG": "1",
    }) as served:
        yield Server(int(served.url.rsplit(":", 1)[1]), served.log_path)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, str]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


def exchange(port: int, raw: bytes, *, half_close: bool = False, timeout: float = 10) -> Answer:
    """Send raw bytes and read the first answer (requests ask the server to close after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    """Read until one whole answer is in (its Content-Length), or the server closes."""
    data = b""
    while True:
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return parse_answer(data)


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Answer(status, headers, body)


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n\r\n".encode()


def post(headers: str, body: bytes = b"", target: str = "/webhook") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: receiver\r\nConnection: close\r\n{headers}\r\n".encode()
        + body
    )


def signed_post(body: bytes, target: str = "/webhook", extra: str = "") -> bytes:
    signature = signature_headers(body, SECRET)["X-Hub-Signature-256"]
    return post(
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Hub-Signature-256: {signature}\r\n{extra}",
        body,
        target,
    )


@pytest.fixture
def clean_log(server: Server) -> Iterator[None]:
    """The case's own log lines carry no traceback and no 5xx; the server still answers."""
    start = len(server.log())
    yield
    time.sleep(0.2)  # let the workers flush the case's lines
    written = server.log()[start:]
    assert "Traceback" not in written, written
    assert not re.search(r'" 5\d\d ', written), written  # access log: no 5xx answered
    assert exchange(server.port, get("/healthz")).status == 200


CHUNKED = "Transfer-Encoding: chunked\r\n"
BROKEN_CHUNKS = {
    "invalid chunk size": (b"zz\r\n{}\r\n0\r\n\r\n", False),
    "no CRLF after chunk data": (b"2\r\n{}XX0\r\n\r\n", False),
    "truncated chunk": (b"10\r\n{}", True),
    "9,000-byte chunk-size line": (b"1" * 9000, False),
    "bare LF in a trailer": (b"2\r\n{}\r\n0\r\nX-Trailer: a\nb\r\n\r\n", False),
    "40-hex-digit size, then half-close": (b"f" * 40 + b"\r\n{}", True),
}


@pytest.mark.parametrize("case", list(BROKEN_CHUNKS))
def test_broken_chunked_framing_is_a_400(server: Server, clean_log: None, case: str) -> None:
    body, half_close = BROKEN_CHUNKS[case]
    answer = exchange(server.port, post(CHUNKED, body), half_close=half_close)
    assert answer.status == 400
    assert answer.json()["error"] == "bad_framing"
    assert "bad body framing on '/webhook'" in server.log()


SMUGGLING = {
    "Content-Length with chunked": "Content-Length: 5\r\n" + CHUNKED,
    "Transfer-Encoding twice": CHUNKED + CHUNKED,
    "Transfer-Encoding identity": "Transfer-Encoding: identity\r\n",
    "negative Content-Length": "Content-Length: -1\r\n",
    "Content-Length not a number": "Content-Length: 12abc\r\n",
}


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_attempts_are_refused(server: Server, clean_log: None, case: str) -> None:
    answer = exchange(server.port, post(SMUGGLING[case], b"0\r\n\r\n"))
    assert answer.status == 400


def test_a_second_request_hidden_behind_content_length_is_refused_too(
    server: Server, clean_log: None
) -> None:
    hidden = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    raw = post("Content-Length: 2\r\nContent-Type: application/json\r\n", b"{}" + hidden)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert statuses[0] == 401  # the first request, unsigned; "Connection: close" ends the rest
    assert all(s < 500 for s in statuses)


def test_size_edges(server: Server, clean_log: None) -> None:
    at_limit = b"x" * LIMIT
    answer = exchange(server.port, signed_post(at_limit))
    assert (answer.status, answer.json()["error"]) == (400, "invalid_json")  # read, verified

    over = exchange(server.port, signed_post(at_limit + b"x"))
    assert (over.status, over.json()["error"]) == (413, "body_too_large")

    chunked_over = b"%x\r\n%s\r\n0\r\n\r\n" % (LIMIT + 1, at_limit + b"x")
    answer = exchange(server.port, post(CHUNKED, chunked_over))
    assert (answer.status, answer.json()["error"]) == (413, "body_too_large")

    lying = exchange(server.port, post("Content-Length: 100\r\n", b"{}"), half_close=True)
    assert (lying.status, lying.json()["error"]) == (400, "bad_framing")

    huge = exchange(server.port, post("Content-Length: 99999999999999999999\r\n"))
    assert (huge.status, huge.json()["error"]) == (413, "body_too_large")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_methods_other_than_get_and_post(server: Server, clean_log: None, method: str) -> None:
    raw = f"{method} /webhook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = exchange(server.port, raw)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/webhook/../webhook", 404),
        ("//webhook", 404),
        ("/webhook/", 404),
        ("/webhooks/%2e%2e", 404),
        ("/webhook%00", 404),
        ("/webhooks/nope", 404),
        ("/webhooks/" + "a" * 3000, 404),
    ],
)
def test_path_tricks(server: Server, clean_log: None, target: str, status: int) -> None:
    assert exchange(server.port, get(target)).status == status


def test_absolute_form_target_still_needs_a_signature(server: Server, clean_log: None) -> None:
    answer = exchange(server.port, post("Content-Length: 2\r\n", b"{}", "http://evil/webhook"))
    assert (answer.status, answer.json()["error"]) == (401, "missing_signature")


HANDSHAKES = {
    "no challenge": (f"hub.mode=subscribe&hub.verify_token={TOKEN}", 400),
    "wrong mode": (f"hub.mode=unsubscribe&hub.verify_token={TOKEN}&hub.challenge=1", 400),
    "wrong token": ("hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1", 403),
    "empty token": ("hub.mode=subscribe&hub.verify_token=&hub.challenge=1", 403),
    "token as a list": (
        f"hub.mode=subscribe&hub.verify_token=x&hub.verify_token[]={TOKEN}&hub.challenge=1",
        403,
    ),
    "non-UTF-8 escapes": ("hub.mode=subscribe&hub.verify_token=%ff%fe&hub.challenge=%ff", 403),
    "markup challenge": (
        f"hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=%3Cscript%3E",
        200,
    ),
}


@pytest.mark.parametrize("case", list(HANDSHAKES))
def test_handshake_variants(server: Server, clean_log: None, case: str) -> None:
    query, status = HANDSHAKES[case]
    answer = exchange(server.port, get(f"/webhook?{query}"))
    assert answer.status == status
    if status == 200:
        assert answer.body == b"<script>"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-type"].startswith("text/plain")


def test_access_log_masks_the_verify_token(server: Server, clean_log: None) -> None:
    query = f"hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=42"
    assert exchange(server.port, get(f"/webhook?{query}")).status == 200
    # gunicorn writes the access line after the answer has gone out: wait for it.
    log = wait_until(
        lambda: text if "hub.verify_token=***&hub.challenge=42" in (text := server.log()) else "",
        10,
        "the handshake's access log line",
    )
    assert TOKEN not in log


def test_log_forging_is_escaped(server: Server, clean_log: None) -> None:
    target = "/webhooks/x%0AINJECTED%20[CRITICAL]%20forged%1B[2J"
    answer = exchange(server.port, get(target))
    assert (answer.status, answer.json()["error"]) == (404, "unknown_integration")
    # The access line, written after the answer has gone out, and the request line (the
    # web process writes those in batches, within 0.5 s) must be in what is checked.
    escaped = r"x\nINJECTED [CRITICAL] forged\x1b[2J"
    log = wait_until(
        lambda: text
        if "GET /webhooks/x%0AINJECTED" in (text := server.log()) and escaped in text
        else "",
        10,
        "the access log line and the escaped request line",
    )
    assert not any(line.startswith("INJECTED") for line in log.splitlines())
    assert "\x1b" not in log


def test_a_handler_error_quoting_the_payload_stays_on_its_lines(server: Server) -> None:
    body = json.dumps(
        {
            "object": "hostile",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {"field": "echo", "value": {"message": "boom\n[CRITICAL] forged\x1b[31m"}}
                    ],
                }
            ],
        }
    ).encode()
    answer = exchange(server.port, signed_post(body))
    assert answer.status == 200  # a failing handler never changes the answer
    time.sleep(0.2)
    log = server.log()
    assert "handler tests.plugins.hostile:echo" in log
    assert r"boom\n[CRITICAL] forged\x1b[31m" in log
    assert not any(line.startswith("[CRITICAL] forged") for line in log.splitlines())
    assert "\x1b" not in log


def test_forged_replay_marker_is_ignored(server: Server, clean_log: None) -> None:
    body = payload("group__comments__add.json")
    answer = exchange(server.port, signed_post(body, extra="X-Receiver-Replay: forged.token\r\n"))
    assert answer.status == 200
    assert "handlers" not in answer.json()  # only genuine replays learn handler outcomes
    assert "replay marker does not verify" in server.log()


EXTREME_TIMES = [
    '"9999-12-31T23:59:59-01:00"',
    '"0001-01-01T00:00:00+01:00"',
    "1" * 400,
    "-" + "1" * 400,
    "1e400",  # valid JSON; a float reads it as infinity
    '"NaN"',
]


@pytest.mark.parametrize("value", EXTREME_TIMES)
def test_extreme_times_in_a_signed_body_are_routed(
    server: Server, clean_log: None, value: str
) -> None:
    template = (
        '{"object": "group", "entry": [{"id": "1", "time": T, "changes": [{"field": "posts", '
        '"value": {"verb": "add", "created_time": T, "post_id": "1_2"}}]}, '
        '{"id": "2", "time": 1, "messaging": [{"sender": {"id": "3"}, "timestamp": T, '
        '"message": {"mid": "m", "text": "hi"}}]}]}'
    )
    body = template.replace("T", value).encode()
    answer = exchange(server.port, signed_post(body))
    assert answer.status == 200, answer.body
    assert answer.json()["events"] == 2


def test_fenced_integration_refuses_before_reading_the_body(
    server: Server, clean_log: None
) -> None:
    """``allowed_networks`` answers 403 at once: the announced body is never waited for."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(post("Content-Length: 1000\r\n", b"{", "/webhooks/fenced"))
        started = time.monotonic()
        answer = read_answer(sock)
        waited = time.monotonic() - started
    assert (answer.status, answer.json()["error"]) == (403, "network_not_allowed")
    assert waited < 5  # generous: the read deadline is 15 s


def test_stalled_clients_do_not_hold_the_server(server: Server) -> None:
    """50 connections that stop mid-body (and 20 mid-headers) cost sockets, not the service."""
    start = len(server.log())
    stalled = []
    # Other paths' bodies (the dashboard's forms) are read under the same deadline.
    for target in ["/webhook"] * 40 + ["/admin/login"] * 5 + ["/healthz"] * 5:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode()
        )
        stalled.append(sock)
    trickling = []
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        trickling.append(sock)
    stop_trickle = threading.Event()

    def trickle() -> None:  # a byte every 2 s: each read succeeds, the body never ends
        while not stop_trickle.wait(2):
            for sock in trickling:
                try:
                    sock.sendall(b" ")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    half_headers = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Le")
        half_headers.append(sock)
    try:
        time.sleep(0.5)
        body = payload("group__comments__add.json")
        for raw in (get("/healthz"), signed_post(body)):
            started = time.monotonic()
            answer = exchange(server.port, raw, timeout=30)
            assert answer.status == 200
            assert time.monotonic() - started < 5  # generous; measured: milliseconds

        def outcome(sock: socket.socket) -> bytes:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(outcome, stalled + trickling))
            hung_up = list(pool.map(outcome, half_headers))
        for data in answers:  # read_timeout is a total bound: trickling does not extend it
            answer = parse_answer(data)
            assert (answer.status, answer.json()["error"]) == (408, "body_timeout")
        assert all(data == b"" for data in hung_up)  # gunicorn closes after keepalive
    finally:
        stop_trickle.set()
        for sock in stalled + trickling + half_headers:
            sock.close()
    assert exchange(server.port, get("/healthz")).status == 200
    assert "Traceback" not in server.log()[start:]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (post("Content-Length: 99999999999\r\n"), 413),
        (post("Content-Length: 100\r\n", b"x" * 10), 403),  # refused before the body is read
        (post(CHUNKED, b"zz\r\n"), 400),
        (post("Content-Length: 2000000\r\n", target="/admin/login"), 413),
    ],
    ids=["too large", "not allowed", "bad framing", "too large for a form"],
)
def test_refusals_with_the_body_unread_close_the_connection(
    server: Server, clean_log: None, raw: bytes, status: int
) -> None:
    """The client reads its answer, then the end of the connection: nothing waits on it."""
    target = "/webhooks/fenced" if status == 403 else "/webhook"
    raw = raw.replace(b"POST /webhook ", f"POST {target} ".encode()).replace(
        b"Connection: close", b"Connection: keep-alive"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = read_answer(sock)
        assert answer.status == status
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed, not kept alive for the rest of a body
        assert time.monotonic() - started < 3  # generous: it closes right after answering


def test_a_pipelining_client_takes_turns_with_the_others(tmp_path: Path) -> None:
    """A client whose next requests are always waiting cannot keep a gevent worker to itself.

    With one worker, a connection that sends 2,000 requests at once is served one
    request per turn: a second connection's request, sent once the first answers
    started coming, is answered before the pipelined ones are all done (the order
    is read from the access log, written as each request ends).
    """
    pipelined = 2000
    with gunicorn_on_own_redis(tmp_path, {
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_ACCESS_LOG": "1",
    }, workers=1) as served:
        port = int(served.url.rsplit(":", 1)[1])
        hog = socket.create_connection(("127.0.0.1", port), timeout=60)
        received = bytearray()

        def read_all() -> None:
            while received.count(b"HTTP/1.1 200") < pipelined:
                chunk = hog.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        try:
            hog.sendall(b"".join(
                f"GET /healthz?hog={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                for n in range(pipelined)
            ))
            wait_until(lambda: b"HTTP/1.1 200" in received, 30, "the first pipelined answer")
            assert exchange(port, get("/healthz?other=1")).status == 200
            reader.join(60)
        finally:
            hog.close()
        order = [
            line for line in served.log_lines() if "hog=" in line or "other=1" in line
        ]
        other = next(i for i, line in enumerate(order) if "other=1" in line)
        assert other < pipelined - 1, f"answered after all {pipelined} pipelined requests"
