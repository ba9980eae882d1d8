"""The admin dashboard under ``/admin/``: off unless ``admin_password`` is set.

``switches_for`` and ``install`` are all the app calls: the integration switches
it hands the core it builds, and the blueprint (server-rendered pages, no
JavaScript at all). The callback paths never pass through any of this: the
WSGI adapter answering them sits in front. ``SecurityHeaders``, which ``create_app``
puts around everything, gives every answer under ``/admin`` the dashboard's
headers, whoever wrote it.

rq-dashboard was mounted at ``/admin/rq`` until its templates had given a
stored and then a reflected XSS (docs/dashboard.md): the dashboard's own
Queues and Failed work pages show what operators used it for, and what
was under ``/admin/rq/`` answers a redirect to them or a 404.

Layer: beside the web side and the worker side (none imports another);
imports the queue side, the server and below. Internal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask

from receiver.admin.auth import Gate
from receiver.admin.shared import Admin
from receiver.admin.switches import Switches
from receiver.core.handling import Core
from receiver.observe.trace import live_connection
from receiver.routing.contracts import Backend
from receiver.server.embedded import EmbeddedRedis
from receiver.settings.model import Settings

PREFIX = "/admin"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""No script at all, from anywhere; the dashboard's own stylesheet and images."""
HEADERS = (
    ("Cache-Control", "no-store"),
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)
_UNDER = PREFIX + "/"
_REPLACED = frozenset(name.lower() for name, _ in HEADERS)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def switches_for(settings: Settings, backend: Backend) -> Switches | None:
    """The integration switches the core asks on every request, read from ``backend``'s
    Redis; ``None`` with the dashboard off (no ``admin_password``): nothing switches."""
    if not settings.admin_password:
        return None
    return Switches(_live_connection(settings, backend))


def install(app: Flask, core: Core) -> bool:
    """Turn the dashboard on when a password is configured; say whether it is on."""
    if not core.settings.admin_password:
        return False
    from receiver.admin.views import blueprint

    app.extensions["receiver.admin"] = Admin(Gate(core.settings))
    app.register_blueprint(blueprint)
    return True


class SecurityHeaders:
    """Every answer under ``/admin``: never cached, framed or sniffed, no script.

    Set here, around the whole WSGI app, not by the blueprint: Flask's own 404,
    405 and slash redirects under ``/admin`` belong to no blueprint, and the
    callback adapter answers a body too large (413) before Flask sees it.
    The dashboard off, ``/admin/`` answers 404 with them too.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if type(path) is not str:
            path = str(path)
        # One prefix test first: every callback request passes here on its way in.
        if not path.startswith(PREFIX) or (path != PREFIX and not path.startswith(_UNDER)):
            return self.app(environ, start_response)

        def with_headers(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() not in _REPLACED]
            return start_response(status, [*kept, *HEADERS], *exc_info)

        return self.app(environ, with_headers)


def _live_connection(settings: Settings, backend: Backend) -> Callable[[], redis.Redis | None]:
    """The backend's Redis once in use; with the embedded default, its server once running."""
    cached: list[redis.Redis] = []

    def connection() -> redis.Redis | None:
        found = live_connection(backend)
        if found is not None or settings.redis_url is not None:
            return found
        if not cached:
            embedded = EmbeddedRedis(settings.data_dir)
            if not embedded.running():
                return None
            cached.append(redis.Redis.from_url(embedded.url, socket_timeout=1))
        return cached[0]

    return connection


__all__ = ["Admin", "SecurityHeaders", "install", "switches_for"]
