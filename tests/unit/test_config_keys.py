"""Settings are declared once (``Settings``): the file's keys, their types and their
environment variables all derive from it, and the documented file shows each one."""

from __future__ import annotations

import logging
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from receiver.settings import loading
from receiver.settings.loading import load_settings
from receiver.settings.model import Settings, env_name

DOCUMENTED = Path(__file__).resolve().parents[2] / "config" / "receiver.toml"
DEFAULTS = Settings(integrations={})


def test_documented_file_lists_every_key_with_its_real_default() -> None:
    text = DOCUMENTED.read_text()
    table = tomllib.loads(text)["receiver"]
    assert set(table) <= set(loading._RECEIVER_KEYS), "the file documents a key that is not one"
    for key in loading._RECEIVER_KEYS:
        default = getattr(DEFAULTS, key)
        if default is None:  # unset by default: shown commented out
            assert key not in table, f"{key} is unset by default; comment it out"
            assert re.search(rf"^# {key} = ", text, re.M), f"{key} is not documented"
            continue
        assert key in table, f"{key} is missing from {DOCUMENTED.name}"
        if key == "handlers":  # the one exception, said so in the file: it loads the example
            assert default == () and table[key] == ["handlers.log_events"]
            assert "Default: none" in text
            continue
        expected = list(default) if isinstance(default, tuple) else default
        assert table[key] == expected and type(table[key]) is type(expected), key
    # and the file, as documented, loads
    settings = load_settings(tomllib.loads(text), environ={}, require_integrations=False)
    for key in set(table) - {"handlers"}:
        assert getattr(settings, key) == getattr(DEFAULTS, key), key


def _other_value(key: str, default: Any) -> tuple[str, Any]:
    """An environment value for ``key`` other than its default, and what it should load as."""
    special: dict[str, tuple[str, Any]] = {
        "default_integration": ("other", "other"),
        "client_cert_header": ("X-Client-Subject", "X-Client-Subject"),
        "redis_url": ("redis://localhost:6390/2", "redis://localhost:6390/2"),
        "data_dir": ("/tmp/elsewhere", "/tmp/elsewhere"),
        "queue_name": ("second", "second"),
        "spool_mode": ("reject", "reject"),
        "durability": ("replicated", "replicated"),
        "secret_key": ("a-secret-key-for-markers", "a-secret-key-for-markers"),
        "metrics_token": ("metrics-token", "metrics-token"),
        "metrics_bind": ("127.0.0.1:9108", "127.0.0.1:9108"),
        "admin_password": ("twelve-or-more-characters", "twelve-or-more-characters"),
        "capture_dir": ("/tmp/captures", "/tmp/captures"),
        "handlers": ("mod_a, mod_b", ("mod_a", "mod_b")),
        "sync_topics": ("link,page", ("link", "page")),
        "capture_redact": ("entry.*.changes.*.value.message", ("entry.*.changes.*.value.message",)),
    }
    if key in special:
        return special[key]
    if isinstance(default, bool):
        return ("1", True)
    if isinstance(default, int):
        return (str(default + 1), default + 1)
    if isinstance(default, float):
        return (str(default + 1.5), default + 1.5)
    raise AssertionError(f"no test value for {key}: add one")


_REPLICATED = {"REDIS_URL": "redis://localhost:6390/0", "RECEIVER_DURABILITY": "replicated"}
_NEEDED_WITH: dict[str, dict[str, str]] = {
    "durability": {"REDIS_URL": _REPLICATED["REDIS_URL"]},
    "replication_fsync": {**_REPLICATED, "RECEIVER_REPLICATION_TIMEOUT": "2"},
}
"""Settings that only make sense beside others (replicated durability needs a Redis URL)."""


@pytest.mark.parametrize("key", list(loading._RECEIVER_KEYS))
def test_every_key_can_be_set_from_the_environment(key: str) -> None:
    raw, expected = _other_value(key, getattr(DEFAULTS, key))
    name = env_name(key)
    environ = {**_NEEDED_WITH.get(key, {}), name: raw}
    settings = load_settings({}, environ=environ, require_integrations=False)
    assert getattr(settings, key) == expected
    assert expected != getattr(DEFAULTS, key)


def test_receiver_redis_url_is_redis_url_by_its_other_name() -> None:
    settings = load_settings(
        {}, environ={"RECEIVER_REDIS_URL": "redis://localhost:6390/3"}, require_integrations=False
    )
    assert settings.redis_url == "redis://localhost:6390/3"


def test_a_misspelled_variable_is_warned_about_with_the_name_meant(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "_warned_env", set())
    env = {"RECEIVER_HANDLER": "my_handlers", "RECEIVER_WHATEVER": "1", "RECEIVER_DEV_MODE": "1"}
    with caplog.at_level(logging.WARNING, logger="receiver.config"):
        settings = load_settings({}, environ=env, require_integrations=False)
    assert settings.handlers == ()  # ignored, as before: but no longer silently
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver.config"]
    assert any("RECEIVER_HANDLER " in m and "did you mean RECEIVER_HANDLERS?" in m for m in lines)
    assert any("RECEIVER_WHATEVER" in m for m in lines)
    assert not any("RECEIVER_DEV_MODE" in m for m in lines)
