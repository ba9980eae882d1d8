"""Where a request came from: allowed networks and Meta's client certificate.

Both are optional defences in depth, decided before any of the body is read;
the signature stays the real check. Pure functions over headers and
addresses: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address

from receiver.errors import TargetRejected
from receiver.settings import defaults
from receiver.settings.model import Integration, Settings


def check(
    settings: Settings,
    integration: Integration,
    headers: Mapping[str, str],
    remote_addr: str | None,
    *,
    delivery: bool,
) -> None:
    """Raise ``TargetRejected`` (403) when the request may not come from where it did."""
    if integration.allowed_networks:
        client = client_address(headers, remote_addr, settings.trusted_proxies)
        try:
            address = ip_address(client) if client else None
        except ValueError:
            address = None
        if address is None or not any(address in n for n in integration.allowed_networks):
            raise TargetRejected(
                f"requests to integration {integration.name!r} must come from its "
                "allowed_networks",
                code="network_not_allowed",
                status=403,
            )
    header = settings.client_cert_header
    if delivery and header:
        subject = headers.get(header)
        if not subject:
            raise TargetRejected(
                "deliveries must present Meta's client certificate (mutual TLS)",
                code="client_cert_required",
                status=403,
            )
        if common_names(subject) != [defaults.META_CLIENT_CERT_SUBJECT]:
            raise TargetRejected(
                "the client certificate is not Meta's webhook certificate",
                code="bad_client_cert",
                status=403,
            )


def client_address(headers: Mapping[str, str], peer: str | None, trusted: int) -> str | None:
    """The peer, or with ``trusted`` proxies the N-th ``X-Forwarded-For`` hop from the end.

    As werkzeug's ``ProxyFix``: hops added by untrusted parties are never believed,
    and too few hops means the request did not come through the proxies.
    """
    if trusted:
        chain = headers.get("X-Forwarded-For") or ""
        forwarded = [h.strip() for h in chain.split(",") if h.strip()]
        if len(forwarded) >= trusted:
            return forwarded[-trusted]
    return peer


def common_names(subject: str) -> list[str]:
    """Every CN attribute of a certificate subject, as proxies pass it.

    RFC 4514 / 2253 strings (nginx ``$ssl_client_s_dn``: ``CN=x,O=y``, with
    ``\\,`` escapes, quoted values and ``+`` multi-valued RDNs), OpenSSL's
    one-line form (``/C=US/CN=x``), an Envoy ``X-Forwarded-Client-Cert``
    element (``Subject="..."``), or a bare name. Text inside another
    attribute's value is never taken for a CN.
    """
    subject = subject.strip()
    quoted = _xfcc_subject(subject)
    if quoted is not None:
        subject = quoted
    if "=" not in subject:
        return [subject]
    separators = "/" if subject.startswith("/") else ",+"
    names = []
    for attribute in _split(subject.lstrip("/") if separators == "/" else subject, separators):
        kind, equals, value = attribute.partition("=")
        if not equals:
            return []  # not a DN we can read: match nothing
        if kind.strip().upper() == "CN":
            names.append(value)
    return names


def _xfcc_subject(value: str) -> str | None:
    """The ``Subject="..."`` of an Envoy XFCC element; ``None`` if there is none.

    Only ``\\"`` is unescaped here: the DN inside keeps its own escapes.
    """
    lowered = value.lower()
    start = 0
    while (found := lowered.find("subject=", start)) >= 0:
        start = found + len("subject=")
        if found and value[found - 1] not in ";, ":
            continue  # "...Subject=" inside another element's value
        if not value[start:].startswith('"'):
            return value[start:].split(";", 1)[0].split(",", 1)[0]
        out: list[str] = []
        index = start + 1
        while index < len(value):
            char = value[index]
            if char == "\\" and value[index + 1 : index + 2] == '"':
                out.append('"')
                index += 2
                continue
            if char == '"':
                return "".join(out)
            out.append(char)
            index += 1
        return None  # unterminated: not a subject we can trust
    return None


def _split(text: str, separators: str) -> list[str]:
    """``text`` split at unescaped, unquoted separators; values unescaped and unquoted."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char in separators and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]
