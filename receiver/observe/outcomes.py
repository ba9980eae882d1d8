"""What a background attempt leaves behind for operators: a log line, metrics, a trace entry.

One line per attempt (handler, event, delivery, attempt number, outcome,
duration); a retry being scheduled is a line of its own; a final failure is
logged once, with its traceback. The trace entries ride in the drainer's own
pipeline (no extra round trip): ``trace_commands`` adds them.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from receiver.model.events import Event
from receiver.observe import logsafe, metrics
from receiver.observe.trace import attempt_commands

log = logging.getLogger("receiver.worker")


def attempt_outcome(error: str | None) -> str:
    """``ok``, ``timeout`` or ``failed``, from a drainer's error text."""
    if error is None:
        return "ok"
    return "timeout" if error.startswith("timeout:") else "failed"


def _last_line(error: str | None) -> str | None:
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else None


def attempt_ended(
    event: Event, handler: str, attempt: int, error: str | None, seconds: float
) -> dict[str, Any]:
    """Log and count one finished attempt; return its trace entry."""
    outcome = attempt_outcome(error)
    metrics.observe_handler(handler, "background", outcome, seconds)
    entry = trace_entry(event, handler, attempt, outcome, error, seconds)
    level = logging.INFO if outcome == "ok" else logging.WARNING
    if log.isEnabledFor(level):
        text = attempt_text(entry)
        if not _ATTEMPT_LINES[level].write(f"attempt {text}"):  # reprs: printable
            logsafe.emit(log, level, "attempt %s", (text,), {"kind": "attempt", **entry})
    return entry


def attempt_text(entry: dict[str, Any]) -> str:
    """The line's ``key=repr`` pairs: the entry's, but its time and what is ``None``.

    Spelled out for the usual entry (no error, ids present), as the general reading
    below gives it (a test compares them): 0.6 µs an attempt less than the general one.
    """
    if (
        entry["error"] is None
        and entry["event_id"] is not None
        and entry["delivery_id"] is not None
    ):
        return (
            f"handler={entry['handler']!r} event_id={entry['event_id']!r} "
            f"delivery_id={entry['delivery_id']!r} attempt={entry['attempt']!r} "
            f"outcome={entry['outcome']!r} duration_ms={entry['duration_ms']!r}"
        )
    return any_attempt_text(entry)


def any_attempt_text(entry: dict[str, Any]) -> str:
    return " ".join([f"{k}={v!r}" for k, v in entry.items() if k != "at" and v is not None])


_ATTEMPT_LINES = {
    level: logsafe.DirectLine(log, level) for level in (logging.INFO, logging.WARNING)
}
"""The attempt line written directly where logging would only write it (``DirectLine``)."""


def duplicate_skipped(event: Event, handler: str) -> dict[str, Any]:
    """A copy of an item another run already handled (or is handling): not run again.

    Returns its trace entry, so the redelivery's trace says why nothing ran.
    """
    metrics.observe_handler(handler, "background", "duplicate", None)
    log.debug(
        "attempt handler=%r event_id=%r delivery_id=%r outcome='duplicate'",
        handler,
        event.id,
        event.delivery_id,
        extra={"kind": "attempt", "outcome": "duplicate", "handler": handler},
    )
    return trace_entry(event, handler, 0, "duplicate", None, 0.0)


def trace_entry(
    event: Event, handler: str, attempt: int, outcome: str, error: str | None, seconds: float
) -> dict[str, Any]:
    """What ``receiver trace`` shows of one attempt (attempt 0: nothing was run)."""
    return {
        "handler": handler,
        "event_id": event.id,
        "delivery_id": event.delivery_id,
        "attempt": attempt,
        "outcome": outcome,
        "error": _last_line(error),
        "at": iso_at(time.time_ns()),
        "duration_ms": round(seconds * 1000, 2),
    }


def iso_at(ns: int) -> str:
    """``datetime.fromtimestamp(ns / 1e9, UTC).isoformat()`` to the microsecond (floored, as
    ``datetime.now`` floors), the text up to the second made once a second: ≈ 0.5 µs an
    attempt instead of ``datetime.now(UTC).isoformat()``'s 1.2 µs."""
    second, nanos = divmod(ns, 1_000_000_000)
    kept = _SECOND[0]
    if kept[0] != second:
        kept = _SECOND[0] = (second, datetime.fromtimestamp(second, UTC).isoformat()[:-6])
    micros = nanos // 1000
    if micros:  # isoformat leaves out a zero fraction
        return f"{kept[1]}.{micros:06d}+00:00"
    return f"{kept[1]}+00:00"


_SECOND: list[tuple[int, str]] = [(-1, "")]
"""The last second ``iso_at`` wrote, and its text without the offset (one item: threads
replace it whole)."""


def retry_scheduled(event: Event, handler: str, attempt: int, delay: float) -> None:
    metrics.increment(metrics.RETRIES_SCHEDULED, handler)
    log.warning(
        "retry handler=%r event_id=%r attempt=%d in %ds",
        handler,
        event.id,
        attempt + 1,
        delay,
        extra={
            "kind": "retry",
            "handler": handler,
            "event_id": event.id,
            "delivery_id": event.delivery_id,
            "attempt": attempt + 1,
            "delay_s": delay,
        },
    )


def failed_for_good(event: Event, handler: str, attempts: int, error: str | None) -> None:
    """Every attempt failed: the one line with the traceback (then RQ's failed registry)."""
    metrics.increment(metrics.FINAL_FAILURES, handler)
    log.error(
        "failed handler=%r event_id=%r (%s) after %d attempt(s); see `receiver failed`",
        handler,
        event.id,
        event.name,
        attempts,
        extra={
            "kind": "final_failure",
            "handler": handler,
            "event_id": event.id,
            "delivery_id": event.delivery_id,
            "attempts": attempts,
            "details": error or "",
        },
    )


def trace_commands(pipe: Any, entries: list[dict[str, Any]], ttl: int) -> None:
    """Append attempts to their deliveries' traces, in the caller's pipeline: one command."""
    if entries:
        attempt_commands(pipe, entries, ttl)
