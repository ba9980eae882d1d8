"""A fake Graph API on a real loopback HTTP server (pytest-httpserver), strict about auth.

Every request must carry ``Authorization: Bearer <token>`` and the matching
``appsecret_proof``, and no ``access_token`` in the URL; otherwise it gets
Graph's own OAuthException answer. Answers are queued per (method, path);
the last queued answer repeats.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from receiver.core.signature import appsecret_proof


@dataclass
class Call:
    method: str
    path: str
    args: dict[str, str]
    form: dict[str, str]
    json: Any
    headers: dict[str, str]


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def graph_error(
    code: int,
    message: str = "error",
    *,
    status: int = 400,
    subcode: int | None = None,
    type: str = "OAuthException",
    headers: dict[str, str] | None = None,
    fbtrace_id: str = "AbCdEf123",
) -> Answer:
    error: dict[str, Any] = {"message": message, "type": type, "code": code}
    error["fbtrace_id"] = fbtrace_id
    if subcode is not None:
        error["error_subcode"] = subcode
    return Answer(status, {"error": error}, headers or {})


class FakeGraph:
    def __init__(self, server: HTTPServer, token: str, secret: str | None) -> None:
        self.server = server
        self.token = token
        self.secret = secret
        self.calls: list[Call] = []
        self.answers: dict[tuple[str, str], deque[Answer]] = {}
        server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def answer(self, method: str, path: str, *answers: Answer | dict[str, Any]) -> None:
        queued = [a if isinstance(a, Answer) else Answer(200, a) for a in answers]
        self.answers[(method, path)] = deque(queued)

    def calls_to(self, method: str, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path == path]

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        is_json = (request.content_type or "").startswith("application/json")
        call = Call(
            method=request.method,
            path=request.path,
            args=dict(request.args),
            form=dict(request.form) if not is_json else {},
            json=json.loads(body) if is_json and body else None,
            headers=dict(request.headers),
        )
        self.calls.append(call)
        refused = self._auth_problem(call)
        if refused is not None:
            return self._respond(refused)
        queue = self.answers.get((call.method, call.path))
        if not queue:
            return self._respond(graph_error(803, f"unknown path {call.path}", status=404))
        answer = queue.popleft() if len(queue) > 1 else queue[0]
        return self._respond(answer)

    def _auth_problem(self, call: Call) -> Answer | None:
        if "access_token" in call.args:
            return graph_error(100, "access_token in the URL: this fake refuses it")
        if call.headers.get("Authorization") != f"Bearer {self.token}":
            return graph_error(190, "Invalid OAuth access token", status=401)
        if self.secret is not None:
            expected = appsecret_proof(self.token, self.secret)
            if call.args.get("appsecret_proof") != expected:
                return graph_error(
                    100,
                    "Invalid appsecret_proof provided in the API argument",
                    type="GraphMethodException",
                )
        return None

    @staticmethod
    def _respond(answer: Answer) -> Response:
        return Response(
            json.dumps(answer.body),
            status=answer.status,
            headers=answer.headers,
            content_type="application/json",
        )
