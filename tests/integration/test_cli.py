"""The `receiver` command, as an operator or a tester types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from receiver.cli import main
from tests.conftest import SECRET, TOKEN

pytestmark = pytest.mark.redis  # starts servers of its own


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", TOKEN)


def test_check_reports_and_validates(env: None) -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "integration default: 1 secret(s), verify token set" in result.output
    assert SECRET not in result.output and TOKEN not in result.output


# --- receiver check against real Redis servers ---


def test_check_passes_on_a_redis_with_an_append_only_file(
    env: None, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert f"redis: {redis_url} answers" in result.output
    assert "persistence: append-only file on" in result.output
    assert result.output.splitlines()[-1] == "ok"


def test_check_fails_on_a_redis_that_keeps_nothing(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.testing import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=False)  # and no RDB snapshots
    server.start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        result = CliRunner().invoke(main, ["check"])
    finally:
        server.stop()
    assert result.exit_code == 1
    assert "keeps nothing on disk" in result.output and "appendonly yes" in result.output
    assert "\nok\n" not in result.output and "Traceback" not in result.output


def test_check_notes_a_redis_that_forbids_config(
    env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A managed Redis without CONFIG: a note to read, not a failure."""
    from receiver.testing import RedisServer

    server = RedisServer(
        tmp_path / "redis", appendonly=False, extra_args=["--rename-command", "CONFIG", ""]
    )
    server.start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url)
        result = CliRunner().invoke(main, ["check"])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert "does not allow CONFIG" in result.output
    assert result.output.splitlines()[-1] == "ok"


def test_check_with_the_embedded_default_names_the_binary(env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "redis: embedded (REDIS_URL unset)" in result.output
    binary, version = next(
        line.split(": ")[1:3]
        for line in result.output.splitlines()
        if line.startswith("server binary: ")
    )
    assert Path(binary).is_file()
    assert version.startswith(("Valkey ", "Redis ")), version


def test_embedded_warning_once_however_often_a_process_reaches_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.server.embedded import EmbeddedRedis

    data = tmp_path / "d"
    try:
        with caplog.at_level("WARNING", logger="receiver.embedded"):
            urls = {EmbeddedRedis(data).ensure_running() for _ in range(3)}
        assert len(urls) == 1
        warnings = [r for r in caplog.records if "embedded server (" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        EmbeddedRedis(data).stop()


def test_payload_text_reaches_the_terminal_escaped(
    env: None, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed payload naming its topic, field and ids with ESC and BEL: trace, stats and
    captures print them as ``\\x1b`` and ``\\x07``, never as terminal commands."""
    from receiver import create_app
    from receiver.core.signature import signature_headers
    from receiver.observe import trace

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RECEIVER_CAPTURE", "1")
    monkeypatch.setenv("RECEIVER_CAPTURE_DIR", str(tmp_path / "captures"))
    hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m"
    body = json.dumps({"object": f"group{hostile}", "entry": [{"id": f"1{hostile}", "changes": [
        {"field": f"posts{hostile}", "value": {"verb": "add", "message": hostile}},
    ]}]}).encode()
    app = create_app()
    app.test_client().post("/webhook", data=body, headers=signature_headers(body, SECRET))
    app.extensions["receiver.trace"].flush()
    [delivery] = trace.recent(redis.Redis.from_url(redis_url))
    assert delivery["status"] == 200, delivery
    capture_id = delivery["delivery_id"]
    for command in (["trace", delivery["delivery_id"]], ["trace", "--json", capture_id],
                    ["stats"], ["captures"], ["captures", "show", capture_id]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, (command, result.output)
        assert "\\x1b" in result.output or "\\u001b" in result.output, (command, result.output)
        for raw in ("\x1b", "\x07", "\x9b"):
            assert raw not in result.output, (command, result.output)
