"""Turn a verified body into events. No I/O: bytes in, ``Event`` list out.

Every shape Meta sends is read (``changes``, ``messaging``, ``standby``, the
older ``changed_fields``; WhatsApp values split into one event per message or
status); anything unknown is still routed, never dropped. Anything that is not
an envelope raises ``PayloadRejected`` with a 4xx, and nothing else escapes:
whatever a verified body holds, the answer is events or a 4xx, never a 500.
How each shape names its fields and identifies its items lives in ``shapes``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.errors import PayloadRejected
from receiver.model import shapes
from receiver.model.events import Event, new_event

_ENTRY_KEYS = {"id", "time", "changes", "messaging", "standby", "changed_fields"}
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_MS_THRESHOLD = 1e11  # 1e11 s is the year 5138; 1e11 ms is 1973


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_floats_parsed = itertools.count()
"""Advanced once per float token the decoder reads (and once per check): the parser learns
whether a body held any float by comparing two ``next`` calls. Another thread's floats can
only make it think so wrongly (then ids take the slower, always exact, path), never miss one."""


class Unbounded(float):
    """A number past a float's range (``1e999``), which json reads as ±infinity.

    A float in every way but its type: orjson refuses it (it would write ``null``), so
    whoever serialises an event with orjson falls back to json.dumps, which writes
    ``Infinity`` as it always did (``handoff.packets``).
    """

    __slots__ = ()


def _parse_float(text: str) -> float:
    next(_floats_parsed)
    number = float(text)
    return number if math.isfinite(number) else Unbounded(number)


_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_parse_float)
_BRACKETS = bytes.maketrans(b"{[}]", b"\x01\x01\xff\xff")
"""Opening brackets to 1, closing ones to -1 (as signed bytes), for ``_depth_exceeds``."""
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"{}[]'))
_COUNT_BELOW = 16 * 1024
"""Bodies up to this size count their brackets before checking their depth."""


def decode(body: bytes, max_depth: int) -> dict[str, Any]:
    """Parse the body as a JSON object no deeper than ``max_depth``."""
    return _decode(body, max_depth)[0]


def _decode(body: bytes, max_depth: int) -> tuple[dict[str, Any], bool]:
    """``decode``, and whether the body held a float (a number with a fraction or exponent)."""
    fast = _fast_decode(body, max_depth)
    if fast is not None:
        return fast, False
    return _json_decode(body, max_depth)


_SHAPE = bytes.maketrans(b"0123456789.eE:,[ \t\n\r-", b"0000000000...::{:::::")
"""Digits to ``0``, what may follow one in a float to ``.``, what may precede a number's
digits in an object or array (whitespace and its sign too) to ``:``; ``[`` to ``{``,
counted with ``{`` for the depth check. Nothing deleted: a plain table is ≈ 2k
instructions cheaper."""
_LONG_INTEGERS = (b":" + b"0" * 19, b"{" + b"0" * 19)


def _fast_decode(body: bytes, max_depth: int) -> dict[str, Any] | None:
    """The body as orjson reads it, when that is json's reading; ``None``: ask json.

    orjson reads a JSON object into the same dicts, lists, strings, integers, booleans
    and ``None`` as json, in the same order (a repeated key: the last value, at the
    first place); it differs on floats (its own parser, ``1e999`` refused), on integers
    past 64 bits (floats to it) and on what it refuses (json's messages are the
    answer's). So it is asked only when no digit is followed by ``.``, ``e`` or ``E``
    and no run of 19 digits follows ``:``, ``,`` or ``[`` (whitespace and a sign
    between them): then the body holds no float and no integer past 18 digits. Text
    in strings can only send a body to json (as before), never hide a number. Anything
    orjson refuses, and any JSON that is not an object, goes to json for its answer.
    ≈ 37k instructions against ≈ 50k for json, a 509-byte delivery (callgrind).
    """
    shape = body.translate(_SHAPE)
    # ``find``, not ``in``: bytes' ``in`` first tries its operand as an integer, and the
    # TypeError it formats and drops costs ≈ 1k instructions a test.
    if (
        shape.find(b"0.") >= 0
        or shape.find(_LONG_INTEGERS[0]) >= 0
        or shape.find(_LONG_INTEGERS[1]) >= 0
    ):
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    # ``shape`` holds a ``{`` for each ``{`` and ``[`` of the body: the count below
    # is ``_json_decode``'s, without a pass per bracket.
    if (len(body) > _COUNT_BELOW or shape.count(b"{") > max_depth) and _depth_exceeds(
        body, max_depth
    ):
        raise _too_deep(max_depth)
    return data


def _json_decode(body: bytes, max_depth: int) -> tuple[dict[str, Any], bool]:
    """``_decode`` by json, whose reading and messages are the contract."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadRejected(
            f"body is not valid UTF-8 (byte {exc.start}); Meta sends UTF-8 JSON",
            code="invalid_encoding",
        ) from None
    before = next(_floats_parsed)
    try:
        data = _DECODER.decode(text)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except ValueError as exc:
        raise PayloadRejected(f"body is not JSON ({_short(exc)})", code="invalid_json") from None
    floats = next(_floats_parsed) != before + 1
    # Fewer brackets than the limit cannot nest past it: most bodies skip the check. A
    # large body has more, and counting them costs half the check: it goes straight to it.
    if (
        len(body) > _COUNT_BELOW or body.count(b"{") + body.count(b"[") > max_depth
    ) and _depth_exceeds(body, max_depth):
        raise _too_deep(max_depth)
    if not isinstance(data, dict):
        raise _not_envelope(f"body is a JSON {type(data).__name__}, not an object")
    return data, floats


def parse(
    body: bytes, *, delivery_id: str, integration: str, max_depth: int, replayed: bool = False
) -> list[Event]:
    """Every routable item of a signed body, in delivery order."""
    fast = _fast_decode(body, max_depth)  # ``_decode``, without its frame
    envelope, floats = _json_decode(body, max_depth) if fast is None else (fast, False)
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
    append = events.append
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PayloadRejected(
                f"entry[{position}] must be an object", code="bad_entry", status=422
            )
        raw_entry_id = entry.get("id")
        entry_id = (
            None
            if raw_entry_id is None or isinstance(raw_entry_id, (dict, list))  # no Union built
            else str(raw_entry_id)
        )
        entry_time: datetime | None = None
        entry_time_read = False  # read when an item has no time of its own: comments have
        # Most entries hold only known keys: a subset test in C, not a comprehension.
        extra = {} if entry.keys() <= _ENTRY_KEYS else _extra(entry)
        for field, value, item_time, identity in _items(topic, entry, position):
            verb = value.get("verb") if type(value) is dict else None
            time = None if item_time is None else to_utc(item_time)
            if time is None:
                if not entry_time_read:
                    entry_time, entry_time_read = to_utc(entry.get("time")), True
                time = entry_time
            append(
                new_event(
                    topic,
                    field,
                    value,
                    event_id(integration, topic, entry_id, field, identity, floats=floats),
                    delivery_id,
                    integration,
                    verb if type(verb) is str else None,
                    entry_id,
                    time,
                    replayed,
                    dict(extra) if extra else {},
                )
            )
    return events


def _extra(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's keys beyond the envelope's own, carried on each of its events."""
    return {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}


Item = tuple[str, Any, Any, Any]
"""``(field, value, the item's own time, what identifies the item)``."""


def _items(topic: str, entry: dict[str, Any], position: int) -> list[Item]:
    """The entry's items, in order: a list, not a generator (no frame resumed per item)."""
    out: list[Item] = []
    append = out.append
    found = False
    changes = entry.get("changes")
    if changes is not None:
        found = True
        if not isinstance(changes, list):
            _list(changes, position, "changes")
        for index, change in enumerate(changes):
            if not isinstance(change, dict) or not isinstance(change.get("field"), str):
                raise PayloadRejected(
                    f"entry[{position}].changes[{index}] must be an object with a string 'field'",
                    code="bad_change",
                    status=422,
                )
            if topic == shapes.WHATSAPP:
                out.extend(_change(topic, change["field"], change.get("value")))
            else:  # one item per change: no generator of its own, _own_time inlined
                value = change.get("value")
                own = None
                if type(value) is dict:
                    own = value.get("created_time")
                    if own is None:
                        own = value.get("timestamp")
                append((change["field"], value, own, value))
    for key in ("messaging", "standby"):
        items = entry.get(key)
        if items is None:
            continue
        found = True
        for index, item in enumerate(_list(items, position, key)):
            if not isinstance(item, dict):
                raise PayloadRejected(
                    f"entry[{position}].{key}[{index}] must be an object",
                    code="bad_change",
                    status=422,
                )
            field = "standby" if key == "standby" else shapes.messaging_field(topic, item)
            kind = shapes.messaging_kind(topic, item)
            mid = shapes.own_id(topic, kind, item)
            append((field, item, item.get("timestamp"), ["mid", mid] if mid else item))
    changed = entry.get("changed_fields")
    if changed is not None:
        found = True
        rest = {k: v for k, v in entry.items() if k != "changed_fields"}
        identity = {k: v for k, v in rest.items() if k != "time"}
        for index, name in enumerate(_list(changed, position, "changed_fields")):
            if not isinstance(name, str) or not name:
                raise PayloadRejected(
                    f"entry[{position}].changed_fields[{index}] must be a field name (a string)",
                    code="bad_change",
                    status=422,
                )
            append((name, rest, None, identity))
    if not found:
        append(("entry", entry, None, {k: v for k, v in entry.items() if k != "time"}))
    return out


def _change(topic: str, field: str, value: Any) -> Iterator[Item]:
    split = shapes.split_whatsapp(value) if topic == shapes.WHATSAPP else None
    if split is None:
        yield field, value, _own_time(value), value
        return
    for kind, item_value, item in split:
        wamid = shapes.own_id(topic, kind, item)
        item_time = item.get("timestamp") if isinstance(item, dict) else None
        yield field, item_value, item_time, ["wamid", wamid] if wamid else [kind, item]


def _own_time(value: Any) -> Any:
    """A change value's own time, when it carries one (the entry's is when Meta sent it)."""
    if type(value) is not dict:
        return None
    own = value.get("created_time")
    return own if own is not None else value.get("timestamp")


def event_id(
    integration: str,
    topic: str,
    entry_id: str | None,
    field: str,
    item: Any,
    *,
    floats: bool = True,
) -> str:
    """The dedupe key: the same item has the same id in any redelivery, whatever its batch.

    Built only from what identifies the item (a message's id, else its content
    with its own timestamp), never from envelope fields such as ``entry.time``
    that change when Meta retries. The hash is of ``json.dumps``'s canonical text,
    as it always was. ``floats=False`` is the parser's word that its body held no float
    anywhere: then orjson's sorted compact text is json.dumps's byte for byte when it is
    ASCII and holds no DEL (json escapes it), since strings, integers, true, false and
    null are written alike; floats are not (``1e-05`` against ``1e-5``, and an overflowing
    ``1e999`` is ``Infinity`` to json, ``null`` to orjson). 0.6 against 4.7 µs for a
    comment, with no scan of each item's text for float-like runs (≈ 2 µs an event).
    """
    identity = [integration, topic, entry_id, field, item]
    canonical: bytes | None = None
    if not floats:
        try:
            canonical = orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer past 64 bits, nesting past orjson's limit
            canonical = None
        if canonical is not None and (not canonical.isascii() or canonical.find(b"\x7f") >= 0):
            canonical = None
    if canonical is None:
        canonical = json.dumps(
            identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
    hashed = _ID_HASH.copy()  # blake2b(canonical, digest_size=16), without parsing its options
    hashed.update(canonical)
    return hashed.hexdigest()


_ID_HASH = hashlib.blake2b(digest_size=16)
"""Never updated: each id hashes a copy (≈ 1.2k instructions an event less than a new one)."""


def to_utc(raw: Any) -> datetime | None:
    """Seconds, milliseconds, numeric strings or ISO 8601 → aware UTC; anything else → None.

    Never raises: a verified body may carry any value here (a 400-digit number,
    year 9999 at UTC-1), and a time that cannot be represented is no time.
    Zero and negative numbers are no time either (Meta's placeholders).
    """
    try:  # one function, not a wrapper: called once per event
        number: float
        if isinstance(raw, str):
            text = raw.strip()
            if ":" not in text and _NUMERIC.match(text):  # ISO times have a colon; numbers none
                number = float(text)
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if parsed.tzinfo is None:
                    return parsed.replace(tzinfo=UTC)
                return parsed.astimezone(UTC)
        elif raw is None or isinstance(raw, bool):
            return None
        elif isinstance(raw, (int, float)):  # a tuple: faster than ``int | float`` here
            number = float(raw)
        else:
            return None
        if not math.isfinite(number) or number <= 0:
            return None
        if number > _MS_THRESHOLD:
            number /= 1000.0
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether the (valid JSON) body nests containers deeper than ``limit``.

    Read from the bytes, not the decoded tree: a Python walk of every container cost
    ≈ 3 µs an event in a 1,000-change delivery, this ≈ 0.5. Escaped backslashes and
    quotes go first, so every remaining quote opens or closes a string; then only quotes
    and brackets are kept, adjacent quotes dropped (an empty string, or one string's end
    and the next's start: either way what lies between was in a string or empty), what
    is still quoted dropped, and the deepest running sum of the brackets (+1, -1) is
    the depth.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = body.translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    return max(itertools.accumulate(array("b", structure)), default=0) > limit


def _list(value: Any, position: int, key: str) -> list[Any]:
    """``entry[position][key]``, which must be a list (its name formatted only to refuse it)."""
    if isinstance(value, list):
        return value
    raise PayloadRejected(f"entry[{position}].{key} must be a list", code="bad_entry", status=422)


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
