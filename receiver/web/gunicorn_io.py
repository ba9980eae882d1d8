"""Two shortcuts the callback adapter takes when gunicorn serves it, and only then.

Under a live gunicorn worker the receiver cost more per request than in-process
(callgrind, one gevent worker, ``bench/worker_probe.py``): reading the body
through a per-read socket timeout and the read watchdog, and an answer sent in
two ``send`` calls kept in one TCP segment by ``TCP_CORK``, were system calls
and Python bare Flask never pays. ``answer_whole`` also skips two costs gunicorn
puts on every answer, bare Flask's included (its ``start_response`` checks and
the Date header's formatting). Both shortcuts rely on how gunicorn 27 keeps a
request and a response; each checks the exact types it knows and answers
``None`` / ``False`` for anything else (another server, a gunicorn that changed),
and the adapter then takes its general path, as before. ``tests/unit/test_gunicorn_io.py``
holds them to gunicorn's own bytes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.message import TOKEN_RE
from gunicorn.http.wsgi import Response


def buffered_body(stream: Any, length: int) -> bytes | None:
    """The whole body when gunicorn already holds all ``length`` bytes in memory, else ``None``.

    A small delivery usually arrives in the segment that carried its headers, and
    gunicorn's parser keeps what followed the headers. Reading it then touches no
    socket, so there is nothing for a read deadline to bound: no socket timeout
    set and restored, no watchdog entry (under gthread the timeout changes were two
    ``ioctl`` calls a request). A body not yet (all) there takes the deadline path.
    """
    if type(stream) is not Body or stream.buf.tell():
        return None
    reader = stream.reader
    if type(reader) is not LengthReader or reader.length != length:
        return None
    held = getattr(reader.unreader, "buf", None)
    if not isinstance(held, io.BytesIO) or held.seek(0, io.SEEK_END) < length:
        return None
    body: bytes = reader.read(length)  # Body.read would only copy it through one more buffer
    return body


def answer_whole(
    start_response: Callable[..., Any], status: str, headers: list[tuple[str, str]], body: bytes
) -> bool:
    """Start the answer and send its status line, headers and ``body`` in one ``sendall``.

    ``start_response`` must be gunicorn's own (its response, not a wrapper's), not yet
    called. The bytes are what gunicorn's ``start_response``, ``send_headers`` and
    ``write`` would send, in one system call rather than two (under gevent that was
    two ``sendall``, each a ``getsockopt`` and a ``sendto``, plus two ``setsockopt``
    for ``TCP_CORK``), and its response is left as they leave it (status, headers,
    length, ``sent`` for the access log), so it sends nothing more for the empty
    iterable the adapter then returns. Two of gunicorn's per-request costs are cut on
    the way: its ``start_response`` (≈ 34,000 instructions under callgrind: a pattern
    match per status and header, config lookups) is replaced by ``_plain``'s checks,
    which pass only what gunicorn accepts unchanged; and the Date header is made
    once a second (``util.http_date``: ≈ 26,500 instructions). ``False``, having done
    nothing, when it does not apply: another server, a wrapped or already called
    ``start_response``, HEAD, an answer without a body by its status, a header
    ``_plain`` does not pass, or a Content-Length other than the body's.
    """
    response: Any = getattr(start_response, "__self__", None)
    if type(response) is not Response or response.status is not None:
        return False
    code = int(status[:3])
    if (
        code < 200
        or code in (204, 304)
        or response.req.method == "HEAD"
        or status not in _STATUS_LINES
        or not _all_plain(headers, len(body))
    ):
        return False
    response.status, response.status_code = status, code
    response.headers = list(headers)
    response.response_length = len(body)
    response._omits_body = response.chunked = False
    major, minor = response.req.version
    connection = "close" if response.should_close() else "keep-alive"
    lines = [
        f"HTTP/{major}.{minor} {status}\r\nServer: {response.version}\r\n"
        f"Date: {_http_date()}\r\nConnection: {connection}\r\n",
        *[f"{name}: {value}\r\n" for name, value in response.headers],
        "\r\n",
    ]
    response.sock.sendall("".join(lines).encode("latin-1") + body)
    response.headers_sent = True
    response.sent = len(body)
    return True


_STATUS_LINES = frozenset(f"{s.value} {s.phrase}" for s in HTTPStatus)
"""Status lines gunicorn's pattern accepts: the adapter's, from ``http.HTTPStatus``."""
_PLAIN: set[tuple[str, str]] = set()
"""Headers (name, value) found plain once: the content types and the like, not lengths."""
_KNOWN_HEADERS = 256


def _all_plain(headers: list[tuple[str, str]], length: int) -> bool:
    for header in headers:
        if header in _PLAIN:
            continue
        name, value = header
        if name == "Content-Length":
            if value != str(length):
                return False
        elif not _plain(name, value):
            return False
        elif len(_PLAIN) < _KNOWN_HEADERS:
            _PLAIN.add(header)
    return True


def _plain(name: str, value: str) -> bool:
    """Whether gunicorn's ``process_headers`` would keep this header exactly as it is.

    The name matches its token pattern and is not one it drops or handles itself
    (hop-by-hop, Content-Length); the value is printable ASCII without surrounding
    spaces (which it would strip): a subset of what its value pattern takes. Any
    other header goes through gunicorn itself.
    """
    return (
        TOKEN_RE.fullmatch(name) is not None
        and not util.is_hoppish(name)
        and name.lower() != "content-length"
        and value.isascii()
        and value.isprintable()
        and value == value.strip(" ")
    )


_date: tuple[int, str] = (0, "")
"""The second and its HTTP date: one tuple, swapped whole, so threads never see half."""


def _http_date() -> str:
    """``gunicorn.util.http_date()``, worked out once a second."""
    global _date
    now = time.time()
    second, text = _date
    if int(now) != second:
        text = util.http_date(now)
        _date = (int(now), text)
    return text
