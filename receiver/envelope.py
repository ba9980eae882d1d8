"""Turn a verified body into events. No I/O: bytes in, ``Event`` list out.

Every shape Meta sends is read (``changes``, ``messaging``, ``standby``, the
older ``changed_fields``); anything unknown is still routed, never dropped.
Anything that is not an envelope raises ``PayloadRejected`` with a 4xx.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .errors import PayloadRejected
from .events import Event

# Messenger names a messaging item's subscription field by the key it carries.
MESSAGING_FIELDS = {
    "message": "messages",
    "postback": "messaging_postbacks",
    "delivery": "message_deliveries",
    "read": "message_reads",
    "reaction": "message_reactions",
    "optin": "messaging_optins",
    "referral": "messaging_referrals",
    "account_linking": "messaging_account_linking",
    "policy_enforcement": "messaging_policy_enforcement",
    "pass_thread_control": "messaging_handovers",
    "take_thread_control": "messaging_handovers",
    "request_thread_control": "messaging_handovers",
    "app_roles": "messaging_handovers",
    "game_play": "messaging_game_plays",
}
_MESSAGING_ENVELOPE_KEYS = {"sender", "recipient", "timestamp"}
_ENTRY_KEYS = {"id", "time", "changes", "messaging", "standby", "changed_fields"}
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_MS_THRESHOLD = 1e11  # 1e11 s is the year 5138; 1e11 ms is 1973


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def decode(body: bytes, max_depth: int) -> dict[str, Any]:
    """Parse the body as a JSON object no deeper than ``max_depth``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadRejected(
            f"body is not valid UTF-8 (byte {exc.start}); Meta sends UTF-8 JSON",
            code="invalid_encoding",
        ) from None
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError as exc:
        raise PayloadRejected(f"body is not JSON ({_short(exc)})", code="invalid_json") from None
    # Fewer brackets than the limit cannot nest past it: most bodies skip the walk.
    if body.count(b"{") + body.count(b"[") > max_depth and _depth_exceeds(data, max_depth):
        raise _too_deep(max_depth)
    if not isinstance(data, dict):
        raise _not_envelope(f"body is a JSON {type(data).__name__}, not an object")
    return data


def parse(
    body: bytes, *, delivery_id: str, integration: str, max_depth: int, replayed: bool = False
) -> list[Event]:
    """Every routable item of a signed body, in delivery order."""
    envelope = decode(body, max_depth)
    topic = envelope.get("object")
    if not isinstance(topic, str) or not topic:
        if "field" in envelope and "value" in envelope:
            raise _not_envelope(
                "body is a single change ({field, value}), not an envelope; "
                'wrap it as {"object": TOPIC, "entry": [{"changes": [...]}]}'
            )
        raise _not_envelope("the 'object' key (the topic) is missing or not a string")
    entries = envelope.get("entry")
    if entries is None:
        raise _not_envelope("the 'entry' key is missing")
    if not isinstance(entries, list):
        raise PayloadRejected(
            f"'entry' must be a list, not {type(entries).__name__}", code="bad_entry", status=422
        )
    events: list[Event] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PayloadRejected(
                f"entry[{position}] must be an object", code="bad_entry", status=422
            )
        for field, value, item_time in _items(entry, position):
            events.append(
                _event(topic, entry, field, value, item_time, delivery_id, integration, replayed)
            )
    return events


def _items(entry: dict[str, Any], position: int) -> Iterator[tuple[str, Any, Any]]:
    found = False
    changes = entry.get("changes")
    if changes is not None:
        found = True
        for index, change in enumerate(_list(changes, f"entry[{position}].changes")):
            if not isinstance(change, dict) or not isinstance(change.get("field"), str):
                raise PayloadRejected(
                    f"entry[{position}].changes[{index}] must be an object with a string 'field'",
                    code="bad_change",
                    status=422,
                )
            yield change["field"], change.get("value"), None
    for key in ("messaging", "standby"):
        items = entry.get(key)
        if items is None:
            continue
        found = True
        for index, item in enumerate(_list(items, f"entry[{position}].{key}")):
            if not isinstance(item, dict):
                raise PayloadRejected(
                    f"entry[{position}].{key}[{index}] must be an object",
                    code="bad_change",
                    status=422,
                )
            field = "standby" if key == "standby" else messaging_field(item)
            yield field, item, item.get("timestamp")
    changed = entry.get("changed_fields")
    if changed is not None:
        found = True
        rest = {k: v for k, v in entry.items() if k != "changed_fields"}
        for name in _list(changed, f"entry[{position}].changed_fields"):
            yield str(name), rest, None
    if not found:
        yield "entry", entry, None


def messaging_field(item: dict[str, Any]) -> str:
    """The subscription field a messaging item belongs to, named by the key it carries."""
    for key, field in MESSAGING_FIELDS.items():
        if key in item:
            if key == "message" and isinstance(item[key], dict) and item[key].get("is_echo"):
                return "message_echoes"
            return field
    others = [k for k in item if k not in _MESSAGING_ENVELOPE_KEYS]
    return others[0] if others else "messaging"


def _event(
    topic: str,
    entry: dict[str, Any],
    field: str,
    value: Any,
    item_time: Any,
    delivery_id: str,
    integration: str,
    replayed: bool,
) -> Event:
    raw_entry_id = entry.get("id")
    entry_id = (
        None if raw_entry_id is None or isinstance(raw_entry_id, dict | list) else str(raw_entry_id)
    )
    when = to_utc(item_time) or to_utc(entry.get("time"))
    if when is None and isinstance(value, dict):
        when = to_utc(value.get("created_time")) or to_utc(value.get("timestamp"))
    verb = value.get("verb") if isinstance(value, dict) else None
    return Event(
        topic=topic,
        field=field,
        value=value,
        id=event_id(topic, entry_id, entry.get("time"), field, value),
        delivery_id=delivery_id,
        integration=integration,
        verb=verb if isinstance(verb, str) else None,
        entry_id=entry_id,
        time=when,
        replayed=replayed,
        extra={k: v for k, v in entry.items() if k not in _ENTRY_KEYS},
    )


def event_id(topic: str, entry_id: str | None, entry_time: Any, field: str, value: Any) -> str:
    """A key that is the same for the same item in any redelivery, whatever its batch."""
    canonical = json.dumps(
        [topic, entry_id, entry_time, field, value],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=16).hexdigest()


def to_utc(raw: Any) -> datetime | None:
    """Seconds, milliseconds, numeric strings or ISO 8601 → aware UTC; anything else → None."""
    if raw is None or isinstance(raw, bool):
        return None
    number: float
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if _NUMERIC.match(text):
            number = float(text)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number > _MS_THRESHOLD:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _depth_exceeds(data: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, dict | list)
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
    return False


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadRejected(f"{where} must be a list", code="bad_entry", status=422)
    return value


def _not_envelope(message: str) -> PayloadRejected:
    return PayloadRejected(message, code="not_an_envelope", status=422)


def _too_deep(limit: int) -> PayloadRejected:
    return PayloadRejected(
        f"JSON nests deeper than {limit} levels; raise max_depth if this is a real delivery",
        code="too_deep",
        status=422,
    )


def _short(exc: Exception) -> str:
    return str(exc).split(":", 1)[0][:120]
