"""Handlers and the router that finds them for an event, through blinker signals.

Blinker's rules, and where we differ on purpose:
- blinker holds weak references by default; we connect with ``weak=False``
  so a handler defined inside a function does not vanish;
- blinker's receiver order is undefined; we run matches in registration order;
- an exception in one blinker receiver stops the rest; our receivers only
  match (they never run user code but filters, whose errors count as no match),
  and the dispatcher runs each handler under its own ``try``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, TypeVar

from receiver import filters as F
from receiver.errors import PluginError
from receiver.model.events import Event
from receiver.routing.signals import event_signal, generation, patterns_for

log = logging.getLogger("receiver.routing")

HandlerFunc = Callable[[Event], Any]
T = TypeVar("T", bound=HandlerFunc)

_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_-]+\.(\*|[A-Za-z0-9_-]+))$")
_RESERVED_MATCH = {
    "topic",
    "field",
    "verb",
    "integration",
    "entry_id",
    "name",
    "replayed",
    "kind",
    "sender_id",
}
_order = itertools.count()


OPTION = {"option": True}
"""Marks a ``Handler`` field as a handler option: a keyword of ``on`` and ``connect``."""
ON_FAILURE = ("skip", "block")
"""What an ordered handler's key does once an event of it fails for good."""


@dataclass(frozen=True)
class Handler:
    """One registration: a function, the pattern it listens on, how it runs.

    The fields marked ``OPTION`` are the handler options, spelled here and only
    here: ``on`` and ``connect`` take them as keywords (``OPTIONS``) and
    ``_check_options`` validates them.
    """

    func: HandlerFunc
    pattern: str
    filter: F.Filter | None = None
    background: bool = field(default=False, metadata=OPTION)
    """Run on a worker after the answer, not in the request."""
    queue: str | None = field(default=None, metadata=OPTION)
    """The RQ queue its work goes to (default: ``queue_name``)."""
    retry: int | None = field(default=None, metadata=OPTION)
    """Extra attempts after the first (default: ``job_retries``)."""
    timeout: int | None = field(default=None, metadata=OPTION)
    """Seconds one attempt may take (default: ``job_timeout``)."""
    concurrency: int | None = field(default=None, metadata=OPTION)
    """At most this many calls at once per worker process (a rate-limited API)."""
    ordered_by: str | Callable[[Event], Any] | None = field(default=None, metadata=OPTION)
    """An ``Event`` attribute name, or ``event -> str | None``: events with the same key run
    one at a time, in acknowledgement order (``None``: that event is not ordered)."""
    on_failure: str = field(default="skip", metadata=OPTION)
    """Ordered handlers: once an event failed for good, its key ``skip``s it (default) or
    ``block``s until an operator requeues or skips it."""
    order: int = 0

    def order_key(self, event: Event) -> str | None:
        """The event's order key for this handler, or ``None`` (not ordered).

        Computed when the delivery is acknowledged. A key function that raises is
        logged and its event runs unordered, as a filter that raises is no match:
        the delivery must still be stored.
        """
        by = self.ordered_by
        if by is None:
            return None
        try:
            value = getattr(event, by) if isinstance(by, str) else by(event)
        except Exception:
            log.exception("ordered_by of %s raised on event %s: runs unordered", self.id, event.id)
            return None
        return None if value is None else str(value)

    @cached_property
    def id(self) -> str:
        """Stable across processes: how a worker finds the handler a job names.

        Lambdas and local functions share qualnames, so their line tells them apart.
        Kept once computed (the packet names it once per event).
        """
        qualname = self.func.__qualname__
        if "<" in qualname:
            qualname += f"#L{getattr(getattr(self.func, '__code__', None), 'co_firstlineno', 0)}"
        return f"{self.func.__module__}:{qualname}@{self.pattern}"

    def matches(self, event: Event) -> bool:
        if self.filter is None:
            return True
        try:
            return self.filter(event)
        except Exception:
            log.exception("filter of %s raised on event %s; treated as no match", self.id, event.id)
            return False


OPTIONS = tuple(f.name for f in fields(Handler) if f.metadata.get("option"))
"""The handler options, in the order ``Handler`` declares them."""
_EVENT_ATTRIBUTES = sorted(
    name
    for name in {*Event.__dataclass_fields__, *vars(Event)}
    if not name.startswith("_") and not callable(getattr(Event, name, None)) and name != "graph"
)
"""What ``ordered_by`` may name: ``Event``'s data fields and accessors."""


_SIGNALS: dict[tuple[str, str], tuple[Any, ...]] = {}
"""An event name's signals, most specific first: ``match`` runs once per event."""
_SIGNALS_KEPT = 1024


def _signals_of(name: tuple[str, str]) -> tuple[Any, ...]:
    signals = _SIGNALS.get(name)
    if signals is None:
        if len(_SIGNALS) >= _SIGNALS_KEPT:  # names come from signed bodies: still bound them
            _SIGNALS.clear()
        signals = _SIGNALS[name] = tuple(event_signal(p) for p in patterns_for(*name))
    return signals


class Router:
    """Handler registry; ``create_app`` uses the module-level default one unless given another."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._receivers: dict[str, Callable[..., Handler | None]] = {}
        self._handler_of: dict[Callable[..., Handler | None], Handler] = {}
        self._found: dict[tuple[str, str], tuple[int, list[Handler] | None]] = {}
        """``_candidates`` by event name, with the signals' ``generation()`` it was found at."""

    def on(
        self, name: str, *filters: F.Filter | Callable[[Event], Any], **keywords: Any
    ) -> Callable[[T], T]:
        """Decorator: run the function for every event named ``name`` that passes the filters.

        ``name`` is ``"topic.field"``, ``"topic.*"`` or ``"*"``. Keywords are handler
        options (``OPTIONS``: ``background=True``, ``retry=3``, ``ordered_by="sender_id"``,
        see ``Handler``) or filters on event attributes (``verb="add"``,
        ``integration="hr"``, ``kind="postback"``, ``sender_id=ADMIN``). Returns the
        function unchanged.
        """

        def decorator(func: T) -> T:
            self.connect(name, func, *filters, **keywords)
            return func

        return decorator

    def connect(
        self,
        name: str,
        func: HandlerFunc,
        *filters: F.Filter | Callable[[Event], Any],
        **keywords: Any,
    ) -> Handler:
        """The plain-call twin of ``on``."""
        if not _PATTERN.match(name):
            raise PluginError(
                f"{name!r} is not an event pattern; use 'topic.field', 'topic.*' or '*' "
                "(e.g. 'group.comments')"
            )
        if not callable(func):
            raise PluginError(f"handler for {name!r} is not callable")
        if not _takes_one_argument(func):
            raise PluginError(
                f"handler {getattr(func, '__qualname__', func)!r} for {name!r} must take the "
                "event as its one argument: def handler(event): ..."
            )
        options = {k: v for k, v in keywords.items() if k in OPTIONS}
        match = {k: v for k, v in keywords.items() if k not in OPTIONS}
        unknown = set(match) - _RESERVED_MATCH
        if unknown:
            raise PluginError(
                f"unknown option(s) {sorted(unknown)} for {name!r}; filter keywords are "
                f"{sorted(_RESERVED_MATCH)}, options are {', '.join(OPTIONS)}"
            )
        _check_options(name, options)
        combined = _combine(
            [F.where(f) for f in filters]
            + [F.attribute(key, expected) for key, expected in match.items()]
        )
        handler = Handler(func=func, pattern=name, filter=combined, order=next(_order), **options)
        if handler.id in self._handlers:
            self.disconnect(handler.id)
        self._add(handler)
        return handler

    def _add(self, handler: Handler) -> None:
        def receive(sender: Any, event: Event) -> Handler | None:
            return handler if handler.matches(event) else None

        self._handlers[handler.id] = handler
        self._receivers[handler.id] = receive
        self._handler_of[receive] = handler  # known before the signal yields it
        event_signal(handler.pattern).connect(receive, sender=self, weak=False)

    def disconnect(self, handler_id: str) -> None:
        handler = self._handlers.pop(handler_id)
        receive = self._receivers.pop(handler_id)
        self._handler_of.pop(receive, None)
        event_signal(handler.pattern).disconnect(receive, sender=self)

    def clear(self) -> None:
        for handler_id in list(self._handlers):
            self.disconnect(handler_id)

    def match(self, event: Event) -> list[Handler]:
        """Handlers for the event, in registration order."""
        found: list[Handler] = []
        for signal in _signals_of((event.topic, event.field)):
            if not signal.receivers:
                continue
            for receive in signal.receivers_for(self):  # this router's own ``receive``s
                handler = receive(self, event=event)
                if handler is not None:
                    found.append(handler)
        found.sort(key=lambda h: h.order)
        return found

    def match_all(self, events: Iterable[Event]) -> list[tuple[Event, Handler]]:
        """``(event, handler)`` for every handler of every event, as ``match`` finds them.

        Each event name's handlers are looked up once per call, and only those with a
        filter are asked per event: a 1,000-change delivery (one name) spent ≈ 3 µs an
        event in ``match``'s signal lookups.
        """
        pairs: list[tuple[Event, Handler]] = []
        known: dict[tuple[str, str], list[Handler] | None] = {}
        for event in events:
            name = (event.topic, event.field)
            if name in known:
                candidates = known[name]
            else:
                candidates = known[name] = self._kept_candidates(name)
            if candidates is None:  # a receiver that is not one of ours: ask as match does
                pairs.extend([(event, handler) for handler in self.match(event)])
                continue
            for handler in candidates:
                if handler.filter is None or handler.matches(event):
                    pairs.append((event, handler))
        return pairs

    def _kept_candidates(self, name: tuple[str, str]) -> list[Handler] | None:
        """``_candidates``, looked up again only after a signal's receivers changed."""
        at = generation()
        entry = self._found.get(name)
        if entry is not None and entry[0] == at:
            return entry[1]
        if len(self._found) >= _SIGNALS_KEPT:  # names come from signed bodies: bound them
            self._found.clear()
        found = self._found[name] = (at, self._candidates(name))
        return found[1]

    def _candidates(self, name: tuple[str, str]) -> list[Handler] | None:
        """This router's handlers listening on an event name, in registration order (``None``
        when a receiver on its signals is not one of ours)."""
        found: list[Handler] = []
        for signal in _signals_of(name):
            if not signal.receivers:
                continue
            for receive in signal.receivers_for(self):
                handler = self._handler_of.get(receive)
                if handler is None:
                    return None
                found.append(handler)
        found.sort(key=lambda h: h.order)
        return found

    def handler(self, handler_id: str) -> Handler:
        try:
            return self._handlers[handler_id]
        except KeyError:
            raise PluginError(
                f"no handler {handler_id!r} is registered here; the worker must load the same "
                "handler modules as the web process (RECEIVER_HANDLERS / handlers in the config)"
            ) from None

    def handlers(self) -> list[Handler]:
        return sorted(self._handlers.values(), key=lambda h: h.order)

    @contextmanager
    def set_aside(self, leave: Callable[[Handler], bool]) -> Iterator[Router]:
        """Handlers for which ``leave`` is true are disconnected for the block, and come back
        after it as they were, every option included (tests that must see only some)."""
        aside = [h for h in self.handlers() if leave(h)]
        for handler in aside:
            self.disconnect(handler.id)
        try:
            yield self
        finally:
            for handler in aside:
                if handler.id not in self._handlers:
                    self._add(handler)

    @contextmanager
    def isolated(self) -> Iterator[Router]:
        """Registrations made inside the block are removed after it (tests)."""
        before = set(self._handlers)
        try:
            yield self
        finally:
            for handler_id in set(self._handlers) - before:
                self.disconnect(handler_id)


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse option values that cannot work, at registration, saying how to fix them."""
    retry, timeout = options.get("retry"), options.get("timeout")
    concurrency, ordered_by = options.get("concurrency"), options.get("ordered_by")
    on_failure = options.get("on_failure", "skip")
    if retry is not None and retry < 0:
        raise PluginError("retry must be >= 0 (extra attempts after the first)")
    if timeout is not None and timeout <= 0:
        raise PluginError("timeout must be a positive number of seconds")
    if concurrency is not None and concurrency < 1:
        raise PluginError("concurrency must be >= 1 (calls at once per worker process)")
    if isinstance(ordered_by, str):
        if ordered_by not in _EVENT_ATTRIBUTES:
            raise PluginError(
                f"ordered_by={ordered_by!r} for {name!r} is not an Event attribute; name one of "
                f"{', '.join(_EVENT_ATTRIBUTES)}, or pass a function event -> str | None"
            )
    elif ordered_by is not None and not (callable(ordered_by) and _takes_one_argument(ordered_by)):
        raise PluginError(
            f"ordered_by for {name!r} must be an Event attribute name (e.g. 'sender_id') or a "
            "function taking the event and returning its key: ordered_by=lambda event: ..."
        )
    if ordered_by is not None and not options.get("background"):
        raise PluginError(
            f"ordered_by for {name!r} orders background work; add background=True (inline "
            "handlers already run in the request, in the body's order)"
        )
    if on_failure not in ON_FAILURE:
        raise PluginError(
            f"on_failure={on_failure!r} for {name!r}; use 'skip' (the key moves on, the default) "
            "or 'block' (the key waits for `receiver failed requeue` or `receiver failed skip`)"
        )
    if on_failure != "skip" and ordered_by is None:
        raise PluginError(
            f"on_failure={on_failure!r} for {name!r} applies to ordered handlers; add "
            "ordered_by=... (an Event attribute or a key function)"
        )


def _takes_one_argument(func: Callable[..., Any]) -> bool:
    """Whether ``func(event)`` binds; a callable whose signature cannot be read gets the
    benefit of the doubt (some builtins and C extensions)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(object())
    except TypeError:
        return False
    return True


def _combine(parts: list[F.Filter]) -> F.Filter | None:
    if not parts:
        return None
    combined = parts[0]
    for part in parts[1:]:
        combined = combined & part
    return combined


default_router = Router()
"""The router ``receiver.on`` registers on; every app uses it unless given another."""


@dataclass
class _Registration:
    """One ``receiver.on`` / ``receiver.connect`` call, kept to register it again on another
    router (``register_recorded``)."""

    name: str
    func: HandlerFunc
    filters: tuple[F.Filter | Callable[[Event], Any], ...]
    options: dict[str, Any] = field(default_factory=dict)


_building: ContextVar[Router | None] = ContextVar("receiver_building", default=None)
_recorded: dict[str, dict[str, _Registration]] = {}
"""Module name → handler id → the registration its function made through ``receiver.on``
(a reloaded module's newer one replaces the old)."""


@contextmanager
def loading(router: Router) -> Iterator[Router]:
    """Handler modules imported inside the block register on ``router``, not the default.

    What Flask's ``Blueprint`` does by recording and replaying, done for plain
    modules: ``receiver.on`` lands on the router being built.
    """
    token = _building.set(router)
    try:
        yield router
    finally:
        _building.reset(token)


def register_recorded(module: str, router: Router) -> int:
    """Register on ``router`` what ``module`` registered through ``receiver.on`` when it was
    imported (for an app built after the module was first imported); return how many."""
    added = 0
    for handler_id, r in list(_recorded.get(module, {}).items()):
        if handler_id not in router._handlers:
            router.connect(r.name, r.func, *r.filters, **r.options)
            added += 1
    return added


def connect(
    name: str,
    func: HandlerFunc,
    *filters: F.Filter | Callable[[Event], Any],
    **options: Any,
) -> Handler:
    """``Router.connect`` on the router being built (see ``loading``), else the default one."""
    router = _building.get() or default_router
    handler = router.connect(name, func, *filters, **options)
    module = getattr(func, "__module__", None) or ""
    _recorded.setdefault(module, {})[handler.id] = _Registration(name, func, filters, options)
    return handler


def on(
    name: str, *filters: F.Filter | Callable[[Event], Any], **keywords: Any
) -> Callable[[T], T]:
    """The handler decorator: ``Router.on`` on the router being built, else the default one.

    A module that decorates at import time is enough: imported by an app's
    start-up (``handlers`` / ``RECEIVER_HANDLERS``), its handlers land on that
    app's router; imported on its own, on the default router every app uses
    unless given another. Keywords are handler options (``OPTIONS``, see
    ``Handler``) or attribute filters. Returns the function unchanged.
    """

    def decorator(func: T) -> T:
        connect(name, func, *filters, **keywords)
        return func

    return decorator
