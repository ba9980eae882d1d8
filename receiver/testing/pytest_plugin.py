"""pytest fixtures for handler authors (registered through the ``pytest11`` entry point).

    def test_welcome(receiver_client, receiver_recorder):
        receiver_client.deliver(testing.group_membership(verb="add"))
        assert receiver_recorder.calls("welcome_new_member")[0].ok

Configure with ini options ``receiver_handlers`` (modules to load) or by
overriding the ``receiver_config`` fixture; background handlers run inline
unless ``receiver_background`` is overridden to return ``"worker"`` (a real
Redis and a real ``receiver worker``, which then runs after every delivery;
the recorder then reads the outcomes the worker recorded in Redis).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from receiver import testing
from receiver.app import create_app, inline_backend
from receiver.settings.loading import load_settings


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "receiver_handlers",
        "handler modules the receiver fixtures load",
        type="linelist",
        default=[],
    )


@pytest.fixture
def receiver_handlers(request: pytest.FixtureRequest) -> list[str]:
    """Handler modules to load; the ``receiver_handlers`` ini option by default."""
    return list(request.config.getini("receiver_handlers"))


@pytest.fixture
def receiver_config(receiver_handlers: list[str], tmp_path: Path) -> dict[str, Any]:
    """The app's configuration, as the TOML file would give it."""
    return {
        "receiver": {"handlers": receiver_handlers, "data_dir": str(tmp_path / "receiver-data")},
        "integrations": {
            "default": {"app_secrets": [testing.TEST_SECRET], "verify_token": testing.TEST_TOKEN}
        },
    }


@pytest.fixture
def receiver_background() -> str:
    """``"inline"``: background handlers run at once, in the test. ``"worker"``: a real worker."""
    return "inline"


@pytest.fixture(scope="session")
def receiver_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[testing.RedisServer]:
    server = testing.RedisServer(tmp_path_factory.mktemp("receiver-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receiver_app(
    receiver_config: dict[str, Any], receiver_background: str, request: pytest.FixtureRequest
) -> Flask:
    if receiver_background == "worker":
        server: testing.RedisServer = request.getfixturevalue("receiver_redis")
        import redis

        redis.Redis.from_url(server.url).flushall()
        config = {
            **receiver_config,
            "receiver": {**receiver_config["receiver"], "redis_url": server.url},
        }
        return create_app(config)
    settings = load_settings(receiver_config, {})
    return create_app(settings, backend=inline_backend(settings))


@pytest.fixture
def receiver_recorder(receiver_app: Flask) -> testing.Recorder:
    recorder = testing.Recorder()
    recorder.attach(receiver_app.extensions["receiver"])
    return recorder


@pytest.fixture
def receiver_client(
    receiver_app: Flask,
    receiver_recorder: testing.Recorder,
    receiver_background: str,
    receiver_handlers: list[str],
    request: pytest.FixtureRequest,
) -> testing.SignedClient:
    after = None
    if receiver_background == "worker":
        server: testing.RedisServer = request.getfixturevalue("receiver_redis")

        def after() -> None:
            # The environment as the test has it now: monkeypatch may have changed it.
            env = {
                **os.environ,
                "REDIS_URL": server.url,
                "RECEIVER_APP_SECRET": testing.TEST_SECRET,
                "RECEIVER_VERIFY_TOKEN": testing.TEST_TOKEN,
                "RECEIVER_HANDLERS": ",".join(receiver_handlers),
                "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path]),
            }
            testing.run_worker_burst(env, cwd=os.getcwd())
            receiver_recorder.collect_background()

    return testing.SignedClient(receiver_app.test_client(), after_post=after)


@pytest.fixture
def receiver_payloads() -> Any:
    """``receiver_payloads(folder)`` → ``{file name: bytes}`` of its ``*.json`` files.

    Raises when the folder is missing or holds no ``*.json`` file.
    """
    return testing.load_payloads
