"""The app's webhook subscriptions: list, add, remove (``receiver subscribe``).

Calls ``/{app-id}/subscriptions`` with the app token (``app_id|app_secret``,
newest secret) through the same Graph client handlers use, so proof, retries
and error messages are the same. Before adding, the callback URL must answer
Meta's handshake with the verify token being registered: Meta would call it
at once, and a subscription whose handshake fails is refused with a vaguer
message. Nothing here prints secrets: ``describe`` masks the app secret and
the verify token.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from receiver.errors import ConfigError
from receiver.graph.calls import GraphClient, GraphConfig
from receiver.observe.logsafe import MASK, is_secret_query_key
from receiver.settings.model import Integration, Settings


@dataclass(frozen=True)
class Subscription:
    """One subscribed object, as ``GET /{app-id}/subscriptions`` lists it."""

    object: str
    callback_url: str
    fields: tuple[str, ...]
    active: bool


@dataclass(frozen=True)
class Planned:
    """A subscriptions call, built before it is sent (``--dry-run`` prints it)."""

    method: str
    path: str
    data: Mapping[str, str]


def app_config(integration: Integration, settings: Settings | None = None) -> GraphConfig:
    return GraphConfig.for_integration(integration, settings, app_token=True)


def _path(config: GraphConfig) -> str:
    return f"/{config.access_token.split('|', 1)[0]}/subscriptions"


def plan_list(config: GraphConfig) -> Planned:
    return Planned("GET", _path(config), {})


def plan_add(
    config: GraphConfig,
    object: str,
    fields: Sequence[str],
    callback_url: str,
    verify_token: str,
    *,
    include_values: bool = True,
) -> Planned:
    if not fields:
        raise ConfigError("name the fields to subscribe to, e.g. --fields messages,mention")
    data = {
        "object": object,
        "callback_url": callback_url,
        "fields": ",".join(fields),
        "verify_token": verify_token,
        "include_values": "true" if include_values else "false",
    }
    return Planned("POST", _path(config), data)


def plan_remove(config: GraphConfig, object: str, fields: Sequence[str] = ()) -> Planned:
    data = {"object": object, **({"fields": ",".join(fields)} if fields else {})}
    return Planned("DELETE", _path(config), data)


def describe(config: GraphConfig, planned: Planned) -> str:
    """The request as it would go out, with the app secret and verify token masked."""
    shown = {k: (MASK if is_secret_query_key(k) else v) for k, v in planned.data.items()}
    if planned.method == "POST":
        head = config.describe(planned.method, planned.path)
        body = "&".join(f"{k}={v}" for k, v in shown.items())
        return f"{head}\nContent-Type: application/x-www-form-urlencoded\n\n{body}"
    return config.describe(planned.method, planned.path, shown)


def send(client: GraphClient, planned: Planned) -> Any:
    if planned.method == "POST":
        return client.post(planned.path, dict(planned.data))
    return client.request(planned.method, planned.path, params=dict(planned.data))


def parse(answer: Any) -> list[Subscription]:
    rows = answer.get("data") if isinstance(answer, dict) else None
    out: list[Subscription] = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        fields = tuple(
            str(f.get("name")) if isinstance(f, dict) else str(f) for f in row.get("fields") or []
        )
        out.append(
            Subscription(
                object=str(row.get("object", "")),
                callback_url=str(row.get("callback_url", "")),
                fields=fields,
                active=bool(row.get("active", False)),
            )
        )
    return out


def check_handshake(
    callback_url: str, verify_token: str, *, timeout: float = 10.0, verify_tls: bool = True
) -> None:
    """Do what Meta does first: GET the callback URL with a challenge; it must echo it."""
    challenge = secrets.token_hex(8)
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": verify_token,
        "hub.challenge": challenge,
    }
    try:
        response = httpx.get(callback_url, params=params, timeout=timeout, verify=verify_tls)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"{callback_url} did not answer the handshake ({type(exc).__name__}); Meta must be "
            "able to reach it: check that the receiver runs there and the URL is public"
        ) from None
    if response.status_code != 200 or response.text != challenge:
        hint = (
            "the verify token differs from the receiver's (RECEIVER_VERIFY_TOKEN or "
            "verify_token of the integration that URL serves)"
            if response.status_code == 403
            else "is it the receiver's callback URL (/webhook or /webhooks/<name>)?"
        )
        raise ConfigError(
            f"{callback_url} answered the handshake with HTTP {response.status_code} instead of "
            f"the challenge: {hint}; or add --no-check to skip this test"
        )
