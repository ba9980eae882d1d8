"""The request line's direct path (``logsafe.DirectLine``) writes what the record path writes.

The line is written without a record where logging would only hand it to one stream
handler; these tests hold its bytes to the record path's for hostile values, and its
route to logging's setup, changed between two lines.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from receiver.core import handling
from receiver.model.events import Event
from receiver.observe import logsafe
from receiver.routing.contracts import Request, Result

GUNICORN_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
CLI_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def receiver_logs_to(handler: logging.Handler) -> Iterator[logging.Logger]:
    """The ``receiver`` logger at INFO with ``handler`` its only output (pytest's capture
    handlers sit on the root, which it no longer reaches)."""
    logger = logging.getLogger("receiver")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def at(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    """Both paths read the clock ``now``."""
    monkeypatch.setattr(time, "time", lambda: now)
    monkeypatch.setattr(logsafe, "_time", lambda: now)


hostile = st.text(
    st.sampled_from(["a", "é", "?", "=", "&", "'", '"', "\\", " ", "\n", "\x1b", "\u2028", "\x85"])
    | st.characters(),
    max_size=12,
) | st.sampled_from(["/x?access_token=abc&q=1", "?token=s3cret", "hub.verify_token=t"])


class Refusing:
    """A direct line that is never taken."""

    def write(self, message: str, printable: bool = True) -> bool:
        return False


def event(topic: str, field: str) -> Event:
    return Event(topic=topic, field=field, value={}, id="i", delivery_id="d", integration="x")


results = st.builds(
    Result,
    status=st.integers(100, 599) | st.integers(),
    body=st.just(b"{}"),
    delivery_id=st.none() | hostile,
    integration=st.none() | hostile,
    events=st.lists(st.builds(event, hostile, hostile), max_size=3),
    queued=st.integers(0, 10**6),
    error=st.none() | hostile,
    reason=st.none() | hostile,
    seconds=st.floats(min_value=0, max_value=5) | st.floats(),
)
requests = st.builds(
    Request, method=st.sampled_from(["POST", "GET"]) | hostile, integration=st.none() | hostile
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_=requests,
    result=results,
    now=st.floats(min_value=1.7e9, max_value=1.8e9),
    fmt=st.sampled_from([GUNICORN_FORMAT, CLI_FORMAT, "%(levelname)s %(message)s"]),
    batched=st.booleans(),
)
@example(
    request_=Request("POST", integration="a?token=x\n"),
    result=Result(200, b"{}", delivery_id="a" * 32, events=[event("x?", "token=1\x1b")]),
    now=1765000000.9995,
    fmt=GUNICORN_FORMAT,
    batched=True,
)
def test_the_direct_line_is_the_record_path_s_line(
    request_: Request, result: Result, now: float, fmt: str, batched: bool
) -> None:
    """Byte for byte, for hostile names (newlines, controls, ``?token=``, non-ASCII)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        at(monkeypatch, now)
        stream = io.StringIO()
        handler = logsafe.BatchedStreamHandler(stream) if batched else logging.StreamHandler(stream)
        handler.setFormatter(logsafe.SafeFormatter(fmt))
        with receiver_logs_to(handler):
            handling._log_answer(request_, result)
            handler.flush()
            direct = stream.getvalue()
            stream.seek(0)
            stream.truncate()
            monkeypatch.setattr(handling, "_REQUEST_LINE", Refusing())
            monkeypatch.setattr(logsafe, "_write_line", lambda *_: False)
            handling._log_answer(request_, result)  # logger.handle(record): SafeFormatter
            handler.flush()
        assert direct == stream.getvalue()
        assert direct.count("\n") == 1 and direct.isprintable() is False  # one line, its \n


def test_the_direct_path_is_taken_where_logging_would_only_write() -> None:
    """Else the tests above would compare the record path with itself."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsafe.SafeFormatter(GUNICORN_FORMAT))
    with receiver_logs_to(handler):
        assert handling._REQUEST_LINE.write("delivery x=1")
    assert stream.getvalue().endswith("] [INFO] receiver: delivery x=1\n")


@given(seconds=st.floats() | st.floats(0, 1) | st.sampled_from([0.0055, 0.000125, 0.0]))
def test_milliseconds_are_round_s_repr(seconds: float) -> None:
    assert handling._milliseconds(seconds) == repr(round(seconds * 1000, 2))


# --- a changed logging setup is obeyed from the next line on ----------------------------------


@contextmanager
def direct_line() -> Iterator[tuple[logsafe.DirectLine, logging.Logger, logging.Handler]]:
    """A direct line of a logger of its own, under a parent, writing to one handler.

    Made in the test, not a fixture: pytest gives its capture handler to every logger
    that does not propagate when a test's phase begins.
    """
    parent = logging.getLogger("tests.direct")
    logger = logging.getLogger("tests.direct.line")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logsafe.SafeFormatter(GUNICORN_FORMAT))
    parent.addHandler(handler)
    parent.propagate = False
    logger.setLevel(logging.INFO)
    direct = logsafe.DirectLine(logger, logging.INFO)
    try:
        assert direct.write("before")
        yield direct, logger, handler
    finally:
        for current in (logger, parent):
            current.handlers.clear()
            current.filters.clear()
            current.propagate = True


def test_an_unchanged_setup_keeps_the_route() -> None:
    with direct_line() as (direct, _, _):
        route = direct._route
        assert direct.write("after")
        assert direct._route is route or direct._route.start != route.start  # a new second


def quiet(_record: logging.LogRecord) -> bool:
    return False


CHANGES: dict[str, Any] = {
    "a handler added": lambda lg, h: lg.addHandler(logging.NullHandler()),
    "the handler removed": lambda lg, h: lg.parent.removeHandler(h),
    "the handler's level raised": lambda lg, h: h.setLevel(logging.WARNING),
    "a filter on the logger": lambda lg, h: lg.addFilter(quiet),
    "a filter on the handler": lambda lg, h: h.addFilter(quiet),
    "JSON lines": lambda lg, h: h.setFormatter(logsafe.formatter("%(message)s", log_format="json")),
    "another text format": lambda lg, h: h.setFormatter(logsafe.SafeFormatter("%(message)s")),
    "a date format": lambda lg, h: setattr(h.formatter, "datefmt", "%H:%M"),
    "propagation to the root": lambda lg, h: setattr(lg.parent, "propagate", True),
    "no propagation": lambda lg, h: setattr(lg, "propagate", False),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_setup_is_noticed_at_the_next_line(change: str) -> None:
    with direct_line() as (direct, logger, handler):
        route = direct._route
        assert not route.changed()
        CHANGES[change](logger, handler)
        assert route.changed()  # so the next line's route is worked out again


def test_a_record_factory_takes_the_record_path(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = logging.getLogRecordFactory()
    with direct_line() as (direct, _, _):
        logging.setLogRecordFactory(lambda *a, **k: factory(*a, **k))
        try:
            assert logsafe._LOGGING["_logRecordFactory"] is logging.getLogRecordFactory()
            assert not direct.write("after")
        finally:
            logging.setLogRecordFactory(factory)
        at(monkeypatch, time.time() + 1)  # "no" is kept for the rest of its second
        assert direct.write("again")


def test_a_handler_skipping_the_lines_for_its_level_gets_them_once_lowered() -> None:
    with direct_line() as (direct, logger, _):
        other = logging.NullHandler(logging.WARNING)
        logger.addHandler(other)
        assert direct.write("skipped by the other")
        other.setLevel(logging.INFO)
        assert not direct.write("for both")


def test_a_capture_handler_gets_the_request_line_s_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pytest's caplog (a second handler): the record, with its fields, as before."""
    caplog.set_level(logging.INFO, logger="receiver")
    handling._log_answer(Request("POST"), Result(200, b"{}", delivery_id="d", error="x"))
    (record,) = [r for r in caplog.records if getattr(r, "kind", None) == "delivery"]
    assert record.getMessage().startswith("delivery method='POST' delivery_id='d' ")
    assert (record.status, record.error) == (200, "x")  # type: ignore[attr-defined]


# --- the batch ----------------------------------------------------------------------------------


def test_lines_added_from_threads_while_batches_leave_are_written_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``add`` takes no lock: each line still leaves in exactly one batch."""
    monkeypatch.setattr(logsafe, "FLUSH_SECONDS", 0.001)
    stream = io.StringIO()
    handler = logsafe.BatchedStreamHandler(stream)

    def adding(prefix: str) -> None:
        for n in range(2000):
            handler.add(f"{prefix}{n}\n")
            if n % 500 == 0:
                handler.emit(logging.makeLogRecord({"msg": f"urgent {prefix}{n}"}))

    threads = [threading.Thread(target=adding, args=(p,)) for p in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert sorted(x for x in lines if not x.startswith("urgent")) == sorted(
        f"{p}{n}" for p in "abc" for n in range(2000)
    )
    for prefix in "abc":  # each thread's lines in its order
        mine = [x for x in lines if x.startswith(prefix)]
        assert mine == [f"{prefix}{n}" for n in range(2000)]


# --- the worker's attempt line ------------------------------------------------------------------

@contextmanager
def worker_logger_to(output: logging.Handler) -> Iterator[None]:
    """``receiver.worker``'s lines to ``output`` alone, at INFO, for the ``with`` block."""
    logger = logging.getLogger("receiver.worker")
    level = logger.level
    logger.addHandler(output)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(output)
        logger.setLevel(level)
        logger.propagate = True



@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    handler=hostile,
    error=st.none() | hostile.map(lambda text: f"Traceback...\n{text}"),
    seconds=st.floats(0, 5),
    now=st.floats(min_value=1.7e9, max_value=1.8e9),
    batched=st.booleans(),
)
def test_the_direct_attempt_line_is_the_record_path_s_line(
    handler: str, error: str | None, seconds: float, now: float, batched: bool
) -> None:
    """Written at once or batched (``receiver worker``'s handler), the same bytes."""
    from receiver.observe import outcomes

    done = event("group", "comments?token=x")
    with pytest.MonkeyPatch.context() as monkeypatch:
        at(monkeypatch, now)
        monkeypatch.setattr(outcomes, "trace_entry", _fixed_time(outcomes.trace_entry))
        stream = io.StringIO()
        output = logsafe.BatchedStreamHandler(stream) if batched else logging.StreamHandler(stream)
        output.setFormatter(logsafe.SafeFormatter(CLI_FORMAT))
        with worker_logger_to(output):
            outcomes.attempt_ended(done, handler, 1, error, seconds)
            output.flush()
            direct = stream.getvalue()
            stream.seek(0)
            stream.truncate()
            monkeypatch.setattr(outcomes, "_ATTEMPT_LINES", {20: Refusing(), 30: Refusing()})
            monkeypatch.setattr(logsafe, "_write_line", lambda *_: False)
            outcomes.attempt_ended(done, handler, 1, error, seconds)
            output.flush()
        assert direct == stream.getvalue() and direct.count("\n") == 1


def test_a_batched_worker_writes_a_failed_attempt_at_once_after_the_lines_before_it() -> None:
    """``receiver worker`` batches its attempt lines; a WARNING must not wait in the batch."""
    from receiver.observe import outcomes

    stream = io.StringIO()
    output = logsafe.BatchedStreamHandler(stream)
    output.setFormatter(logsafe.SafeFormatter(CLI_FORMAT))
    with worker_logger_to(output):
        outcomes.attempt_ended(event("group", "posts"), "h:ok", 1, None, 0.001)
        assert stream.getvalue() == ""  # an ok attempt waits for its batch
        outcomes.attempt_ended(event("group", "posts"), "h:bad", 1, "Traceback\nboom", 0.001)
        lines = stream.getvalue().splitlines()
    assert [("h:ok" in line, "WARNING" in line) for line in lines] == [(True, False), (False, True)]


def _fixed_time(trace_entry: Any) -> Any:
    """``trace_entry`` with a constant ``at`` (not on the line; the record's extra)."""

    def fixed(*args: Any) -> dict[str, Any]:
        return {**trace_entry(*args), "at": "2026-01-01T00:00:00+00:00"}

    return fixed


def test_a_client_s_made_up_names_are_not_kept() -> None:
    """Any path or method reaches the line: their shapes are made, never kept."""
    handling._SHAPES.clear()
    for n in range(3):
        handling._shape(Request(f"M{n}"), Result(404, b"{}"), "default")
        handling._shape(Request("POST", integration=f"x{n}"), Result(404, b"{}"), f"x{n}")
    assert handling._SHAPES == {}
    handling._shape(Request("POST"), Result(200, b"{}", integration="default"), "default")
    assert len(handling._SHAPES) == 1


@settings(max_examples=200, deadline=None)
@given(
    handler=hostile,
    event_id=st.none() | hostile,
    delivery_id=st.none() | hostile,
    attempt=st.integers(0, 50),
    outcome=st.sampled_from(["ok", "failed", "timeout", "duplicate"]),
    error=st.none() | hostile,
    seconds=st.floats(0, 1e4),
)
def test_the_usual_attempt_text_is_the_general_one(
    handler: str,
    event_id: str | None,
    delivery_id: str | None,
    attempt: int,
    outcome: str,
    error: str | None,
    seconds: float,
) -> None:
    from receiver.observe import outcomes

    done = Event("group", "posts", {}, event_id, delivery_id, "i")  # type: ignore[arg-type]
    entry = outcomes.trace_entry(done, handler, attempt, outcome, error, seconds)
    assert outcomes.attempt_text(entry) == outcomes.any_attempt_text(entry)


@settings(max_examples=300, deadline=None)
@given(
    ns=st.integers(0, 4_102_444_800 * 10**9)
    | st.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9)
)
def test_an_attempt_s_time_is_datetime_s_text(ns: int) -> None:
    """``iso_at`` (its second's text kept) writes what ``datetime`` writes, zero fractions too."""
    from datetime import UTC, datetime

    from receiver.observe import outcomes

    for at in (ns, ns - ns % 1000, ns - ns % 10**9, ns + 10**9):  # the kept second, another
        whole, nanos = divmod(at, 10**9)
        expected = datetime.fromtimestamp(whole, UTC).replace(microsecond=nanos // 1000)
        assert outcomes.iso_at(at) == expected.isoformat()
