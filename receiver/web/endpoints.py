"""The Flask side: health, readiness, metrics, and JSON answers for every other path.

The callback paths themselves are answered by ``receiver.web.callback.CallbackMiddleware``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from receiver.core.handling import Core
from receiver.observe import metrics
from receiver.web.health import readiness

log = logging.getLogger("receiver.web")

blueprint = Blueprint("receiver", __name__)


@blueprint.route("/healthz")
def health() -> Response:
    return jsonify(status="ok")


@blueprint.route("/readyz")
def ready() -> tuple[Response, int]:
    is_ready, checks = readiness(_core())
    return jsonify(status="ready" if is_ready else "not_ready", checks=checks), (
        200 if is_ready else 503
    )


@blueprint.route("/metrics")
def metrics_view() -> Response | tuple[Response, int]:
    """Prometheus text, only with ``metrics_token`` set and presented as a bearer token."""
    core = _core()
    token = core.settings.metrics_token
    if not token:
        raise NotFound()  # off the public path unless configured
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = jsonify(error="unauthorized", message="send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, 401
    body = metrics.exposition(current_app.extensions["receiver.backlog"])
    return Response(body, content_type=metrics.CONTENT_TYPE)


def _core() -> Core:
    core = current_app.extensions["receiver"]
    assert isinstance(core, Core)
    return core


def register_error_handlers(app: Flask) -> None:
    """Unknown paths, wrong methods and anything unforeseen answer JSON, never a traceback."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify(error=code, message=exc.description)
        response.status_code = exc.code or 500
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        response = jsonify(error="internal_error", message="the receiver failed; see its log")
        response.status_code = 500
        return response
