"""The receiver's core: one request in, one result out. No Flask here.

The web view, the replay tool and the tests all call ``Core.handle``; the
order of checks is the security contract: integration, size, signature,
and only then parsing.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson

from receiver.core import network, signature
from receiver.core.runner import resolve
from receiver.errors import (
    HandshakeRejected,
    PayloadRejected,
    QueueUnavailable,
    Rejected,
    SignatureRejected,
    TargetRejected,
)
from receiver.model import envelope, replay_mark
from receiver.model.events import Event
from receiver.observe import logsafe
from receiver.observe.capture import CaptureJournal
from receiver.routing.contracts import (
    Backend,
    BodySource,
    HandlerResult,
    Headers,
    Request,
    Result,
    Stored,
)
from receiver.routing.handlers import Handler, Router
from receiver.routing.signals import delivery_finished, send
from receiver.settings.model import Integration, Settings

log = logging.getLogger("receiver")

ALLOWED_METHODS = ("GET", "POST")
_ANSWERED_METHODS = frozenset((*ALLOWED_METHODS, "HEAD"))
REPLAY_OUTCOMES_HEADER = "X-Receiver-Handlers"
"""On answers to genuine replays of synchronous topics: how the inline handlers fared."""
INTERNAL_ERROR = b'{"error":"internal_error","message":"the receiver failed; see its log"}'

__all__ = [  # the shared types stay importable from here, where callers first met them
    "Backend",
    "BodySource",
    "Core",
    "HandlerResult",
    "Headers",
    "Request",
    "Result",
    "rejection",
]

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _json(status: int, data: Any, *, same_in_orjson: bool = False, **extra: Any) -> Result:
    """A JSON answer, compact, non-ASCII escaped.

    ``same_in_orjson``: ``data`` holds only strings, integers, booleans and lists
    of them (no float, no ``None``), for which orjson writes ``json.dumps``'s bytes
    whenever its text is ASCII without DEL (which json escapes and orjson does not):
    the acknowledgement, every delivery's answer, is written ≈ 10× faster.
    """
    return Result(status=status, body=_json_bytes(data, same_in_orjson), **extra)


def _json_bytes(data: Any, same_in_orjson: bool) -> bytes:
    """``_json``'s body."""
    if same_in_orjson:
        text = orjson.dumps(data)
        if text.isascii() and text.find(b"\x7f") < 0:  # find: ``in`` costs a TypeError
            return text
    return _ENCODER.encode(data).encode()


def rejection(exc: Rejected, **extra: Any) -> Result:
    return _json(exc.status, exc.as_dict(), error=exc.code, **extra)


ERROR_LINE_MAX = 300
"""Characters of a handler's error kept in its result and trace (the log has the traceback)."""


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line, as a background failure's trace shows its last line."""
    text = " ".join(traceback.format_exception_only(exc)[-1].split())
    return text if len(text) <= ERROR_LINE_MAX else text[: ERROR_LINE_MAX - 1] + "…"


class Core:
    """Verifies, parses, routes; runs inline handlers and hands the rest to a backend."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        backend: Backend,
        capture: CaptureJournal | None = None,
        switched_off: Callable[[str], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.backend = backend
        self.capture = capture
        self.switched_off = switched_off
        """Given with the admin dashboard on (``admin.switches``): true for the integrations
        an operator switched off there, which are refused."""
        self._answer_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="receiver-answer")

    def handle(self, request: Request) -> Result:
        received_at = time.time()
        started = time.perf_counter()
        # Results name only configured integrations: anyone may post to /webhooks/<anything>,
        # and each name would otherwise become stats keys in Redis and metric series.
        settings = self.settings  # ``settings.integration(...)``, without its frame:
        known = settings.integrations.get(request.integration or settings.default_integration)
        try:
            result = self._handle(request, known)
        except Exception:  # a bug of ours; still answered (and captured) as JSON
            log.exception("unexpected error answering %s %r", request.method, request.path)
            result = Result(status=500, body=INTERNAL_ERROR, error="internal_error")
        result.received_at = received_at
        result.seconds = time.perf_counter() - started
        if result.integration is None and known is not None:
            result.integration = known.name
        if self.capture is not None and known is not None and known.capture:
            try:
                self.capture.record(request, result, datetime.fromtimestamp(received_at, UTC))
            except OSError as exc:  # a tester's journal never costs a delivery
                log.error("capture failed: %s", exc)
        _log_answer(request, result)
        if delivery_finished.receivers:
            send(delivery_finished, self, request=request, result=result)
        return result

    def _handle(self, request: Request, known: Integration | None) -> Result:
        """``known``: the integration the request names, if configured (``handle`` looked)."""
        method = request.method
        if method not in _ANSWERED_METHODS:
            method = method.upper()
        if method not in _ANSWERED_METHODS:
            return rejection(
                TargetRejected(
                    f"{method} is not allowed here; Meta sends GET (handshake) and POST",
                    code="method_not_allowed",
                    status=405,
                ),
                headers={"Allow": ", ".join(ALLOWED_METHODS)},
            )
        try:
            if known is not None and known.enabled and self.switched_off is None:
                integration = known  # ``_integration``'s answer, without the call
            else:
                integration = self._integration(request.integration, known)
            if integration.allowed_networks or self.settings.client_cert_header:
                network.check(  # with neither configured it checks nothing
                    self.settings,
                    integration,
                    request.headers,
                    request.remote_addr,
                    delivery=method == "POST",
                )
            if method in ("GET", "HEAD"):
                return self._handshake(integration, request.query)
            return self._deliver(integration, request)
        except Rejected as exc:
            return rejection(exc)  # ``handle`` names the integration, if it is configured

    def _integration(self, name: str | None, integration: Integration | None) -> Integration:
        if integration is None:
            raise TargetRejected(
                f"no integration named {name!r} is configured here", code="unknown_integration"
            )
        if not integration.enabled:
            raise TargetRejected(
                f"integration {integration.name!r} is disabled; enable it in the config to accept "
                "its deliveries",
                code="integration_disabled",
                status=403,
            )
        if self.switched_off is not None and self.switched_off(integration.name):
            raise TargetRejected(
                f"integration {integration.name!r} is switched off in the admin dashboard; "
                "switch it on there to accept its deliveries",
                code="integration_switched_off",
                status=403,
            )
        return integration

    def _handshake(self, integration: Integration, query: Mapping[str, str]) -> Result:
        mode = query.get("hub.mode")
        token = query.get("hub.verify_token")
        challenge = query.get("hub.challenge")
        if mode is None or token is None or challenge is None:
            raise HandshakeRejected(
                "handshake needs hub.mode, hub.verify_token and hub.challenge",
                code="missing_parameter",
            )
        if mode != "subscribe":
            raise HandshakeRejected("hub.mode must be 'subscribe'", code="bad_mode")
        expected = integration.verify_token
        if expected is None:
            self._warn_dev("handshake accepted without a verify token")
        elif not hmac.compare_digest(token.encode(), expected.encode()):
            raise HandshakeRejected(
                "hub.verify_token does not match this integration's verify token",
                code="bad_verify_token",
                status=403,
            )
        return Result(
            status=200,
            body=challenge.encode("utf-8"),
            content_type="text/plain; charset=utf-8",
            # The challenge is the client's text: never let a browser sniff it into HTML.
            headers={"X-Content-Type-Options": "nosniff"},
            integration=integration.name,
        )

    def _deliver(self, integration: Integration, request: Request) -> Result:
        delivery_id = os.urandom(16).hex()
        context: dict[str, Any] = {"delivery_id": delivery_id, "integration": integration.name}
        try:
            return self._verified_delivery(integration, request, context)
        except Rejected as exc:
            return rejection(exc, **context)

    def _verified_delivery(
        self, integration: Integration, request: Request, context: dict[str, Any]
    ) -> Result:
        delivery_id = context["delivery_id"]
        if request.body_source is not None:
            source, request.body_source = request.body_source, None
            request.body, request.body_too_large = source(self.settings.max_body_bytes)
        if request.body_too_large or len(request.body) > self.settings.max_body_bytes:
            raise PayloadRejected(
                f"body is larger than max_body_bytes ({self.settings.max_body_bytes})",
                code="body_too_large",
                status=413,
            )
        secret_index = None
        if integration.app_secrets:
            context["verified"] = "failed"
            try:
                secret_index = signature.verify(
                    request.headers,
                    request.body,
                    integration.app_secrets,
                    accept_sha1=integration.accept_sha1,
                )
            except SignatureRejected as exc:
                context["reason"] = signature.diagnose(
                    request.headers, request.body, integration.app_secrets, exc.code
                )
                raise
            context["verified"] = "ok"
            if secret_index > 0:
                log.info(
                    "integration %r: delivery signed with an older secret (#%d); finish the "
                    "rotation before removing it",
                    integration.name,
                    secret_index,
                )
        else:
            context["verified"] = "unchecked"
            self._warn_dev(f"signature not checked for integration {integration.name!r}")
        context["secret_index"] = secret_index
        if not request.replayed and request.replay_token is not None:
            request.replayed = self._genuine_replay(integration, request)
        events = envelope.parse(
            request.body,
            delivery_id=delivery_id,
            integration=integration.name,
            max_depth=self.settings.max_depth,
            replayed=request.replayed,
        )
        if request.topic is not None and events and events[0].topic != request.topic:
            raise TargetRejected(
                f"this URL takes {request.topic!r} deliveries, the body is {events[0].topic!r}; "
                "check the callback URL subscribed for this topic",
                code="topic_mismatch",
                status=422,
            )
        return self._route(events, context)

    def _route(self, events: list[Event], context: dict[str, Any]) -> Result:
        inline: list[tuple[Event, Handler]] = []
        background: list[tuple[Event, Handler]] = []
        for event, handler in self.router.match_all(events):
            (background if handler.background else inline).append((event, handler))
        stored = None
        if background:
            context["ordered"] = self._ordered(background)
            try:
                stored = self.backend.submit(context["delivery_id"], background)
            except QueueUnavailable as exc:
                return _json(
                    exc.status,
                    {"error": exc.code, "message": str(exc)},
                    error=exc.code,
                    events=events,
                    reason=exc.reason,
                    **context,
                )
            if isinstance(stored, Stored) and stored.reason is not None:
                context["reason"] = stored.reason
        sync: list[tuple[Event, Handler]] = []
        results: list[HandlerResult] = []
        if inline:  # a durable delivery often has none
            sync_topics = self.settings.sync_topics
            for pair in inline:  # a loop, not two comprehensions: no frame of their own
                if pair[0].topic in sync_topics:
                    sync.append(pair)
                else:
                    results.append(self._run(*pair)[0])
        if sync:
            answer, sync_results = self._answer(sync)
            results += sync_results
            headers = {}
            if events[0].replayed:  # the answer body is Meta's format: report in a header
                outcomes = [[r.handler, r.event_id, r.ok] for r in results]
                headers[REPLAY_OUTCOMES_HEADER] = json.dumps(outcomes, separators=(",", ":"))
            return _json(
                200,
                answer,
                events=events,
                results=results,
                stored=stored,
                queued=len(background),
                headers=headers,
                **context,
            )
        body: dict[str, Any] = {
            "delivery_id": context["delivery_id"],
            "events": len(events),
            "queued": len(background),
        }
        if events and events[0].replayed:  # only a genuine replay learns how handlers fared
            body["handlers"] = [[r.handler, r.event_id, r.ok] for r in results]
        return Result(  # ``_json``'s, without passing ``context`` on twice (every delivery)
            200,
            _json_bytes(body, True),
            events=events,
            results=results,
            stored=stored,
            queued=len(background),
            **context,
        )

    def _ordered(self, background: list[tuple[Event, Handler]]) -> list[list[str]]:
        """``[handler, event id, key, queue]`` of each ordered pair, for the delivery's trace."""
        out = []
        for event, handler in background:
            if handler.ordered_by is not None:
                key = handler.order_key(event)
                if key is not None:
                    queue = handler.queue or self.settings.queue_name
                    out.append([handler.id, event.id, key, queue])
        return out

    def _run(self, event: Event, handler: Handler) -> tuple[HandlerResult, Any]:
        started = time.perf_counter()
        try:
            value = handler.func(event)
            if value is not None:  # most handlers return None: no call to look
                value = resolve(value)  # async def handlers run to completion
        except Exception as exc:
            log.exception("handler %s failed on event %s", handler.id, event.id)
            seconds = time.perf_counter() - started
            return HandlerResult(handler.id, event.id, False, error_line(exc), seconds), None
        return HandlerResult(handler.id, event.id, True, None, time.perf_counter() - started), value

    def _answer(self, work: list[tuple[Event, Handler]]) -> tuple[Any, list[HandlerResult]]:
        """Synchronous topics: handlers' return values become the response body.

        Several answers: their ``data`` lists are joined, other keys come from
        the first. None in time: ``{"data": []}``. A handler still running at the
        deadline is left to finish; its answer is dropped.
        """
        deadline = time.monotonic() + self.settings.answer_timeout
        futures = [self._answer_pool.submit(self._run, e, h) for e, h in work]
        results: list[HandlerResult] = []
        answers: list[dict[str, Any]] = []
        for (event, handler), future in zip(work, futures, strict=True):
            try:
                result, value = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning(
                    "handler %s did not answer event %s within %.1fs; answer dropped",
                    handler.id,
                    event.id,
                    self.settings.answer_timeout,
                )
                results.append(HandlerResult(handler.id, event.id, ok=False, error="timeout"))
                continue
            results.append(result)
            if isinstance(value, dict):
                answers.append(value)
            elif value is not None:
                log.warning(
                    "handler %s answered a %s; sync answers must be dicts",
                    handler.id,
                    type(value).__name__,
                )
        if not answers:
            return {"data": []}, results
        merged = dict(answers[0])
        if len(answers) > 1:
            merged["data"] = [d for a in answers for d in (a.get("data") or [])]
        return merged, results

    def _genuine_replay(self, integration: Integration, request: Request) -> bool:
        keys: list[str | bytes] = [replay_mark.key_for(s) for s in integration.app_secrets]
        if self.settings.secret_key:
            keys.append(self.settings.secret_key)
        if replay_mark.verify(request.replay_token or "", keys):
            return True
        log.warning(
            "integration %r: replay marker does not verify; treated as live", integration.name
        )
        return False

    def _warn_dev(self, what: str) -> None:
        log.warning("DEVELOPMENT MODE: %s; never expose this receiver to the internet", what)


_REQUEST_LINE = logsafe.DirectLine(log, logging.INFO)
_SHAPES: dict[tuple[Any, ...], tuple[str, str, str]] = {}
_MAX_SHAPES = 1024
_KEPT_METHODS = frozenset({*ALLOWED_METHODS, "HEAD"})
_NO_EVENT: Any = SimpleNamespace(topic=None, field=None)
"""The event of a shape without any: no event's topic is None."""


def _log_answer(request: Request, result: Result) -> None:
    """One line per request: what came, what was answered, how long it took.

    The fields ride as ``extra`` for JSON logs; the text line carries them too.
    Request-controlled values are ``%r``-quoted; message text is never logged.
    Where logging would only write the text to a stream, it is written directly
    (``logsafe.DirectLine``: every value in the text is a ``repr``, printable) and
    the fields are not made.
    """
    if not log.isEnabledFor(logging.INFO):
        return
    integration = result.integration or request.integration or "default"
    head, middle, tail = _shape(request, result, integration)
    text = f"{head}{result.delivery_id!r}{middle}{_milliseconds(result.seconds)}{tail}"
    if not _REQUEST_LINE.write(text):
        kind = "delivery" if request.method == "POST" else "request"
        fields = _fields(request, result, kind, integration)
        logsafe.emit(log, logging.INFO, "%s %s", (kind, text[len(kind) + 1 :]), fields)


def _shape(request: Request, result: Result, integration: str) -> tuple[str, str, str]:
    """The request line's text before its delivery id, between it and the duration, after.

    The text is the fields but ``kind``, each as ``key=repr(value)``, in this order.
    Kept per shape (method, integration, status, queued, error, reason, the one
    event's topic and field: a few shapes answer almost every request), by value: the
    fields are strings, ints or None. Made each time: 13k instructions of a request;
    looked up: 2k. Made each time: shapes of more events, of a method or integration
    a client made up (they would fill the cache), and beyond ``_MAX_SHAPES``.
    """
    events = result.events
    event: Any
    if not events:
        event = _NO_EVENT
    elif len(events) == 1:
        event = events[0]
    else:
        return _make_shape(request, result, integration)
    key = (
        request.method, integration, result.status, result.queued, result.error,
        result.reason, event.topic, event.field,
    )  # fmt: skip
    try:
        return _SHAPES[key]
    except KeyError:
        shape = _make_shape(request, result, integration)
        # Not a client's made-up method or integration name: no filling the cache with them.
        known = result.integration is not None or request.integration is None
        if known and request.method in _KEPT_METHODS and len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[key] = shape
        return shape


def _make_shape(request: Request, result: Result, integration: str) -> tuple[str, str, str]:
    method = request.method
    kind = "delivery" if method == "POST" else "request"
    head = f"{kind} method={method!r} delivery_id="
    middle = f" integration={integration!r} status={result.status!r} duration_ms="
    tail = ""
    if result.events:
        tail += f" events={_event_counts(result.events)!r} queued={result.queued!r}"
    if result.error:
        tail += f" error={result.error!r}"
    if result.reason:
        tail += f" reason={result.reason!r}"
    return head, middle, tail


def _milliseconds(seconds: float) -> str:
    """``repr(round(seconds * 1000, 2))``: 2.5k instructions instead of 5k (round formats
    and parses the number, repr formats it again).

    The hundredths of a millisecond, rounded as ``round`` does, wherever the float's error
    cannot cross a half (far from one); their text from tables: repr writes such a number
    as its digits without the zeros that end them.
    """
    hundredths = seconds * 100_000.0  # floats throughout: no int-float dispatch
    if not 0.0 < hundredths < 99_999.0:  # a second or more, none (-0.0), no number
        return repr(round(seconds * 1000, 2))
    whole = _floor(hundredths + 0.5)  # the nearest
    if abs(hundredths - whole) > 0.4999:  # near a half: the float's error decides
        return repr(round(seconds * 1000, 2))
    return _WHOLE_MS[whole // 100] + _HUNDREDTHS[whole % 100]


_floor = math.floor
_WHOLE_MS = tuple(str(ms) for ms in range(1000))
_HUNDREDTHS = tuple(repr(n / 100)[1:] for n in range(100))  # ".0", ".01"... ".1", ".11"...


def _fields(request: Request, result: Result, kind: str, integration: str) -> dict[str, Any]:
    """The request line's fields, for JSON lines and other handlers of its record."""
    fields: dict[str, Any] = {
        "kind": kind,
        "method": request.method,
        "delivery_id": result.delivery_id,
        "integration": integration,
        "status": result.status,
        "duration_ms": round(result.seconds * 1000, 2),
    }
    if result.events:
        fields["events"] = _event_counts(result.events)
        fields["queued"] = result.queued
    if result.error:
        fields["error"] = result.error
    if result.reason:
        fields["reason"] = result.reason
    return fields


def _event_counts(events: list[Event]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        name = event.name
        counts[name] = counts.get(name, 0) + 1
    return counts
