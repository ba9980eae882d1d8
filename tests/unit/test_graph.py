"""The Graph API client's checks that need no server: scrubbing, settings, usage headers, retries.

The client against a fake Graph server on loopback is in ``tests/integration/test_graph.py``.
"""

from __future__ import annotations

import pytest

from receiver.errors import (
    ConfigError,
    GraphAuthError,
    GraphError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
)
from receiver.graph.calls import GraphConfig
from receiver.graph.ratelimit import GraphErrorFields, RetryPolicy, is_retryable, to_error, usage
from receiver.settings.model import Integration

SECRET = "newest-app-secret"


def test_a_token_or_proof_echoed_in_any_url_encoding_is_scrubbed() -> None:
    """Lowercase hex (``%7c``), ``quote``'s default (``/`` left as is), ``quote_plus``, an
    upper-case proof: each is the same credential, as a proxy or a log might echo it."""
    from urllib.parse import quote, quote_plus

    token, secret = "1234567890|Ab/Cd+Ef=", "app-secret/with+plus"
    config = GraphConfig(access_token=token, app_secret=secret)
    proof = config.proof()
    assert proof is not None
    echoed = [
        token,
        quote(token, safe=""),
        quote(token, safe="").lower(),
        quote(token),
        quote_plus(token),
        proof,
        proof.upper(),
        secret,
        quote(secret, safe="").lower(),
        quote_plus(secret),
    ]
    for shape in echoed:
        scrubbed = config.scrub(f"upstream said: {shape} (end)")
        assert scrubbed == "upstream said: *** (end)", shape
    assert config.scrub("nothing secret here: 1234567890") == "nothing secret here: 1234567890"


def test_an_integration_without_access_token_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="RECEIVER_ACCESS_TOKEN"):
        GraphConfig.for_integration(Integration(name="default", app_secrets=(SECRET,)))


def test_usage_headers_are_read_leniently() -> None:
    assert usage({"X-App-Usage": '{"call_count": 12, "total_time": 40}'}) == (40.0, 0.0)
    assert usage({"X-App-Usage": "not json"}) == (0.0, 0.0)
    header = '{"9": [{"type": "messenger", "call_count": 3, "estimated_time_to_regain_access": 2}]}'
    assert usage({"X-Business-Use-Case-Usage": header}) == (3.0, 120.0)


@pytest.mark.parametrize(
    ("status", "code", "kind", "retried"),
    [
        (500, None, GraphUnavailable, True),
        (503, 2, GraphUnavailable, True),
        (400, 1, GraphUnavailable, True),
        (400, 4, GraphThrottled, True),
        (400, 17, GraphThrottled, True),
        (400, 32, GraphThrottled, True),
        (400, 613, GraphThrottled, True),
        (400, 80004, GraphThrottled, True),
        (429, None, GraphThrottled, True),
        (401, None, GraphAuthError, False),
        (400, 190, GraphAuthError, False),
        (403, 200, GraphAuthError, False),
        (400, 100, GraphRequestError, False),
        (404, 803, GraphRequestError, False),
    ],
)
def test_which_failures_are_retried_and_what_they_raise(
    status: int, code: int | None, kind: type[GraphError], retried: bool
) -> None:
    fields = GraphErrorFields(message="m", code=code)
    assert is_retryable(status, fields) is retried
    error = to_error(status, fields, method="GET", path="/v23.0/x")
    assert type(error) is kind and error.status == status and error.code == code


def test_backoff_doubles_with_equal_jitter_and_respects_retry_after() -> None:
    low = RetryPolicy(backoff=1.0, max_backoff=5.0, random=lambda: 0.0)
    high = RetryPolicy(backoff=1.0, max_backoff=5.0, random=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 2.5]
    assert [high.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert low.delay(1, retry_after=9.0) == 9.0
