"""A deployer installs the wheel, not the checkout: the Procfile's two lines serve from a folder
that holds only the deployer's own handler module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from receiver.core.signature import signature_headers
from receiver.testing import free_port, group_membership, without_settings
from tests.conftest import SECRET, TOKEN
from tests.processes import ROOT, stop, wait_for_http, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]

HANDLER = """
from pathlib import Path

from receiver import Event, on


@on("group.membership", background=True)
def remember(event: Event) -> None:
    Path("joined.txt").write_text(event.value["member"]["id"])
"""


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet"], check=True, timeout=300,
        capture_output=True,
    )


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_the_procfile_serves_from_an_installed_wheel(tmp_path: Path, redis_url: str) -> None:
    wheels, site, deploy = tmp_path / "wheels", tmp_path / "site", tmp_path / "deploy"
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(ROOT))
    [wheel] = wheels.glob("receiver-*.whl")
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    deploy.mkdir()
    (deploy / "my_handlers.py").write_text(HANDLER)
    port = free_port()
    env = {
        **without_settings(os.environ),
        # The wheel's package first; its dependencies from this virtualenv.
        "PYTHONPATH": str(site),
        "PATH": os.pathsep.join(
            [str(site / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_HANDLERS": "my_handlers",
        "WEB_CONCURRENCY": "1",
    }
    where = subprocess.run(
        [sys.executable, "-c", "import receiver; print(receiver.__file__)"],
        env=env,
        cwd=deploy,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where

    procfile = _procfile()
    web = subprocess.Popen(
        ["sh", "-c", "exec " + procfile["web"]], env=env, cwd=deploy, start_new_session=True
    )
    worker = subprocess.Popen(
        ["sh", "-c", "exec " + procfile["worker"]], env=env, cwd=deploy, start_new_session=True
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", web, timeout=60)
        body = json.dumps(group_membership(verb="add")).encode()
        answer = requests.post(
            f"http://127.0.0.1:{port}/webhook",
            data=body,
            headers=signature_headers(body, SECRET),
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["queued"] == 1, answer.text
        joined = deploy / "joined.txt"
        wait_until(joined.exists, timeout=60, what="the worker to run my_handlers.remember")
        assert (
            joined.read_text()
            == group_membership()["entry"][0]["changes"][0]["value"]["member"]["id"]
        )
    finally:
        stop(worker)
        stop(web)
