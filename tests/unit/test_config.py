"""Configuration: defaults, then file, then environment; mistakes say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver import ConfigError
from receiver.settings.loading import load_settings


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
