"""gunicorn's access log, as the Procfile's web process writes it: credentials in query strings
are masked, whatever the key is called (the metrics token sent as ``?token=``, an access token,
a password), and nothing else is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from receiver.logsafe import is_secret_query_key

from .conftest import SECRET, TOKEN
from .processes import gunicorn_on_own_redis, wait_until

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


@pytest.mark.parametrize(
    "key",
    ["token", "hub.verify_token", "access_token", "client_secret", "appsecret_proof",
     "password", "passwd", "api_key", "X-API-KEY", "apikey", "key", "auth", "sig",
     "signature", "jwt", "session", "credentials"],
)  # fmt: skip
def test_keys_naming_a_credential_are_secret(key: str) -> None:
    assert is_secret_query_key(key)


@pytest.mark.parametrize(
    "key",
    ["hub.mode", "hub.challenge", "page", "status", "keyword", "author", "topic", "next"],
)
def test_other_keys_are_logged_as_sent(key: str) -> None:
    assert not is_secret_query_key(key)
