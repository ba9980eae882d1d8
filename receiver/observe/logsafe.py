"""Log lines a client cannot forge and that carry no secret.

Paths, integration and topic names, header values and handler errors quoting
a payload all reach the log. A newline in any of them would start a forged
record, and a terminal escape would rewrite an operator's screen. Call sites
log request-controlled values with ``%r``; this formatter is the net under
them: the message is escaped whole, and a traceback's lines are indented so
that no line of it can pass for the start of a record. Query strings are
logged (and captured) with the value of every key that names a credential
masked: one rule (``is_secret_query_key``), applied to every URL in every
line (``mask_urls``: the development server's request lines, httpx's, an
error quoting a URL) and to gunicorn's access log and the capture journal.

``RECEIVER_LOG_FORMAT=json`` makes every line a JSON object instead
(python-json-logger): JSON escapes control characters by itself, and the
fields a record carries as ``extra`` (delivery id, status, events...) become
keys of their own.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from types import CodeType, TracebackType
from typing import Any, TypeAlias, cast
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

from receiver.errors import ConfigError

_ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the invisible
# characters that reorder or hide text on a terminal (bidi controls, zero-width, BOM).
_CONTROL = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TRACE_INDENT = "  | "
MASK = "***"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as an escape: one safe line."""
    if text.isprintable():  # no character ``_CONTROL`` matches is printable: nothing to do
        return text
    return _CONTROL.sub(_escape_char, text)


def _escape_lines(text: str) -> str:
    """Each line escaped, every line indented: a block no reader mistakes for records."""
    return "\n".join(_TRACE_INDENT + escape(line) for line in text.split("\n"))


SECRET_KEY_PARTS = (
    "token", "secret", "passw", "pwd", "credential", "signature", "apikey", "authoriz",
    "authent", "bearer", "session", "cookie", "private", "jwt",
)  # fmt: skip
"""A query key containing any of these (any case) names a credential: ``hub.verify_token``,
``access_token``, ``client_secret``, ``appsecret_proof``, ``password``, ``x-apikey``,
``Authorization``, ``bearer``, ``sessionid``, ``private_key``..."""
SECRET_KEY_WORDS = frozenset({"key", "pass", "sig", "auth", "sid"})
"""...and so does one with any of these as a word of its own (``api_key``, ``key``,
``auth``; not ``keyword`` or ``author``): words are split at anything but letters and digits."""


def is_secret_query_key(key: str) -> bool:
    """Whether a query key names a credential, whose value must never be logged or captured.

    Generous on purpose: masking a harmless value costs a line of debugging, logging a
    token costs the token.
    """
    lowered = key.lower()
    if any(part in lowered for part in SECRET_KEY_PARTS):
        return True
    return any(word in SECRET_KEY_WORDS for word in re.split(r"[^a-z0-9]+", lowered))


def mask_query_string(query: str) -> str:
    """A raw query string as sent, with the value of every secret key masked."""
    # "&" and the older ";" both separate parameters for some parser: mask after either.
    parts = re.split(r"([&;])", query)
    for index in range(0, len(parts), 2):
        key, equals, _ = parts[index].partition("=")
        if equals and is_secret_query_key(unquote_plus(key)):
            parts[index] = f"{key}={MASK}"
    return "".join(parts)


_QUERY = re.compile(r"\?(\S+)")
_CLOSING = "\"'<>)]}"
"""A query string in running text: from ``?`` to the first white space, less the quotes and
brackets that close it (``'https://x/?a=1'``). A quote, bracket or ``#`` inside it does not
end it: the development server logs ``%27``, ``%22``, ``%3C`` decoded, so ``?q=it%27s&
access_token=...`` reaches the log as ``?q=it's&access_token=...``."""


def mask_urls(text: str) -> str:
    """``text`` with every query string in it masked (``mask_query_string``)."""
    if "?" not in text:
        return text
    return _QUERY.sub(_mask_query_match, text)


def _mask_query_match(match: re.Match[str]) -> str:
    found = match.group(1)
    query = found.rstrip(_CLOSING)  # not in the pattern: that would backtrack quadratically
    return "?" + mask_query_string(query) + found[len(query) :]


def _messages(error: BaseException | None) -> Iterator[str]:
    """The messages of an exception and of every exception chained to it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield str(error)
        error = error.__cause__ or error.__context__


class SafeFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose output a request cannot split or colour.

    A record's ``details`` (``extra={"details": text}``) is shown under it like
    a traceback: indented and escaped.
    """

    def format(self, record: logging.LogRecord) -> str:
        # Another handler may have cached its own, unescaped, traceback text on the record.
        cached, record.exc_text = record.exc_text, None
        try:
            text = super().format(record)
        finally:
            record.exc_text = cached
        details = getattr(record, "details", None)
        if isinstance(details, str) and details:  # e.g. a worker's traceback, as text
            text += "\n" + _escape_lines(mask_urls(details.rstrip("\n")))
        return text

    _second: tuple[int, str | None, str] = (-1, None, "")
    _fields: tuple[str | None, frozenset[str] | None] = (None, None)

    def _line_fields(self) -> frozenset[str] | None:
        """The record fields this format uses, if ``emit`` can fill them all; else None."""
        fmt, fields = self._fields
        if fmt != self._fmt:
            found = frozenset(_FIELD.findall(self._fmt or ""))
            usable = (
                type(self._style) is logging.PercentStyle
                and not getattr(self._style, "_defaults", None)
                and found <= _LINE_FIELDS
            )
            fields = found if usable else None
            self._fields = (self._fmt, fields)
        return fields

    def formatTime(  # noqa: N802 (logging's name)
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        """``logging.Formatter.formatTime``, with the text of the current second kept.

        ``time.strftime`` has no sub-second field, so the text changes once a second:
        a line per request reformatted it every time (≈ 1.5 µs of the log line).
        """
        second = int(record.created)
        cached_second, cached_format, text = self._second
        if cached_second != second or cached_format != datefmt:
            text = time.strftime(datefmt or self.default_time_format, self.converter(second))
            self._second = (second, datefmt, text)
        if datefmt or not self.default_msec_format:
            return text
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        if record.name == "werkzeug" and not record.args and "\n" in str(record.msg):
            # The development server's own start-up text (request lines always carry
            # args): its later lines go below it, indented, rather than as a literal \n.
            first, rest = record.getMessage().split("\n", 1)
            shown = logging.makeLogRecord({**record.__dict__, "msg": first, "message": first})
            return escape(super().formatMessage(shown)) + "\n" + _escape_lines(rest)
        return escape(mask_urls(super().formatMessage(record)))

    def formatException(self, ei: _ExcInfo | tuple[None, None, None]) -> str:  # noqa: N802
        text = super().formatException(ei)
        # An error message quoting a payload is one line of the traceback, whatever it holds.
        for message in _messages(ei[1]):
            if _CONTROL.search(message):
                text = text.replace(message, escape(message))
        return _escape_lines(mask_urls(text))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _escape_lines(super().formatStack(stack_info))


class SafeJsonFormatter(JsonFormatter):
    """JSON lines whose text fields carry no credential from a URL (``mask_urls``)."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: mask_urls(v) if isinstance(v, str) else v for k, v in log_data.items()}


_TEMPLATES: dict[tuple[str, int, CodeType, int], dict[str, Any]] = {}
os.register_at_fork(after_in_child=_TEMPLATES.clear)


def emit(
    logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...], extra: dict[str, Any]
) -> None:
    """``logger.log(level, msg, *args, extra=extra)`` for a line logged on every request.

    The same record reaches the same handlers, built from a per-process copy of
    the call site's constant fields: ``logging`` walks the stack to find the
    caller and works out its file, module, process and process name again for
    every line. The request line cost 19 µs, 13 with this and the kept
    timestamp text (timeit, a StreamHandler to a file; ``bench/observe_bench.py``:
    +41 → +22 µs a delivery). With a custom record factory installed, it is
    ``logger.log``.
    """
    if not logger.isEnabledFor(level):
        return
    if logging.getLogRecordFactory() is not logging.LogRecord:
        logger.log(level, msg, *args, extra=extra, stacklevel=2)
        return
    if "details" not in extra and _write_line(logger, level, msg, args):
        return
    caller = sys._getframe(1)
    key = (logger.name, level, caller.f_code, caller.f_lineno)
    template = _TEMPLATES.get(key)
    if template is None:
        code = caller.f_code
        made = logging.LogRecord(
            logger.name, level, code.co_filename, caller.f_lineno, msg, (), None, code.co_name
        )
        template = _TEMPLATES[key] = dict(made.__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(template)
    now = time.time()
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0
    fields["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
    fields["msg"] = msg
    fields["args"] = args
    if logging.logThreads:
        fields["thread"] = threading.get_ident()
        fields["threadName"] = threading.current_thread().name
    fields.update(extra)
    logger.handle(record)


def _write_line(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...]) -> bool:
    """Write the line straight to the one stream that would get it; false if that is not so.

    Where the record would reach exactly one handler, a ``StreamHandler`` with this
    module's text formatter (``install``'s: gunicorn's workers, ``receiver serve``),
    no filter anywhere and a format of the fields made here, the line is formatted
    and written as that handler would, without the record: the same text, without
    the logging machinery's per-record calls (handle, filter, callHandlers, format,
    formatMessage...). Anything else (a test's capture handler, JSON lines, a second
    handler) takes the record path. A ``BatchedStreamHandler`` gets the line in its batch.
    """
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return False
        for handler in current.handlers:
            if level < handler.level:
                continue
            if found is not None:
                return False
            found = handler
        current = current.parent if current.propagate else None
    if (
        found is None
        or found.filters
        or type(found) not in (logging.StreamHandler, BatchedStreamHandler)
        or type(found.formatter) is not SafeFormatter
    ):
        return False
    found = cast("logging.StreamHandler[Any]", found)  # its type is checked above
    formatter = cast(SafeFormatter, found.formatter)
    fields = formatter._line_fields()
    if fields is None:
        return False
    now = time.time()
    values = {
        "name": logger.name,
        "levelname": logging.getLevelName(level),
        "levelno": level,
        "process": _PID[0] if logging.logProcesses else None,
        "message": msg % args if args else msg,
    }
    if "asctime" in fields:
        moment: Any = _Moment(now)  # all that formatTime reads of a record
        values["asctime"] = formatter.formatTime(moment, formatter.datefmt)
    text = escape(mask_urls(formatter._fmt % values))  # type: ignore[operator]
    if type(found) is BatchedStreamHandler:
        found.append(text + found.terminator, urgent=level >= logging.WARNING)
        return True
    stream = found.stream
    found.acquire()
    try:
        stream.write(text + found.terminator)
        found.flush()
    except Exception:  # noqa: BLE001 - the record path reports it (handleError)
        return False
    finally:
        found.release()
    return True


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class _Moment:
    """What ``SafeFormatter.formatTime`` reads of a record."""

    __slots__ = ("created", "msecs")

    def __init__(self, now: float) -> None:
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0


_LINE_FIELDS = frozenset({"asctime", "name", "levelname", "levelno", "process", "message"})
_FIELD = re.compile(r"%\((\w+)\)")


FLUSH_SECONDS = 0.5
"""How long a request line may wait in a ``BatchedStreamHandler``'s buffer."""
BATCH_BYTES = 64 * 1024
"""A batch is written as soon as it holds this much text."""


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the per-request lines in batches, not one ``write`` each.

    Under gunicorn every request logs a line, and the line's ``write`` and ``flush``
    were a system call per request that bare Flask does not make. Here the lines
    ``emit`` writes directly (``_write_line``: the request line, in the text format)
    wait in memory and leave together: at most ``FLUSH_SECONDS`` after the first of
    them (a background thread, woken only when an empty buffer gets a line), when the
    buffer holds ``BATCH_BYTES``, when any other record is logged (it is written at
    once, after the lines before it: order is kept), before the process forks, and at
    exit (``logging.shutdown`` flushes every handler). What a crash can lose: the
    request lines of the last ``FLUSH_SECONDS`` of a process killed without exiting
    (SIGKILL, a gunicorn worker killed for its ``timeout``, a segfault); never another
    line. Lines other writers put on the same file descriptor (gunicorn's own, its
    access log) may come up to ``FLUSH_SECONDS`` ahead of batched ones before them.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._wake = threading.Event()
        self._flusher_pid = 0
        # The batch's own lock, not the handler's RLock: a pure-Python one under
        # gevent's patching, which the direct request line would take every time.
        self._batch_lock = threading.Lock()
        _BATCHED.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - as StreamHandler does
            self.handleError(record)
            return
        self.append(text, urgent=True)  # anything but the request line: at once, as before

    def append(self, text: str, urgent: bool = False) -> None:
        """Add a formatted line; write the batch now if ``urgent`` or full."""
        with self._batch_lock:
            self._pending.append(text)
            self._size += len(text)
            if urgent or self._size >= BATCH_BYTES:
                self._write_pending()
            elif len(self._pending) == 1:
                self._wake_flusher()

    def flush(self) -> None:
        with self._batch_lock:
            self._write_pending()
        super().flush()

    def _write_pending(self) -> None:
        """Write and flush what is buffered; the caller holds ``_batch_lock``."""
        if not self._pending:
            return
        text, self._pending, self._size = "".join(self._pending), [], 0
        self._wake.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a log that cannot be written never stops a request
            if logging.raiseExceptions:
                sys.stderr.write("--- Logging error: a batch of log lines was lost ---\n")

    def _wake_flusher(self) -> None:
        if self._flusher_pid != _PID[0]:  # none yet, or this is a fork: threads do not follow
            self._flusher_pid = _PID[0]
            self._wake = threading.Event()
            threading.Thread(target=self._flush_later, name="receiver-log", daemon=True).start()
        self._wake.set()

    def _flush_later(self) -> None:
        wake = self._wake
        while wake is self._wake:  # a fork replaced it: this copy of the thread is gone
            wake.wait()
            time.sleep(FLUSH_SECONDS)
            self.flush()


_BATCHED: weakref.WeakSet[BatchedStreamHandler] = weakref.WeakSet()


def _flush_batches() -> None:
    """Before a fork: the child must not inherit (and later write again) a parent's batch."""
    for handler in list(_BATCHED):
        handler.flush()


def _after_fork() -> None:
    for handler in list(_BATCHED):  # another thread may have held it when the fork came
        handler._batch_lock = threading.Lock()


os.register_at_fork(before=_flush_batches, after_in_child=_after_fork)


LOG_FORMATS = ("text", "json")
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def formatter(
    fmt: str, datefmt: str | None = None, log_format: str | None = None
) -> logging.Formatter:
    """The formatter ``RECEIVER_LOG_FORMAT`` (or ``log_format``) asks for: ``text`` or ``json``."""
    chosen = (log_format or os.environ.get("RECEIVER_LOG_FORMAT") or "text").strip().lower()
    if chosen == "json":
        return SafeJsonFormatter(
            _JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level"}
        )
    if chosen == "text":
        return SafeFormatter(fmt, datefmt)
    raise ConfigError(f"RECEIVER_LOG_FORMAT={chosen!r} is not a log format; use text or json")


def install(
    level: str | int, fmt: str, datefmt: str | None = None, *, batched: bool = False
) -> None:
    """Route every logger that propagates (receiver, handler modules) to stderr, escaped or JSON.

    ``batched``: the request lines are written in batches (``BatchedStreamHandler``);
    the web process's choice, whose every request logs one.
    """
    handler: logging.StreamHandler[Any] = (
        BatchedStreamHandler() if batched else logging.StreamHandler()
    )
    handler.setFormatter(formatter(fmt, datefmt))
    handler._receiver_logsafe = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_receiver_logsafe", False):  # installed by an earlier call
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)


QUIET_LOGGERS = ("httpx", "httpcore")
"""Logged at WARNING at most: httpx logs every request's URL at INFO (a Graph call's
``appsecret_proof`` with it), one line per call that says nothing a handler's error would not."""
