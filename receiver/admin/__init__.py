"""The admin dashboard under ``/admin/``: off unless ``admin_password`` is set.

``install`` is all ``create_app`` calls. It registers the blueprint (server-
rendered pages, no JavaScript of ours), gives the core the integration
switches, and mounts rq-dashboard, unchanged, at ``/admin/rq`` behind the
same login. The callback paths never pass through any of this: the WSGI
adapter answering them sits in front.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Flask, current_app
from flask import request as flask_request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from ..core import Core
from ..embedded import EmbeddedRedis
from ..logsafe import escape
from ..switches import Switches
from ..trace import live_connection
from .auth import COOKIE, Gate
from .shared import Admin

log = logging.getLogger("receiver.admin")

RQ_MOUNT = "/admin/rq"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

READ_ONLY = frozenset({
    "rq_dashboard.queues_overview",
    "rq_dashboard.workers_overview",
    "rq_dashboard.jobs_overview",
    "rq_dashboard.job_view",
    "rq_dashboard.list_queues",
    "rq_dashboard.list_jobs",
    "rq_dashboard.job_info",
    "rq_dashboard.list_workers",
    "rq_dashboard.favicon",
    "rq_dashboard.static",
    "static",
})
"""rq-dashboard 0.9's endpoints that only read. Every other one changes something (requeue a
job or a whole failed registry, delete, empty, compact; and whatever a later version adds):
POST only, from this site only, though rq-dashboard answers GET on some (``/requeue/<queue>``).
"""

REGISTRIES = frozenset(
    {"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"}
)
"""The registry names rq-dashboard's job lists and its empty button know."""


def install(app: Flask, core: Core) -> bool:
    """Turn the dashboard on when a password is configured; say whether it is on."""
    if not core.settings.admin_password:
        return False
    from .views import blueprint

    gate = Gate(core.settings)
    connection = _live_connection(core)
    switches = Switches(connection)
    core.switched_off = switches
    app.extensions["receiver.admin"] = Admin(gate, switches)
    app.register_blueprint(blueprint)
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {RQ_MOUNT: RQMount(gate, redis_url(core), connection)}
    )
    return True


def redis_url(core: Core) -> str:
    return core.settings.redis_url or EmbeddedRedis(core.settings.data_dir).url


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


class RQMount:
    """rq-dashboard as it ships, behind the dashboard's login.

    Reading needs a session; changing anything (rq-dashboard's own POSTs)
    also needs the request to come from this site (``Origin``/``Referer``),
    since its forms carry no CSRF token of ours, and a GET to a URL that
    changes something is refused (405): a link cannot requeue or delete. The
    session cookie is SameSite=Strict as well.
    """

    def __init__(
        self, gate: Gate, url: str, connection: Callable[[], redis.Redis | None]
    ) -> None:
        self.gate = gate
        self.url = url
        self.connection = connection
        self._app: Flask | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = WsgiRequest(environ)
        if self.gate.session(request.cookies.get(COOKIE), self._redis()) is None:
            target = f"/admin/login?next={RQ_MOUNT}/"
            response = WsgiResponse(status=303, headers={"Location": target})
            return response(environ, start_response)
        refused = self._refusal(request)
        if refused is not None:
            return refused(environ, start_response)
        return self._dashboard()(environ, start_response)

    def _refusal(self, request: WsgiRequest) -> WsgiResponse | None:
        """Why a request that would change something may not, or ``None``."""
        reading = request.method in ("GET", "HEAD")
        endpoint = _endpoint(self._dashboard(), request.environ)
        if reading and (endpoint is None or endpoint in READ_ONLY):
            return None
        if reading:
            return WsgiResponse(
                "refused: this URL changes things; rq-dashboard's own buttons send it as a POST",
                status=405,
                headers={"Allow": "POST"},
                content_type="text/plain",
            )
        if not _same_origin(request):
            return WsgiResponse(
                "refused: changes must come from this dashboard's own pages",
                status=403,
                content_type="text/plain",
            )
        return None

    def _redis(self) -> redis.Redis | None:
        """For signed-out sessions; ``None`` while Redis is not there (the cookie still counts)."""
        try:
            found = self.connection()
            if found is not None:
                found.ping()
            return found
        except (redis.RedisError, OSError):
            return None

    def _dashboard(self) -> Flask:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = _make_rq_dashboard(self.url)
        return self._app


def _endpoint(app: Flask, environ: dict[str, Any]) -> str | None:
    """The rq-dashboard endpoint a request is for; ``None`` when none answers it (404, 405...)."""
    try:
        endpoint, _ = app.url_map.bind_to_environ(environ).match()
    except HTTPException:
        return None
    return str(endpoint)


def _same_origin(request: WsgiRequest) -> bool:
    from urllib.parse import urlsplit

    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return bool(source) and urlsplit(source).netloc == request.host


def _make_rq_dashboard(url: str) -> Flask:
    import rq_dashboard
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.serializers import JSONSerializer
    from rq_dashboard import web as rq_web

    rq_web.config.serializer = JSONSerializer  # our jobs are JSON, not pickles
    # Rooted in rq_dashboard's package, as its own CLI app is: its pages load their
    # scripts and styles from the app's static folder and the blueprint's alike.
    app = Flask(rq_dashboard.__name__)
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = url
    app.register_blueprint(rq_dashboard.blueprint)
    rq_web.setup_rq_connection(app)
    # rq-dashboard answers 500 (with a traceback in the log) to anything it does not find;
    # these make that a short 404 (409) and one log line. The app's own hooks run before
    # the blueprint's (which raises on an instance number out of range).
    app.before_request(_check_arguments)
    app.register_error_handler(NoSuchJobError, _no_such_job)
    app.register_error_handler(InvalidJobOperation, _not_failed)
    return app


def _refuse(status: int, message: str) -> WsgiResponse:
    log.info("rq-dashboard %s %s: %s", flask_request.method, escape(flask_request.path), message)
    return WsgiResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _check_arguments() -> WsgiResponse | None:
    """A 404 for what rq-dashboard would not find: an instance, a registry, a page, a queue."""
    from rq import Queue

    args = flask_request.view_args or {}
    instance = args.get("instance_number")
    if isinstance(instance, int) and instance >= len(current_app.config["RQ_DASHBOARD_REDIS_URL"]):
        return _refuse(404, f"no Redis instance {instance}: this dashboard shows one, 0")
    registry = args.get("registry_name")
    if registry is not None and registry not in REGISTRIES:
        return _refuse(404, f"no registry {registry!r}: one of {', '.join(sorted(REGISTRIES))}")
    for key in ("per_page", "page"):
        value = str(args.get(key, "1"))
        if not (value.isascii() and value.isdecimal() and int(value) >= 1):
            return _refuse(404, f"{key} must be a whole number from 1, not {value!r}")
    if flask_request.endpoint == "rq_dashboard.compact_queue":
        queue = Queue(args["queue_name"], connection=current_app.redis_conn)  # type: ignore[attr-defined]  # set by rq-dashboard
        if not queue.connection.exists(queue.key):
            return _refuse(404, f"nothing queued in {queue.name!r} to compact")
    return None


def _no_such_job(error: Exception) -> WsgiResponse:
    return _refuse(404, f"no such job: {(flask_request.view_args or {}).get('job_id')}")


def _not_failed(error: Exception) -> WsgiResponse:
    job_id = (flask_request.view_args or {}).get("job_id")
    return _refuse(409, f"job {job_id} is not in the failed registry (requeued already?)")


__all__ = ["Admin", "install"]
