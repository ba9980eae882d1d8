"""When a Graph API call is retried, and how long to wait first. No I/O here.

The sync and async clients in ``receiver.graph`` share these decisions, so
they are tested once and cannot drift apart. What is retried: 5xx answers,
Graph's throttling codes (4, 17, 32, 341, 613 and the business-use-case
80000-range), errors Graph marks ``is_transient``, and connection failures.
What is not: every other 4xx, since the same request will fail the same way.
Waits grow exponentially with equal jitter (half fixed, half random, so a
retry never comes back instantly), never below ``Retry-After``; pauses longer
than ``max_wait`` are not slept through but raised, so a background job fails
fast and RQ retries it later instead of holding a worker.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from receiver.errors import (
    GraphAuthError,
    GraphError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
)
from receiver.settings import defaults

THROTTLING_CODES = frozenset({4, 17, 32, 341, 613})
"""Application, user, page, application-limit and custom rate limits."""
BUSINESS_USE_CASE_CODES = frozenset(range(80000, 80015))
"""Business-use-case rate limits (pages, Messenger, Instagram, WhatsApp, ...)."""
TRANSIENT_CODES = frozenset({1, 2})
"""Graph's "unknown error" and "service temporarily unavailable": worth another try."""
AUTH_CODES = frozenset({10, 102, 190, 463, 467, *range(200, 300)})
"""Expired or invalid token, session, or a missing permission: fix the token, not the call."""
USAGE_HEADERS = ("X-App-Usage", "X-Page-Usage", "X-Business-Use-Case-Usage")


@dataclass(frozen=True)
class GraphErrorFields:
    """The ``error`` object of a Graph answer, or what stands in for it."""

    message: str
    code: int | None = None
    error_subcode: int | None = None
    type: str | None = None
    fbtrace_id: str | None = None
    is_transient: bool = False


def error_fields(status: int, body: bytes) -> GraphErrorFields:
    """Read Graph's ``{"error": {...}}``; a non-JSON body becomes a generic message."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return GraphErrorFields(message=f"Graph API answered HTTP {status}")
    return GraphErrorFields(
        message=str(error.get("message") or f"Graph API answered HTTP {status}"),
        code=_int(error.get("code")),
        error_subcode=_int(error.get("error_subcode")),
        type=error.get("type") if isinstance(error.get("type"), str) else None,
        fbtrace_id=error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None,
        is_transient=error.get("is_transient") is True,
    )


def is_throttling(fields: GraphErrorFields) -> bool:
    return fields.code in THROTTLING_CODES or fields.code in BUSINESS_USE_CASE_CODES


def is_retryable(status: int, fields: GraphErrorFields) -> bool:
    """5xx, throttling and transient errors are worth another attempt; other 4xx never."""
    return (
        status >= 500
        or status == 429
        or is_throttling(fields)
        or fields.code in TRANSIENT_CODES
        or fields.is_transient
    )


def to_error(
    status: int,
    fields: GraphErrorFields,
    *,
    method: str,
    path: str,
    retry_after: float | None = None,
    attempts: int = 1,
) -> GraphError:
    """The ``GraphError`` subclass for a final failure, with a message that says what to do."""
    where = f"{method} {path}"
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    details: dict[str, Any] = dict(
        status=status,
        code=fields.code,
        error_subcode=fields.error_subcode,
        type=fields.type,
        fbtrace_id=fields.fbtrace_id,
        method=method,
        path=path,
    )
    subcode = f", subcode {fields.error_subcode}" if fields.error_subcode is not None else ""
    said = (
        f"{fields.message} (HTTP {status}, code {fields.code}{subcode}, "
        f"fbtrace_id {fields.fbtrace_id})"
    )
    if status == 429 or is_throttling(fields):
        return GraphThrottled(
            f"{where} rate limited{tried}: {said}; slow down or retry later",
            retry_after=retry_after,
            **details,
        )
    # Not by ``type``: Graph labels plain parameter errors "OAuthException" too.
    proof_refused = "appsecret_proof" in fields.message
    if status == 401 or fields.code in AUTH_CODES or proof_refused:
        return GraphAuthError(
            f"{where} refused{tried}: {said}; check the integration's access_token "
            "(expired or revoked?), its app secret (appsecret_proof) and the permissions "
            "granted to the integration",
            **details,
        )
    if status >= 500 or fields.code in TRANSIENT_CODES or fields.is_transient:
        return GraphUnavailable(f"{where} failed{tried}: {said}; Graph may be down", **details)
    return GraphRequestError(
        f"{where} refused: {said}; the request itself is wrong (id, fields, parameters)",
        **details,
    )


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a numeric ``Retry-After`` (Graph sends seconds, not dates)."""
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def usage(headers: Mapping[str, str]) -> tuple[float, float]:
    """Highest usage percentage in Graph's usage headers, and seconds until access returns.

    ``X-App-Usage``/``X-Page-Usage``: ``{"call_count": 28, "total_time": 25,
    "total_cputime": 25}``. ``X-Business-Use-Case-Usage``: ``{"<id>": [{"type":
    "pages", "call_count": 80, ..., "estimated_time_to_regain_access": 2}]}``
    (minutes). Unreadable headers count as no usage: pacing is a courtesy.
    """
    highest, regain = 0.0, 0.0
    for name in USAGE_HEADERS:
        raw = headers.get(name)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        for metrics in _usage_entries(data):
            for key in ("call_count", "total_time", "total_cputime", "acc_id_util_pct"):
                value = metrics.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    highest = max(highest, float(value))
            minutes = metrics.get("estimated_time_to_regain_access")
            if isinstance(minutes, int | float) and not isinstance(minutes, bool):
                regain = max(regain, float(minutes) * 60)
    return highest, regain


def _usage_entries(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    if any(isinstance(v, list) for v in data.values()):  # business use case: id -> [metrics]
        return [m for v in data.values() if isinstance(v, list) for m in v if isinstance(m, dict)]
    return [data]


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries, how long between them, and when to pace calls by usage."""

    retries: int = defaults.GRAPH_RETRIES
    backoff: float = defaults.GRAPH_BACKOFF
    max_backoff: float = 30.0
    max_wait: float = defaults.GRAPH_MAX_WAIT
    slow_down_at: float = defaults.GRAPH_SLOW_DOWN_AT
    pace: float = 2.0
    """Seconds between calls at 100 % usage; proportionally less above ``slow_down_at``."""
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before retry number ``attempt`` (1-based), never less than ``retry_after``."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        wait = ceiling / 2 + self.random() * ceiling / 2
        return float(max(wait, retry_after or 0.0))

    def pause(self, percent: float, regain: float) -> float:
        """Wait before the next call given the last usage seen (0 below ``slow_down_at``)."""
        if percent >= 100 and regain > 0:
            return regain
        if percent <= self.slow_down_at:
            return 0.0
        share = min(1.0, (percent - self.slow_down_at) / max(1e-9, 100 - self.slow_down_at))
        return self.pace * share


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
