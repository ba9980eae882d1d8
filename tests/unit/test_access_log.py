"""Request logs, as the Procfile's gunicorn and ``receiver serve`` write them: credentials in
query strings are masked, whatever the key is called (the metrics token sent as ``?token=``, an
``Authorization`` or ``bearer`` key, an access token, a password), and nothing else is."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from receiver.observe.logsafe import formatter, is_secret_query_key

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
