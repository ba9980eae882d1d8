"""The Flask side: health check and JSON answers for every path the callback adapter passes on.

The callback paths themselves are answered by ``receiver.wsgi.CallbackMiddleware``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("receiver.web")

blueprint = Blueprint("receiver", __name__)


@blueprint.route("/healthz")
def health() -> Response:
    return jsonify(status="ok")


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
