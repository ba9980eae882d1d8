"""Request logs, as the Procfile's gunicorn and ``receiver serve`` write them: credentials in
query strings are masked, whatever the key is called (the metrics token sent as ``?token=``, an
``Authorization`` or ``bearer`` key, an access token, a password), and nothing else is."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from receiver.testing import free_port
from tests.conftest import SECRET, TOKEN
from tests.processes import (
    ROOT,
    gunicorn_on_own_redis,
    receiver_command,
    stop,
    wait_for_http,
    wait_until,
)
from tests.unit.test_access_log import LEAKY_QUERY, MASKED_QUERY, secrets_in

pytestmark = pytest.mark.redis  # starts servers of its own

METRICS_TOKEN = "metrics-token-do-not-log-me"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with gunicorn_on_own_redis(tmp_path, {
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_METRICS_TOKEN": METRICS_TOKEN,
        "RECEIVER_ACCESS_LOG": "1",
    }, workers=1) as served:
        yield served.url, served.log_path


def test_a_metrics_token_sent_in_the_query_string_is_masked_in_the_access_log(
    web: tuple[str, Path],
) -> None:
    url, log_path = web
    # The token belongs in an Authorization header; sent in the URL, it is refused...
    answer = requests.get(f"{url}/metrics", params={"token": METRICS_TOKEN}, timeout=10)
    assert answer.status_code == 401
    # ...and other credential-looking keys some client might add are masked too.
    requests.get(
        f"{url}/metrics?access_token=at-1&API-Key=k-2&password=p-3&page=2", timeout=10
    )
    log = wait_until(
        lambda: text if "page=2" in (text := log_path.read_text(errors="replace")) else "",
        10,
        "the access log lines",
    )
    assert "GET /metrics?token=*** HTTP/1.1" in log
    assert "access_token=***&API-Key=***&password=***&page=2" in log
    for secret in (METRICS_TOKEN, "at-1", "k-2", "p-3"):
        assert secret not in log


def test_authorization_and_bearer_keys_are_masked_in_the_access_log(
    web: tuple[str, Path],
) -> None:
    url, log_path = web
    for path in ("/metrics", "/webhook", "/nowhere"):
        requests.get(f"{url}{path}?{LEAKY_QUERY}", headers={"Referer": f"{url}/?{LEAKY_QUERY}"},
                     timeout=10)
    log = wait_until(
        lambda: t if (t := log_path.read_text(errors="replace")).count("/nowhere?") else "",
        10,
        "the access log lines",
    )
    assert f"GET /metrics?{MASKED_QUERY} HTTP/1.1" in log
    assert secrets_in(log) == []


def test_the_development_servers_request_log_masks_them_too(
    tmp_path: Path, redis_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    env.update(REDIS_URL=redis_url, RECEIVER_APP_SECRET=SECRET, RECEIVER_VERIFY_TOKEN=TOKEN,
               RECEIVER_METRICS_TOKEN=METRICS_TOKEN, RECEIVER_DATA_DIR=str(tmp_path / "data"))
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        serve = subprocess.Popen(
            receiver_command("serve", "--no-worker", "--port", str(port)),
            env=env, cwd=ROOT, stderr=log_file,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", serve)
        for path in ("/metrics", "/webhook"):
            requests.get(f"http://127.0.0.1:{port}{path}?{LEAKY_QUERY}", timeout=10)
        log = wait_until(
            lambda: t if (t := log_path.read_text(errors="replace")).count("page=2") >= 2 else "",
            10,
            "the request lines",
        )
    finally:
        stop(serve)
    assert f"GET /metrics?{MASKED_QUERY} HTTP/1.1" in log
    assert secrets_in(log) == []
