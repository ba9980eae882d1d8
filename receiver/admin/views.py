"""The dashboard's pages and forms. Server-rendered; every change is a POST with a CSRF token.

Every page but the login form needs a session; every POST needs the
session's CSRF token (the login form: its own form cookie's), or it is
refused (403) before anything changes. Every page but the stylesheet needs
Redis (sessions signed out, sign-in limits, switches, traces): while it is
unreachable they answer 503 saying so, and no cookie is taken, since the
list of signed-out sessions cannot be read.
Answers are never cached and never framed (``SecurityHeaders``, in the package).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as AnyResponse

from receiver.admin import data, switches
from receiver.admin.auth import COOKIE, COOKIE_PATH, CSRF_FIELD, LOGIN_COOKIE, Refused, safe_next
from receiver.admin.shared import Admin
from receiver.core.handling import Core, Headers, Request
from receiver.core.signature import signature_headers
from receiver.errors import ConfigError, UnknownFailedItem
from receiver.observe import trace
from receiver.observe.logsafe import escape

log = logging.getLogger("receiver.admin")

blueprint = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
)

OPEN_ENDPOINTS = {"admin.login", "admin.static"}
DELIVERY_ID = re.compile(r"[0-9a-f]{32}")
"""The ids ``Core`` gives deliveries: 16 random bytes in lowercase hex."""


def _admin() -> Admin:
    found = current_app.extensions["receiver.admin"]
    assert isinstance(found, Admin)
    return found


def _core() -> Core:
    found = current_app.extensions["receiver"]
    assert isinstance(found, Core)
    return found


def _connection() -> redis.Redis:
    """The core's Redis, starting the embedded default if need be.

    Without one there is nowhere to keep who signed out: a ``redis.ConnectionError``,
    answered 503 like any other Redis error.
    """
    try:
        found = _core().backend.connection
    except ConfigError as exc:  # the embedded default did not start
        raise redis.ConnectionError(str(exc)) from exc
    if found is None:
        raise redis.ConnectionError("this app runs background work in-process, without Redis")
    return found


def _page(template: str, status: int = 200, **context: Any) -> AnyResponse:
    response = make_response(render_template(template, **context), status)
    return response


@blueprint.before_request
def require_login() -> AnyResponse | None:
    if request.endpoint == "admin.static":
        return None  # the stylesheet, also for the page saying Redis is unreachable
    admin = _admin()
    connection = _connection()
    connection.ping()  # unreachable: 503 for every page, the login form included
    session = admin.gate.session(request.cookies.get(COOKIE), connection)
    g.admin_session = session
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if session is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")), 303)
    if request.method == "POST" and not admin.gate.csrf_ok(session, request.form.get(CSRF_FIELD)):
        log.warning(
            "admin form refused: missing or wrong CSRF token (%s %s from %s)",
            request.method,
            escape(request.path),
            escape(_address()),
        )
        return _page(
            "message.html",
            403,
            title="Refused",
            message="This form was sent without its CSRF token (or with a stale one). "
            "Go back, reload the page and send it again.",
        )
    return None


@blueprint.errorhandler(redis.RedisError)
def redis_unavailable(error: redis.RedisError) -> AnyResponse:
    """Redis unreachable, or refusing (out of memory, read-only replica...): a short page."""
    log.warning(
        "admin %s %s answered 503: Redis unavailable (%s: %s)",
        request.method,
        escape(request.path),
        type(error).__name__,
        escape(str(error)),
    )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        title, what = "Redis is unreachable", "Check that it is running and reachable from here"
    else:
        title, what = "Redis refused the request", "Check that it is not out of memory or read-only"
    return _page(
        "message.html",
        503,
        title=title,
        message=f"The dashboard keeps its sessions, sign-in limits and everything it shows in "
        f"Redis. {what} (the receiver's log says what failed), then reload this page.",
    )


@blueprint.app_context_processor
def template_globals() -> dict[str, Any]:
    session = getattr(g, "admin_session", None)
    return {"csrf_token": session.csrf if session else "", "csrf_field": CSRF_FIELD}


@blueprint.app_template_filter("when")
def when(value: str | None) -> str:
    """ISO 8601 (any offset) as ``2026-11-27 10:00:01 UTC``; empty stays empty."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _address() -> str:
    return _admin().gate.client_address(request.remote_addr, Headers(request.headers.items()))


# --- login ----------------------------------------------------------------------------------


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> AnyResponse:
    gate = _admin().gate
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        return _login_page(next_path)
    address = _address()
    if not gate.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), request.form.get(CSRF_FIELD)):
        log.warning("admin login refused: missing or stale login-form token from %s",
                    escape(address))
        return _login_page(
            next_path,
            403,
            "This sign-in form was stale or was not sent from this page. Sign in again here.",
        )
    connection = _connection()
    refused = gate.attempt(connection, address)
    if refused is not None:
        return _too_many(next_path, address, refused)
    if not gate.password_ok(request.form.get("password", "")):
        log.warning("admin login failed: wrong password from %s", escape(address))
        return _login_page(next_path, 401, "Wrong password.")
    gate.succeeded(connection, address)
    log.info("admin login from %s", escape(address))
    response = redirect(next_path, 303)
    _set_cookie(response, COOKIE, gate.new_cookie(), gate.max_age)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
    return response


def _too_many(next_path: str, address: str, refused: Refused) -> AnyResponse:
    """429, saying whose limit it was and when to try again (also as ``Retry-After``)."""
    if refused.everyone:
        log.warning("admin login slowed down: many failed attempts from many addresses "
                    "(%s waits %d s)", escape(address), refused.wait)
        message = ("Many failed sign-ins lately, from many addresses: sign-in is slowed down "
                   f"for everyone. Try again in {refused.wait} second(s).")
    else:
        log.warning("admin login refused: too many failed attempts from %s", escape(address))
        minutes = max(1, round(refused.wait / 60))
        message = (f"Too many failed logins from your address. Try again in about {minutes} "
                   "minute(s).")
    response = _login_page(next_path, 429, message)
    response.headers["Retry-After"] = str(refused.wait)
    return response


def _login_page(next_path: str, status: int = 200, error: str | None = None) -> AnyResponse:
    """The form with its CSRF token, and the cookie that token belongs to."""
    gate = _admin().gate
    cookie, token = gate.login_form(request.cookies.get(LOGIN_COOKIE))
    response = _page("login.html", status, next_path=next_path, error=error, login_token=token)
    _set_cookie(response, LOGIN_COOKIE, cookie, gate.login_form_max_age)
    return response


def _set_cookie(response: AnyResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=_admin().gate.is_https(request.scheme, Headers(request.headers.items())),
    )


@blueprint.route("/logout", methods=["POST"])
def logout() -> AnyResponse:
    _admin().gate.sign_out(_connection(), g.admin_session)
    response = redirect(url_for("admin.login"), 303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
    return response


# --- integrations -------------------------------------------------------------------------------


@blueprint.route("/")
def integrations() -> AnyResponse:
    rows = data.integrations(_core().settings, _connection(), request.host_url)
    return _page("integrations.html", rows=rows)


@blueprint.route("/integrations/<name>/switch", methods=["POST"])
def switch(name: str) -> AnyResponse:
    integration = _core().settings.integrations.get(name)
    if integration is None:
        raise NotFound(f"no integration named {name!r}")
    on = request.form.get("on") == "1"
    if on and not integration.enabled:
        return _page(
            "message.html",
            409,
            title="Disabled in the config",
            message=f"{name} has enabled = false in the config file, which the dashboard "
            "cannot override: change the config and restart.",
        )
    switches.switch(_connection(), name, on)
    log.warning(
        "integration %s switched %s from the admin dashboard by %s",
        escape(name),
        "on" if on else "off",
        escape(_address()),
    )
    return redirect(url_for("admin.integrations") + f"#integration-{name}", 303)


# --- deliveries ---------------------------------------------------------------------------------


@blueprint.route("/deliveries")
def deliveries() -> AnyResponse:
    connection = _connection()
    show = request.args.get("show") or data.SHOWS[0]
    if show not in data.SHOWS:
        return _page("message.html", 400, title="Bad filter",
                     message=f"show must be one of: {', '.join(data.SHOWS)}.")
    filters = {k: request.args.get(k) or None for k in ("integration", "topic", "status")}
    known = sorted(_core().settings.integrations)
    rows = data.deliveries(connection, show=show, known=known, **filters)
    return _page(
        "deliveries.html",
        rows=rows,
        show=show,
        shows=data.SHOWS,
        sample=trace.REFUSED_SAMPLE,
        filters=filters,
        integrations=known,
        statuses=["ok", "refused", "error", "handler_failed"],
    )


@blueprint.route("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> AnyResponse:
    connection = _connection()
    record = _trace(connection, delivery_id)
    if record is None:
        return _page(
            "message.html",
            404,
            title="No such delivery",
            message=f"No trace for {delivery_id}: traces are kept for trace_ttl "
            "(24 h by default) and written within a second of the answer; of refused "
            f"deliveries, only the newest {trace.REFUSED_SAMPLE} per integration.",
        )
    integration = _core().settings.integration(record.get("integration"))
    secret_index = record.get("secret_index")
    fingerprint = None
    if integration is not None and isinstance(secret_index, int):
        if secret_index < len(integration.app_secrets):
            fingerprint = data.fingerprint(integration.app_secrets[secret_index])
    captured = data.find_capture(_core().capture, record)
    event_ids = [event_id for _, event_id in record.get("events") or []]
    others = {
        event_id: [d for d in trace.deliveries_of(connection, event_id) if d != delivery_id]
        for event_id in event_ids
    }
    return _page(
        "delivery.html",
        record=record,
        fingerprint=fingerprint,
        replayable=data.replayable(captured, _core().settings.dev_mode),
        others=others,
        waiting=data.waiting(connection, record) if connection is not None else [],
    )


def _trace(connection: redis.Redis, delivery_id: str) -> dict[str, Any] | None:
    """A delivery's trace; ``None`` for an id not shaped as the core makes them, which
    never becomes a Redis key (``<id>:attempts`` named another key, of another type)."""
    if not DELIVERY_ID.fullmatch(delivery_id):
        return None
    return trace.load(connection, delivery_id, _core().settings.integrations)


@blueprint.route("/deliveries/<delivery_id>/replay", methods=["POST"])
def replay(delivery_id: str) -> AnyResponse:
    """Send a captured delivery through this receiver's core again, re-signed, marked replayed."""
    from receiver.observe.capture import record_body

    core = _core()
    record = _trace(_connection(), delivery_id)
    captured = data.find_capture(core.capture, record) if record else None
    body = record_body(captured) if captured else None
    integration = core.settings.integration(record.get("integration") if record else None)
    if not data.replayable(captured, core.settings.dev_mode) or body is None or not integration:
        return _page(
            "message.html",
            404,
            title="Nothing to replay",
            message="Only captured deliveries whose signature verified can be replayed: "
            "turn capture on for the integration (capture = true) and replay a delivery "
            "captured since.",
        )
    secret = integration.app_secrets[0] if integration.app_secrets else ""
    headers = Headers(signature_headers(body, secret) if secret else {})
    name = None if integration.name == core.settings.default_integration else integration.name
    result = core.handle(Request("POST", body, headers, integration=name, replayed=True))
    writer = current_app.extensions.get("receiver.trace")
    if writer is not None:
        writer.flush()  # the new trace is there when the next page asks for it
    log.warning(
        "delivery %s replayed from the admin dashboard as %s (status %s) by %s",
        escape(delivery_id),
        result.delivery_id,
        result.status,
        escape(_address()),
    )
    if result.delivery_id is None:
        return _page(
            "message.html",
            result.status,
            title="Replay refused",
            message=f"The receiver answered {result.status} ({result.error}).",
        )
    return redirect(url_for("admin.delivery", delivery_id=result.delivery_id), 303)


# --- failed work and queues ---------------------------------------------------------------------


@blueprint.route("/failed")
def failed() -> AnyResponse:
    connection = _connection()
    core = _core()
    rows = data.failed(connection, data.queue_names(connection, core.settings, core.router))
    return _page("failed.html", rows=rows)


@blueprint.route("/failed/requeue", methods=["POST"])
def requeue() -> AnyResponse:
    """Run failed items again (all, or the one named), as ``receiver failed requeue``."""
    from receiver.queue import ops

    everything = request.form.get("all") == "1"
    return _change_failed(lambda c, names, ids: ops.requeue(c, names, None if everything else ids),
                          "requeued")


def _change_failed(
    change: Callable[[redis.Redis, list[str], list[str]], list[str]], done: str
) -> AnyResponse:
    connection = _connection()
    core = _core()
    names = data.queue_names(connection, core.settings, core.router)
    try:
        changed = change(connection, names, request.form.getlist("job_id"))
    except UnknownFailedItem as exc:
        return _not_in_registry(exc)
    log.warning("admin %s %d failed item(s) by %s", done, len(changed), escape(_address()))
    return redirect(url_for("admin.failed") + f"?{done}={len(changed)}", 303)


@blueprint.route("/failed/skip", methods=["POST"])
def skip() -> AnyResponse:
    """Drop failed items for good, as ``receiver failed skip``: work that should not run
    again; a key such an item holds (``on_failure="block"``) goes on past it."""
    from receiver.queue import ops

    def skipped(connection: redis.Redis, names: list[str], job_ids: list[str]) -> list[str]:
        ops.skip(connection, names, job_ids)
        return job_ids

    return _change_failed(skipped, "skipped")


def _not_in_registry(exc: UnknownFailedItem) -> AnyResponse:
    return _page(
        "message.html",
        404,
        title="Not in the failed registry",
        message=f"{', '.join(exc.job_ids)}: already requeued or removed. Reload the list.",
    )


@blueprint.route("/queues")
def queues() -> AnyResponse:
    connection = _connection()
    core = _core()
    rows = data.queues(connection, core.settings, core.router)
    held = data.held_keys(connection, core.settings, core.router)
    return _page("queues.html", rows=rows, held=held, workers=data.workers(connection))


# --- where rq-dashboard was ---------------------------------------------------------------------


@blueprint.route("/rq/")
def rq_dashboard() -> AnyResponse:
    """rq-dashboard's front page, bookmarked: the Queues page shows what it showed."""
    return redirect(url_for("admin.queues"), 303)


@blueprint.route("/rq/<path:rest>")
def rq_dashboard_page(rest: str) -> AnyResponse:
    """Any other rq-dashboard URL: a 404 that names the pages to use (never ``rest``)."""
    return _page(
        "message.html",
        404,
        title="rq-dashboard is gone",
        message="rq-dashboard is no longer part of this dashboard: see Queues for queues and "
        "workers, and Failed work to see, requeue or skip failed jobs.",
    )
