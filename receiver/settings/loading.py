"""Loading the settings, flowing one way: defaults, then a TOML file, then the environment.

Secrets in the TOML file may be literal strings or indirections
(``{ env = "VAR" }``, ``{ file = "/run/secrets/x" }``) so the file itself can
be committed. Everything is read and validated once, at start-up, into the
plain ``Settings`` of ``receiver.settings.model``.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from difflib import get_close_matches
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from redis.connection import parse_url

from receiver.errors import ConfigError
from receiver.settings import defaults
from receiver.settings.model import Integration, Settings, env_name

log = logging.getLogger("receiver.config")

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_PASSWORD_HASHES = ("scrypt:", "pbkdf2:")
"""Prefixes of werkzeug password hashes, accepted as ``admin_password`` instead of the password."""


_SECRET_SPEC_KEYS = ("metrics_token", "admin_password")
"""Keys that also take ``{ env = "VAR" }`` or ``{ file = "path" }`` in the file."""
_SECRET_ENV_KEYS = ("secret_key", *_SECRET_SPEC_KEYS)
"""Keys whose environment variable may also be given as ``<NAME>_FILE``."""
_NOT_KEYS = ("integrations", "source")


def _file_type(hint: Any) -> type:
    """What the TOML file holds for a field of this type: ``str | None`` → str, tuples → list."""
    if get_origin(hint) is tuple:
        return list
    if get_origin(hint) in (Union, UnionType):
        return _file_type(next(a for a in get_args(hint) if a is not type(None)))
    return hint if isinstance(hint, type) else object


_RECEIVER_KEYS: dict[str, type] = {
    f.name: object if f.name in _SECRET_SPEC_KEYS else _file_type(get_type_hints(Settings)[f.name])
    for f in fields(Settings)
    if f.name not in _NOT_KEYS
}
"""Every ``[receiver]`` key and its type, derived from ``Settings``: declared once."""


_INTEGRATION_ENV = (
    "RECEIVER_APP_SECRET",
    "RECEIVER_APP_SECRET_FALLBACKS",
    "RECEIVER_VERIFY_TOKEN",
    "RECEIVER_ACCESS_TOKEN",
    "RECEIVER_ACCEPT_SHA1",
    "RECEIVER_CAPTURE",
    "RECEIVER_APP_ID",
    "RECEIVER_GRAPH_URL",
    "RECEIVER_ALLOWED_NETWORKS",
)
"""The default integration's variables (``_integration_from_env``)."""
_OTHER_ENV = (
    "RECEIVER_CONFIG",
    "RECEIVER_REDIS_URL",  # the RECEIVER_<KEY> spelling of REDIS_URL
    "RECEIVER_LOG_FORMAT",  # logsafe
    "RECEIVER_REDIS_SERVER",  # embedded: the server binary it runs
    "RECEIVER_ACCESS_LOG",  # gunicorn_config.py
    "RECEIVER_LOG_LEVEL",  # cli options bound to the environment from here on
    "RECEIVER_WORKER_METRICS_PORT",
    "RECEIVER_SIGN_SECRET",
    "RECEIVER_REPLAY_SECRET",
)
KNOWN_ENV = frozenset(
    [env_name(k) for k in _RECEIVER_KEYS]
    + [f"{env_name(k)}_FILE" for k in _SECRET_ENV_KEYS]
    + list(_INTEGRATION_ENV)
    + [f"{n}_FILE" for n in _INTEGRATION_ENV[:4]]
    + list(_OTHER_ENV)
)
"""Every ``RECEIVER_*`` variable the receiver reads; any other is a typo worth a warning."""
_warned_env: set[str] = set()


def unknown_env(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``RECEIVER_*`` variables nothing reads, each with the known name it is closest to."""
    out = []
    for name in sorted(env):
        if name.startswith("RECEIVER_") and name not in KNOWN_ENV:
            close = get_close_matches(name, KNOWN_ENV, n=1, cutoff=0.8)
            out.append((name, close[0] if close else None))
    return out


def _warn_unknown_env(env: Mapping[str, str]) -> None:
    for name, close in unknown_env(env):
        if name in _warned_env:
            continue
        _warned_env.add(name)
        hint = f"; did you mean {close}?" if close else ""
        log.warning("environment variable %s is not a receiver setting, ignored%s", name, hint)


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Every key set as ``RECEIVER_<KEY>``; empty values count as unset (booleans: false)."""
    out: dict[str, Any] = {}
    for key, kind in _RECEIVER_KEYS.items():
        name = env_name(key)
        value: Any
        if key == "handlers":
            continue  # RECEIVER_HANDLERS adds to the file's list (see _build)
        if key == "redis_url":
            value = env.get(name) or env.get("RECEIVER_REDIS_URL") or None
        elif key in _SECRET_ENV_KEYS:
            value = _env_secret(env, name)
        elif kind is bool:
            value = _env_bool(env, name)
        elif kind is int:
            value = _env_int(env, name)
        elif kind is float:
            value = _env_float(env, name)
        elif kind is list:
            raw = env.get(name, "")
            value = [v.strip() for v in raw.split(",") if v.strip()] if raw.strip() else None
        else:
            value = env.get(name) or None
        if value is not None:
            out[key] = value
    return out


_INTEGRATION_KEYS = {
    "app_secrets",
    "app_secret",
    "verify_token",
    "access_token",
    "accept_sha1",
    "enabled",
    "capture",
    "app_id",
    "graph_base_url",
    "api_version",
    "allowed_networks",
}


def load_settings(
    mapping: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_integrations: bool = True,
) -> Settings:
    """Build settings from defaults, the TOML file ``RECEIVER_CONFIG`` names, then the environment.

    ``mapping`` stands in for the file (tests, ``create_app(config=...)``); when
    given, ``RECEIVER_CONFIG`` is not read. ``require_integrations=False`` skips
    the secret and verify-token checks, for commands that serve nothing
    (``receiver routes``); everything else is still validated.
    """
    env = os.environ if environ is None else environ
    source = "defaults"
    if mapping is None:
        path = env.get("RECEIVER_CONFIG")
        mapping = _read_toml(path) if path else {}
        source = path or "environment"
    else:
        source = "mapping"
    return _build(dict(mapping), env, source, require_integrations)


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"RECEIVER_CONFIG names {path!r}, which does not exist; "
            "fix the path or unset RECEIVER_CONFIG (config/receiver.toml is the documented example)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _build(
    data: dict[str, Any], env: Mapping[str, str], source: str, require_integrations: bool = True
) -> Settings:
    data = dict(data)
    raw_integrations = data.pop("integrations", {}) or {}
    if not isinstance(raw_integrations, dict):
        raise ConfigError("[integrations] must be a table of tables, e.g. [integrations.hr-bot]")
    top = data.pop("receiver", data)
    if top is data:
        # No [receiver] table: top-level keys are settings, so a misspelt table
        # name ([reciever]) would otherwise read as a setting of that name.
        for key, value in data.items():
            if isinstance(value, dict) and key not in _RECEIVER_KEYS:
                close = get_close_matches(key, ["receiver", "integrations"], n=1, cutoff=0.6)
                hint = f"did you mean [{close[0]}]?" if close else "settings go under [receiver]"
                raise ConfigError(f"unknown table [{key}]; {hint}")
    if top is not data and data:
        raise ConfigError(f"unknown top-level keys {sorted(data)}; put settings under [receiver]")
    values = _check_receiver_table(top)

    _warn_unknown_env(env)
    values.update(_env_values(env))
    extra_handlers = [h.strip() for h in env.get("RECEIVER_HANDLERS", "").split(",") if h.strip()]
    handlers = tuple(dict.fromkeys([*values.pop("handlers", []), *extra_handlers]))
    sync_topics = tuple(values.pop("sync_topics", defaults.SYNC_TOPICS))
    capture_redact = tuple(values.pop("capture_redact", ()))
    if "metrics_token" in values:
        values["metrics_token"] = _secret(values["metrics_token"], "[receiver].metrics_token", env)
    if "admin_password" in values:
        values["admin_password"] = _secret(
            values["admin_password"], "[receiver].admin_password", env
        )

    integrations: dict[str, Integration] = {}
    for name, table in raw_integrations.items():
        integrations[name] = _integration(name, table, env)
    default_name = values.get("default_integration", defaults.DEFAULT_INTEGRATION)
    env_default = _integration_from_env(default_name, integrations.get(default_name), env)
    if env_default is not None:
        integrations[default_name] = env_default

    settings = Settings(
        integrations=integrations,
        handlers=handlers,
        sync_topics=sync_topics,
        capture_redact=capture_redact,
        source=source,
        **values,
    )
    _validate(settings, require_integrations)
    return settings


def _check_receiver_table(table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError("[receiver] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        expected = _RECEIVER_KEYS.get(key)
        if expected is None:
            close = get_close_matches(key, _RECEIVER_KEYS, n=1, cutoff=0.8)
            raise ConfigError(
                f"unknown setting [receiver].{key}; "
                + (f"did you mean {close[0]}? " if close else "")
                + f"known settings: {', '.join(sorted(_RECEIVER_KEYS))}"
            )
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"[receiver].{key} must be {expected.__name__}, not {type(value).__name__}"
            )
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"[receiver].{key} must be a list of strings")
        out[key] = value
    return out


def _integration(name: str, table: Any, env: Mapping[str, str]) -> Integration:
    where = f"[integrations.{name}]"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: names may use letters, digits, '-' and '_' only")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - _INTEGRATION_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; "
            f"known: {', '.join(sorted(_INTEGRATION_KEYS))}"
        )
    secrets: list[str] = []
    if "app_secret" in table:
        secrets.append(_secret(table["app_secret"], f"{where}.app_secret", env))
    raw_list = table.get("app_secrets", [])
    if not isinstance(raw_list, list):
        raise ConfigError(f"{where}.app_secrets must be a list, newest secret first")
    secrets.extend(_secret(s, f"{where}.app_secrets", env) for s in raw_list)
    token = table.get("verify_token")
    access = table.get("access_token")
    return Integration(
        name=name,
        app_secrets=tuple(s for s in secrets if s),
        verify_token=_secret(token, f"{where}.verify_token", env) if token is not None else None,
        access_token=_secret(access, f"{where}.access_token", env) if access is not None else None,
        accept_sha1=_bool(table.get("accept_sha1", False), f"{where}.accept_sha1"),
        enabled=_bool(table.get("enabled", True), f"{where}.enabled"),
        capture=_bool(table.get("capture", False), f"{where}.capture"),
        app_id=_text(table.get("app_id"), f"{where}.app_id"),
        graph_base_url=_text(table.get("graph_base_url"), f"{where}.graph_base_url")
        or defaults.GRAPH_BASE_URL,
        api_version=_text(table.get("api_version"), f"{where}.api_version")
        or defaults.GRAPH_API_VERSION,
        allowed_networks=_networks(table.get("allowed_networks", []), f"{where}.allowed_networks"),
    )


def _integration_from_env(
    name: str, base: Integration | None, env: Mapping[str, str]
) -> Integration | None:
    """The environment configures (or overrides) the default integration."""
    secret = _env_secret(env, "RECEIVER_APP_SECRET")
    fallbacks = _env_secret(env, "RECEIVER_APP_SECRET_FALLBACKS")
    token = _env_secret(env, "RECEIVER_VERIFY_TOKEN")
    access = _env_secret(env, "RECEIVER_ACCESS_TOKEN")
    sha1 = _env_bool(env, "RECEIVER_ACCEPT_SHA1")
    capture = _env_bool(env, "RECEIVER_CAPTURE")
    app_id = env.get("RECEIVER_APP_ID") or None
    graph_url = env.get("RECEIVER_GRAPH_URL") or None
    raw_networks = env.get("RECEIVER_ALLOWED_NETWORKS")
    networks = (
        _networks(
            [n.strip() for n in raw_networks.split(",") if n.strip()], "RECEIVER_ALLOWED_NETWORKS"
        )
        if raw_networks
        else None
    )
    given = (secret, token, access, sha1, capture, app_id, graph_url, networks)
    if not any(v is not None for v in given):
        return base
    current = base or Integration(name=name)
    secrets = current.app_secrets
    if secret is not None:
        older = tuple(s.strip() for s in (fallbacks or "").split(",") if s.strip())
        secrets = (secret, *older)
    return Integration(
        name=name,
        app_secrets=secrets,
        verify_token=token if token is not None else current.verify_token,
        access_token=access if access is not None else current.access_token,
        accept_sha1=sha1 if sha1 is not None else current.accept_sha1,
        enabled=current.enabled,
        capture=capture if capture is not None else current.capture,
        app_id=app_id or current.app_id,
        graph_base_url=graph_url or current.graph_base_url,
        api_version=current.api_version,
        allowed_networks=networks if networks is not None else current.allowed_networks,
    )


def _validate(settings: Settings, require_integrations: bool = True) -> None:
    if settings.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes must be at least 1024 (Meta's envelopes alone need that)")
    if not 4 <= settings.max_depth <= 512:
        raise ConfigError("max_depth must be between 4 and 512")
    if settings.answer_timeout <= 0:
        raise ConfigError("answer_timeout must be a positive number of seconds")
    if settings.read_timeout <= 0:
        raise ConfigError("read_timeout must be a positive number of seconds (15 is plenty)")
    if settings.trace_ttl <= 0 or settings.ready_max_spool < 0:
        raise ConfigError("trace_ttl must be > 0 seconds; ready_max_spool >= 0")
    if settings.metrics_bind is not None and not re.fullmatch(r".+:\d{1,5}", settings.metrics_bind):
        raise ConfigError(
            f"metrics_bind={settings.metrics_bind!r} must be host:port, e.g. 127.0.0.1:9108"
        )
    password = settings.admin_password
    if password is not None and not password.startswith(_PASSWORD_HASHES) and len(password) < 12:
        raise ConfigError(
            "admin_password must be at least 12 characters (or a werkzeug hash, scrypt:...); "
            "it guards replay, requeue and switching integrations off"
        )
    if settings.trusted_proxies < 0:
        raise ConfigError("trusted_proxies must be 0 (no proxy) or the number of proxies in front")
    if settings.job_retries < 0 or settings.job_timeout <= 0 or settings.dedupe_window <= 0:
        raise ConfigError("job_retries must be >= 0; job_timeout and dedupe_window > 0")
    if settings.spool_mode not in ("spool", "reject"):
        raise ConfigError("spool_mode must be 'spool' (ack from a local spool) or 'reject' (503)")
    _validate_durability(settings)
    if settings.max_drainers < 1 or settings.redis_timeout <= 0 or settings.retry_backoff <= 0:
        raise ConfigError("max_drainers must be >= 1; redis_timeout and retry_backoff > 0")
    if not 1 <= settings.worker_concurrency <= 1024:
        raise ConfigError(
            "worker_concurrency must be between 1 and 1024 (handler calls at once per worker)"
        )
    if settings.graph_timeout <= 0 or settings.graph_retries < 0 or settings.graph_backoff < 0:
        raise ConfigError("graph_timeout must be > 0; graph_retries and graph_backoff >= 0")
    if not _NAME.match(settings.queue_name):
        raise ConfigError("queue_name may use letters, digits, '-' and '_' only")
    _check_redis_url(settings.redis_url)
    if settings.dev_mode or not require_integrations:
        return
    for integration in settings.integrations.values():
        if not integration.enabled:
            continue
        if not integration.app_secrets:
            raise ConfigError(
                f"integration {integration.name!r} has no app secret, so forged requests "
                "could not be told apart: set RECEIVER_APP_SECRET (or RECEIVER_APP_SECRET_FILE, "
                f"or app_secrets in [integrations.{integration.name}]); for local experiments "
                "only, RECEIVER_DEV_MODE=1 accepts unsigned requests"
            )
        if not integration.verify_token:
            raise ConfigError(
                f"integration {integration.name!r} has no verify token, so Meta's subscription "
                "handshake cannot succeed: set RECEIVER_VERIFY_TOKEN "
                "(or RECEIVER_VERIFY_TOKEN_FILE, "
                f"or verify_token in [integrations.{integration.name}])"
            )
    if not settings.integrations:
        raise ConfigError(
            "no integration is configured: set RECEIVER_APP_SECRET and RECEIVER_VERIFY_TOKEN, "
            "or name integrations in the file RECEIVER_CONFIG points to"
        )


def _validate_durability(settings: Settings) -> None:
    if settings.durability not in ("local", "replicated"):
        raise ConfigError(
            f"durability={settings.durability!r}: use 'local' (acknowledged once the Redis "
            "master holds a delivery) or 'replicated' (once min_replicas replicas hold it too)"
        )
    if not 1 <= settings.min_replicas <= 16:
        raise ConfigError("min_replicas must be between 1 and 16 (replicas that confirm a packet)")
    if not 0 < settings.replication_timeout <= 10:
        raise ConfigError(
            "replication_timeout must be more than 0 and at most 10 seconds "
            "(Meta gives up on an answer after 20 s)"
        )
    if settings.durability == "local":
        if settings.replication_fsync:
            raise ConfigError(
                "replication_fsync waits for replicas, so it needs durability = 'replicated'"
            )
        return
    if settings.replication_fsync and settings.replication_timeout < 2:
        # bench/durability_bench.py: a lone WAITAOF returns with a replica's once-a-second
        # acknowledgement, ~1 s after the write, whatever appendfsync says.
        raise ConfigError(
            "replication_fsync waits about a second for replicas to report their fsync: "
            "set replication_timeout to 2 seconds or more, or every delivery times out"
        )
    if settings.redis_url is None:
        raise ConfigError(
            "durability = 'replicated' needs REDIS_URL naming a Redis master with replicas "
            "(redis+sentinel://... or a managed Redis); the embedded Redis has no replica"
        )


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")


def _check_redis_url(url: str | None) -> None:
    """A wrong scheme fails here, named, instead of deep inside redis-py on first use."""
    if url is None:
        return
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _REDIS_SCHEMES:
        shown = f"scheme {scheme + '://'!r}" if sep else "no scheme"
        raise ConfigError(
            f"REDIS_URL (or redis_url) has {shown}; write it as redis://host:6379/0, "
            "rediss:// (TLS), unix:///path/redis.sock or redis+sentinel://host:26379/service, "
            "or unset it for the embedded Redis"
        )
    try:
        if scheme.lower() == "redis+sentinel":
            hosts = urlsplit(url).netloc.rsplit("@", 1)[-1].split(",")
            for host in hosts:
                port = host.rpartition(":")[2] if ":" in host else "26379"
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError("a Sentinel's port is not a port number")
        else:
            parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        # Never the error's text: a password with an unencoded "/", "?" or "#" ends the
        # host there, and the "port" urllib could not read (and quotes) is the password.
        raise ConfigError(
            "REDIS_URL (or redis_url) cannot be read: a host, port or database that is not "
            "one, or a user name or password holding '/', '?', '#', '@' or ':' (percent-encode "
            "them: %2F, %3F, %23, %40, %3A); e.g. redis://:password@host:6379/0"
        ) from None


def _secret(value: Any, where: str, env: Mapping[str, str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"env"}:
        name = value["env"]
        if name not in env:
            raise ConfigError(f"{where} reads environment variable {name!r}, which is not set")
        return env[name]
    if isinstance(value, dict) and set(value) == {"file"}:
        return _read_secret_file(str(value["file"]), where)
    raise ConfigError(f'{where} must be a string, {{ env = "VAR" }} or {{ file = "path" }}')


def _read_secret_file(path: str, where: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret file {path!r} ({exc.strerror})") from None


def _env_secret(env: Mapping[str, str], name: str) -> str | None:
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if path:
        return _read_secret_file(path, f"{name}_FILE")
    return None


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1 or 0")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def _env_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _networks(value: Any, where: str) -> tuple[IPv4Network | IPv6Network, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of CIDR ranges, e.g. ["173.252.64.0/18"]')
    try:
        return tuple(ip_network(v, strict=False) for v in value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; write ranges as CIDR, e.g. 173.252.64.0/18") from None


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # app ids are often written as bare numbers
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value
