"""The `receiver` command, as an operator or a tester types it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.cli import main
from receiver.signature import verify

from .conftest import PAYLOADS, SECRET, TOKEN
from .processes import ROOT, receiver_command

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


def test_check_reports_and_validates(env: None) -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "integration default: 1 secret(s), verify token set" in result.output
    assert SECRET not in result.output and TOKEN not in result.output


def test_check_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    monkeypatch.setenv("RECEIVER_HANDLERS", "no_such_plugin_module")
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 1
    assert "no_such_plugin_module" in result.output and "Traceback" not in result.output


def test_worker_without_redis_url_refuses_plainly(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "RECEIVER_APP_SECRET": "s",
        "RECEIVER_VERIFY_TOKEN": "t",
        "RECEIVER_HANDLERS": "no_such_plugin_module",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        receiver_command("worker", "--burst"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert b"no_such_plugin_module" in result.stderr and b"Traceback" not in result.stderr


def test_spool_and_queues_commands(tmp_path: Path, worker_env: dict[str, str]) -> None:
    """What a web process spooled while Redis was down: shown, drained by hand, queued, handled."""
    from receiver.envelope import parse
    from receiver.queue import packets
    from receiver.routing import Handler
    from receiver.spool import Spool
    from receiver.testing import RedisServer

    from .plugins.recording import calls, record

    server = RedisServer(tmp_path / "redis")  # not started yet: Redis is "down"
    data = tmp_path / "data"
    env = {**worker_env, "REDIS_URL": server.url, "RECEIVER_DATA_DIR": str(data)}
    handler = Handler(func=record, pattern="*", background=True)
    for n in range(3):
        body = (
            f'{{"object": "group", "entry": [{{"changes": [{{"field": "posts", "value": {n}}}]}}]}}'
        )
        events = parse(body.encode(), delivery_id=f"d{n}", integration="default", max_depth=64)
        Spool(data / "spool").write(f"d{n}", packets(f"d{n}", [(events[0], handler)], "receiver"))

    def receiver(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            receiver_command(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )

    assert "3 delivery(ies) spooled" in receiver("spool").stdout
    refused = receiver("spool", "--drain")
    assert refused.returncode == 1 and "Redis did not take the spool yet" in refused.stderr
    server.start()
    try:
        drained = receiver("spool", "--drain")
        assert "moved 3 delivery(ies) into Redis" in drained.stdout, drained.stderr
        assert "0 delivery(ies) spooled" in receiver("spool").stdout
        lines = receiver("queues").stdout.splitlines()
        assert lines[0].split() == [
            "QUEUE",
            "PENDING",
            "DRAINERS",
            "RQ",
            "JOBS",
            "RETRIES",
            "FAILED",
        ]
        assert lines[1].split()[:2] == ["receiver", "3"]
        assert receiver("worker", "--burst").returncode == 0
        assert sorted(c[1] for c in calls(env["RECORDING_DB"])) == ["group.posts"] * 3
        assert receiver("queues").stdout.splitlines()[1].split()[1] == "0"
    finally:
        server.stop()
