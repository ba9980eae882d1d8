"""The app factory, and ``build_core`` which the worker and the CLI share with it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

from .config import Settings, load_settings
from .core import Core
from .embedded import EmbeddedRedis, spawn_worker
from .jobs import WorkContext
from .plugins import load_plugins
from .queue import Backend, InlineBackend, RQBackend
from .routing import Router, default_router
from .runtime import activate

log = logging.getLogger("receiver")


def build_core(
    config: Mapping[str, Any] | Settings | None = None,
    *,
    router: Router | None = None,
    backend: Backend | None = None,
    require_redis: bool = False,
) -> Core:
    """Settings, plugins and a backend: everything but the web layer."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    router = router if router is not None else default_router
    activate(settings)
    load_plugins(settings.handlers, router)
    if settings.dev_mode:
        log.warning(
            "DEVELOPMENT MODE is on: requests without a configured secret are NOT verified; "
            "never expose this receiver to the internet"
        )
    if backend is None:
        if settings.redis_url is None and not require_redis:
            backend = _LazyEmbeddedBackend(settings, router)
        else:
            backend = RQBackend(
                settings, connect(settings.redis_url or _embedded(settings).ensure_running())
            )
    return Core(settings, router, backend)


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
    from .web import blueprint, register_error_handlers

    core = build_core(config, router=router, backend=backend)
    app = Flask("receiver")
    app.config["MAX_CONTENT_LENGTH"] = None  # the view enforces the limit itself
    app.extensions["receiver"] = core
    app.register_blueprint(blueprint)
    register_error_handlers(app)
    return app


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )


def _embedded(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.data_dir)


class _LazyEmbeddedBackend:
    """Starts the embedded Redis and a worker the first time background work arrives."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router
        self._backend: RQBackend | None = None

    @property
    def connection(self) -> redis.Redis:
        return self._ensure().connection

    def submit(self, delivery_id: str, work: Any) -> list[str]:
        return self._ensure().submit(delivery_id, work)

    def _ensure(self) -> RQBackend:
        if self._backend is None:
            url = _embedded(self.settings).ensure_running()
            spawn_worker(url)
            self._backend = RQBackend(self.settings, connect(url))
        return self._backend


__all__ = ["build_core", "create_app", "InlineBackend", "WorkContext"]
