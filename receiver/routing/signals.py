"""The receiver's blinker signals.

Routing: one signal per event name (``group.comments``) plus one per wildcard
pattern (``group.*``, ``*``), in a private namespace. A router connects its
handlers with itself as the sender, so two routers never see each other's.

Lifecycle, in a namespace of their own so no event name can collide with them:
``delivery_finished`` is sent by the core once per request it answered, with
``request`` and ``result``; metrics, traces and stats listen to it, and so
may an application (``delivery_finished.connect(func)``).

The signals here count their changes (``generation``), so who receives what can
be looked up once and kept until a connection changes (``receivers``): blinker's
``receivers_for`` builds a set and a generator on every call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from inspect import iscoroutine
from types import MethodType
from typing import Any

from blinker import ANY, NamedSignal, Namespace

_generation = 0


def _changed() -> None:
    global _generation
    _generation += 1


def generation() -> int:
    """Bumped after every change to the receivers of a signal made here: a lookup
    made at one value holds as long as it is unchanged."""
    return _generation


class _Signal(NamedSignal):
    """A ``NamedSignal`` that bumps ``generation()`` after each change of its receivers.

    Every path that changes what ``receivers_for`` yields passes here: a connection,
    a disconnection (a weak receiver's cleanup included), a weak sender's cleanup,
    ``_clear_state``.
    """

    def connect(self, receiver: Any, sender: Any = ANY, weak: bool = True) -> Any:
        try:
            return super().connect(receiver, sender, weak)
        finally:
            _changed()

    def _disconnect(self, receiver_id: Hashable, sender_id: Hashable) -> None:
        super()._disconnect(receiver_id, sender_id)
        _changed()

    def _make_cleanup_sender(self, sender_id: Hashable) -> Callable[[Any], None]:  # blinker ≥ 1.8
        cleanup = super()._make_cleanup_sender(sender_id)

        def cleanup_and_count(ref: Any) -> None:
            cleanup(ref)
            _changed()

        return cleanup_and_count

    def _cleanup_sender(self, sender_ref: Any) -> None:  # blinker 1.7's name for the same
        super()._cleanup_sender(sender_ref)  # type: ignore[misc]
        _changed()

    def _clear_state(self) -> None:
        super()._clear_state()
        _changed()


_COUNTED = all(hasattr(NamedSignal, name) for name in ("_disconnect", "_clear_state")) and any(
    hasattr(NamedSignal, name) for name in ("_make_cleanup_sender", "_cleanup_sender")
)
"""Whether this blinker changes receivers through the methods ``_Signal`` overrides (1.7
to 1.9 do): under one that renamed them, nothing is kept and every lookup is blinker's."""


class _Namespace(Namespace):
    def signal(self, name: str, doc: str | None = None) -> NamedSignal:
        if name not in self:
            self[name] = _Signal(name, doc)
        return self[name]


_signals = _Namespace()
_lifecycle = _Namespace()

delivery_finished: NamedSignal = _lifecycle.signal("delivery-finished")
"""Sent by ``Core.handle`` after every answer: ``sender=core, request=..., result=...``."""


def event_signal(pattern: str) -> NamedSignal:
    """The signal an event name or wildcard pattern is sent on."""
    return _signals.signal(pattern)


def patterns_for(topic: str, field: str) -> tuple[str, str, str]:
    """The patterns an event named ``topic.field`` is sent on, most specific first."""
    return (f"{topic}.{field}", f"{topic}.*", "*")


def send(signal: NamedSignal, sender: Any, **kwargs: Any) -> None:
    """``signal.send(sender, **kwargs)`` for a signal sent on every request, results dropped.

    blinker's ``send`` asks ``inspect`` whether each receiver is a coroutine function
    on every call, and builds a list of results; here a receiver that turns out to be
    one is refused as blinker refuses it (``RuntimeError``), its coroutine closed unrun.
    """
    for receiver in receivers(signal, sender):
        returned = receiver(sender, **kwargs)
        if returned is not None and iscoroutine(returned):
            returned.close()
            raise RuntimeError("Cannot send to a coroutine function.")


_known: dict[tuple[int, Hashable], tuple[int, tuple[Callable[..., Any], ...]]] = {}
_known_at = 0


def receivers(signal: NamedSignal, sender: Any) -> tuple[Callable[..., Any], ...]:
    """``tuple(signal.receivers_for(sender))``, kept until a signal here changes.

    Kept only for this module's signals (they count their changes) and only when
    every receiver is held strongly: a weakly held one must stay free to go.
    """
    global _known_at
    at = _generation
    if at != _known_at:
        _known.clear()  # a past state's: never read again, and its receivers may go
        _known_at = at
    kind = type(sender)
    special = kind is MethodType or issubclass(kind, str | int)
    key = (id(signal), _make_id(sender) if special else id(sender))
    entry = _known.get(key)
    if entry is not None and entry[0] == at:  # stored at this state, not a racing past one
        return entry[1]
    found = tuple(signal.receivers_for(sender))
    if _COUNTED and type(signal) is _Signal and not any(
        isinstance(r, weakref.ref) for r in signal.receivers.values()
    ):
        _known[key] = (at, found)
    return found


def _make_id(sender: Any) -> Hashable:
    """How blinker tells senders apart (its ``make_id``; ``hashable_identity`` in 1.7):
    a bound method by its function and object, a string or integer by its value."""
    if isinstance(sender, MethodType):
        return id(sender.__func__), id(sender.__self__)
    if isinstance(sender, str | int):
        return sender
    return id(sender)
