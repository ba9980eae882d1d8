"""Talking to an app under test: ``SignedClient`` posts signed deliveries,
``Recorder`` keeps what the core routed and what every handler made of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from receiver.core.handling import Core, HandlerResult, Request, Result
from receiver.core.signature import signature_headers
from receiver.model.events import Event
from receiver.queue.keys import state_key
from receiver.queue.ops import failed_items, queue_names
from receiver.queue.web_store import RedisBackend
from receiver.routing.contracts import Work
from receiver.routing.handlers import Handler
from receiver.testing.payloads import body_of

TEST_SECRET = "receiver-test-app-secret"
TEST_TOKEN = "receiver-test-verify-token"


class SignedClient:
    """Wraps a Flask test client: ``deliver`` signs the exact bytes it posts."""

    def __init__(
        self,
        client: Any,
        secret: str = TEST_SECRET,
        token: str = TEST_TOKEN,
        after_post: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.secret = secret
        self.token = token
        self.after_post = after_post

    def deliver(
        self,
        payload: Mapping[str, Any] | bytes | str,
        path: str = "/webhook",
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        body = body_of(payload)
        signed = {**signature_headers(body, secret or self.secret), **(headers or {})}
        response = self.client.post(path, data=body, headers=signed)
        if self.after_post is not None:
            self.after_post()
        return response

    def handshake(
        self, path: str = "/webhook", *, token: str | None = None, challenge: str = "challenge"
    ) -> Any:
        return self.client.get(
            path,
            query_string={
                "hub.mode": "subscribe",
                "hub.verify_token": token or self.token,
                "hub.challenge": challenge,
            },
        )


@dataclass
class Recorder:
    """Every result the core produced: events routed and handler outcomes, inline and background.

    With a real worker (a ``RedisBackend``), background outcomes are what the
    worker recorded in Redis: call ``collect_background()`` once it has run.
    """

    results: list[Result] = field(default_factory=list)
    background: list[HandlerResult] = field(default_factory=list)
    queued: list[tuple[Event, Handler]] = field(default_factory=list)
    """Background work sent to Redis whose outcome the worker has not recorded yet."""
    _reported: dict[str, str] = field(default_factory=dict)
    _core: Core | None = None

    def attach(self, core: Core) -> None:
        self._core = core
        backend = core.backend
        if isinstance(backend, RedisBackend):
            submit = backend.submit

            def submit_and_remember(delivery_id: str, work: Work) -> str:
                stored = submit(delivery_id, work)
                self.queued.extend(work)
                return stored

            backend.submit = submit_and_remember  # type: ignore[method-assign]
        original = core.handle

        def handle(request: Request) -> Result:
            result = original(request)
            self.results.append(result)
            outcomes = getattr(core.backend, "outcomes", None)
            if outcomes and result.stored == "inline":
                self.background.extend(
                    HandlerResult(o.handler.id, o.event.id, o.ok, o.error)
                    for o in outcomes
                    if o.ran
                )
            return result

        core.handle = handle  # type: ignore[method-assign]

    @property
    def events(self) -> list[Event]:
        return [e for r in self.results for e in r.events]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def handler_results(self) -> list[HandlerResult]:
        return [h for r in self.results for h in r.results] + self.background

    def calls(self, handler: Callable[..., Any] | str) -> list[HandlerResult]:
        """Outcomes of one handler (a function, or part of its id such as its name)."""
        needle = (
            handler if isinstance(handler, str) else f"{handler.__module__}:{handler.__qualname__}@"
        )
        return [h for h in self.handler_results if needle in h.handler]

    def collect_background(self) -> None:
        """Add the outcomes a worker recorded in Redis for the work queued so far.

        ``done`` is a success; a failure is the last line of its traceback once
        it failed for good (RQ's failed registry), or ``"retry scheduled"`` while
        a retry waits for its backoff. A copy the worker skipped as a duplicate
        adds nothing, as in inline mode; work no worker has run yet stays queued.
        """
        core = self._core
        connection = core.backend.connection if core else None
        if core is None or connection is None or not self.queued:
            return
        keys = [state_key(e.integration, h.id, e.id) for e, h in self.queued]
        states = [v.decode() if isinstance(v, bytes) else v for v in connection.mget(keys)]
        errors: dict[tuple[str, str], str] | None = None
        waiting: list[tuple[Event, Handler]] = []
        for (event, handler), key, state in zip(self.queued, keys, states, strict=True):
            if state is None or state.startswith("running:"):
                waiting.append((event, handler))
                continue
            if self._reported.get(key) == state:
                continue
            self._reported[key] = state
            if state == "done":
                self.background.append(HandlerResult(handler.id, event.id, True))
                continue
            error = "retry scheduled"
            if state == "failed":
                if errors is None:
                    items, _ = failed_items(connection, queue_names(core.settings, core.router))
                    errors = {(f.handler, f.event_id): f.error for f in items}
                error = errors.get((handler.id, event.id)) or "failed"
            self.background.append(HandlerResult(handler.id, event.id, False, error))
        self.queued = waiting

    def clear(self) -> None:
        self.results.clear()
        self.background.clear()
        self.queued.clear()
