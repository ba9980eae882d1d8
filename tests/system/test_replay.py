"""Replay: in-process and over HTTP to a second receiver, marked, reported and compared."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from receiver.testing import free_port, group_membership
from tests.conftest import PAYLOADS, signed
from tests.processes import ROOT, gunicorn_command, receiver_command, stop, wait_for_http


@pytest.fixture
def two_receivers(
    tmp_path: Path, worker_env: dict[str, str]
) -> Iterator[tuple[str, str, dict[str, str]]]:
    env = {
        **worker_env,
        "RECEIVER_HANDLERS": "handlers.log_events,handlers.link_preview,handlers.welcome",
        "RECEIVER_CAPTURE": "1",
        "RECEIVER_CAPTURE_DIR": str(tmp_path / "captures-a"),
    }
    env_b = {**env, "RECEIVER_CAPTURE_DIR": str(tmp_path / "captures-b")}
    port_a, port_b = free_port(), free_port()
    a = subprocess.Popen(gunicorn_command(port_a), env=env, cwd=ROOT)
    b = subprocess.Popen(gunicorn_command(port_b), env=env_b, cwd=ROOT)
    try:
        wait_for_http(f"http://127.0.0.1:{port_a}/healthz", a)
        wait_for_http(f"http://127.0.0.1:{port_b}/healthz", b)
        yield f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}", env
    finally:
        stop(a)
        stop(b)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        receiver_command("--log-level", "WARNING", *args),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_capture_list_replay_to_second_receiver_and_in_process(
    two_receivers: tuple[str, str, dict[str, str]], tmp_path: Path
) -> None:
    first, second, env = two_receivers
    for path in sorted(PAYLOADS.glob("*.json")):
        if "__response_" in path.name:
            continue
        body = path.read_bytes()
        assert requests.post(f"{first}/webhook", data=body, headers=signed(body), timeout=10).ok
    joined = json.dumps(group_membership(verb="add")).encode()  # reaches a background handler
    assert requests.post(f"{first}/webhook", data=joined, headers=signed(joined), timeout=10).ok
    requests.post(f"{first}/webhook", data=b"{}", headers=signed(b"{}", "wrong"), timeout=10)

    listing = run(env, "captures")
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.strip().splitlines()) == 1 + 9  # header, 8 accepted, 1 forged
    only_forged = run(env, "captures", "--status", "403").stdout.strip().splitlines()
    assert len(only_forged) == 2
    capture_id = only_forged[1].split()[0]
    shown = json.loads(run(env, "captures", "show", capture_id).stdout)
    assert shown["error"] == "bad_signature"

    captures = str(tmp_path / "captures-a")
    over_http = run(
        env,
        "replay",
        captures,
        "--status",
        "200",
        "--to",
        f"{second}/webhook",
        "--concurrency",
        "2",
        "--report",
        str(tmp_path / "http.json"),
    )
    assert over_http.returncode == 0, over_http.stdout + over_http.stderr
    assert "sent 8" in over_http.stdout and "200     8" in over_http.stdout
    here = run(
        env,
        "replay",
        captures,
        "--status",
        "200",
        "--in-process",
        "--report",
        str(tmp_path / "local.json"),
        "--compare",
        str(tmp_path / "http.json"),
    )
    assert here.returncode == 0, here.stdout + here.stderr
    assert "same events and handler outcomes" in here.stdout

    local = json.loads((tmp_path / "local.json").read_text())
    remote = json.loads((tmp_path / "http.json").read_text())
    assert [d["events"] for d in local["deliveries"]] == [d["events"] for d in remote["deliveries"]]
    assert any(h[3] == "background" for d in local["deliveries"] for h in d["handlers"])
    # the second receiver saw marked replays
    second_records = [
        json.loads(line)
        for p in (tmp_path / "captures-b").glob("*.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(second_records) == 8 and all(r["replayed"] for r in second_records)

    # Replayed back to the capturing receiver: its copies are marked (so are the in-process
    # replay's above, run with the same capture folder), and the next replay of the folder
    # leaves them out unless asked.
    back = run(env, "replay", captures, "--status", "200", "--to", f"{first}/webhook")
    assert back.returncode == 0 and "sent 8" in back.stdout, back.stdout + back.stderr
    again = run(env, "replay", captures, "--status", "200", "--dry-run")
    assert "8 delivery(ies) would be sent" in again.stdout, again.stdout
    assert "left out 16 captured replay(s)" in again.stderr
    everything = run(env, "replay", captures, "--status", "200", "--dry-run", "--include-replays")
    assert "24 delivery(ies) would be sent" in everything.stdout, everything.stdout


def test_replay_exits_non_zero_when_something_failed(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    env = {**worker_env, "RECEIVER_HANDLERS": "handlers.log_events"}
    result = run(env, "replay", str(PAYLOADS), "--in-process", "--secret", "not-the-secret")
    assert result.returncode == 1
    assert "403" in result.stdout


def test_dry_run_lists_without_sending(worker_env: dict[str, str]) -> None:
    result = run(worker_env, "replay", str(PAYLOADS), "--dry-run", "--topic", "group")
    assert result.returncode == 0
    assert "2 delivery(ies) would be sent" in result.stdout
