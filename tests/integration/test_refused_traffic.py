"""Refused traffic is counted, not stored: an attacker's request rate never becomes Redis memory.

Anyone can POST to a configured integration's callback URL. Before, every
forged or unsigned POST left a 24-hour trace key (5,000 requests: 5,003 keys,
+2.6 MB of Redis); now refusals are counted per integration, minute and
reason, and only a capped sample is kept. Measured in-process for 5,000
requests (the core, as the web adapter calls it), and through the Procfile's
gunicorn for a smaller count.
"""

from __future__ import annotations

import pytest
import redis
from flask import Flask

from receiver import Router, create_app
from receiver.core.signature import SHA256_HEADER, sign
from receiver.observe import trace
from receiver.routing.contracts import Headers, Request
from tests.conftest import SECRET, TOKEN, base_config, payload, signed

pytestmark = pytest.mark.redis  # starts servers of its own

BODY = payload("group__comments__add.json")
MEMORY_BOUND = 256 * 1024
"""Bytes of Redis 5,000 refusals may add at most: the sample list and the minute counts.
Before, they added ≈ 2.6 MB (one ≈ 500-byte trace key each)."""


def junk(n: int) -> dict[str, str]:
    """Unsigned, forged or malformed: what a stranger without the app secret sends."""
    return [{}, {SHA256_HEADER: sign(BODY, "forged")}, {SHA256_HEADER: "sha256=zz"}][n % 3]


def footprint(connection: redis.Redis) -> tuple[int, int]:
    return connection.dbsize(), int(connection.info("memory")["used_memory"])


def refused_total(connection: redis.Redis, integration: str = "default") -> int:
    return sum(trace.refusals(connection, integration, minutes=24 * 60).values())


@pytest.fixture
def traced(router: Router, redis_url: str) -> Flask:
    return create_app(base_config(redis_url=redis_url), router=router)


def test_5000_refused_deliveries_add_a_bounded_number_of_keys_and_bytes(
    traced: Flask, redis_url: str
) -> None:
    core = traced.extensions["receiver"]
    writer = traced.extensions["receiver.trace"]
    connection = redis.Redis.from_url(redis_url)
    genuine = core.handle(Request("POST", BODY, Headers(signed(BODY))))
    assert genuine.status == 200
    writer.flush()
    keys_before, memory_before = footprint(connection)

    for n in range(5000):
        result = core.handle(Request("POST", BODY, Headers(junk(n))))
        assert result.status in (400, 401, 403) and result.delivery_id is not None
        if n % 500 == 499:
            writer.flush()  # as the background thread would, every 200 ms
    writer.flush()

    keys_after, memory_after = footprint(connection)
    assert keys_after - keys_before <= 3, sorted(connection.keys("*"))  # not one per request
    assert memory_after - memory_before < MEMORY_BOUND
    assert refused_total(connection) == 5000
    assert len(trace.refused_recent(connection, ["default"])) == trace.REFUSED_SAMPLE
    assert connection.ttl(trace.refused_key("default")) > 0  # the sample expires too
    day_counts = connection.keys(f"{trace.STATS_PREFIX}default:refused:*")
    assert day_counts and all(connection.ttl(k) > 0 for k in day_counts)
    # The genuine delivery is still the last delivery, and still traced.
    [(_, stats)] = trace.stats(connection, ["default"]).items()
    assert stats["last"]["delivery_id"] == genuine.delivery_id
    assert [r["delivery_id"] for r in trace.recent(connection)] == [genuine.delivery_id]


def test_refusals_are_counted_per_minute_and_reason(traced: Flask, redis_url: str) -> None:
    core = traced.extensions["receiver"]
    for n in range(6):
        core.handle(Request("POST", BODY, Headers(junk(n))))
    traced.extensions["receiver.trace"].flush()
    connection = redis.Redis.from_url(redis_url)
    assert trace.refusals(connection, "default") == {
        "missing_signature/missing": 2,
        "bad_signature/no_secret_matches": 2,
        "malformed_signature/malformed": 2,
    }
    [(_, stats)] = trace.stats(connection, ["default"]).items()
    assert stats["last"]["refused_error"] == "malformed_signature"
    assert "at" not in stats["last"]  # no verified delivery yet


def test_the_cli_shows_the_last_refusal_and_traces_a_kept_one(
    traced: Flask, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from receiver.cli import main

    core = traced.extensions["receiver"]
    core.handle(Request("POST", BODY, Headers(signed(BODY))))
    forged = core.handle(Request("POST", BODY, Headers(junk(1))))
    traced.extensions["receiver.trace"].flush()
    monkeypatch.setenv("RECEIVER_APP_SECRET", SECRET)
    monkeypatch.setenv("RECEIVER_VERIFY_TOKEN", TOKEN)
    monkeypatch.setenv("REDIS_URL", redis_url)
    figures = CliRunner().invoke(main, ["stats", "--days", "1"])
    assert figures.exit_code == 0, figures.output
    first, refusal = figures.output.splitlines()[:2]
    assert first.startswith("default: last delivery ") and "(status 200)" in first
    assert refusal.startswith("  last refusal ") and "status 403 bad_signature/no_secret" in refusal
    assert refusal.endswith("1 refused in the last hour: bad_signature/no_secret_matches 1")
    shown = CliRunner().invoke(main, ["trace", str(forged.delivery_id)])
    assert shown.exit_code == 0, shown.output
    assert "status 403 (bad_signature: no_secret_matches)" in shown.output
