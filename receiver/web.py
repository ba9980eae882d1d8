"""The Flask adapter: translate a request for the core, and its result back. Nothing else."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from . import marking
from .core import Core, Headers, Request, Result

log = logging.getLogger("receiver.web")

blueprint = Blueprint("receiver", __name__)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@blueprint.route("/webhook", methods=_METHODS)
@blueprint.route("/webhook/<topic>", methods=_METHODS)
@blueprint.route("/webhooks/<integration>", methods=_METHODS)
@blueprint.route("/webhooks/<integration>/<topic>", methods=_METHODS)
def callback(integration: str | None = None, topic: str | None = None) -> Response:
    core: Core = current_app.extensions["receiver"]
    limit = core.settings.max_body_bytes
    too_large = (request.content_length or 0) > limit
    body = b"" if too_large or request.method == "GET" else _read_at_most(limit + 1)
    result = core.handle(
        Request(
            method=request.method,
            body=body,
            headers=Headers(request.headers.items()),
            query=request.args,
            integration=integration,
            topic=topic,
            body_too_large=too_large or len(body) > limit,
            path=request.path,
            replay_token=request.headers.get(marking.HEADER),
        )
    )
    return to_response(result)


def _read_at_most(size: int) -> bytes:
    """Read the body, stopping past ``size`` bytes however the client framed it."""
    chunks: list[bytes] = []
    total = 0
    while total < size:
        chunk = request.stream.read(size - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


@blueprint.route("/healthz")
def health() -> Response:
    return jsonify(status="ok")


def to_response(result: Result) -> Response:
    response = Response(result.body, status=result.status, content_type=result.content_type)
    for name, value in result.headers.items():
        response.headers[name] = value
    return response


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
