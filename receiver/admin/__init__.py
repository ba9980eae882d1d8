"""The admin dashboard under ``/admin/``: off unless ``admin_password`` is set.

``install`` is all ``create_app`` calls. It registers the blueprint (server-
rendered pages, no JavaScript of ours), gives the core the integration
switches, and mounts rq-dashboard, unchanged, at ``/admin/rq`` behind the
same login. The callback paths never pass through any of this: the WSGI
adapter answering them sits in front.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
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
    session cookie is SameSite=Strict as well. Every answer carries the
    dashboard's security headers, with a CSP of its own (``RQ_CSP``), and the
    strings of its JSON data its pages would insert as HTML come escaped
    (``ESCAPED_DATA``).
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
        response = _with_security_headers(self._respond(environ))
        return response(environ, start_response)

    def _respond(self, environ: dict[str, Any]) -> WsgiResponse:
        request = WsgiRequest(environ)
        if self.gate.session(request.cookies.get(COOKIE), self._redis()) is None:
            target = f"/admin/login?next={RQ_MOUNT}/"
            return WsgiResponse(status=303, headers={"Location": target})
        refused = self._refusal(request)
        if refused is not None:
            return refused
        # Buffered: the CSP of a page names its inline script's hash. (Its largest answer
        # is a script file of some 90 kB; its data answers are small.)
        return WsgiResponse.from_app(self._dashboard(), environ, buffered=True)

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


RQ_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'{hashes}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""rq-dashboard's pages as they ship, and no script anyone slipped into them.

Scripts: its own files, plus the one inline script its base template ends with (its hash,
per page: the script carries the page's job id, queue name...). ``'unsafe-eval'``: its
underscore templates compile with ``new Function``; that runs only text the page's own
scripts pass it, while markup in its data (``<img onerror=...>``, ``javascript:`` links,
``<script>`` inserted as HTML) stays inert, inline handlers being refused.
Styles: its templates set a few ``style=""`` attributes (a hidden button, floats); CSS
cannot run script. Images: Bootstrap's icons are ``data:`` SVGs.
"""
_INLINE_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE)
_JS_TYPES = {"", "text/javascript", "application/javascript", "module"}


def _with_security_headers(response: WsgiResponse) -> WsgiResponse:
    """As the dashboard's own pages: never cached or framed, no sniffing, a CSP."""
    hashes = ""
    if response.mimetype == "text/html":
        hashes = "".join(f" 'sha256-{h}'" for h in _inline_script_hashes(response.get_data()))
    response.headers["Content-Security-Policy"] = RQ_CSP.format(hashes=hashes)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _inline_script_hashes(page: bytes) -> list[str]:
    """The hash of the page's inline script when it has exactly one, as rq-dashboard's base
    template does; none (so no inline script runs) if there were ever more."""
    scripts = []
    for found in _INLINE_SCRIPT.finditer(page.decode("utf-8", "replace")):
        attributes, text = found.group(1), found.group(2)
        kind = re.search(r"""\btype\s*=\s*["']?([^"'\s>]*)""", attributes, re.IGNORECASE)
        executable = (kind.group(1).lower() if kind else "") in _JS_TYPES
        if executable and not re.search(r"\bsrc\s*=", attributes, re.IGNORECASE):
            scripts.append(text)
    if len(scripts) != 1:
        if scripts:
            log.warning("rq-dashboard page with %d inline scripts: none may run", len(scripts))
        return []
    return [base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()]


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
    app.after_request(_escape_json)
    return app


ESCAPED_DATA = {
    "rq_dashboard.job_info": frozenset(),
    "rq_dashboard.list_queues": frozenset(),
    "rq_dashboard.list_jobs": frozenset({("jobs", "*", "description"), ("jobs", "*", "exc_info")}),
    "rq_dashboard.list_workers": frozenset({("workers", "*", "current_job", "description")}),
}
"""rq-dashboard's JSON answers, with the strings its templates escape themselves.

Its pages put every other string of them into HTML unescaped (underscore's ``<%=``), so
they are sent HTML-escaped: ``<img onerror=...>`` in an exception quoting a payload shows
as text even where a CSP is not enforced. The ones listed are escaped by the templates
(jQuery's ``.text()``, ``<%-``) and sent as they are, or the jobs list would show
``&lt;module&gt;``. Entities read the same as the characters they stand for in the text
and attributes these strings go to; the job page's ``Result`` (``JSON.stringify``) shows
a quote in a string as ``"`` rather than ``\\"``.
"""


def _escape_json(response: WsgiResponse) -> WsgiResponse:
    kept = ESCAPED_DATA.get(flask_request.endpoint or "")
    if kept is None or response.mimetype != "application/json" or response.status_code != 200:
        return response
    data = json.loads(response.get_data())
    response.set_data(json.dumps(_escaped(data, (), kept), separators=(",", ":")) + "\n")
    return response


def _escaped(value: Any, path: tuple[str, ...], kept: frozenset[tuple[str, ...]]) -> Any:
    if isinstance(value, str):
        return value if path in kept else html.escape(value)
    if isinstance(value, list):
        return [_escaped(item, (*path, "*"), kept) for item in value]
    if isinstance(value, dict):
        return {html.escape(k): _escaped(v, (*path, k), kept) for k, v in value.items()}
    return value


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
