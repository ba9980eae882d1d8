"""The app factory, and ``build_core`` which the worker and the CLI share with it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask
from redis.backoff import NoBackoff
from redis.retry import Retry

from receiver.core.handling import Core
from receiver.errors import ConfigError
from receiver.model.events import use_graph
from receiver.observe import metrics
from receiver.observe.capture import CaptureJournal
from receiver.observe.metrics import BacklogCollector
from receiver.observe.trace import TraceWriter, live_connection
from receiver.queue import durability, ops
from receiver.queue.web_spool import spool_counts
from receiver.queue.web_store import RedisBackend
from receiver.routing.contracts import Backend
from receiver.routing.handlers import Router, default_router
from receiver.routing.plugins import load_plugins
from receiver.routing.signals import delivery_finished
from receiver.server.embedded import EmbeddedRedis, spawn_worker
from receiver.server.supported import require_supported
from receiver.settings.active import activate
from receiver.settings.loading import load_settings
from receiver.settings.model import Settings
from receiver.worker.claims import WorkContext
from receiver.worker.inline import InlineBackend

if TYPE_CHECKING:
    from receiver.graph.calls import GraphClient

log = logging.getLogger("receiver")


def work_context(core: Core) -> WorkContext:
    """What a worker's jobs need of the core: its handlers, settings and Redis."""
    return WorkContext(core.router, core.settings, connection=core.backend.connection)


def _graph_client(integration: str) -> GraphClient:
    """``Event.graph``'s lookup: the Graph layer (and httpx) load on a handler's first call."""
    from receiver import graph

    return graph.client(integration)


def build_core(
    config: Mapping[str, Any] | Settings | None = None,
    *,
    router: Router | None = None,
    backend: Backend | None = None,
    require_redis: bool = False,
    redis_timeout: float | None = None,
    dashboard: bool = False,
) -> Core:
    """Settings, plugins and a backend: everything but the web layer.

    Workers pass a longer ``redis_timeout`` than the web's fail-fast bound. With
    ``dashboard`` (a web process), the core refuses the integrations an operator
    switched off on the admin dashboard, when it is on (``admin_password``).
    """
    settings = config if isinstance(config, Settings) else load_settings(config)
    router = router if router is not None else default_router
    activate(settings)
    use_graph(_graph_client)
    load_plugins(settings.handlers, router)
    if settings.dev_mode:
        log.warning(
            "DEVELOPMENT MODE is on: requests without a configured secret are NOT verified; "
            "never expose this receiver to the internet"
        )
    if backend is None:
        if settings.redis_url is None and not require_redis:
            backend = _LazyEmbeddedBackend(settings)
        else:
            url = settings.redis_url or EmbeddedRedis(settings.data_dir).ensure_running()
            connection = connect(url, redis_timeout or settings.redis_timeout)
            check_server(
                connection,
                "the Redis in REDIS_URL" if settings.redis_url else "the embedded server",
                settings,
            )
            backend = RedisBackend(settings, connection, replication_client(settings, url))
    switched_off = None
    if dashboard:
        from receiver import admin

        switched_off = admin.switches_for(settings, backend)
    return Core(settings, router, backend, capture_journal(settings), switched_off)


def backlog(core: Core) -> BacklogCollector:
    """The backlog as a web process or a worker sees it: its own Redis, its router's queues."""
    return BacklogCollector(
        core.settings,
        lambda: live_connection(core.backend),
        lambda connection: ops.depths(connection, ops.queue_names(core.settings, core.router)),
        lambda: spool_counts(core.settings),
    )


def inline_backend(settings: Settings, router: Router | None = None) -> InlineBackend:
    """Background handlers run at once, in this process, on ``router`` (default: the default
    router): what ``routes``, ``check``, in-process replay and the pytest plugin build on."""
    return InlineBackend(WorkContext(router if router is not None else default_router, settings))


def capture_journal(settings: Settings) -> CaptureJournal | None:
    """A journal when any integration captures; its folder defaults to ``data_dir/captures``."""
    if not any(i.capture for i in settings.integrations.values()):
        return None
    return CaptureJournal(
        capture_folder(settings),
        max_bytes=settings.capture_max_bytes,
        max_total_bytes=settings.capture_max_total_bytes,
        redactions=settings.capture_redact,
    )


def capture_folder(settings: Settings) -> Path:
    return Path(settings.capture_dir or Path(settings.data_dir) / "captures")


def create_app(
    config: Mapping[str, Any] | Settings | None = None,
    *,
    router: Router | None = None,
    backend: Backend | None = None,
) -> Flask:
    """A Flask app serving the callback URLs.

    ``config`` stands in for the TOML file (``RECEIVER_CONFIG``); the
    environment still applies on top. Without ``REDIS_URL``, background work
    goes to an embedded Redis started on first need, with a worker beside it.
    """
    from receiver import admin
    from receiver.web.callback import CallbackMiddleware
    from receiver.web.endpoints import blueprint, register_error_handlers

    core = build_core(config, router=router, backend=backend, dashboard=True)
    # Operators' view of what this app answers: metrics, traces and stats.
    delivery_finished.connect(metrics.observe_delivery, sender=core, weak=False)
    trace_writer = TraceWriter.for_backend(core.settings.trace_ttl, core.backend)
    delivery_finished.connect(trace_writer, sender=core, weak=False)
    app = Flask("receiver")
    app.extensions["receiver"] = core
    app.extensions["receiver.trace"] = trace_writer
    app.extensions["receiver.backlog"] = backlog(core)
    admin.install(app, core)  # /admin/, only with admin_password set; behind the callback adapter
    app.wsgi_app = CallbackMiddleware(app.wsgi_app, core)  # type: ignore[method-assign]
    app.wsgi_app = admin.SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app


def replication_client(settings: Settings, url: str) -> redis.Redis | None:
    """With replicated durability, a client whose reads outlast a WAIT; otherwise none."""
    if settings.durability != "replicated":
        return None
    wait = settings.redis_timeout + settings.replication_timeout
    return connect(url, settings.redis_timeout, read_timeout=wait)


def connect(url: str, timeout: float, *, read_timeout: float | None = None) -> redis.Redis:
    """A client that fails fast: one quick retry (a pooled connection may predate a restart).

    ``timeout`` bounds connecting and each reply, unless ``read_timeout`` is given for
    replies. ``redis+sentinel://[:password@]host:port[,host:port…]/service[/db]`` asks
    the Sentinels for the current master, and follows a failover.
    """
    options: dict[str, Any] = {
        "socket_timeout": read_timeout or timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 30,
    }
    if url.startswith("redis+sentinel://"):
        return _sentinel_master(url, options)
    return redis.Redis.from_url(url, **options)


def _sentinel_master(url: str, options: dict[str, Any]) -> redis.Redis:
    from urllib.parse import unquote, urlsplit

    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    hosts_part = parts.netloc.rsplit("@", 1)[-1]
    password = unquote(parts.password) if parts.password else None
    hosts = []
    for host in hosts_part.split(","):
        name, _, port = host.rpartition(":")
        hosts.append((name or host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError(
            "a Sentinel URL names the master's service: redis+sentinel://host:26379/mymaster/0"
        )
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        hosts,
        sentinel_kwargs={
            "socket_timeout": options["socket_connect_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
        },
    )
    db = int(path[1]) if len(path) > 1 else 0
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        path[0], db=db, password=password, **options
    )
    return master


def check_server(
    connection: redis.Redis, where: str = "the Redis in REDIS_URL", settings: Settings | None = None
) -> None:
    """Refuse a server outside the supported range, or one that cannot keep the durability
    ``settings`` ask for; warn when it keeps nothing on disk, or lacks live replicas.

    An unreachable Redis is only a warning: a web process spools until it is back.
    """
    try:
        require_supported(connection.info("server"), where)
        if settings is not None and settings.durability == "replicated":
            line, live = durability.check(connection, settings)
            if live < settings.min_replicas:
                log.warning("%s: deliveries are held in the spool until replicas join", line)
        info = connection.info("persistence")
        save = connection.config_get("save").get("save", "")
    except redis.ResponseError:
        return  # managed Redis often forbids CONFIG; nothing to learn
    except redis.RedisError as exc:
        log.warning(
            "Redis unreachable at start-up (%s); carrying on, it is retried on every use", exc
        )
        return
    if not info.get("aof_enabled") and not save:
        log.warning(
            "the Redis this process uses keeps nothing on disk (no AOF, no RDB snapshots): "
            "a Redis restart loses acknowledged events; set appendonly yes "
            "(see docs/delivery-guarantees.md)"
        )


class _LazyEmbeddedBackend:
    """Starts the embedded Redis and a worker the first time background work arrives."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backend: RedisBackend | None = None

    @property
    def connection(self) -> redis.Redis:
        return self._ensure().connection

    @property
    def started(self) -> bool:
        """Whether the embedded Redis is in use yet (traces and metrics never start it)."""
        return self._backend is not None

    def submit(self, delivery_id: str, work: Any) -> str:
        return self._ensure().submit(delivery_id, work)

    def _ensure(self) -> RedisBackend:
        if self._backend is None:
            url = EmbeddedRedis(self.settings.data_dir).ensure_running()
            spawn_worker(url)
            self._backend = RedisBackend(self.settings, connect(url, self.settings.redis_timeout))
        return self._backend


def run_worker(
    queues: list[str] | None = None,
    *,
    burst: bool = False,
    parent_pid: int | None = None,
    concurrency: int | None = None,
    metrics: tuple[str, int] | None = None,
) -> bool:
    """``receiver worker``: the core as a worker needs it, its metrics port, then the worker."""
    from receiver.worker.process import WORKER_REDIS_TIMEOUT
    from receiver.worker.process import run_worker as work

    core = build_core(require_redis=True, redis_timeout=WORKER_REDIS_TIMEOUT)
    if metrics is not None:
        from prometheus_client import start_http_server

        from receiver.observe.metrics import registry_for

        host, port = metrics
        start_http_server(port, addr=host, registry=registry_for(backlog(core)))
        log.info("worker metrics at http://%s:%d/metrics", host, port)
    return work(
        work_context(core),
        queues,
        burst=burst,
        parent_pid=parent_pid,
        concurrency=concurrency,
    )


__all__ = [
    "backlog",
    "build_core",
    "connect",
    "create_app",
    "inline_backend",
    "run_worker",
    "work_context",
]
