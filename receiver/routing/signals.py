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

from inspect import iscoroutine
from typing import Any

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


def send(signal: NamedSignal, sender: Any, **kwargs: Any) -> None:
    """``signal.send(sender, **kwargs)`` for a signal sent on every request, results dropped.

    blinker's ``send`` asks ``inspect`` whether each receiver is a coroutine function
    on every call, and builds a list of results; here a receiver that turns out to be
    one is refused as blinker refuses it (``RuntimeError``), its coroutine closed unrun.
    """
    for receiver in signal.receivers_for(sender):
        returned = receiver(sender, **kwargs)
        if returned is not None and iscoroutine(returned):
            returned.close()
            raise RuntimeError("Cannot send to a coroutine function.")
