"""Filters: predicates on an ``Event`` that combine with ``&``, ``|`` and ``~``.

@on("group.membership", F.verb("add") & ~F.value("member.id", "bot-id"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from receiver.model.events import Event

_MISSING = object()


class Filter:
    """A named predicate; the name shows in ``receiver routes``."""

    __slots__ = ("_predicate", "description")

    def __init__(self, predicate: Callable[[Event], bool], description: str) -> None:
        self._predicate = predicate
        self.description = description

    def __call__(self, event: Event) -> bool:
        return bool(self._predicate(event))

    def __and__(self, other: Filter) -> Filter:
        return Filter(lambda e: self(e) and other(e), f"({self.description} & {other.description})")

    def __or__(self, other: Filter) -> Filter:
        return Filter(lambda e: self(e) or other(e), f"({self.description} | {other.description})")

    def __invert__(self) -> Filter:
        return Filter(lambda e: not self(e), f"~{self.description}")

    def __repr__(self) -> str:
        return f"Filter({self.description})"


def where(predicate: Callable[[Event], Any], description: str | None = None) -> Filter:
    """Any callable taking the event."""
    if isinstance(predicate, Filter):
        return predicate
    name = description or str(getattr(predicate, "__name__", "predicate"))
    return Filter(predicate, name)


def attribute(name: str, expected: Any) -> Filter:
    """The event attribute equals ``expected`` (or is in it, for a set, list or tuple)."""
    if isinstance(expected, set | frozenset | list | tuple):
        options = frozenset(expected)
        return Filter(
            lambda e: getattr(e, name, _MISSING) in options, f"{name} in {sorted(options)}"
        )
    return Filter(lambda e: getattr(e, name, _MISSING) == expected, f"{name}={expected!r}")


def verb(expected: str | set[str] | list[str] | tuple[str, ...]) -> Filter:
    return attribute("verb", expected)


def integration(expected: str | set[str] | list[str] | tuple[str, ...]) -> Filter:
    return attribute("integration", expected)


def value(path: str, expected: Any = _MISSING) -> Filter:
    """A dotted path into ``event.value`` exists (or equals ``expected``)."""

    def check(event: Event) -> bool:
        found = lookup(event.value, path)
        if found is _MISSING:
            return False
        return expected is _MISSING or found == expected

    shown = path if expected is _MISSING else f"{path}={expected!r}"
    return Filter(check, f"value.{shown}")


def lookup(data: Any, path: str) -> Any:
    """Follow ``a.b.0.c`` through dicts and lists; a private sentinel when absent."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node
