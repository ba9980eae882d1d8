"""Two shortcuts the callback adapter takes when gunicorn serves it, and only then.

Under a live gunicorn worker the receiver cost more per request than in-process
(callgrind, one gevent worker, ``bench/worker_probe.py``): reading the body
through a per-read socket timeout and the read watchdog, and an answer sent in
two ``send`` calls kept in one TCP segment by ``TCP_CORK``, were system calls
and Python bare Flask never pays. Both shortcuts rely on how gunicorn 27 keeps a
request and a response; each checks the exact types it knows and answers
``None`` / ``False`` for anything else (another server, a gunicorn that changed),
and the adapter then takes its general path, as before.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from gunicorn import util
from gunicorn.http.body import Body, LengthReader
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


def send_whole(start_response: Callable[..., Any], body: bytes) -> bool:
    """Send the started answer's status line, headers and ``body`` in one ``sendall``.

    ``start_response`` must be gunicorn's own (its response, not a wrapper's): the
    bytes are what gunicorn's ``send_headers`` and ``write`` would send, in one
    system call rather than two, and its response is left as they leave it (headers
    sent, ``sent`` counted for the access log), so gunicorn sends nothing more for
    the empty iterable the adapter then returns. The first lines are
    ``Response.default_headers``' for such an answer (no upgrade, not chunked), with
    the Date of the current second made once a second rather than every request
    (``util.http_date``: ≈ 26,500 instructions under callgrind). Under gevent this was two
    ``sendall`` (each a ``getsockopt`` and a ``sendto``) plus two ``setsockopt`` for
    ``TCP_CORK``. ``False`` when it does not apply: another server, a wrapped
    ``start_response``, an answer without a body or framed otherwise than by the
    Content-Length it declares.
    """
    response: Any = getattr(start_response, "__self__", None)
    if (
        type(response) is not Response
        or response.headers_sent
        or response.chunked
        or response.upgrade
        or response.response_length != len(body)
        or getattr(response, "_omits_body", True)
    ):
        return False
    major, minor = response.req.version
    connection = "close" if response.should_close() else "keep-alive"
    lines = [
        f"HTTP/{major}.{minor} {response.status}\r\nServer: {response.version}\r\n"
        f"Date: {_http_date()}\r\nConnection: {connection}\r\n",
        *[f"{name}: {value}\r\n" for name, value in response.headers],
        "\r\n",
    ]
    response.sock.sendall("".join(lines).encode("latin-1") + body)
    response.headers_sent = True
    response.sent = len(body)
    return True


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
