"""What ``receiver check`` asks of Redis: reachable, the right kind of URL, keeping what it acks
(and, with replicated durability, replicas enough to confirm it).

The web and worker processes only warn at start-up (a Redis outage must not
stop a web process: it spools). ``check`` is where an operator asks whether
the deployment is right, so here the same facts fail the command.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from receiver.app import connect
from receiver.errors import ConfigError
from receiver.queue import durability
from receiver.server.embedded import EmbeddedRedis, server_binary
from receiver.server.supported import RANGE, require_supported
from receiver.settings.model import Settings

CHECK_TIMEOUT = 3.0
"""Seconds ``check`` waits for Redis: longer than the web's fail-fast bound, short for a human."""


def masked(url: str) -> str:
    """The URL with its password replaced, fit for a terminal or a log."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_redis(settings: Settings, timeout: float = CHECK_TIMEOUT) -> list[str]:
    """Lines describing the Redis this configuration uses; raises when it cannot keep work.

    Raises ``ConfigError`` (no persistence, no embedded binary) or redis-py's
    ``ConnectionError``/``TimeoutError`` (unreachable): the CLI turns both into one line.
    """
    if settings.redis_url is None:
        return _embedded(settings)
    url = masked(settings.redis_url)
    connection = connect(settings.redis_url, timeout)
    version = require_supported(connection.info("server"), f"Redis at {url}")
    lines = [f"redis: {url} answers: {version} (supported: {RANGE})"]
    lines += _persistence(connection, url)
    if settings.durability == "replicated":
        line, live = durability.check(connection, settings)
        if live < settings.min_replicas:
            raise ConfigError(
                f"{line}: too few replicas to confirm deliveries, so each would be "
                "acknowledged from the local spool; start replicas, or lower min_replicas"
            )
        lines.append(line)
    return lines


def _embedded(settings: Settings) -> list[str]:
    """The binary's version is asked of the binary itself: ``check`` starts no server."""
    binary = server_binary()  # ConfigError naming the fix when missing or not executable
    version = require_supported(_binary_info(binary), f"the embedded server binary {binary}")
    server = EmbeddedRedis(settings.data_dir)
    lines = []
    if server.running():
        running = require_supported(
            server.client().info("server"), f"the server in {server.folder}"
        )
        state = f"running {running}"
    else:
        state = "started on first use"
    lines.append(
        f"redis: embedded (REDIS_URL unset), data in {server.folder}, {state}; "
        "fine for one machine, set REDIS_URL for a deployment"
    )
    lines.append(f"server binary: {binary}: {version} (supported: {RANGE})")
    return lines


def _binary_info(binary: str) -> dict[str, str]:
    """``INFO server``'s version fields, read from ``BINARY --version``.

    Redis prints ``Redis server v=7.0.15 …``, Valkey ``Valkey server v=9.1.2 …``.
    """
    import subprocess

    words = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split()
    release = next((w[2:] for w in words if w.startswith("v=")), "0")
    if words and words[0].lower() == "valkey":
        return {"server_name": "valkey", "valkey_version": release}
    return {"redis_version": release}


def _persistence(connection: redis.Redis, url: str) -> list[str]:
    info = connection.info("persistence")
    aof = bool(info.get("aof_enabled"))
    try:
        save = str(connection.config_get("save").get("save", ""))
    except redis.ResponseError:
        # Managed Redis (ElastiCache, Memorystore, ...) often forbids CONFIG.
        if aof:
            return ["persistence: append-only file on"]
        return [
            "persistence: NOTE this Redis does not allow CONFIG, so RDB snapshots cannot be "
            "checked and the append-only file is off; make sure your provider keeps data "
            "(snapshots or AOF), or acknowledged events can be lost on a restart"
        ]
    if aof:
        return [f"persistence: append-only file on{', RDB snapshots too' if save else ''}"]
    if save:
        return [
            f"persistence: RDB snapshots only ({save}): a crash loses the writes since the "
            "last snapshot; appendonly yes is safer"
        ]
    raise ConfigError(
        f"Redis at {url} keeps nothing on disk (no append-only file, no RDB snapshots): "
        "a restart loses acknowledged events; set appendonly yes in its configuration "
        "(redis-cli CONFIG SET appendonly yes, then save it in redis.conf)"
    )
