"""Where Meta puts the same facts in each payload shape, per object.

Three shapes carry items: Messenger-style ``messaging[]`` / ``standby[]``
items (``page``, ``instagram``, Workplace bots), WhatsApp change values that
batch ``messages[]`` and ``statuses[]``, and plain ``changes[]`` values
(Workplace, Page feed, Instagram comments). This module names a messaging
item's field (one table per object), splits WhatsApp values into items, and
reads sender, recipient, text, message id and kind out of any of them. The
envelope parser and ``Event``'s accessors both use it, so neither knows the
other. Pure functions on decoded JSON: nothing here raises on odd input.
"""

from __future__ import annotations

from typing import Any

WHATSAPP = "whatsapp_business_account"
INSTAGRAM = "instagram"
ECHO = "message+is_echo"
"""Table row for a ``message`` item carrying ``is_echo: true``."""

# Messenger's subscription fields (``page``, and any object without its own table).
# Order matters: an item is named by the first of these keys it carries.
PAGE_FIELDS: dict[str, str] = {
    "message": "messages",
    ECHO: "message_echoes",
    "message_edit": "message_edits",
    "postback": "messaging_postbacks",
    "delivery": "message_deliveries",
    "read": "message_reads",
    "reaction": "message_reactions",
    "optin": "messaging_optins",
    "referral": "messaging_referrals",
    "account_linking": "messaging_account_linking",
    "policy_enforcement": "messaging_policy_enforcement",
    "policy-enforcement": "messaging_policy_enforcement",
    "payment": "messaging_payments",
    "checkout_update": "messaging_checkout_updates",
    "pre_checkout": "messaging_pre_checkouts",
    "pass_thread_control": "messaging_handovers",
    "take_thread_control": "messaging_handovers",
    "request_thread_control": "messaging_handovers",
    "app_roles": "messaging_handovers",
    "game_play": "messaging_game_plays",
}

# Instagram's fields differ: reads are "seen", echoes stay under messages.
INSTAGRAM_FIELDS: dict[str, str] = {
    "message": "messages",
    ECHO: "messages",
    "postback": "messaging_postbacks",
    "read": "messaging_seen",
    "reaction": "message_reactions",
    "optin": "messaging_optins",
    "referral": "messaging_referral",
    "pass_thread_control": "messaging_handover",
    "take_thread_control": "messaging_handover",
    "request_thread_control": "messaging_handover",
}

MESSAGING_FIELDS: dict[str, dict[str, str]] = {INSTAGRAM: INSTAGRAM_FIELDS}
"""Per object; objects not listed use ``PAGE_FIELDS``. Unknown keys route under their own name."""

WHATSAPP_ITEMS: dict[str, str] = {
    "messages": "message",
    "statuses": "status",
    "calls": "call",
    "message_echoes": "message_echo",
    "user_preferences": "user_preference",
}
"""WhatsApp value lists whose entries are items of their own (list → ``kind``)."""

_WHATSAPP_MESSAGES = frozenset({"message", "status", "message_echo"})  # kinds whose id is a wamid
_MESSAGING_ENVELOPE = frozenset({"sender", "recipient", "timestamp"})
# Item keys that name the WhatsApp user an item is from or about (to pick its contact).
_WHATSAPP_PARTY = ("from", "recipient_id", "recipient_participant_id", "to", "wa_id")


def fields_for(topic: str) -> dict[str, str]:
    """The item key → field table of an object."""
    return MESSAGING_FIELDS.get(topic, PAGE_FIELDS)


def messaging_kind(topic: str, item: dict[str, Any]) -> str | None:
    """The key a messaging item carries (``message``, ``read``, ...); ``None`` when it has none."""
    for key in fields_for(topic):
        if key in item and key != ECHO:
            return key
    for key in item:
        if key not in _MESSAGING_ENVELOPE:
            return str(key)
    return None


def messaging_field(topic: str, item: dict[str, Any]) -> str:
    """The subscription field of a messaging item: Meta's name per object, else its own key."""
    kind = messaging_kind(topic, item)
    if kind is None:
        return "messaging"
    table = fields_for(topic)
    if kind == "message":
        message = item.get("message")
        if isinstance(message, dict) and message.get("is_echo"):
            return table[ECHO]
    return table.get(kind, kind)


def split_whatsapp(value: Any) -> list[tuple[str, dict[str, Any], Any]] | None:
    """One ``(kind, value, item)`` per message, status, ...; ``None`` when the value has none.

    Each value keeps the shared keys (``metadata``, ``errors``, ...), its item
    as a one-entry list, and the ``contacts`` entry of the user it concerns.
    A value holding a single item is returned as it came.
    """
    if not isinstance(value, dict):
        return None
    found = [
        (name, kind, item)
        for name, kind in WHATSAPP_ITEMS.items()
        if isinstance(value.get(name), list)
        for item in value[name]
    ]
    if not found:
        return None
    if len(found) == 1:
        return [(found[0][1], value, found[0][2])]
    shared = {k: v for k, v in value.items() if k not in WHATSAPP_ITEMS}
    contacts = value.get("contacts")
    split = []
    for name, kind, item in found:
        one = dict(shared)
        one[name] = [item]
        if isinstance(contacts, list):
            one["contacts"] = _contacts_of(item, contacts)
        split.append((kind, one, item))
    return split


def _contacts_of(item: Any, contacts: list[Any]) -> list[Any]:
    if not isinstance(item, dict):
        return []
    parties = {item[key] for key in _WHATSAPP_PARTY if isinstance(item.get(key), str)}
    return [c for c in contacts if isinstance(c, dict) and c.get("wa_id") in parties]


def whatsapp_item(topic: str, value: Any) -> tuple[str, dict[str, Any]] | None:
    """The ``(kind, item)`` a WhatsApp event's value carries, if it carries one."""
    if topic != WHATSAPP or not isinstance(value, dict):
        return None
    for name, kind in WHATSAPP_ITEMS.items():
        items = value.get(name)
        if isinstance(items, list) and items:
            return (kind, items[0]) if isinstance(items[0], dict) else (kind, {})
    return None


def is_messaging(value: Any) -> bool:
    """A Messenger-style item (also when the dashboard wraps one as a change value)."""
    return isinstance(value, dict) and ("sender" in value or "recipient" in value)


# --- the accessors' lookups; each returns None where the fact does not apply ---


def kind(topic: str, value: Any) -> str | None:
    wa = whatsapp_item(topic, value)
    if wa is not None:
        return wa[0]
    if not isinstance(value, dict):
        return None
    if is_messaging(value):
        return messaging_kind(topic, value)
    return _text(value.get("item"))


def sender_id(topic: str, value: Any) -> str | None:
    wa = whatsapp_item(topic, value)
    if wa is not None:
        return _scalar(wa[1].get("from"))
    if not isinstance(value, dict):
        return None
    sender = value.get("sender")
    if isinstance(sender, dict):
        return _id_of(sender) or _id_of(sender.get("community"))
    return _id_of(value.get("from")) or _scalar(value.get("sender_id"))


def recipient_id(topic: str, value: Any) -> str | None:
    if whatsapp_item(topic, value) is not None:
        metadata = value.get("metadata")
        return _scalar(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
    if not isinstance(value, dict):
        return None
    return _id_of(value.get("recipient"))


def text(topic: str, value: Any) -> str | None:
    wa = whatsapp_item(topic, value)
    if wa is not None:
        body = wa[1].get("text")
        return _text(body.get("body")) if isinstance(body, dict) else None
    if not isinstance(value, dict):
        return None
    if is_messaging(value):
        for key in ("message", "message_edit"):
            payload = value.get(key)
            if isinstance(payload, dict):
                return _text(payload.get("text"))
        return None
    return _text(value.get("message")) or _text(value.get("text"))


def message_id(topic: str, value: Any) -> str | None:
    wa = whatsapp_item(topic, value)
    if wa is not None:
        item_kind, item = wa
        if item_kind == "status" and item.get("type") == "call":
            return None  # a call's status names the call, not a message
        return _scalar(item.get("id")) if item_kind in _WHATSAPP_MESSAGES else None
    if not isinstance(value, dict):
        return None
    if is_messaging(value):
        key = messaging_kind(topic, value)
        payload = value.get(key) if key else None
        return _scalar(payload.get("mid")) if isinstance(payload, dict) else None
    for key in ("comment_id", "post_id"):
        found = _scalar(value.get(key))
        if found:
            return found
    if isinstance(value.get("message"), str) or isinstance(value.get("text"), str):
        return _scalar(value.get("id"))  # a message or comment that names itself by ``id``
    return None


def own_id(topic: str, item_kind: str | None, item: Any) -> str | None:
    """The id that identifies the item itself: a message's ``mid`` or ``wamid``.

    Only messages: a status, read or reaction names the message it is about,
    and several of those share that id.
    """
    if item_kind != "message" or not isinstance(item, dict):
        return None
    if topic == WHATSAPP:
        return _scalar(item.get("id"))
    message = item.get("message")
    return _scalar(message.get("mid")) if isinstance(message, dict) else None


def _id_of(node: Any) -> str | None:
    return _scalar(node.get("id")) if isinstance(node, dict) else None


def _scalar(raw: Any) -> str | None:
    """Ids arrive as strings or (older samples) integers; anything else is no id."""
    if isinstance(raw, str):
        return raw or None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    return None


def _text(raw: Any) -> str | None:
    return raw if isinstance(raw, str) else None
