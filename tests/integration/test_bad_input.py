"""Every bad request gets its own 4xx and a JSON error, and no handler runs."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from receiver import Event, Router, create_app
from receiver.core.signature import sign
from tests.conftest import SECRET, TOKEN, base_config, envelope, payload, signed

GOOD = payload("group__comments__add.json")


def post(client: FlaskClient, body: bytes, headers: dict[str, str], path: str = "/webhook") -> Any:
    return client.post(path, data=body, headers=headers)


CASES = [
    # (id, body, headers, path, method, status, code)
    ("missing signature", GOOD, {}, "/webhook", "POST", 401, "missing_signature"),
    (
        "sha1 only, not enabled",
        GOOD,
        {"X-Hub-Signature": sign(GOOD, SECRET, "sha1")},
        "/webhook",
        "POST",
        401,
        "sha1_not_accepted",
    ),
    (
        "malformed header",
        GOOD,
        {"X-Hub-Signature-256": "md5=abc"},
        "/webhook",
        "POST",
        400,
        "malformed_signature",
    ),
    (
        "short digest",
        GOOD,
        {"X-Hub-Signature-256": "sha256=abcd"},
        "/webhook",
        "POST",
        400,
        "malformed_signature",
    ),
    ("wrong secret", GOOD, signed(GOOD, "other-secret"), "/webhook", "POST", 403, "bad_signature"),
    (
        "body altered after signing",
        GOOD + b" ",
        signed(GOOD),
        "/webhook",
        "POST",
        403,
        "bad_signature",
    ),
    (
        "invalid utf-8",
        b'{"object":"\xff"}',
        signed(b'{"object":"\xff"}'),
        "/webhook",
        "POST",
        400,
        "invalid_encoding",
    ),
    ("not json", b"hello", signed(b"hello"), "/webhook", "POST", 400, "invalid_json"),
    (
        "bare change",
        b'{"field":"posts","value":{}}',
        signed(b'{"field":"posts","value":{}}'),
        "/webhook",
        "POST",
        422,
        "not_an_envelope",
    ),
    (
        "entry not a list",
        b'{"object":"group","entry":{}}',
        signed(b'{"object":"group","entry":{}}'),
        "/webhook",
        "POST",
        422,
        "bad_entry",
    ),
    (
        "absurd nesting",
        b"[" * 5000 + b"]" * 5000,
        signed(b"[" * 5000 + b"]" * 5000),
        "/webhook",
        "POST",
        422,
        "too_deep",
    ),
    (
        "unknown integration",
        GOOD,
        signed(GOOD),
        "/webhooks/nobody",
        "POST",
        404,
        "unknown_integration",
    ),
    (
        "disabled integration",
        GOOD,
        signed(GOOD, "old-secret"),
        "/webhooks/retired",
        "POST",
        403,
        "integration_disabled",
    ),
    ("topic mismatch", GOOD, signed(GOOD), "/webhook/page", "POST", 422, "topic_mismatch"),
    ("wrong method", GOOD, signed(GOOD), "/webhook", "PUT", 405, "method_not_allowed"),
    ("unknown path", GOOD, signed(GOOD), "/hooks", "POST", 404, "not_found"),
]


@pytest.fixture
def strict_app(router: Router, redis_url: str) -> Flask:
    config = base_config(redis_url=redis_url, max_body_bytes=64 * 1024)
    config["integrations"]["retired"] = {
        "app_secrets": ["old-secret"],
        "verify_token": "x",
        "enabled": False,
    }
    return create_app(config, router=router)


@pytest.mark.parametrize(
    ("body", "headers", "path", "method", "status", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rejected_without_handler_call(
    strict_app: Flask,
    seen: list[Event],
    body: bytes,
    headers: dict[str, str],
    path: str,
    method: str,
    status: int,
    code: str,
) -> None:
    response = strict_app.test_client().open(path, method=method, data=body, headers=headers)

    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert response.get_json()["message"]
    assert seen == []


def test_oversized_body_is_413_before_signature(strict_app: Flask, seen: list[Event]) -> None:
    big = envelope("group", {"field": "posts", "value": {"message": "x" * 70000}})
    response = strict_app.test_client().post("/webhook", data=big, headers=signed(big))
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert seen == []


def test_wrong_method_says_which_are_allowed(client: FlaskClient) -> None:
    response = client.delete("/webhook")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"


def test_errors_never_echo_secrets_or_body(client: FlaskClient) -> None:
    response = client.post(
        "/webhook", data=b"secret-looking " + SECRET.encode(), headers=signed(b"x")
    )
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({}, 400, "missing_parameter"),
        ({"hub.mode": "subscribe", "hub.challenge": "c"}, 400, "missing_parameter"),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"},
            400,
            "bad_mode",
        ),
        (
            {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "c"},
            403,
            "bad_verify_token",
        ),
    ],
)
def test_handshake_rejections(
    client: FlaskClient, query: dict[str, str], status: int, code: str
) -> None:
    response = client.get("/webhook", query_string=query)
    assert response.status_code == status
    assert response.get_json()["error"] == code


def test_handshake_answers_bare_challenge(client: FlaskClient) -> None:
    challenge = "1158201444 & <odd> ✓"
    response = client.get(
        "/webhook",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": TOKEN,
            "hub.challenge": challenge,
        },
    )
    assert response.status_code == 200
    assert response.get_data(as_text=True) == challenge
    assert response.mimetype == "text/plain"


def test_handler_error_does_not_change_answer(router: Router, client: FlaskClient) -> None:
    calls: list[str] = []

    @router.on("group.comments")
    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    @router.on("group.*")
    def fine(event: Event) -> None:
        calls.append(event.name)

    response = client.post("/webhook", data=GOOD, headers=signed(GOOD))
    assert response.status_code == 200
    assert calls == ["group.comments"]
    assert "boom" not in response.get_data(as_text=True)
