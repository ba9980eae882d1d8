"""The capture journal: every delivery of a capturing integration, lossless, secrets kept out."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from receiver import Event, Router, create_app
from receiver.observe.capture import capture_files, read_captures, record_body
from tests.conftest import SECRET, TOKEN, base_config, payload, signed


@pytest.fixture
def capturing(router: Router, redis_url: str, tmp_path: Path) -> Flask:
    config = base_config(
        redis_url=redis_url,
        capture_dir=str(tmp_path / "captures"),
        capture_redact=["entry.*.changes.*.value.message", "-entry.*.changes.*.value.from"],
    )
    config["integrations"]["default"]["capture"] = True
    config["integrations"]["quiet"] = {"app_secrets": ["q"], "verify_token": "q"}
    return create_app(config, router=router)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for _, r in read_captures(capture_files(tmp_path / "captures"))]


def test_accepted_and_rejected_deliveries_are_recorded(
    capturing: Flask, seen: list[Event], tmp_path: Path
) -> None:
    client = capturing.test_client()
    good = payload("user__photos__update_graphapi_doc_example.json")
    client.post(
        "/webhook", data=good, headers=signed(good, **{"User-Agent": "facebookplatform/1.0"})
    )
    client.post("/webhook", data=good, headers=signed(good, "forged"))
    client.get(
        "/webhook",
        query_string={"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"},
    )
    client.post("/webhooks/quiet", data=good, headers=signed(good, "q"))  # not capturing

    accepted, forged, handshake = records(tmp_path)
    assert record_body(accepted) == good  # exact bytes
    assert accepted["status"] == 200 and accepted["verified"] == "ok"
    assert accepted["secret_index"] == 0
    assert accepted["event_ids"] == [seen[0].id] and accepted["delivery_id"] == seen[0].delivery_id
    assert accepted["headers"]["User-Agent"] == "facebookplatform/1.0"
    assert accepted["headers"]["X-Hub-Signature-256"].startswith("sha256=")
    assert (forged["status"], forged["error"], forged["verified"]) == (
        403,
        "bad_signature",
        "failed",
    )
    assert handshake["query"]["hub.verify_token"] == "***"
    text = "\n".join(p.read_text() for p in capture_files(tmp_path / "captures"))
    assert SECRET not in text and TOKEN not in text


def test_credential_looking_query_keys_are_masked_in_captures(
    capturing: Flask, tmp_path: Path
) -> None:
    keys = ("authorization", "Bearer", "api_key", "access_token", "x-session-id")
    query = {key: f"leak-{n}" for n, key in enumerate(keys)}
    capturing.test_client().get("/webhook", query_string={**query, "page": "2"})
    [captured] = records(tmp_path)
    assert captured["query"] == {**dict.fromkeys(keys, "***"), "page": "2"}


def test_files_are_private(capturing: Flask, tmp_path: Path) -> None:
    body = payload("group__posts__status_add.json")
    capturing.test_client().post("/webhook", data=body, headers=signed(body))
    [path] = capture_files(tmp_path / "captures")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_redaction_masks_and_drops(capturing: Flask, tmp_path: Path) -> None:
    body = payload("group__comments__add.json")
    capturing.test_client().post("/webhook", data=body, headers=signed(body))
    [record] = records(tmp_path)
    value = json.loads(record["body"])["entry"][0]["changes"][0]["value"]
    assert value["message"] == "***" and "from" not in value
    assert record["body_redacted"] is True
