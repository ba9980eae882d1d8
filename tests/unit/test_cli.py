"""The `receiver` command, as an operator or a tester types it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.core.signature import verify
from tests.conftest import PAYLOADS, SECRET, TOKEN

SAMPLE = str(PAYLOADS / "group__comments__add.json")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", TOKEN)


def test_sign_prints_headers_that_verify(env: None) -> None:
    result = CliRunner().invoke(main, ["sign", SAMPLE])
    assert result.exit_code == 0, result.output
    headers = dict(line.split(": ", 1) for line in result.output.strip().splitlines())
    assert verify(headers, Path(SAMPLE).read_bytes(), [SECRET]) == 0
    assert SECRET not in result.output


def test_sign_curl_command(env: None) -> None:
    result = CliRunner().invoke(
        main, ["sign", "--sha1", "--curl", "http://127.0.0.1:1/webhook", SAMPLE]
    )
    assert result.exit_code == 0
    assert result.output.startswith(
        "curl -sS -X POST http://127.0.0.1:1/webhook -H 'X-Hub-Signature-256: sha256="
    )
    assert "X-Hub-Signature: sha1=" in result.output and f"--data-binary @{SAMPLE}" in result.output


def test_sign_without_any_secret_says_so() -> None:
    result = CliRunner().invoke(main, ["sign", SAMPLE])
    assert result.exit_code == 1
    assert "RECEIVER_APP_SECRET" in result.output or "--secret" in result.output


def test_routes_table(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "RECEIVER_HANDLERS", "handlers.log_events,handlers.welcome,handlers.link_preview"
    )
    result = CliRunner().invoke(main, ["routes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["EVENT", "HANDLER", "RUNS", "FILTER"]
    rows = {line.split()[1]: line for line in lines[1:]}
    assert "background (receiver)" in rows["handlers.welcome.welcome_new_member"]
    assert "verb='add'" in rows["handlers.welcome.welcome_new_member"]
    assert "inline" in rows["handlers.log_events.log_event"]


def test_routes_show_how_a_handler_is_ordered(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_HANDLERS", "tests.plugins.ordered")
    result = CliRunner().invoke(main, ["routes"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines()[1:]}
    assert "background (receiver), ordered by sender_id" in rows["tests.plugins.ordered.say"]
    assert "ordered by sender_id, blocks on failure" in rows["tests.plugins.ordered.block"]
    assert "ordered by" not in rows["tests.plugins.ordered.free"]


def test_check_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    monkeypatch.setenv("RECEIVER_HANDLERS", "no_such_plugin_module")
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 1
    assert "no_such_plugin_module" in result.output and "Traceback" not in result.output


# --- commands that need no verify token, or no integration at all ---


def test_routes_without_a_verify_token_or_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_HANDLERS", "handlers.welcome")
    result = CliRunner().invoke(main, ["routes"])
    assert result.exit_code == 0, result.output
    assert "handlers.welcome.welcome_new_member" in result.output


@pytest.mark.parametrize(("command", "batched"), [("worker", True), ("routes", False)])
def test_only_the_worker_batches_its_lines(command: str, batched: bool) -> None:
    """``receiver worker`` writes its attempt lines in batches, as the web writes its
    request lines; other commands write each line at once."""
    import logging

    from receiver.observe import logsafe

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0
        (installed,) = [h for h in root.handlers if getattr(h, "_receiver_logsafe", False)]
        assert isinstance(installed, logsafe.BatchedStreamHandler) is batched
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
