"""The settings as plain data: one receiver process's validated configuration.

``Integration`` and ``Settings`` are frozen dataclasses whose defaults come from
``receiver.settings.defaults``; ``env_name`` names a key's environment variable.
Reading them from a TOML file and the environment, and refusing what is wrong,
is ``receiver.settings.loading``'s job: code that only reads settings imports this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from receiver.settings import defaults


@dataclass(frozen=True)
class Integration:
    """One Workplace custom integration (or Meta app) that posts to this receiver."""

    name: str
    app_secrets: tuple[str, ...] = ()
    """Newest first: during a rotation the reset secret and the old one are both listed."""
    verify_token: str | None = None
    access_token: str | None = None
    accept_sha1: bool = False
    enabled: bool = True
    capture: bool = False
    app_id: str | None = None
    """The Meta app's id: the app token (``app_id|app_secret``) manages webhook subscriptions."""
    graph_base_url: str = defaults.GRAPH_BASE_URL
    api_version: str = defaults.GRAPH_API_VERSION
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    """Where deliveries may come from; empty: anywhere (the signature still decides)."""

    def __repr__(self) -> str:  # never print secrets, even by accident
        return (
            f"Integration(name={self.name!r}, secrets={len(self.app_secrets)}, "
            f"accept_sha1={self.accept_sha1}, enabled={self.enabled})"
        )


@dataclass(frozen=True)
class Settings:
    """The whole, validated configuration of one receiver process."""

    integrations: Mapping[str, Integration]
    default_integration: str = defaults.DEFAULT_INTEGRATION
    dev_mode: bool = False
    max_body_bytes: int = defaults.MAX_BODY_BYTES
    max_depth: int = defaults.MAX_DEPTH
    read_timeout: float = defaults.READ_TIMEOUT
    client_cert_header: str | None = None
    """Header a TLS-terminating proxy sets to the verified client certificate's subject."""
    trusted_proxies: int = 0
    """Proxies in front whose ``X-Forwarded-For`` hop is believed (for ``allowed_networks``)."""
    answer_timeout: float = defaults.ANSWER_TIMEOUT
    handlers: tuple[str, ...] = ()
    redis_url: str | None = None
    data_dir: str = defaults.DATA_DIR
    queue_name: str = defaults.QUEUE_NAME
    job_timeout: int = defaults.JOB_TIMEOUT
    job_retries: int = defaults.JOB_RETRIES
    retry_backoff: float = defaults.RETRY_BACKOFF
    max_drainers: int = defaults.MAX_DRAINERS
    worker_concurrency: int = defaults.WORKER_CONCURRENCY
    redis_timeout: float = defaults.REDIS_TIMEOUT
    spool_mode: str = defaults.SPOOL_MODE
    durability: str = defaults.DURABILITY
    min_replicas: int = defaults.MIN_REPLICAS
    replication_timeout: float = defaults.REPLICATION_TIMEOUT
    replication_fsync: bool = defaults.REPLICATION_FSYNC
    dedupe_window: int = defaults.DEDUPE_WINDOW
    sync_topics: tuple[str, ...] = defaults.SYNC_TOPICS
    secret_key: str | None = field(default=None, repr=False)
    """Signs replay markers; without it, each integration's app secret derives the key."""
    metrics_token: str | None = field(default=None, repr=False)
    """Bearer token ``/metrics`` asks for; without it (and without ``metrics_bind``) no metrics."""
    metrics_bind: str | None = None
    """``host:port`` where the gunicorn master serves metrics privately (no token asked)."""
    admin_password: str | None = field(default=None, repr=False)
    """Turns the ``/admin/`` dashboard on: a password, or its werkzeug hash (``scrypt:...``)."""
    trace_ttl: int = defaults.TRACE_TTL
    ready_max_spool: int = defaults.READY_MAX_SPOOL
    capture_dir: str | None = None
    capture_max_bytes: int = defaults.CAPTURE_MAX_BYTES
    capture_max_total_bytes: int = defaults.CAPTURE_MAX_TOTAL_BYTES
    capture_redact: tuple[str, ...] = ()
    graph_timeout: float = defaults.GRAPH_TIMEOUT
    graph_retries: int = defaults.GRAPH_RETRIES
    graph_backoff: float = defaults.GRAPH_BACKOFF
    source: str = field(default="defaults", compare=False)
    """Where the values came from, for ``receiver check``."""

    def integration(self, name: str | None) -> Integration | None:
        return self.integrations.get(name or self.default_integration)


def env_name(key: str) -> str:
    """The environment variable for a ``[receiver]`` key (``REDIS_URL`` keeps its usual name)."""
    return "REDIS_URL" if key == "redis_url" else f"RECEIVER_{key.upper()}"
