"""The `receiver` command, as an operator or a tester types it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from receiver.core.signature import verify
from tests.conftest import SECRET, TOKEN
from tests.processes import ROOT, one_error_line, receiver_command

pytestmark = pytest.mark.redis  # starts servers of its own


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", TOKEN)


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
    from tests.plugins.recording import calls, record

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


def test_sign_with_a_secret_needs_no_integration(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "receiver" / "samples"
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
