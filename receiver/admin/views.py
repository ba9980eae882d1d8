"""The dashboard's pages and forms. Server-rendered; every change is a POST with a CSRF token.

Every page but the login form needs a session; every POST needs the
session's CSRF token (the login form: its own form cookie's), or it is
refused (403) before anything changes.
Answers are never cached and never framed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis
from flask import (
    Blueprint,
    Response,
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

from .. import switches, trace
from ..core import Core, Headers, Request
from ..errors import ReceiverError, UnknownFailedItem
from ..logsafe import escape
from ..signature import signature_headers
from . import data
from .auth import COOKIE, COOKIE_PATH, CSRF_FIELD, LOGIN_COOKIE, safe_next
from .shared import Admin

log = logging.getLogger("receiver.admin")

blueprint = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
)

OPEN_ENDPOINTS = {"admin.login", "admin.static"}
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _admin() -> Admin:
    found = current_app.extensions["receiver.admin"]
    assert isinstance(found, Admin)
    return found


def _core() -> Core:
    found = current_app.extensions["receiver"]
    assert isinstance(found, Core)
    return found


def _connection() -> redis.Redis | None:
    """The core's Redis (starting the embedded default if need be), or ``None`` without one."""
    found = getattr(_core().backend, "connection", None)
    return found if isinstance(found, redis.Redis) else None


def _page(template: str, status: int = 200, **context: Any) -> AnyResponse:
    response = make_response(render_template(template, **context), status)
    return response


@blueprint.before_request
def require_login() -> AnyResponse | None:
    admin = _admin()
    session = admin.gate.session(request.cookies.get(COOKIE), _safe_connection())
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


@blueprint.after_request
def security_headers(response: Response) -> AnyResponse:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


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
    connection = _safe_connection()
    wait = gate.attempt(connection, address)
    if wait:
        log.warning("admin login refused: too many failed attempts from %s", escape(address))
        minutes = max(1, round(wait / 60))
        return _login_page(
            next_path, 429, f"Too many failed logins. Try again in about {minutes} minute(s)."
        )
    if not gate.password_ok(request.form.get("password", "")):
        log.warning("admin login failed: wrong password from %s", escape(address))
        return _login_page(next_path, 401, "Wrong password.")
    gate.succeeded(connection, address)
    log.info("admin login from %s", escape(address))
    response = redirect(next_path, 303)
    _set_cookie(response, COOKIE, gate.new_cookie(), gate.max_age)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
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


def _safe_connection() -> redis.Redis | None:
    """For counting failed logins: Redis when it answers, else this process's memory."""
    try:
        connection = _connection()
        if connection is not None:
            connection.ping()
        return connection
    except (redis.RedisError, OSError, ReceiverError):
        return None


@blueprint.route("/logout", methods=["POST"])
def logout() -> AnyResponse:
    _admin().gate.sign_out(_safe_connection(), g.admin_session)
    response = redirect(url_for("admin.login"), 303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict")
    return response


# --- integrations -------------------------------------------------------------------------------


@blueprint.route("/")
def integrations() -> AnyResponse:
    connection = _connection()
    rows = data.integrations(_core().settings, connection, request.host_url)
    return _page("integrations.html", rows=rows, has_redis=connection is not None)


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
    connection = _connection()
    if connection is None:
        return _page("message.html", 503, title="No Redis", message="Switches live in Redis.")
    switches.switch(connection, name, on)
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
    filters = {k: request.args.get(k) or None for k in ("integration", "topic", "status")}
    rows = data.deliveries(connection, **filters) if connection is not None else []
    return _page(
        "deliveries.html",
        rows=rows,
        filters=filters,
        integrations=sorted(_core().settings.integrations),
        statuses=["ok", "refused", "error", "handler_failed"],
    )


@blueprint.route("/deliveries/<delivery_id>")
def delivery(delivery_id: str) -> AnyResponse:
    connection = _connection()
    record = trace.load(connection, delivery_id) if connection is not None else None
    if record is None:
        return _page(
            "message.html",
            404,
            title="No such delivery",
            message=f"No trace for {delivery_id}: traces are kept for trace_ttl "
            "(24 h by default) and written within a second of the answer.",
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
    } if connection is not None else {}
    return _page(
        "delivery.html",
        record=record,
        fingerprint=fingerprint,
        replayable=data.replayable(captured, _core().settings.dev_mode),
        others=others,
        waiting=data.waiting(connection, record) if connection is not None else [],
    )


@blueprint.route("/deliveries/<delivery_id>/replay", methods=["POST"])
def replay(delivery_id: str) -> AnyResponse:
    """Send a captured delivery through this receiver's core again, re-signed, marked replayed."""
    from ..capture import record_body

    core = _core()
    connection = _connection()
    record = trace.load(connection, delivery_id) if connection is not None else None
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
    rows = (
        data.failed(connection, data.queue_names(connection, core.settings, core.router))
        if connection is not None
        else []
    )
    return _page("failed.html", rows=rows)


@blueprint.route("/failed/requeue", methods=["POST"])
def requeue() -> AnyResponse:
    from ..queue import ops

    connection = _connection()
    core = _core()
    if connection is None:
        return _page("message.html", 503, title="No Redis", message="Failed work lives in Redis.")
    names = data.queue_names(connection, core.settings, core.router)
    wanted = None if request.form.get("all") == "1" else request.form.getlist("job_id")
    try:
        done = ops.requeue(connection, names, wanted)
    except UnknownFailedItem as exc:
        return _not_in_registry(exc)
    log.warning("admin requeued %d failed item(s) by %s", len(done), escape(_address()))
    return redirect(url_for("admin.failed", requeued=len(done)), 303)


@blueprint.route("/failed/skip", methods=["POST"])
def skip() -> AnyResponse:
    """Drop one failed item for good: a key it holds (``on_failure="block"``) goes on."""
    from ..queue import ops

    connection = _connection()
    core = _core()
    job_id = request.form.get("job_id", "")
    if connection is None:
        return _page("message.html", 503, title="No Redis", message="Failed work lives in Redis.")
    try:
        ops.skip(connection, data.queue_names(connection, core.settings, core.router), [job_id])
    except UnknownFailedItem as exc:
        return _not_in_registry(exc)
    log.warning("admin skipped failed item %s by %s", escape(job_id), escape(_address()))
    return redirect(url_for("admin.failed", skipped=1), 303)


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
    rows = data.queues(connection, core.settings, core.router) if connection is not None else []
    held = data.held_keys(connection, core.settings, core.router) if connection else []
    return _page("queues.html", rows=rows, held=held)
