"""What a newcomer types wrong on a first day, answered in one line that says what to do."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.processes import ROOT, one_error_line

pytestmark = pytest.mark.redis  # starts servers of its own

RECEIVER = str(Path(sys.executable).parent / "receiver")
SAMPLE = str(ROOT / "receiver" / "samples" / "group__membership__add.json")


def _shell(script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """A new shell: nothing of the receiver's set unless given."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": str(ROOT), **extra}
    return subprocess.run(
        ["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_banner_hint_pasted_where_the_secret_is_unset_says_so(tmp_path: Path) -> None:
    # The banner's hint, as printed when stderr is not a terminal, in a shell
    # where RECEIVER_APP_SECRET was never set: no request signed with "".
    hint = f'{RECEIVER} sign --secret "$RECEIVER_APP_SECRET" --curl http://127.0.0.1:1/ {SAMPLE}'
    result = _shell(hint, tmp_path)
    line = one_error_line(result)
    assert "--secret is empty" in line and "RECEIVER_APP_SECRET" in line, line
    assert result.stdout == ""


def test_sign_with_nothing_configured_asks_for_a_secret_only(tmp_path: Path) -> None:
    line = one_error_line(_shell(f"{RECEIVER} sign {SAMPLE}", tmp_path))
    assert "--secret" in line and "RECEIVER_APP_SECRET" in line, line
    assert "VERIFY_TOKEN" not in line, line  # signing needs no verify token
    # The secret alone is enough, no verify token:
    result = _shell(f"{RECEIVER} sign {SAMPLE}", tmp_path, RECEIVER_APP_SECRET="k")
    assert result.returncode == 0 and result.stdout.startswith("X-Hub-Signature-256: sha256=")


def test_misspelt_names_in_the_config_file_get_a_suggestion(tmp_path: Path) -> None:
    cases = {
        '[reciever]\nhandlers = ["h"]\n': "unknown table [reciever]; did you mean [receiver]?",
        "[integration.hr]\nx = 1\n": "table [integration]; did you mean [integrations]?",
        '[receiver]\nhandler = ["h"]\n': "[receiver].handler; did you mean handlers?",
    }
    for text, expected in cases.items():
        (tmp_path / "receiver.toml").write_text(text)
        result = _shell(
            f"{RECEIVER} check",
            tmp_path,
            RECEIVER_CONFIG="receiver.toml",
            RECEIVER_APP_SECRET="s",
            RECEIVER_VERIFY_TOKEN="v",
        )
        assert expected in one_error_line(result), (text, result.stderr)


def test_a_top_level_file_without_a_receiver_table_still_reads(tmp_path: Path) -> None:
    (tmp_path / "receiver.toml").write_text(
        'handlers = ["handlers.welcome"]\nmetrics_token = { env = "METRICS" }\n'
    )
    result = _shell(
        f"cd {ROOT} && {RECEIVER} routes",
        tmp_path,
        RECEIVER_CONFIG=str(tmp_path / "receiver.toml"),
        METRICS="t",
    )
    assert result.returncode == 0, result.stderr
    assert "handlers.welcome.welcome_new_member" in result.stdout


def test_serve_on_a_taken_port_says_so_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _shell(
            f"{RECEIVER} serve --port {port}",
            tmp_path,
            RECEIVER_APP_SECRET="s",
            RECEIVER_VERIFY_TOKEN="v",
        )
    line = one_error_line(result)
    assert f"127.0.0.1:{port}" in line and "--port" in line, line
    assert "listening" not in result.stdout + result.stderr  # no banner promising a server
    assert not (tmp_path / ".receiver").exists()  # no embedded Redis was started


def test_serve_log_level_reaches_its_worker(tmp_path: Path) -> None:
    # Why did handlers.welcome not run the second time? `--log-level DEBUG` on
    # serve must show the worker's answer too: the redelivery was skipped.
    from receiver.testing import free_port
    from tests.processes import stop, wait_until

    workdir = Path(tempfile.mkdtemp(prefix="rn-", dir="/tmp"))  # short: unix socket path limit
    port = free_port()
    log = workdir / "serve.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT),
        "RECEIVER_APP_SECRET": "s",
        "RECEIVER_VERIFY_TOKEN": "v",
        "RECEIVER_HANDLERS": "handlers.welcome",
    }
    with log.open("wb") as out:
        server = subprocess.Popen(
            [RECEIVER, "--log-level", "DEBUG", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )
    try:
        wait_until(lambda: "Running on" in log.read_text(), timeout=60, what="the server")
        hint = f"{RECEIVER} sign --secret s --curl http://127.0.0.1:{port}/webhook {SAMPLE} | sh"
        for _ in range(2):
            assert '"queued":1' in _shell(hint, tmp_path).stdout
        wait_until(
            lambda: "outcome='duplicate'" in log.read_text(),
            timeout=60,
            what="the worker to log the skipped redelivery at DEBUG",
        )
    finally:
        assert stop(server) == 0
        shutil.rmtree(workdir, ignore_errors=True)
