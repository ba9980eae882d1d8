"""Ordered background handlers (``ordered_by``) on real Redis and real `receiver worker`s.

Deliveries go through the app into Redis; two worker processes, 32 calls at
once each, run ``tests.plugins.ordered``, which notes in SQLite when each call
started and ended, where, and at which attempt. Order and overlap are read
from those notes (never from how long anything took): per key, each event
starts after the one before it ended, in the order the deliveries were
acknowledged (the body's order within one); across keys, calls overlap.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from receiver import Router, create_app
from receiver.routing import OPTIONS, default_router

from .conftest import base_config, envelope, signed
from .plugins import ordered
from .plugins.ordered import calls
from .processes import ROOT, receiver_command, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

HANDLERS = "tests.plugins.ordered"


@pytest.fixture
def env(worker_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "receiver.toml"
    config.write_text("[receiver]\nretry_backoff = 1.0\n")
    return {
        **worker_env,
        "RECEIVER_HANDLERS": HANDLERS,
        "RECEIVER_CONFIG": str(config),
        "FIXED_FLAG": str(tmp_path / "fixed"),
    }


@pytest.fixture
def client(redis_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """The web side routes to the ordered plugin's handlers only, as the workers do."""
    monkeypatch.setenv("RECORDING_DB", env["RECORDING_DB"])
    router = Router()
    for handler in default_router.handlers():
        if handler.func.__module__ == ordered.__name__:
            router.connect(
                handler.pattern, handler.func, **{o: getattr(handler, o) for o in OPTIONS}
            )
    return create_app(base_config(redis_url=redis_url), router=router).test_client()


@contextmanager
def workers(env: dict[str, str], count: int = 2) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` real `receiver worker --concurrency 32` processes, stopped afterwards."""
    with ExitStack() as stack:
        started = [stack.enter_context(_worker(env)) for _ in range(count)]
        yield started


@contextmanager
def _worker(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        receiver_command("--log-level", "WARNING", "worker", "--concurrency", "32"),
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def change(field: str, sender: str, n: int, **value: Any) -> dict[str, Any]:
    return {"field": field, "value": {"from": {"id": sender}, "n": n, **value}}


def post(client: FlaskClient, *changes: dict[str, Any]) -> str:
    """One delivery of ``changes`` in this order; its delivery id."""
    body = envelope("chat", *changes, id="1")
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["delivery_id"])


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        receiver_command(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


def by_key(rows: list[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        out[row[2]].append(row)
    return out


def spans(db: str, name: str) -> dict[int, list[tuple[float, float, int]]]:
    """n → ``(start, end, pid)`` of each attempt that ended (in success or failure)."""
    starts = {(n, attempt): at for _, n, _, _, attempt, at in calls(db, "start", name)}
    out: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for phase in ("end", "fail"):
        for _, n, _, pid, attempt, at in calls(db, phase, name):
            out[n].append((starts[(n, attempt)], at, pid))
    return {n: sorted(v) for n, v in out.items()}


def assert_in_order_without_overlap(db: str, name: str, order: dict[str, list[int]]) -> None:
    """Each key's events ran one at a time, in ``order`` (every attempt of one before the next)."""
    ran = spans(db, name)
    for key, numbers in order.items():
        attempts = [span for n in numbers for span in ran[n]]
        for earlier, later in zip(attempts, attempts[1:], strict=False):
            assert earlier[1] <= later[0], f"key {key}: {earlier} overlaps {later}"
        started = [n for _, n, k, *_ in calls(db, "start", name) if k == key]
        assert list(dict.fromkeys(started)) == numbers, f"key {key} ran out of order"


def most_at_once(spans_: list[tuple[float, float, int]]) -> int:
    moments = sorted([(s, 1) for s, _, _ in spans_] + [(e, -1) for _, e, _ in spans_])
    level = peak = 0
    for _, step in moments:
        level += step
        peak = max(peak, level)
    return peak


# -- order and overlap -------------------------------------------------------------------------


def test_each_key_in_acknowledgement_order_keys_concurrently_on_two_workers(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """150 senders × 4 messages, 20 deliveries: each sender's messages in one body at a time,
    interleaved with the others'. Stored before the workers start, so both take a share."""
    db = env["RECORDING_DB"]
    senders = [f"u{k:03d}" for k in range(150)]
    order: dict[str, list[int]] = defaultdict(list)
    n = 0
    for _ in range(4):
        for chunk in range(5):
            batch = []
            for sender in senders[chunk * 30 : (chunk + 1) * 30]:
                batch.append(change("say", sender, n, sleep=0.05))
                order[sender].append(n)
                n += 1
            post(client, *batch)
    with workers(env) as processes:
        wait_until(lambda: len(calls(db, "end", "chat.say")) == n, 120, f"{n} ordered calls")
    assert_in_order_without_overlap(db, "chat.say", order)
    everything = [span for spans_ in spans(db, "chat.say").values() for span in spans_]
    assert len(everything) == n  # each once
    assert most_at_once(everything) > 1  # different keys ran at the same time
    assert {pid for _, _, pid in everything} == {p.pid for p in processes}  # both took a share


def test_a_key_keeps_its_order_across_deliveries_and_processes(
    client: FlaskClient, env: dict[str, str]
) -> None:
    """Deliveries posted while the workers run: each sender's next message is its own
    delivery, so a key's events are picked up afresh, by either worker."""
    db = env["RECORDING_DB"]
    order: dict[str, list[int]] = defaultdict(list)
    with workers(env):
        n = 0
        for _ in range(6):
            for sender in ("ana", "bo", "cy"):
                post(client, change("say", sender, n, sleep=0.1))
                order[sender].append(n)
                n += 1
        wait_until(lambda: len(calls(db, "end", "chat.say")) == n, 60, f"{n} ordered calls")
    assert_in_order_without_overlap(db, "chat.say", order)
