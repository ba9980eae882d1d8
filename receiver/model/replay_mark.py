"""Replay marking: a header that tells handlers a delivery is a replay, and cannot be forged.

The token is signed with itsdangerous, keyed by the receiver's ``secret_key``
when one is set, else by a key derived from the integration's app secret, so
whoever can re-sign a body for an integration can mark its replays too, and
nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from itsdangerous import BadSignature, URLSafeTimedSerializer

HEADER = "X-Receiver-Replay"
MAX_AGE = 3600
_SALT = "receiver.replay"


def key_for(app_secret: str) -> bytes:
    return hmac.new(app_secret.encode(), b"receiver replay marking", hashlib.sha256).digest()


def token(key: str | bytes, source: str = "") -> str:
    return URLSafeTimedSerializer(key, salt=_SALT).dumps({"source": source})


def verify(value: str, keys: Iterable[str | bytes]) -> bool:
    """True when ``value`` was signed with one of ``keys`` within the last hour."""
    candidates = [k.encode() if isinstance(k, str) else k for k in keys]
    if not candidates:
        return False
    serializer = URLSafeTimedSerializer(candidates, salt=_SALT)  # every key is tried
    try:
        serializer.loads(value, max_age=MAX_AGE)
    except BadSignature:
        return False
    return True
