"""Which Redis-compatible servers the receiver runs on, and the check that refuses the rest.

The range is what the suite runs on: the embedded Valkey and Debian's Redis 7.0
(``.ci/run`` runs the Redis-backed tests once on each). Valkey forked from
Redis 7.2.4, so every Valkey release has the commands Redis 7.0 has. Below
the range a command fails only when its code path is reached (dashboard
sign-in answered 500 on Redis 6.2, which lacks ``EXPIRE … NX``), so start-up
and ``receiver check`` refuse such a server up front instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from receiver.errors import ConfigError

MINIMUM: Mapping[str, tuple[int, ...]] = {"redis": (7, 0), "valkey": (7, 2)}
"""Oldest supported release of each server, by the name ``INFO server`` gives."""

RANGE = "Redis >= 7.0 or Valkey >= 7.2"
"""The range as the manual, ``receiver check`` and error messages state it."""


def _display(name: str, version: tuple[int, ...]) -> str:
    return f"{'Redis' if name == 'redis' else name.capitalize()} {'.'.join(map(str, version))}"


@dataclass(frozen=True)
class ServerVersion:
    """A server's name (``redis``, ``valkey``) and release, as it reports them."""

    name: str
    version: tuple[int, ...]

    def __str__(self) -> str:
        return _display(self.name, self.version)

    @property
    def supported(self) -> bool:
        minimum = MINIMUM.get(self.name)
        return minimum is not None and self.version >= minimum


def _release(text: object) -> tuple[int, ...]:
    """``"7.0.15"`` → ``(7, 0, 15)``; suffixes such as ``-rc1`` are dropped."""
    parts = []
    for piece in str(text or "0").split("."):
        digits = "".join(c for c in piece.split("-")[0] if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def server_version(info: Mapping[str, Any]) -> ServerVersion:
    """Name and release from ``INFO server``.

    Valkey answers ``redis_version: 7.2.4`` to clients that test for Redis, and
    gives its own release in ``valkey_version`` (with ``server_name: valkey``).
    """
    if "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey":
        return ServerVersion("valkey", _release(info.get("valkey_version")))
    return ServerVersion(
        str(info.get("server_name") or "redis").lower(), _release(info.get("redis_version"))
    )


class UnsupportedServer(ConfigError):
    """The Redis-compatible server is outside the range the receiver is tested on."""

    def __init__(self, found: ServerVersion, where: str) -> None:
        minimum = MINIMUM.get(found.name)
        need = f"the minimum is {_display(found.name, minimum)}" if minimum else f"need {RANGE}"
        super().__init__(
            f"{where} runs {found}, which the receiver does not support ({need}): "
            "upgrade it, or unset REDIS_URL to use the embedded Valkey"
        )
        self.found = found


def require_supported(info: Mapping[str, Any], where: str) -> ServerVersion:
    """The server's version when it is in range; ``UnsupportedServer`` naming it otherwise."""
    found = server_version(info)
    if not found.supported:
        raise UnsupportedServer(found, where)
    return found
