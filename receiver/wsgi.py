"""The callback adapter: WSGI in, ``core.handle``, WSGI out. Nothing else.

It sits in front of the Flask app and answers the callback paths itself:
Flask's request context, routing and response objects cost more CPU per
request than verifying, parsing and routing a delivery (measured with
``bench/http_bench.py``), and the core needs none of them. Every other
path (``/healthz``, unknown URLs) goes on to Flask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from . import marking
from .core import Core, Request

log = logging.getLogger("receiver.web")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_INTERNAL_ERROR = b'{"error":"internal_error","message":"the receiver failed; see its log"}'


class EnvironHeaders(Mapping[str, str]):
    """Request headers read straight from the WSGI environ, case-insensitively, no copying."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        upper = name.upper().replace("-", "_")
        return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{upper}"

    def __getitem__(self, name: str) -> str:
        return str(self._environ[self._key(name)])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._environ

    def get(self, name: str, default: Any = None) -> Any:
        return self._environ.get(self._key(name), default)

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


_REPLAY_KEY = EnvironHeaders._key(marking.HEADER)


def route(path: str) -> tuple[str | None, str | None] | None:
    """``(integration, topic)`` for a callback path, ``None`` for any other path."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] != "" or any(p == "" for p in parts[1:]):
        return None
    if parts[1] == "webhook" and len(parts) <= 3:
        return None, (parts[2] if len(parts) == 3 else None)
    if parts[1] == "webhooks" and 3 <= len(parts) <= 4:
        return parts[2], (parts[3] if len(parts) == 4 else None)
    return None


class CallbackMiddleware:
    def __init__(self, app: WSGIApp, core: Core) -> None:
        self.app = app
        self.core = core

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = route(environ.get("PATH_INFO", ""))
        if target is None:
            return self.app(environ, start_response)
        try:
            result = self.core.handle(self._request(environ, *target))
        except Exception:
            log.exception("unexpected error answering %s", environ.get("PATH_INFO"))
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [_INTERNAL_ERROR]
        headers = [("Content-Type", result.content_type), ("Content-Length", str(len(result.body)))]
        headers.extend(result.headers.items())
        status = HTTPStatus(result.status)
        start_response(f"{status.value} {status.phrase}", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [result.body]

    def _request(
        self, environ: dict[str, Any], integration: str | None, topic: str | None
    ) -> Request:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        limit = self.core.settings.max_body_bytes
        body, too_large = b"", False
        if method == "POST":
            body, too_large = _read_body(environ, limit)
        query = (
            dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
            if method in ("GET", "HEAD")
            else {}
        )
        return Request(
            method=method,
            body=body,
            headers=EnvironHeaders(environ),
            query=query,
            integration=integration,
            topic=topic,
            body_too_large=too_large,
            path=environ.get("PATH_INFO", ""),
            replay_token=environ.get(_REPLAY_KEY),
        )


def _read_body(environ: Mapping[str, Any], limit: int) -> tuple[bytes, bool]:
    """The body, read up to one byte past ``limit`` however the client framed it."""
    stream = environ["wsgi.input"]
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return b"", True
    if length < 0 and not environ.get("wsgi.input_terminated"):
        return b"", False  # no length and no end marker: nothing can be read safely
    wanted = limit + 1 if length < 0 else length
    chunks: list[bytes] = []
    total = 0
    while total < wanted:
        chunk = stream.read(wanted - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    body = b"".join(chunks)
    return body, len(body) > limit
