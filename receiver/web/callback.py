"""The callback adapter: WSGI in, ``core.handle``, WSGI out. Nothing else.

It sits in front of the Flask app and answers the callback paths itself:
Flask's request context, routing and response objects cost more CPU per
request than verifying, parsing and routing a delivery (measured with
``bench/http_bench.py``), and the core needs none of them. Every other
path (``/healthz``, the dashboard, unknown URLs) goes on to Flask.

The body is read only once the core has admitted the request, within
``read_timeout`` in all: a client that stalls mid-body, or breaks its
chunked framing, gets a 408 or 400 from here and never a 500. Bodies
sent to the other paths are read here too, under the same deadline and
``OTHER_BODY_LIMIT``, before Flask parses them from memory.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from receiver.core.handling import INTERNAL_ERROR, Core, Request, Result, rejection
from receiver.errors import PayloadRejected
from receiver.model import replay_mark
from receiver.web.deadline import WATCHDOG
from receiver.web.gunicorn_io import answer_whole, buffered_body

log = logging.getLogger("receiver.web")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# After these the rest of the body cannot be trusted to arrive: hang up, do not drain it.
_UNREADABLE_BODY = frozenset({"body_timeout", "bad_framing"})
# A refused body of up to this many bytes is read and dropped before hanging up, so
# the client, still sending, gets to read the answer rather than a TCP reset.
_LINGER_BYTES = 8 * 1024 * 1024
_LINGER_SECONDS = 1.0
_PIECE = 4 * 1024
"""Bytes read per call: bounds the CPU one read can spend parsing a client's framing."""
OTHER_BODY_LIMIT = 1024 * 1024
"""Bodies the dashboard and other non-callback paths accept: their forms are small."""


class EnvironHeaders(Mapping[str, str]):
    """Request headers read straight from the WSGI environ, case-insensitively, no copying."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = _KEYS.get(name)
        if key is None:
            upper = name.upper().replace("-", "_")
            key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{upper}"
            if len(_KEYS) < _KEYS_KEPT:
                _KEYS[name] = key
        return key

    def __getitem__(self, name: str) -> str:
        return str(self._environ[self._key(name)])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._environ

    def get(self, name: str, default: Any = None) -> Any:
        return self._environ.get(_KEYS.get(name) or self._key(name), default)  # kept: no call

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


_KEYS: dict[str, str] = {}
"""Header name to environ key, as ``_key`` derived it: the core asks for the same few."""
_KEYS_KEPT = 256
_REPLAY_KEY = EnvironHeaders._key(replay_mark.HEADER)


def route(path: str) -> tuple[str | None, str | None] | None:
    """``(integration, topic)`` for a callback path, ``None`` for any other path."""
    if path == "/webhook":  # the default integration's URL: most deliveries
        return _DEFAULT_TARGET
    return _route_by_parts(path)


def _route_by_parts(path: str) -> tuple[str | None, str | None] | None:
    """``route``'s general reading, without its shortcut."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != "" or any(p == "" for p in parts[1:]):
        return None
    if parts[1] == "webhook" and len(parts) <= 3:
        return None, (parts[2] if len(parts) == 3 else None)
    if parts[1] == "webhooks" and 3 <= len(parts) <= 4:
        return parts[2], (parts[3] if len(parts) == 4 else None)
    return None


_DEFAULT_TARGET: tuple[str | None, str | None] = (None, None)


class CallbackMiddleware:
    def __init__(self, app: WSGIApp, core: Core) -> None:
        self.app = app
        self.core = core

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = route(environ.get("PATH_INFO", ""))
        if target is None:
            refused = self._buffer_body(environ)
            if refused is None:
                return self.app(environ, start_response)
            return _answer(environ, start_response, refused, _client_socket(environ),
                           body_unread=True)
        sock = _client_socket(environ)  # once: the body's reader and the answer both need it
        try:
            request = self._request(environ, sock, *target)
            result = self.core.handle(request)
        except Exception:
            log.exception("unexpected error answering %r", environ.get("PATH_INFO"))
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [INTERNAL_ERROR]
        # Refused with the body unread: too large, or refused before it was read.
        unread = result.error == "body_too_large" or request.body_source is not None
        return _answer(environ, start_response, result, sock, body_unread=unread)

    def _buffer_body(self, environ: dict[str, Any]) -> Result | None:
        """Read a non-callback request's body into memory, or the refusal to answer."""
        if not _announces_body(environ):
            return None
        timeout = self.core.settings.read_timeout
        try:
            body, too_large = _read_body(
                environ, _client_socket(environ), timeout, OTHER_BODY_LIMIT
            )
        except PayloadRejected as exc:
            return rejection(exc)
        if too_large:
            log.info("body sent to %r over %d bytes; refused", environ.get("PATH_INFO"),
                     OTHER_BODY_LIMIT)
            return rejection(PayloadRejected(
                f"this path takes bodies of at most {OTHER_BODY_LIMIT} bytes",
                code="body_too_large",
                status=413,
            ))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return None

    def _request(
        self,
        environ: dict[str, Any],
        sock: socket.socket | None,
        integration: str | None,
        topic: str | None,
    ) -> Request:
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "POST":  # deliveries: no conversions to make
            method = str(method).upper()
        timeout = self.core.settings.read_timeout
        query = (
            dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
            if method in ("GET", "HEAD")
            else {}
        )
        # Every field by position, in the dataclass's order: with nine keywords its
        # ``__init__`` took ≈ 4k instructions more (callgrind).
        return Request(
            method,
            b"",  # body: read from body_source once admitted
            EnvironHeaders(environ),
            query,
            integration,
            topic,
            False,  # body_too_large
            environ.get("PATH_INFO", ""),
            environ.get(_REPLAY_KEY),  # replay_token
            False,  # replayed
            partial(_read_body, environ, sock, timeout) if method == "POST" else None,
            environ.get("REMOTE_ADDR"),
        )


def _answer(
    environ: Mapping[str, Any],
    start_response: StartResponse,
    result: Result,
    sock: socket.socket | None,
    *,
    body_unread: bool,
) -> Iterable[bytes]:
    """The answer to ``start_response``; the body, with ``sock`` (``_client_socket``'s) to
    hang up after it or to cork it."""
    headers = [("Content-Type", result.content_type), ("Content-Length", str(len(result.body)))]
    if result.headers:  # deliveries' answers have none
        headers.extend(result.headers.items())
    line = _STATUS_LINES.get(result.status)
    if line is None:
        status = HTTPStatus(result.status)
        line = f"{status.value} {status.phrase}"
    hang_up = body_unread or result.error in _UNREADABLE_BODY
    if not hang_up and answer_whole(start_response, line, headers, result.body):
        return []
    start_response(line, headers)
    body = [] if environ.get("REQUEST_METHOD") == "HEAD" else [result.body]
    if result.error in _UNREADABLE_BODY:
        return _HangUpAfter(body, sock)
    if body_unread:
        return _HangUpAfter(body, sock, linger=_unread_size(environ))
    if sock is None or not _CORK:
        return body
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
    except OSError:
        return body
    return _Uncork(body, sock)


_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_CORK: int = getattr(socket, "TCP_CORK", 0)
"""Linux: hold partial segments until uncorked. 0 elsewhere: no coalescing, as before."""


class _Uncork(list[bytes]):
    """The answer's body; the socket is corked until the server has written all of it.

    Under gunicorn the answer leaves in one ``sendall`` instead (``answer_whole``); this
    is for other servers (the development server) and answers that cannot.

    gunicorn sends the status line and headers, then the body, in two ``send``
    calls: two TCP segments, each costing the kernel a full trip through the
    network stack (on loopback, the receiving side's too, in the sender's
    system call). In py-spy samples of a gevent worker under ``wrk`` load that
    header ``send`` was 46 % of the worker's time for inline deliveries. Corked,
    headers and body leave as one segment when ``close`` uncorks (gunicorn closes
    the iterable after writing it; the kernel sends a forgotten cork after 200 ms).
    """

    def __init__(self, body: list[bytes], sock: socket.socket) -> None:
        super().__init__(body)
        self._sock = sock

    def close(self) -> None:
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)
        except OSError:
            pass  # the client went away: nothing is waiting to be sent


def _announces_body(environ: Mapping[str, Any]) -> bool:
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) != 0
    except ValueError:
        return True  # let the reader refuse it as bad framing


def _read_body(
    environ: Mapping[str, Any], sock: socket.socket | None, timeout: float, limit: int
) -> tuple[bytes, bool]:
    """The body, read up to one byte past ``limit`` however the client framed it.

    ``sock``: ``_client_socket(environ)``. ``limit`` last: ``partial(_read_body, environ,
    sock, timeout)`` is a request's body source (a lambda around it cost a Python frame
    more per delivery).

    Whatever the server raises while reading is the client's doing (its framing,
    its silence); it becomes a 400 or 408 ``PayloadRejected``.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return b"", True
    if length < 0 and not environ.get("wsgi.input_terminated"):
        return b"", False  # no length and no end marker: nothing can be read safely
    wanted = limit + 1 if length < 0 else length
    stream = environ["wsgi.input"]
    try:
        body = buffered_body(stream, length) if length >= 0 else None
        if body is None:
            body = _read_within(stream, wanted, sock, time.monotonic() + timeout)
    except TimeoutError:
        log.info("body of %r not received within %.0fs; refused", environ.get("PATH_INFO"), timeout)
        raise PayloadRejected(
            f"the body did not arrive within read_timeout ({timeout:g} s)",
            code="body_timeout",
            status=408,
        ) from None
    except Exception as exc:  # the server's parser refused the client's framing
        log.info("bad body framing on %r: %s", environ.get("PATH_INFO"), type(exc).__name__)
        raise PayloadRejected(
            f"the body's framing is broken ({type(exc).__name__}); send Content-Length, "
            "or valid chunked encoding",
            code="bad_framing",
        ) from None
    if 0 <= length and len(body) < length:
        raise PayloadRejected(
            f"the body ended after {len(body)} of the {length} bytes Content-Length announced",
            code="bad_framing",
        )
    return body, len(body) > limit


def _unread_size(environ: Mapping[str, Any]) -> int:
    """How much of a refused body to read and drop before hanging up (0: none, hang up)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        return 0
    if length < 0:
        return _LINGER_BYTES if environ.get("wsgi.input_terminated") else 0
    return length if length <= _LINGER_BYTES else 0


def _client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """Where servers expose the client socket, so a read can be given a deadline."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        return sock
    sock = environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def _read_within(stream: Any, wanted: int, sock: socket.socket | None, deadline: float) -> bytes:
    """Up to ``wanted`` bytes by ``deadline``, in pieces, letting other requests run between.

    Each ``recv`` is bounded by the time left (a stalled client), the whole read
    by the watchdog (a trickling one); pieces keep a client whose chunked
    framing costs much CPU per byte from holding a gevent worker for long.
    """
    previous = sock.gettimeout() if sock is not None else None
    watch = WATCHDOG.watch(sock, deadline) if sock is not None else None
    chunks: list[bytes] = []
    total = 0
    try:
        while total < wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if sock is not None:
                sock.settimeout(left)
            try:
                chunk = stream.read(min(_PIECE, wanted - total))
            except Exception:
                if time.monotonic() >= deadline:
                    raise TimeoutError from None  # the watchdog hung up
                raise
            if not chunk:
                if time.monotonic() >= deadline:
                    raise TimeoutError
                break
            chunks.append(chunk)
            total += len(chunk)
            if total < wanted:
                time.sleep(0)  # a yield under gevent; a GIL release with threads
    finally:
        if watch is not None:
            WATCHDOG.cancel(watch)
        if sock is not None:
            sock.settimeout(previous)
    return b"".join(chunks)


class _HangUpAfter(list[bytes]):
    """The answer's body; once the server has sent it, the connection is shut both ways.

    The server would otherwise wait for the rest of a stalled or broken body
    before closing. With ``linger``, what the client is still sending (up to
    that many bytes, for a second) is read and dropped first: closing on unread
    data resets the connection, and the client could lose the answer.
    """

    def __init__(self, body: list[bytes], sock: socket.socket | None, linger: int = 0) -> None:
        super().__init__(body)
        self._sock = sock
        self._linger = linger

    def close(self) -> None:
        # The answer is sent by now (servers close the iterable after writing it).
        if self._sock is None:
            return
        try:
            if self._linger:
                _discard(self._sock, self._linger, time.monotonic() + _LINGER_SECONDS)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _discard(sock: socket.socket, most: int, deadline: float) -> None:
    previous = sock.gettimeout()
    try:
        while most > 0 and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(min(most, 65536))
            except TimeoutError:
                return  # the client stopped sending: hang up now
            if not chunk:
                return
            most -= len(chunk)
    finally:
        sock.settimeout(previous)
