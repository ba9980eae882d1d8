"""The receiver's blinker signals.

Routing: one signal per event name (``group.comments``) plus one per wildcard
pattern (``group.*``, ``*``), in a private namespace. A router connects its
handlers with itself as the sender, so two routers never see each other's.

Lifecycle, in a namespace of their own so no event name can collide with them:
``delivery_finished`` is sent by the core once per request it answered, with
``request`` and ``result``; metrics, traces and stats listen to it, and so
may an application (``delivery_finished.connect(func)``).
"""

from __future__ import annotations

from blinker import NamedSignal, Namespace

_signals = Namespace()
_lifecycle = Namespace()

delivery_finished: NamedSignal = _lifecycle.signal("delivery-finished")
"""Sent by ``Core.handle`` after every answer: ``sender=core, request=..., result=...``."""


def event_signal(pattern: str) -> NamedSignal:
    """The signal an event name or wildcard pattern is sent on."""
    return _signals.signal(pattern)


def patterns_for(topic: str, field: str) -> tuple[str, str, str]:
    """The patterns an event named ``topic.field`` is sent on, most specific first."""
    return (f"{topic}.{field}", f"{topic}.*", "*")
