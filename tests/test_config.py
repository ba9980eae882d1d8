"""Configuration: defaults, then file, then environment; mistakes say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from receiver import ConfigError, Event, Router, create_app
from receiver.settings.loading import load_settings

from .conftest import SECRET, TOKEN, base_config, payload, signed


def test_environment_alone_configures_default_integration() -> None:
    settings = load_settings({}, {"RECEIVER_APP_SECRET": "s", "RECEIVER_VERIFY_TOKEN": "t"})
    default = settings.integration(None)
    assert default is not None
    assert (default.app_secrets, default.verify_token) == (("s",), "t")


def test_no_secret_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="RECEIVER_APP_SECRET"):
        load_settings({}, {"RECEIVER_VERIFY_TOKEN": "t"})


def test_nothing_configured_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="no integration is configured"):
        load_settings({}, {})


def test_missing_verify_token_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="verify token"):
        load_settings({}, {"RECEIVER_APP_SECRET": "s"})


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


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-file\n")
    (tmp_path / "token").write_text("tok\n")
    settings = load_settings(
        {},
        {
            "RECEIVER_APP_SECRET_FILE": str(tmp_path / "secret"),
            "RECEIVER_VERIFY_TOKEN_FILE": str(tmp_path / "token"),
        },
    )
    default = settings.integration(None)
    assert default is not None and default.app_secrets == ("from-file",)
    assert default.verify_token == "tok"


def test_missing_secret_file_says_which() -> None:
    with pytest.raises(ConfigError, match="RECEIVER_APP_SECRET_FILE.*cannot read"):
        load_settings({}, {"RECEIVER_APP_SECRET_FILE": "/nonexistent/secret"})


def test_toml_file_with_indirections(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("hr-token")
    path = tmp_path / "receiver.toml"
    path.write_text(f"""
[receiver]
max_body_bytes = 2048
handlers = ["a.b"]

[integrations.hr-bot]
app_secrets = [{{ env = "HR_NEW" }}, "old-literal"]
verify_token = {{ file = "{tmp_path / "tok"}" }}
accept_sha1 = true
""")
    settings = load_settings(
        None, {"RECEIVER_CONFIG": str(path), "HR_NEW": "new", "RECEIVER_HANDLERS": "c.d, a.b"}
    )
    hr = settings.integration("hr-bot")
    assert hr is not None
    assert hr.app_secrets == ("new", "old-literal")
    assert hr.verify_token == "hr-token" and hr.accept_sha1
    assert settings.max_body_bytes == 2048
    assert settings.handlers == ("a.b", "c.d")
    assert settings.source == str(path)


def test_shipped_default_config_is_valid() -> None:
    settings = load_settings(
        None,
        {
            "RECEIVER_CONFIG": "config/receiver.toml",
            "RECEIVER_APP_SECRET": "s",
            "RECEIVER_VERIFY_TOKEN": "t",
        },
    )
    assert settings.handlers == ("handlers.log_events",)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"receiver": {"max_body_byte": 1}}, "unknown setting.*max_body_bytes"),
        ({"receiver": {"max_body_bytes": "big"}}, "must be int"),
        ({"receiver": {"max_body_bytes": 10}}, "at least 1024"),
        ({"integrations": {"x y": {}}}, "letters, digits"),
        ({"integrations": {"a": {"app_secret": {"env": "NOPE"}}}}, "NOPE.*not set"),
        ({"integrations": {"a": {"secret": "s"}}}, "unknown keys"),
        ({"integrations": {"a": {"app_secrets": "s"}}}, "must be a list"),
    ],
)
def test_mistakes_say_how_to_fix(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(mapping, {})


def test_secrets_never_in_repr() -> None:
    settings = load_settings(
        {}, {"RECEIVER_APP_SECRET": "sup3r-secret", "RECEIVER_VERIFY_TOKEN": "t0ken"}
    )
    assert "sup3r-secret" not in repr(settings)
    assert "t0ken" not in repr(settings)


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


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cr/etPart@127.0.0.1:6379/0",  # a "/" in the password, not written %2F
        "redis://:s3cr#etPart@127.0.0.1:6379/0",
        "redis://user:s3cr?etPart@127.0.0.1:6379/0",
        "redis+sentinel://:s3cr/etPart@s1:26379,s2:26379/mymaster/0",
    ],
)
def test_an_unreadable_redis_url_never_quotes_any_of_its_password(url: str) -> None:
    # urllib reads what comes before the "/", "#" or "?" as host and port: the port it
    # could not read was the password's first part, quoted in the error.
    env = {"RECEIVER_APP_SECRET": "s", "RECEIVER_VERIFY_TOKEN": "t", "REDIS_URL": url}
    with pytest.raises(ConfigError) as raised:
        load_settings({}, env)
    assert "s3cr" not in str(raised.value)
    assert "percent-encode" in str(raised.value)
