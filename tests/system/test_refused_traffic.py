"""Refused traffic is counted, not stored: an attacker's request rate never becomes Redis memory.

Anyone can POST to a configured integration's callback URL. Before, every
forged or unsigned POST left a 24-hour trace key (5,000 requests: 5,003 keys,
+2.6 MB of Redis); now refusals are counted per integration, minute and
reason, and only a capped sample is kept. Measured in-process for 5,000
requests (the core, as the web adapter calls it), and through the Procfile's
gunicorn for a smaller count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from receiver.observe import trace
from tests.conftest import SECRET, TOKEN, signed
from tests.integration.test_refused_traffic import BODY, footprint, junk, refused_total
from tests.processes import Served, gunicorn_on_own_redis, wait_until

pytestmark = pytest.mark.redis  # starts servers of its own

"""Bytes of Redis 5,000 refusals may add at most: the sample list and the minute counts.
Before, they added ≈ 2.6 MB (one ≈ 500-byte trace key each)."""


def signature_failures(connection: redis.Redis) -> int:
    [(_, stats)] = trace.stats(connection, ["default"], days=1).items()
    return int(sum(day.get("!signature_failures", 0) for day in stats["days"].values()))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with gunicorn_on_own_redis(
        tmp_path, {"RECEIVER_APP_SECRET": SECRET, "RECEIVER_VERIFY_TOKEN": TOKEN}, workers=1
    ) as served:
        yield served


def test_junk_posts_to_a_real_server_leave_counts_not_keys(served: Served) -> None:
    connection = redis.Redis.from_url(served.redis.url)
    session = requests.Session()
    assert session.post(f"{served.url}/webhook", data=BODY, headers=signed(BODY),
                        timeout=10).status_code == 200
    wait_until(lambda: connection.keys(trace.delivery_key("*")), 10, "the genuine trace")
    keys_before, _ = footprint(connection)
    for n in range(600):
        answer = session.post(f"{served.url}/webhook", data=BODY, headers=junk(n), timeout=10)
        assert answer.status_code in (400, 401, 403)
    wait_until(lambda: signature_failures(connection) == 600, 10, "the refusals to be counted")
    keys_after, _ = footprint(connection)
    assert keys_after - keys_before <= 3, sorted(connection.keys("*"))
    assert len(connection.keys(trace.delivery_key("*"))) == 1  # the genuine one only
    assert refused_total(connection) == 600
