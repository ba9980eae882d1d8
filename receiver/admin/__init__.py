"""The admin dashboard under ``/admin/``: off unless ``admin_password`` is set.

``install`` is all ``create_app`` calls. It registers the blueprint (server-
rendered pages, no JavaScript at all) and gives the core the integration
switches. The callback paths never pass through any of this: the WSGI
adapter answering them sits in front.

rq-dashboard was mounted at ``/admin/rq`` until its templates had given a
stored and then a reflected XSS (README "Dashboard"): the dashboard's own
Queues and Failed work pages show what operators used it for, and what
was under ``/admin/rq/`` answers a redirect to them or a 404.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from flask import Flask

from ..core import Core
from ..embedded import EmbeddedRedis
from ..switches import Switches
from ..trace import live_connection
from .auth import Gate
from .shared import Admin


def install(app: Flask, core: Core) -> bool:
    """Turn the dashboard on when a password is configured; say whether it is on."""
    if not core.settings.admin_password:
        return False
    from .views import blueprint

    gate = Gate(core.settings)
    switches = Switches(_live_connection(core))
    core.switched_off = switches
    app.extensions["receiver.admin"] = Admin(gate, switches)
    app.register_blueprint(blueprint)
    return True


def _live_connection(core: Core) -> Callable[[], redis.Redis | None]:
    """The core's Redis once in use; with the embedded default, its server once running."""
    cached: list[redis.Redis] = []

    def connection() -> redis.Redis | None:
        found = live_connection(core.backend)
        if found is not None or core.settings.redis_url is not None:
            return found
        if not cached:
            embedded = EmbeddedRedis(core.settings.data_dir)
            if not embedded.running():
                return None
            cached.append(redis.Redis.from_url(embedded.url, socket_timeout=1))
        return cached[0]

    return connection


__all__ = ["Admin", "install"]
