from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from receiver import Event, Router, create_app, default_router
from receiver.core.signature import signature_headers
from receiver.observe.trace import TraceWriter
from receiver.routing.handlers import OPTIONS
from receiver.routing.signals import delivery_finished
from receiver.server.embedded import SERVER_VARIABLE, server_binary
from receiver.testing import RedisServer

HERE = Path(__file__).parent
PAYLOADS = HERE / "payloads"
SECRET = "test-app-secret"
TOKEN = "test-verify-token"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's or another test's settings, nor writes into the checkout.

    ``RECEIVER_REDIS_SERVER`` stays: it picks the server the whole run tests against.
    """
    for name in list(os.environ):
        if (name.startswith("RECEIVER_") and name != SERVER_VARIABLE) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RECEIVER_DATA_DIR", str(tmp_path / "data"))


TIERS = ("unit", "integration", "system")
"""The folders under ``tests/``, fastest first: each test is marked with the one it sits in."""


def tier(item: pytest.Item) -> str:
    parts = item.path.relative_to(HERE).parts
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{item.nodeid}: every test sits in tests/{{{','.join(TIERS)}}}/")
    return parts[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier (``-m unit``), and the tiers run fastest first.

    Tests that reach the suite's server are marked ``redis``, so ``-m redis`` runs them
    again on another server; modules that start servers of their own mark themselves.
    A unit test talks to no Redis server (``tests/unit/conftest.py`` enforces it).
    """
    for item in items:
        item.add_marker(getattr(pytest.mark, tier(item)))
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
        if tier(item) == "unit" and item.get_closest_marker("redis") is not None:
            raise pytest.UsageError(f"{item.nodeid}: a unit test needs no Redis: move it")
    items.sort(key=lambda item: TIERS.index(tier(item)))  # stable: files keep their order


def pytest_report_header() -> str:
    return f"redis server: {server_binary()} ({SERVER_VARIABLE} picks another)"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


_trace_writers: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@delivery_finished.receiver_connected.connect
def _track_trace_writer(signal: object, receiver: object, **_: object) -> None:
    """Every app's trace writer (``create_app`` connects one), so ``redis_url`` can drain them."""
    if isinstance(receiver, TraceWriter):
        _trace_writers.add(receiver)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A real Redis, flushed before each test that uses it.

    Earlier tests' trace writers are drained first: their background thread writes
    every 200 ms, and a record still queued would otherwise land after the flush, in
    this test's stats and recent deliveries.
    """
    for writer in list(_trace_writers):
        writer.flush()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
def seen(router: Router) -> list[Event]:
    """Every event routed to a catch-all inline handler."""
    events: list[Event] = []
    router.connect("*", events.append)
    return events


def plugin_router(module: str) -> Router:
    """A router with the default router's handlers from one plugin module, every option
    kept: the web side of a test whose workers load only that module."""
    router = Router()
    for handler in default_router.handlers():
        if handler.func.__module__ == module:
            options = {option: getattr(handler, option) for option in OPTIONS}
            filters = [handler.filter] if handler.filter is not None else []
            router.connect(handler.pattern, handler.func, *filters, **options)
    return router


def base_config(**receiver: Any) -> dict[str, Any]:
    return {
        "receiver": receiver,
        "integrations": {"default": {"app_secrets": [SECRET], "verify_token": TOKEN}},
    }


@pytest.fixture
def app(router: Router, redis_url: str) -> Flask:
    return create_app({**base_config(redis_url=redis_url)}, router=router)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def signed(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {**signature_headers(body, secret), **extra}


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def envelope(topic: str, *changes: dict[str, Any], **entry: Any) -> bytes:
    return json.dumps({"object": topic, "entry": [{**entry, "changes": list(changes)}]}).encode()


@pytest.fixture
def recording_client(
    redis_url: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> FlaskClient:
    """An app whose background handlers (``tests.plugins.recording``) record to SQLite."""
    monkeypatch.setenv("RECORDING_DB", worker_env["RECORDING_DB"])
    app = create_app(base_config(redis_url=redis_url, handlers=["tests.plugins.recording"]))
    return app.test_client()


def drain_worker(env: dict[str, str]) -> None:
    """Run a real ``receiver worker --burst`` until the queues are empty."""
    subprocess.run(
        [sys.executable, "-m", "receiver", "--log-level", "WARNING", "worker", "--burst"],
        env=env,
        cwd=HERE.parent,
        check=True,
        timeout=120,
    )


@pytest.fixture
def worker_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a real `receiver worker` / gunicorn process running the test plugins."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "RECEIVER_APP_SECRET": SECRET,
        "RECEIVER_VERIFY_TOKEN": TOKEN,
        "RECEIVER_HANDLERS": "tests.plugins.recording",
        "RECORDING_DB": str(tmp_path / "side-effects.sqlite"),
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path]),
    }


# --- the admin dashboard ------------------------------------------------------------------

PASSWORD = "correct horse battery"
OLD_SECRET = "an-older-app-secret"


def admin_config(redis_url: str, tmp_path: Path, **receiver: Any) -> dict[str, Any]:
    config = base_config(
        redis_url=redis_url,
        admin_password=PASSWORD,
        capture_dir=str(tmp_path / "captures"),
        **receiver,
    )
    config["integrations"]["default"]["app_secrets"] = [SECRET, OLD_SECRET]
    config["integrations"]["default"]["capture"] = True
    config["integrations"]["hr-bot"] = {
        "app_secrets": ["hr-secret"],
        "verify_token": TOKEN,
        "enabled": False,
    }
    return config


@pytest.fixture
def admin_app(router: Router, redis_url: str, tmp_path: Path) -> Flask:
    return create_app(admin_config(redis_url, tmp_path), router=router)


@pytest.fixture
def browser(admin_app: Flask) -> FlaskClient:
    """A client that has logged in."""
    client = admin_app.test_client()
    answer = login(client)
    assert answer.status_code == 303, answer.text
    return client


def csrf(client: FlaskClient, path: str = "/admin/", **request: Any) -> str:
    return csrf_in(client.get(path, **request).text)


def is_session(answer: TestResponse) -> bool:
    """The answer sets a session cookie (not merely the login form's)."""
    return any(c.startswith("receiver_admin=") for c in answer.headers.getlist("Set-Cookie"))


def csrf_in(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def login(client: FlaskClient, password: str = PASSWORD, **request: Any) -> TestResponse:
    """As a browser signs in: load the form (its cookie and token), then send it."""
    page = client.get("/admin/login", **request).text
    token = csrf_in(page.split('class="login"')[1])  # not the sign-out form's, if signed in
    form = {"password": password, "csrf_token": token, **request.pop("data", {})}
    return client.post("/admin/login", data=form, **request)
