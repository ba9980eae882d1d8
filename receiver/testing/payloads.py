"""Deliveries as Meta sends them, built in code: one factory per known topic and field.

Each factory returns an envelope (a dict) with realistic values, every one of
which a keyword overrides; ``load_payloads`` reads recorded ones from a folder
and ``body_of`` gives the exact bytes to sign. Plain data: no app, no Redis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_NOW = 1700000000
ADA = {"id": "2001", "name": "Ada"}


def envelope(
    topic: str, *changes: dict[str, Any], entry_id: str | None = "1", time: int | None = _NOW
) -> dict[str, Any]:
    entry: dict[str, Any] = {"changes": list(changes)}
    if entry_id is not None:
        entry["id"] = entry_id
    if time is not None:
        entry["time"] = time
    return {"object": topic, "entry": [entry]}


def messaging_envelope(
    topic: str, *items: dict[str, Any], entry_id: str = "page-1", time: int = _NOW
) -> dict[str, Any]:
    return {"object": topic, "entry": [{"id": entry_id, "time": time, "messaging": list(items)}]}


def change(field_name: str, **value: Any) -> dict[str, Any]:
    return {"field": field_name, "value": value}


def _merge(defaults: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


def _group(
    field_name: str, group_id: str, defaults: dict[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    common = {"community": {"id": "3001"}, "verb": "add"}
    return envelope(
        "group", change(field_name, **{**common, **defaults, **overrides}), entry_id=group_id
    )


def group_post(group_id: str = "1001", **value: Any) -> dict[str, Any]:
    return _group(
        "posts",
        group_id,
        {
            "from": ADA,
            "type": "status",
            "target_type": "group",
            "post_id": f"{group_id}_4001",
            "created_time": "2026-01-01T09:00:00+0000",
            "message": "hello",
            "permalink_url": f"https://example.workplace.com/groups/{group_id}/permalink/4001/",
        },
        value,
    )


def group_comment(group_id: str = "1001", **value: Any) -> dict[str, Any]:
    return _group(
        "comments",
        group_id,
        {
            "from": ADA,
            "comment_id": "5001",
            "post_id": f"{group_id}_4001",
            "created_time": "2026-01-01T09:05:00+0000",
            "message": "a comment",
        },
        value,
    )


def group_membership(group_id: str = "1001", verb: str = "add", **value: Any) -> dict[str, Any]:
    defaults = {
        "actor": {"id": "2002"},
        "member": ADA,
        "verb": verb,
        "update_time": "2026-01-01T09:00:00+0000",
    }
    return _group("membership", group_id, defaults, value)


def _sender(**overrides: Any) -> dict[str, Any]:
    return _merge(
        {
            "sender": {"id": "2001", "community": {"id": "3001"}},
            "recipient": {"id": "page-1"},
            "timestamp": _NOW * 1000,
        },
        overrides,
    )


def page_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    return messaging_envelope(
        "page", _sender(message=_merge({"mid": "m-1", "text": text}, message))
    )


def page_postback(payload: str = "PAYLOAD", **postback: Any) -> dict[str, Any]:
    return messaging_envelope(
        "page",
        _sender(postback=_merge({"mid": "m-2", "title": "Button", "payload": payload}, postback)),
    )


def instagram_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    """An Instagram direct message (``instagram.messages``); keywords override the message."""
    return messaging_envelope(
        "instagram",
        {
            "sender": {"id": "ig-user-1"},
            "recipient": {"id": "ig-account-1"},
            "timestamp": _NOW * 1000,
            "message": _merge({"mid": "ig-m-1", "text": text}, message),
        },
        entry_id="ig-account-1",
    )


WHATSAPP_USER = "15550001111"
WHATSAPP_PHONE_ID = "wa-phone-1"


def _whatsapp(list_name: str, item: dict[str, Any]) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": WHATSAPP_PHONE_ID},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": WHATSAPP_USER}],
        list_name: [item],
    }
    return envelope(
        "whatsapp_business_account", change("messages", **value), entry_id="waba-1", time=None
    )


def whatsapp_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    """A WhatsApp text message (``whatsapp_business_account.messages``, kind ``message``)."""
    return _whatsapp(
        "messages",
        _merge(
            {
                "from": WHATSAPP_USER,
                "id": "wamid.test-1",
                "timestamp": str(_NOW),
                "type": "text",
                "text": {"body": text},
            },
            message,
        ),
    )


def whatsapp_status(status: str = "delivered", **item: Any) -> dict[str, Any]:
    """A WhatsApp status of a message we sent (same field, kind ``status``)."""
    return _whatsapp(
        "statuses",
        _merge(
            {
                "id": "wamid.sent-1",
                "status": status,
                "timestamp": str(_NOW),
                "recipient_id": WHATSAPP_USER,
            },
            item,
        ),
    )


def page_mention(message: str = "@Bot hello", **value: Any) -> dict[str, Any]:
    return envelope(
        "page",
        change(
            "mention",
            **_merge(
                {
                    "item": "post",
                    "verb": "add",
                    "post_id": "1001_4001",
                    "message": message,
                    "sender_id": "2001",
                    "created_time": _NOW,
                },
                value,
            ),
        ),
        entry_id="page-1",
    )


def security_event(
    event: str = "ADMIN_DEACTIVATE_ACCOUNT", field_name: str = "admin_activity", **value: Any
) -> dict[str, Any]:
    return envelope(
        "workplace_security",
        change(
            field_name,
            **_merge(
                {
                    "actor_id": "2002",
                    "target_id": "2001",
                    "event": event,
                    "timestamp": "2026-01-01T09:00:00+0000",
                    "ip": "192.0.2.10",
                },
                value,
            ),
        ),
        entry_id="3001",
    )


def link_preview(link: str = "https://docs.example.com/handbook", **value: Any) -> dict[str, Any]:
    return envelope(
        "link",
        change(
            "preview",
            **_merge(
                {
                    "community": {"id": "3001"},
                    "user": {"id": "2001"},
                    "link": link,
                },
                value,
            ),
        ),
        entry_id=None,
        time=_NOW * 1000,
    )


def load_payloads(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every ``*.json`` file of a folder, by file name, as the exact bytes to sign.

    A missing or empty folder raises: a test looping over nothing would pass
    while testing nothing (a relative path is relative to where pytest runs).
    """
    path = Path(folder)
    where = f"{path.resolve()}" + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")
    if not path.exists():
        raise FileNotFoundError(f"payload folder {where} does not exist; fix the path")
    if not path.is_dir():
        raise NotADirectoryError(f"payload folder {where} is not a folder; name its folder")
    found = {p.name: p.read_bytes() for p in sorted(path.glob("*.json"))}
    if not found:
        raise FileNotFoundError(f"payload folder {where} holds no *.json files")
    return found


def body_of(payload: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).encode()
