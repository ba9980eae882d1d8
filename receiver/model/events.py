"""``Event``: one routed item of a delivery, as plain data that survives JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from receiver.errors import ConfigError
from receiver.model import shapes

if TYPE_CHECKING:
    from receiver.graph.calls import GraphClient

_graph_lookup: Callable[[str], GraphClient] | None = None


def use_graph(lookup: Callable[[str], GraphClient]) -> None:
    """How ``Event.graph`` finds an integration's client. The app passes
    ``receiver.graph.client`` when it is built: events are data, and the model
    never imports the Graph layer."""
    global _graph_lookup
    _graph_lookup = lookup


@dataclass(frozen=True, slots=True)
class Event:
    """One ``changes[]`` or ``messaging[]`` item, named ``"topic.field"``.

    ``id`` is derived from the item's content, so a redelivery of the same
    item has the same id (the dedupe key); ``delivery_id`` names the POST.
    """

    topic: str
    field: str
    value: Any
    id: str
    delivery_id: str
    integration: str
    verb: str | None = None
    entry_id: str | None = None
    time: datetime | None = None
    replayed: bool = False
    extra: dict[str, Any] = dataclass_field(default_factory=dict)
    """Entry-level keys besides ``id``/``time`` (e.g. ``uid``), kept so nothing is lost."""

    @property
    def name(self) -> str:
        return f"{self.topic}.{self.field}"

    @property
    def graph(self) -> GraphClient:
        """The Graph API client of this event's integration: pooled per process, proof on.

        Looked up on use, never stored, so events stay plain data.
        """
        if _graph_lookup is None:
            raise ConfigError(
                "event.graph needs the app: build it first (create_app() or build_core()), "
                "or call receiver.graph.client(event.integration) directly"
            )
        return _graph_lookup(self.integration)

    # Accessors: the same facts from every shape (docs/events.md has where each
    # comes from per object). Derived from ``value``, so they survive to_dict/from_dict.

    @property
    def sender_id(self) -> str | None:
        """Who sent the item: ``sender.id``, WhatsApp ``from``, a change's ``from.id``."""
        return shapes.sender_id(self.topic, self.value)

    @property
    def recipient_id(self) -> str | None:
        """Who it was sent to: ``recipient.id``, WhatsApp ``metadata.phone_number_id``."""
        return shapes.recipient_id(self.topic, self.value)

    @property
    def text(self) -> str | None:
        """The message text: ``message.text``, WhatsApp ``text.body``, a post's ``message``."""
        return shapes.text(self.topic, self.value)

    @property
    def message_id(self) -> str | None:
        """``mid``, WhatsApp ``id`` (wamid), a comment's ``comment_id``, a post's ``post_id``."""
        return shapes.message_id(self.topic, self.value)

    @property
    def kind(self) -> str | None:
        """What the item is within its field: ``message``, ``postback``, ``status``, ``comment``."""
        return shapes.kind(self.topic, self.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, the one background jobs and captures carry.

        Shares ``value`` and ``extra`` with the event (no deep copy: this runs
        once per event on the ack path, and the result is serialised at once).
        """
        return as_dict(self, self.time.isoformat() if self.time else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """The event ``to_dict`` gave ``data`` for (its ``name`` ignored, a field it lacks
        defaulted).

        A dict of exactly ``to_dict``'s keys (a drainer's every item) is made by
        ``new_event``: ≈ 0.7 µs instead of 2.4 µs an event, the same event (a test
        compares them).
        """
        if cls is Event and data.keys() == _DICT_KEYS:
            raw_time = data["time"]
            return new_event(
                data["topic"], data["field"], data["value"], data["id"], data["delivery_id"],
                data["integration"], data["verb"], data["entry_id"],
                datetime.fromisoformat(raw_time).astimezone(UTC) if raw_time else None,
                data["replayed"], data["extra"],
            )  # fmt: skip
        values = {k: v for k, v in data.items() if k != "name"}
        raw_time = values.get("time")
        values["time"] = datetime.fromisoformat(raw_time).astimezone(UTC) if raw_time else None
        return cls(**values)


def as_dict(event: Event, time: str | datetime | None) -> dict[str, Any]:
    """``Event.to_dict`` with ``time`` as given: its text, or the datetime for orjson, which
    writes isoformat's text (``handoff.packets``: 0.8 µs an event less)."""
    return {
        "topic": event.topic,
        "field": event.field,
        "name": f"{event.topic}.{event.field}",
        "value": event.value,
        "id": event.id,
        "delivery_id": event.delivery_id,
        "integration": event.integration,
        "verb": event.verb,
        "entry_id": event.entry_id,
        "time": time,
        "replayed": event.replayed,
        "extra": event.extra,
    }


_FIELDS = tuple(f.name for f in dataclass_fields(Event))
_DICT_KEYS = frozenset((*_FIELDS, "name"))
"""The keys of ``to_dict``'s form."""


_Unfrozen = type("_Unfrozen", (), {"__slots__": _FIELDS, "__module__": __name__})
"""An ``Event``'s slots, in its order, settable: ``new_event`` fills one, then makes it
an ``Event`` (``__class__`` may change between classes of the same layout)."""


_new = object.__new__


def time_text(value: object) -> str:
    """``json.dumps``'s ``default`` for texts that hold an event's time as a datetime
    (left for orjson to write, which writes what ``isoformat`` does): json's fallback."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def new_event(
    topic: str,
    field: str,
    value: Any,
    id: str,
    delivery_id: str,
    integration: str,
    verb: str | None,
    entry_id: str | None,
    time: datetime | None,
    replayed: bool,
    extra: dict[str, Any],
) -> Event:
    """``Event(...)`` with every field given, for the parser's one per item.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    the slots' own setters, called one by one, took ≈ 9k instructions an event. Plain
    attribute stores on ``_Unfrozen``, then one ``__class__`` change, take ≈ 3.5k
    (callgrind). Gives an equal event, frozen like any other
    (``tests/unit/test_envelope.py`` checks it against the constructor).
    """
    event: Any = _new(_Unfrozen)
    event.topic = topic
    event.field = field
    event.value = value
    event.id = id
    event.delivery_id = delivery_id
    event.integration = integration
    event.verb = verb
    event.entry_id = entry_id
    event.time = time
    event.replayed = replayed
    event.extra = extra
    event.__class__ = Event
    return event  # type: ignore[no-any-return]
