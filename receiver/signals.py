"""The receiver's blinker signals, all in one private namespace.

One signal per event name (``group.comments``) plus one per wildcard pattern
(``group.*``, ``*``). A router connects its handlers with itself as the
sender, so two routers never see each other's handlers.
"""

from __future__ import annotations

from blinker import NamedSignal, Namespace

_signals = Namespace()


def event_signal(pattern: str) -> NamedSignal:
    """The signal an event name or wildcard pattern is sent on."""
    return _signals.signal(pattern)


def patterns_for(topic: str, field: str) -> tuple[str, str, str]:
    """The patterns an event named ``topic.field`` is sent on, most specific first."""
    return (f"{topic}.{field}", f"{topic}.*", "*")
