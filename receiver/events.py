"""``Event``: one routed item of a delivery, as plain data that survives JSON."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .graph import GraphClient


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
        from .graph import client  # the event is data; calling back is an upper layer's job

        return client(self.integration)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, the one background jobs and captures carry.

        Shares ``value`` and ``extra`` with the event (no deep copy: this runs
        once per event on the ack path, and the result is serialised at once).
        """
        return {
            "topic": self.topic,
            "field": self.field,
            "name": self.name,
            "value": self.value,
            "id": self.id,
            "delivery_id": self.delivery_id,
            "integration": self.integration,
            "verb": self.verb,
            "entry_id": self.entry_id,
            "time": self.time.isoformat() if self.time else None,
            "replayed": self.replayed,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        values = {k: v for k, v in data.items() if k != "name"}
        raw_time = values.get("time")
        values["time"] = datetime.fromisoformat(raw_time).astimezone(UTC) if raw_time else None
        return cls(**values)
