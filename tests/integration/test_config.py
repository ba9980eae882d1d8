"""Configuration: defaults, then file, then environment; mistakes say how to fix them."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from receiver import Event, Router, create_app
from receiver.settings.loading import load_settings
from tests.conftest import SECRET, TOKEN, base_config, payload, signed


def test_dev_mode_accepts_unsigned_and_logs_loudly(
    router: Router,
    caplog: pytest.LogCaptureFixture,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Event] = []
    router.connect("*", seen.append)
    monkeypatch.setenv("RECEIVER_DEV_MODE", "1")
    with caplog.at_level("WARNING"):
        app = create_app(
            {"receiver": {"redis_url": redis_url}, "integrations": {"default": {}}}, router=router
        )
        body = payload("group__comments__add.json")
        response = app.test_client().post("/webhook", data=body)
    assert response.status_code == 200
    assert [e.name for e in seen] == ["group.comments"]
    dev_lines = [r for r in caplog.records if "DEVELOPMENT MODE" in r.getMessage()]
    assert len(dev_lines) >= 2  # at start and on the request


class TestRotation:
    @pytest.fixture
    def rotating(self, router: Router, redis_url: str, seen: list[Event]) -> FlaskClient:
        config = base_config(redis_url=redis_url)
        config["integrations"]["default"]["app_secrets"] = ["new-secret", SECRET]
        return create_app(config, router=router).test_client()

    def test_old_and_new_secret_both_accepted(
        self, rotating: FlaskClient, seen: list[Event]
    ) -> None:
        body = payload("group__posts__status_add.json")
        for secret in ("new-secret", SECRET):
            assert (
                rotating.post("/webhook", data=body, headers=signed(body, secret)).status_code
                == 200
            )
        assert len(seen) == 2

    def test_removed_secret_refused(
        self, router: Router, redis_url: str, seen: list[Event]
    ) -> None:
        config = base_config(redis_url=redis_url)
        config["integrations"]["default"]["app_secrets"] = ["new-secret"]
        client = create_app(config, router=router).test_client()
        body = payload("group__posts__status_add.json")
        response = client.post("/webhook", data=body, headers=signed(body, SECRET))
        assert response.status_code == 403
        assert seen == []

    def test_env_fallbacks(self) -> None:
        settings = load_settings(
            {},
            {
                "RECEIVER_APP_SECRET": "new",
                "RECEIVER_VERIFY_TOKEN": TOKEN,
                "RECEIVER_APP_SECRET_FALLBACKS": "old1, old2",
            },
        )
        default = settings.integration(None)
        assert default is not None and default.app_secrets == ("new", "old1", "old2")

    def test_sha1_accepted_where_enabled(
        self, router: Router, redis_url: str, seen: list[Event]
    ) -> None:
        from receiver.core.signature import sign

        config = base_config(redis_url=redis_url)
        config["integrations"]["default"]["accept_sha1"] = True
        client = create_app(config, router=router).test_client()
        body = payload("group__posts__status_add.json")
        response = client.post(
            "/webhook", data=body, headers={"X-Hub-Signature": sign(body, SECRET, "sha1")}
        )
        assert response.status_code == 200
        assert len(seen) == 1


def test_named_integrations_and_per_topic_urls(
    router: Router, redis_url: str, seen: list[Event]
) -> None:
    config = base_config(redis_url=redis_url)
    config["integrations"]["hr"] = {"app_secrets": ["hr-secret"], "verify_token": "hr-token"}
    client = create_app(config, router=router).test_client()
    body = payload("group__comments__add.json")
    assert (
        client.post("/webhooks/hr/group", data=body, headers=signed(body, "hr-secret")).status_code
        == 200
    )
    assert client.post("/webhooks/hr", data=body, headers=signed(body, SECRET)).status_code == 403
    assert client.post("/webhook/group", data=body, headers=signed(body)).status_code == 200
    assert [e.integration for e in seen] == ["hr", "default"]
    handshake = client.get(
        "/webhooks/hr/group",
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": "hr-token",
            "hub.challenge": "42",
        },
    )
    assert handshake.get_data(as_text=True) == "42"
