"""The types the layers exchange: requests, results and where background work goes.

They live below the core, the capture journal, traces, metrics and the
queue side so that each can name them without importing the others: the
core imports no backend, a backend imports no core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from receiver.model.events import Event
from receiver.routing.handlers import Handler

if TYPE_CHECKING:  # the core knows no Redis client; a backend may hold one
    from redis import Redis

Work = Sequence[tuple[Event, Handler]]
"""Background (event, handler) pairs of one delivery."""

BodySource = Callable[[int], tuple[bytes, bool]]
"""Reads a request's body up to a limit: ``(body, too_large)``; raises ``Rejected`` on bad framing.

Adapters hand the core a source rather than bytes, so that what can be refused
without the body (integration, address, client certificate) is refused unread.
"""


REPLICATION_TIMEOUT = "replication_timeout"
"""The ``reason`` of a delivery its replicas did not confirm in time (spooled, or 503)."""


class Stored(str):
    """Where ``submit`` put the work (``redis``, ``spool``, ``inline``: compares as that string),
    and ``reason``, why, when it went somewhere other than usual (``REPLICATION_TIMEOUT``)."""

    reason: str | None

    def __new__(cls, where: str, reason: str | None = None) -> Stored:
        stored = super().__new__(cls, where)
        stored.reason = reason
        return stored


class Backend(Protocol):
    """Where background work goes once the delivery is verified and parsed."""

    @property
    def connection(self) -> Redis | None:
        """The Redis the work goes to, which traces, claims and the dashboard share;
        ``None`` when the work runs in this process without one. A backend that starts
        its Redis on first need (the embedded default) starts it when asked."""
        ...

    @property
    def started(self) -> bool:
        """False only while a backend that starts its Redis on first need has not yet:
        traces, metrics and readiness never start it (``trace.live_connection``)."""
        ...

    def submit(self, delivery_id: str, work: Work) -> str:
        """Store the work durably (or run it); say where it went (a ``str``, or a ``Stored``
        giving the reason). Raise ``QueueUnavailable``."""
        ...


@dataclass
class QueueDepth:
    """One queue's backlog, as operators and metrics read it."""

    queue: str
    pending_packets: int
    drainers: int
    rq_jobs: int
    scheduled_retries: int
    failed: int
    oldest_pending_at: float | None = None
    """Epoch seconds the oldest waiting delivery was stored (``None``: none waits)."""
    ordered_keys: int = 0
    """Order keys with events waiting or running (``ordered_by`` handlers)."""
    held_keys: int = 0
    """Order keys whose next event waits for a retry or an operator."""


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only request headers."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._data = {k.lower(): v for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._data[key.lower()]

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key.lower(), default)


@dataclass
class Request:
    """What the core needs of an HTTP request."""

    method: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=Headers)
    query: Mapping[str, str] = field(default_factory=dict)
    integration: str | None = None
    """``None`` for ``/webhook``: the default integration."""
    topic: str | None = None
    """Set for per-topic URLs (``/webhook/group``)."""
    body_too_large: bool = False
    """The adapter stopped reading at the limit."""
    path: str = ""
    """As received, for captures; derived from integration and topic when empty."""
    replay_token: str | None = None
    """The ``X-Receiver-Replay`` header; the core decides whether it is genuine."""
    replayed: bool = False
    """Set by the core once a replay token verified (or by in-process replay itself)."""
    body_source: BodySource | None = None
    """When set, ``body`` is read from it once the request is admitted."""
    remote_addr: str | None = None
    """The peer's address, for ``allowed_networks`` (``None``: unknown, e.g. in-process)."""

    def __post_init__(self) -> None:
        if not self.path:
            base = f"/webhooks/{self.integration}" if self.integration else "/webhook"
            self.path = f"{base}/{self.topic}" if self.topic else base


@dataclass
class HandlerResult:
    handler: str
    event_id: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Result:
    """The answer, plus what happened, for logs, captures, replay reports and tests."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delivery_id: str | None = None
    integration: str | None = None
    events: list[Event] = field(default_factory=list)
    results: list[HandlerResult] = field(default_factory=list)
    stored: str | None = None
    """Where background work went: ``redis``, ``spool`` or ``inline``; ``None`` if none."""
    secret_index: int | None = None
    verified: str | None = None
    """``ok``, ``unchecked`` (development mode), ``failed``, or ``None`` when not reached."""
    error: str | None = None
    reason: str | None = None
    """For operators, never the client: why a signature failed (``signature.FAILURE_REASONS``),
    or ``REPLICATION_TIMEOUT`` (acknowledged from the spool, or 503, because replicas did
    not confirm the delivery in time)."""
    queued: int = 0
    """Background (event, handler) pairs stored for workers."""
    ordered: list[list[str]] = field(default_factory=list)
    """``[handler, event id, key, queue]`` of the queued pairs that wait for their key's turn."""
    received_at: float = 0.0
    """Epoch seconds when the core took the request."""
    seconds: float = 0.0
    """How long the core took to answer."""

