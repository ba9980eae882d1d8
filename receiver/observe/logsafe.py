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
import math
import os
import re
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from itertools import repeat
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


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class _Moment:
    """What ``SafeFormatter.formatTime`` reads of a record."""

    __slots__ = ("created", "msecs")

    def __init__(self, now: float) -> None:
        self.created = now
        self.msecs = int((now - int(now)) * 1000) + 0.0


def _write_line(logger: logging.Logger, level: int, msg: str, args: tuple[Any, ...]) -> bool:
    """``emit``'s direct path: ``msg % args`` escaped and written as ``DirectLine.write`` does."""
    line = _LINES.get((logger, level))
    if line is None:
        line = _LINES.setdefault((logger, level), DirectLine(logger, level))
    return line.write(msg % args if args else msg, printable=False)


class DirectLine:
    """A logger's lines at one level, written straight to the one stream logging would use.

    Where a record would reach exactly one handler, a ``StreamHandler`` (or
    ``BatchedStreamHandler``) with this module's text formatter (``install``'s:
    gunicorn's workers, ``receiver serve``, ``receiver worker``), no filter on the
    way, and a format of the record's constant fields ending with its message, the
    line is that handler's text without the record: a head and a tail around the
    milliseconds, made once a second, then the message. Anything else (a test's
    capture handler, JSON lines, a second handler, a record factory) gets ``False``:
    the caller logs the record instead. What the line was worked out from (the
    loggers' handlers, the first one's filters, ``propagate`` and parents, each
    handler's level, filters and formatter, the formatter's style and ``datefmt``,
    the record factory, the root's handlers) is compared before every line: a change
    to logging's setup is obeyed from the next line on (to the formatter's
    ``default_msec_format``, ``converter``, the handler's ``terminator`` or
    ``logging.logProcesses``: from the next second on). The request line cost 64k
    instructions a request through ``emit`` (``bench/wsgi_bench.py --callgrind``, less
    the same run ``--without log``); ≈ 16k now, its text included, ≈ 7k of it here
    (2.5k the comparison).
    """

    __slots__ = ("logger", "level", "_route", "__weakref__")

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self._route = _NO_ROUTE
        _DIRECT_LINES.add(self)

    def write(self, message: str, printable: bool = True) -> bool:
        """Write ``message`` as the record path would; false if this line must be a record.

        The caller has checked ``logger.isEnabledFor(level)``. ``printable``: the caller
        vouches that ``message`` holds nothing ``escape`` would change (constant text and
        ``repr``s, which escape every unprintable character); else it is escaped here.
        """
        now = _time()
        route = self._route
        if not route.start <= now < route.end or route.sink is not None and route.changed():
            route = self._route = _resolve(self.logger, self.level, _floor(now), route)
        sink = route.sink
        if sink is None:
            return False
        if "?" in message:  # mask_urls' own test, without the call
            message = mask_urls(message)
        if not printable:
            message = escape(message)
        milliseconds = route.milliseconds[_floor((now - route.start) * 1000)]  # LogRecord.msecs
        return sink(f"{route.head}{milliseconds}{route.tail}{message}\n") is not False


_time = time.time
_floor = math.floor  # int() of a float, for one that is not negative, at 40 % of the cost


def _write_now(handler: logging.StreamHandler[Any], text: str) -> bool:
    """``StreamHandler.emit``'s write; false (the record path reports it) if it failed."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    except Exception:  # noqa: BLE001 - the record path reports it (handleError)
        return False
    finally:
        handler.release()
    return True


_MSECS = tuple(f",{msecs:03d}" for msecs in range(1001))
"""``logging.Formatter.default_msec_format``'s text for each millisecond (1000: a float's
rounding, never seen)."""
_NO_MSECS = ("",) * len(_MSECS)
_MARK = "\x00"
_MESSAGE = "%(message)s"

_Ancestor: TypeAlias = tuple[logging.Logger, list[logging.Handler], bool, "logging.Logger | None"]


class _Route:
    """Where a ``DirectLine`` goes for one second, and what that was worked out from.

    ``sink`` None: the record path (and nothing else is set).
    """

    __slots__ = (
        "start", "end", "sink", "head", "tail", "milliseconds", "layout", "knobs", "logger",
        "handler", "formatter", "state", "between", "others", "wider",
    )  # fmt: skip

    start: float
    end: float
    sink: Callable[[str], bool | None] | None
    head: str
    tail: str
    milliseconds: tuple[str, ...]
    layout: tuple[str, str, bool, bool]
    knobs: tuple[Any, ...]
    logger: logging.Logger
    handler: logging.StreamHandler[Any]
    formatter: SafeFormatter
    state: tuple[Any, ...]
    between: tuple[_Ancestor, ...]
    wider: bool
    others: tuple[tuple[logging.Handler, int], ...]

    def __init__(self, second: int) -> None:
        self.start, self.end = float(second), float(second + 1)
        self.sink = None

    def changed(self) -> bool:
        """Whether logging's setup differs from the one this direct route was worked out from.

        One tuple's equality (identity, or a list's equality where it may have been changed
        in place): ≈ 2.5k instructions, the separate tests 3.4k. A route to the record path
        is not checked: a stale "no" only costs the rest of the second.
        """
        logger, handler, formatter = self.logger, self.handler, self.formatter
        return (
            logger.handlers, not logger.filters, logger.propagate, logger.parent,
            handler.formatter, not handler.filters, handler.level, formatter._style,
            formatter.datefmt, _LOGGING["_logRecordFactory"], _ROOT.handlers,
        ) != self.state or self.wider and self._changed_between()  # fmt: skip

    def _changed_between(self) -> bool:
        """Whether a logger between the first and the root, or a handler these lines skip
        for its level, changed."""
        for ancestor, handlers, propagate, parent in self.between:
            if (ancestor.handlers, ancestor.propagate, ancestor.parent) != (
                handlers, propagate, parent
            ):
                return True
        for other, level in self.others:
            if other.level != level:
                return True
        return False

    def at(self, second: int) -> _Route:
        """This direct route for ``second``: its time made once; the record path if the
        time text holds a "?" (``mask_urls`` would read on from it)."""
        before, after, timed, msecs = self.layout
        asctime = ""
        if timed:
            moment: Any = _Moment(second)  # all formatTime reads of a record
            asctime = self.formatter.formatTime(moment, self.formatter.datefmt)
            if msecs:
                if not asctime.endswith(_MSECS[0]):
                    return _Route(second)
                asctime = asctime[: -len(_MSECS[0])]
        route = _Route(second)
        if "?" in asctime:
            return route
        for name in _KEPT:
            setattr(route, name, getattr(self, name))
        if msecs:
            route.head, route.milliseconds, route.tail = before + escape(asctime), _MSECS, after
        else:
            route.head, route.tail = before + escape(asctime) + after, ""
            route.milliseconds = _NO_MSECS
        return route

    def state_of(self, logger: logging.Logger, handler: logging.StreamHandler[Any]) -> None:
        """Keep what ``changed`` compares (``handler`` takes the lines, ``logger`` logs them)."""
        formatter = cast(SafeFormatter, handler.formatter)
        self.logger, self.handler, self.formatter = logger, handler, formatter
        self.state = (
            list(logger.handlers), True, logger.propagate, logger.parent,  # True: no filter
            formatter, True, handler.level, formatter._style,
            formatter.datefmt, logging.getLogRecordFactory(), list(_ROOT.handlers),
        )  # fmt: skip
        chain = _chain(logger)
        between = [a for a in chain[1:] if a is not _ROOT]  # the root's handlers: in state
        self.others = tuple(
            (other, other.level)
            for current in chain
            for other in current.handlers
            if other is not handler
        )
        self.between = tuple((a, list(a.handlers), a.propagate, a.parent) for a in between)
        self.wider = bool(self.between or self.others)


_ROOT = logging.root
_KEPT = (
    "sink", "layout", "knobs", "logger", "handler", "formatter", "state", "between", "others",
    "wider",
)  # fmt: skip
"""What a direct route keeps from one second to the next."""
_NO_ROUTE = _Route(-1)
_LOGGING = vars(logging)
"""logging's globals, where ``setLogRecordFactory`` keeps the factory (read per line)."""


def _chain(logger: logging.Logger) -> list[logging.Logger]:
    """The loggers whose handlers get ``logger``'s records (``Logger.callHandlers``)."""
    chain = [logger]
    while chain[-1].propagate and chain[-1].parent is not None:
        chain.append(chain[-1].parent)
    return chain


def _resolve(logger: logging.Logger, level: int, second: int, kept: _Route) -> _Route:
    """The route of ``logger``'s lines at ``level`` for ``second``, as logging's setup is now.

    ``kept``, the last second's, if direct and unchanged, is kept but its time: 20k
    instructions a second instead of 90k.
    """
    if kept.sink is not None and not kept.changed() and kept.knobs == _knobs(kept.handler):
        return kept.at(second)
    route = _Route(second)
    chain = _chain(logger)
    handlers = [handler for current in chain for handler in current.handlers]
    found = [handler for handler in handlers if level >= handler.level]
    if (
        len(found) != 1
        or logger.filters
        or logger.disabled
        or found[0].filters
        or type(found[0]) not in (logging.StreamHandler, BatchedStreamHandler)
        or type(found[0].formatter) is not SafeFormatter
        or logging.getLogRecordFactory() is not logging.LogRecord
        or logger.name == "werkzeug"  # SafeFormatter lays out its start-up text apart
    ):
        return route
    handler = cast("logging.StreamHandler[Any]", found[0])
    layout = _layout(cast(SafeFormatter, handler.formatter), logger, level)
    if layout is None or handler.terminator != "\n":
        return route
    route.layout, route.knobs = layout, _knobs(handler)
    route.state_of(logger, handler)
    if type(handler) is not BatchedStreamHandler:
        route.sink = partial(_write_now, handler)
    elif level >= logging.WARNING:
        route.sink = partial(handler.append, urgent=True)
    else:
        route.sink = handler.add
    return route.at(second)


def _knobs(handler: logging.StreamHandler[Any]) -> tuple[Any, ...]:
    """What a direct route's text depends on, besides what ``changed`` compares: read
    once a second."""
    formatter = handler.formatter
    return handler.terminator, formatter and formatter.default_msec_format, logging.logProcesses


def _layout(
    formatter: SafeFormatter, logger: logging.Logger, level: int
) -> tuple[str, str, bool, bool] | None:
    """The escaped text of the format before and after its time, whether it has a time and
    whether milliseconds end it: if the format ends with the message and has no other
    field of the request's, nor a width or precision on the time."""
    style = formatter._style
    fmt = style._fmt
    if (
        type(style) is not logging.PercentStyle
        or getattr(style, "_defaults", None)
        or not fmt.endswith(_MESSAGE)
    ):
        return None
    values: dict[str, Any] = {
        "name": logger.name,
        "levelname": logging.getLevelName(level),
        "levelno": level,
        "process": _PID[0] if logging.logProcesses else None,
        "asctime": _MARK,
    }  # no "message": a format using it before its end is not made here (KeyError)
    prefix = fmt[: -len(_MESSAGE)]
    try:
        text = prefix % values  # "%%(message)s" ends in "%": ValueError
        timed = text.count(_MARK) == 1
        values["asctime"] = _MARK * 2
        padded = prefix % values != text.replace(_MARK, _MARK * 2)  # "%(asctime)-30s"...
    except (KeyError, ValueError, TypeError):  # a field this does not make, or no format
        return None
    if padded or "?" in text or text.count(_MARK) > 1:  # "?": mask_urls would read on
        return None
    before, _, after = text.partition(_MARK)
    msecs = timed and not formatter.datefmt and bool(formatter.default_msec_format)
    if msecs and formatter.default_msec_format != "%s,%03d":
        return None
    return escape(before), escape(after), timed, msecs


_LINES: dict[tuple[logging.Logger, int], DirectLine] = {}
_DIRECT_LINES: weakref.WeakSet[DirectLine] = weakref.WeakSet()


def _forget_routes() -> None:
    """In a child: the kept lines name the parent's process."""
    for line in list(_DIRECT_LINES):
        line._route = _NO_ROUTE


os.register_at_fork(after_in_child=_forget_routes)


FLUSH_SECONDS = 0.5
"""How long a request line may wait in a ``BatchedStreamHandler``'s buffer."""
BATCH_BYTES = 64 * 1024
"""A batch is written as soon as it holds this much text."""


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the per-request lines in batches, not one ``write`` each.

    Under gunicorn every request logs a line, and the line's ``write`` and ``flush``
    were a system call per request that bare Flask does not make. Here the lines
    written directly (``DirectLine``: the request line, in the text format)
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
        self._pending: deque[str] = deque()
        self._size = 0
        self._armed = False
        """The flusher is woken for what is pending (set and cleared under ``_batch_lock``)."""
        self._wake = threading.Event()
        self._flusher_pid = 0
        # The lock of the batch's writes, not the handler's RLock: a pure-Python one under
        # gevent's patching. A request line takes neither (``add``).
        self._batch_lock = threading.Lock()
        _BATCHED.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - as StreamHandler does
            self.handleError(record)
            return
        self.append(text, urgent=True)  # anything but the request line: at once, as before

    def add(self, text: str) -> None:
        """Add a formatted line to the batch, without a lock.

        ``deque.append`` is atomic (the GIL; gevent switches only on I/O), and what is
        written takes lines from the other end: a line added while the batch is written
        is either in it or left for the next. The flusher is armed once per batch, under
        the lock; ``_write_pending`` disarms it before it takes the lines, so a line it
        leaves finds it disarmed. The lock and its ``with`` were 0.8k instructions of
        the ≈ 3.7k a line cost in ``append``; under gevent its lock is a greenlet's.
        """
        self._pending.append(text)
        self._size += len(text)  # a race across threads only moves an early write
        if self._size >= BATCH_BYTES:
            with self._batch_lock:
                self._write_pending()
        elif not self._armed:
            with self._batch_lock:
                self._wake_flusher()

    def append(self, text: str, urgent: bool = False) -> None:
        """Add a formatted line; write the batch now, this line last, if ``urgent``."""
        if not urgent:
            self.add(text)
            return
        with self._batch_lock:
            self._pending.append(text)
            self._write_pending()

    def flush(self) -> None:
        with self._batch_lock:
            self._write_pending()
        super().flush()

    def _write_pending(self) -> None:
        """Write and flush what is buffered; the caller holds ``_batch_lock``."""
        pending = self._pending
        if not pending:
            return
        self._wake.clear()
        self._armed = False  # before the lines are taken: one added from now on re-arms
        self._size = 0
        # The lines there now, from the left, popped in C (a comprehension: 20 % more);
        # one added meanwhile goes on the right, for the next batch.
        text = "".join(map(_POPLEFT, repeat(pending, len(pending))))
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a log that cannot be written never stops a request
            if logging.raiseExceptions:
                sys.stderr.write("--- Logging error: a batch of log lines was lost ---\n")

    def _wake_flusher(self) -> None:
        """Wake (or start) the flusher; the caller holds ``_batch_lock``."""
        self._armed = True
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


_POPLEFT = deque.popleft
_BATCHED: weakref.WeakSet[BatchedStreamHandler] = weakref.WeakSet()


def _flush_batches() -> None:
    """Before a fork: the child must not inherit (and later write again) a parent's batch."""
    for handler in list(_BATCHED):
        handler.flush()


def _after_fork() -> None:
    for handler in list(_BATCHED):  # another thread may have held it when the fork came
        handler._batch_lock = threading.Lock()
        handler._armed = False  # the parent's flusher did not follow


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
