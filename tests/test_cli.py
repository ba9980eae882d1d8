"""The `receiver` command, as an operator or a tester types it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from receiver.cli import main
from receiver.core.signature import verify

from .conftest import PAYLOADS, SECRET, TOKEN
from .processes import ROOT, one_error_line, receiver_command

pytestmark = pytest.mark.redis  # starts servers of its own

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
    from receiver.model.envelope import parse
    from receiver.queue.handoff import packets
    from receiver.queue.web_spool import Spool
    from receiver.routing.handlers import Handler
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
            "OLDEST",
            "DRAINERS",
            "RQ",
            "JOBS",
            "RETRIES",
            "FAILED",
            "KEYS",
        ]
        assert lines[1].split()[:2] == ["receiver", "3"]
        assert receiver("worker", "--burst").returncode == 0
        assert sorted(c[1] for c in calls(env["RECORDING_DB"])) == ["group.posts"] * 3
        assert receiver("queues").stdout.splitlines()[1].split()[1] == "0"
    finally:
        server.stop()


# --- every command: one line on failure, never a traceback ---


def _run(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        receiver_command(*args), env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_commands_with_redis_stopped_say_so_in_one_line(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    from receiver.testing import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    env = {**worker_env, "REDIS_URL": server.url}
    assert _run(env, "queues").returncode == 0  # up: answers
    server.stop()  # an outage, as an operator meets it
    burst = ["--log-level", "WARNING", "worker", "--burst"]  # a burst did no work: exit 1
    for args in (["queues"], ["failed"], ["failed", "requeue", "--all"], ["check"], burst):
        line = one_error_line(_run(env, *args))
        assert f"Redis at {server.url} is unreachable" in line, args
        assert "Connection refused" in line


def test_wrong_url_scheme_is_one_line_for_every_command(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "REDIS_URL": "http://user:hunter2@127.0.0.1:6379/0"}
    for args in (["worker", "--burst"], ["queues"], ["check"], ["spool", "--drain"]):
        line = one_error_line(_run(env, *args))
        assert "scheme 'http://'" in line and "redis://" in line, args
        assert "hunter2" not in line


def test_unreadable_redis_url_is_one_line(worker_env: dict[str, str]) -> None:
    for url in ("redis://:hunter2@127.0.0.1:abc/0", "redis+sentinel://:hunter2@h1:x/mymaster"):
        line = one_error_line(_run({**worker_env, "REDIS_URL": url}, "queues"))
        assert "REDIS_URL (or redis_url) cannot be read" in line and "hunter2" not in line


def test_redis_password_is_masked_in_the_error(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "REDIS_URL": f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"}
    line = one_error_line(_run(env, "queues"))
    assert "hunter2" not in line and ":***@" in line


def _closed_port() -> int:
    from receiver.testing import free_port

    return free_port()  # bound, then released: nothing listens there


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


def test_embedded_warning_comes_from_the_command_that_starts_the_server(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    """Once is enough: commands run beside a running server (``serve``'s) stay quiet."""
    from receiver.server.embedded import EmbeddedRedis

    data = tmp_path / "d"
    env = {k: v for k, v in worker_env.items() if k != "REDIS_URL"}
    env["RECEIVER_DATA_DIR"] = str(data)
    try:
        for args, warnings in ((["queues"], 1), (["worker", "--burst"], 0), (["stats"], 0)):
            result = _run(env, *args)
            assert result.returncode == 0, result.stderr
            assert result.stderr.count("embedded server (") == warnings, (args, result.stderr)
    finally:
        EmbeddedRedis(data).stop()


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


# --- commands that need no verify token, or no integration at all ---


def test_routes_without_a_verify_token_or_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_HANDLERS", "handlers.welcome")
    result = CliRunner().invoke(main, ["routes"])
    assert result.exit_code == 0, result.output
    assert "handlers.welcome.welcome_new_member" in result.output


def test_sign_with_a_secret_needs_no_integration(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parent.parent / "receiver" / "samples"
    body = sample / "group__membership__add.json"
    bare = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = _run(bare, "sign", "--secret", "k", str(body), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headers = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert verify(headers, body.read_bytes(), ["k"]) == 0


def test_wrong_redis_password_is_one_line_and_masked(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    from receiver.testing import RedisServer

    server = RedisServer(tmp_path / "redis", extra_args=["--requirepass", "right-one"])
    server.start()
    try:
        url = server.url.replace("redis://", "redis://:wrong-one@")
        for args in (["queues"], ["check"]):
            line = one_error_line(_run({**worker_env, "REDIS_URL": url}, *args))
            assert "refused the credentials" in line and "wrong-one" not in line, line
    finally:
        server.stop()


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
