"""Request logs, as the Procfile's gunicorn and ``receiver serve`` write them: credentials in
query strings are masked, whatever the key is called (the metrics token sent as ``?token=``, an
``Authorization`` or ``bearer`` key, an access token, a password), and nothing else is."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from receiver.observe.logsafe import formatter, is_secret_query_key
from receiver.testing import free_port

from .conftest import SECRET, TOKEN
from .processes import (
    ROOT,
    gunicorn_on_own_redis,
    receiver_command,
    stop,
    wait_for_http,
    wait_until,
)

pytestmark = pytest.mark.redis  # starts servers of its own

METRICS_TOKEN = "metrics-token-do-not-log-me"
LEAKS = {  # a key a client might put a credential under, and a value to look for in the log
    "authorization": "Bearer%20tok-authz",
    "Authorization": "tok-authz2",
    "bearer": "tok-bearer",
    "api_key": "tok-apikey",
    "access_token": "tok-access",
    "appsecret_proof": "tok-proof",
    "client_secret": "tok-client",
    "sessionid": "tok-session",
    "signature": "tok-signature",
}
LEAKY_QUERY = "&".join(f"{k}={v}" for k, v in LEAKS.items()) + "&page=2"
MASKED_QUERY = "&".join(f"{k}=***" for k in LEAKS) + "&page=2"


def secrets_in(text: str) -> list[str]:
    return [v for v in LEAKS.values() if v.rpartition("%20")[2] in text]


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


def test_json_logs_and_tracebacks_mask_urls_the_same_way() -> None:
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: %s %s", ("GET", f"/x?{LEAKY_QUERY}"),
        None,
    )
    line = json.loads(formatter("%(message)s", log_format="json").format(record))
    assert line["message"] == f"HTTP Request: GET /x?{MASKED_QUERY}"
    try:
        raise ValueError(f"for url 'https://graph.example/v1/me?{LEAKY_QUERY}'")
    except ValueError:
        record.exc_info = sys.exc_info()
    text = formatter("%(message)s", log_format="text").format(record)
    assert secrets_in(text) == [] and MASKED_QUERY in text
    from receiver.observe.logsafe import mask_urls

    assert mask_urls("did you mean 'token'? token") == "did you mean 'token'? token"


@pytest.mark.parametrize(
    "key",
    ["token", "hub.verify_token", "access_token", "client_secret", "appsecret_proof",
     "password", "passwd", "api_key", "X-API-KEY", "apikey", "key", "auth", "sig",
     "signature", "jwt", "session", "credentials", "authorization", "Authorization",
     "bearer", "X-Bearer", "sessionid", "private_key", "X-Auth-Token"],
)  # fmt: skip
def test_keys_naming_a_credential_are_secret(key: str) -> None:
    assert is_secret_query_key(key)


@pytest.mark.parametrize(
    "key",
    ["hub.mode", "hub.challenge", "page", "status", "keyword", "author", "topic", "next"],
)
def test_other_keys_are_logged_as_sent(key: str) -> None:
    assert not is_secret_query_key(key)
