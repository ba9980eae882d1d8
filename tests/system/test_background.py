"""Background handlers go through a real Redis and run in a real `receiver worker` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry

from receiver import Event, create_app
from receiver.observe import trace
from receiver.queue import handoff, keys
from tests.conftest import base_config, drain_worker, envelope, payload, signed
from tests.plugins.recording import calls
from tests.plugins.slow import runs

pytestmark = pytest.mark.redis  # starts servers of its own


@pytest.fixture
def client(recording_client: FlaskClient) -> FlaskClient:
    return recording_client


drain = drain_worker


def test_background_handler_runs_in_worker(client: FlaskClient, worker_env: dict[str, str]) -> None:
    body = payload("group__posts__status_add.json")
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 200
    assert response.get_json()["queued"] == 1
    assert calls(worker_env["RECORDING_DB"]) == []  # not run in the request

    drain(worker_env)
    [(event_id, name, verb)] = calls(worker_env["RECORDING_DB"])
    assert (name, verb) == ("group.posts", "add")


def test_redelivered_event_runs_once(client: FlaskClient, worker_env: dict[str, str]) -> None:
    body = payload("group__comments__add.json")
    for _ in range(3):
        assert client.post("/webhook", data=body, headers=signed(body)).status_code == 200
    drain(worker_env)
    assert [c[1] for c in calls(worker_env["RECORDING_DB"])] == ["group.comments"]


def test_batch_delivery_every_item_handled(client: FlaskClient, worker_env: dict[str, str]) -> None:
    body = envelope(
        "group", *[{"field": "posts", "value": {"n": i, "verb": "add"}} for i in range(50)]
    )
    assert client.post("/webhook", data=body, headers=signed(body)).get_json()["queued"] == 50
    drain(worker_env)
    assert len(calls(worker_env["RECORDING_DB"])) == 50


def test_sentinel_url_finds_the_master(
    redis_server: Any, tmp_path: Path, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real redis-server in Sentinel mode monitors the test Redis; the receiver asks it."""
    import subprocess as sp

    from receiver.testing import free_port
    from tests.processes import wait_until

    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor receiver-test 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = sp.Popen([redis_server.binary, str(conf), "--sentinel"], stdout=sp.DEVNULL)
    try:
        import redis as redis_client

        probe = redis_client.Redis(port=port)

        def ready() -> bool:
            try:
                return bool(probe.sentinel_get_master_addr_by_name("receiver-test"))
            except redis_client.RedisError:
                return False

        wait_until(ready, 30, "sentinel to know the master")
        monkeypatch.setenv("RECORDING_DB", worker_env["RECORDING_DB"])
        url = f"redis+sentinel://127.0.0.1:{port}/receiver-test/0"
        app = create_app(base_config(redis_url=url, handlers=["tests.plugins.recording"]))
        body = payload("group__posts__status_add.json")
        response = app.test_client().post("/webhook", data=body, headers=signed(body))
        assert response.status_code == 200
        assert response.get_json()["queued"] == 1
        direct = redis_client.Redis.from_url(redis_server.url)
        assert direct.llen("receiver:pending:receiver") == 1  # stored on the real master
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)


def test_an_item_for_a_handler_the_worker_does_not_load_is_filed_not_blocking(
    redis_url: str, worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module dropped from the worker's handlers: its items wait in `receiver failed`
    (requeue once it is loaded again) while every other item, before and after, runs."""
    monkeypatch.setenv("RECORDING_DB", worker_env["RECORDING_DB"])
    both = ["tests.plugins.recording", "tests.plugins.slow"]
    client = create_app(base_config(redis_url=redis_url, handlers=both)).test_client()
    for n in (1, 2):
        body = envelope("slow", {"field": "fast", "value": {"n": n}})
        assert client.post("/webhook", data=body, headers=signed(body)).get_json()["queued"] == 2

    drain(worker_env)  # loads tests.plugins.recording only; must still exit 0
    db = worker_env["RECORDING_DB"]
    assert sorted(c[1] for c in calls(db)) == ["slow.fast", "slow.fast"]
    assert runs(db, "end") == []
    listed = subprocess.run(
        [sys.executable, "-m", "receiver", "failed"],
        env=worker_env, capture_output=True, text=True, check=True,
    ).stdout
    rows = [line for line in listed.splitlines() if "tests.plugins.slow:fast" in line]
    assert len(rows) == 2 and all("is registered here" in row for row in rows)
    assert "abandoned drain job" not in listed  # no drain job died on them

    loaded = {**worker_env, "RECEIVER_HANDLERS": ",".join(both)}
    subprocess.run([sys.executable, "-m", "receiver", "failed", "requeue", "--all"],
                   env=loaded, check=True, capture_output=True)
    drain(loaded)
    assert sorted(r[1] for r in runs(db, "end")) == [1, 2]
    assert len(calls(db)) == 2  # the recording handler did not run again


def test_a_redelivery_trace_says_its_background_work_was_a_duplicate(
    client: FlaskClient, worker_env: dict[str, str], redis_url: str
) -> None:
    body = payload("group__comments__add.json")
    answers = []
    for _ in range(2):
        answers.append(client.post("/webhook", data=body, headers=signed(body)).get_json())
        drain(worker_env)
    client.application.extensions["receiver.trace"].flush()
    connection = redis.Redis.from_url(redis_url)
    first, again = (trace.load(connection, a["delivery_id"]) for a in answers)
    assert first is not None and again is not None
    assert [(r["outcome"], r["attempt"]) for r in first["background"]] == [("ok", 1)]
    assert [(r["outcome"], r["attempt"]) for r in again["background"]] == [("duplicate", 0)]
    shown = subprocess.run(
        [sys.executable, "-m", "receiver", "trace", answers[1]["delivery_id"]],
        env=worker_env, capture_output=True, text=True, check=True,
    ).stdout
    assert "no attempt recorded yet" not in shown and "attempt -" in shown and "duplicate" in shown


def test_jobs_queued_under_earlier_dotted_paths_still_run(
    client: FlaskClient, worker_env: dict[str, str], redis_url: str
) -> None:
    """An upgrade with work in the queue loses nothing: drain and retry jobs stored under
    the paths earlier versions used (``keys.JOB_ALIASES``) run in today's worker."""
    core = client.application.extensions["receiver"]
    [handler] = [h for h in core.router.handlers() if h.func.__name__ == "record"]
    connection = redis.Redis.from_url(redis_url)
    name = core.settings.queue_name
    queue = keys.rq_queue(name, connection)
    expected = []

    def event(label: str) -> Event:
        expected.append(label)
        return Event("group", "posts", {"verb": "add"}, label, f"d-{label}", "default", "add")

    for path in keys.LEGACY_RETRY_FUNCTIONS:
        queue.enqueue_call(path, args=(handoff.item(event(f"retry-{path}"), handler),))
    for path in keys.LEGACY_DRAIN_FUNCTIONS:
        items = [handoff.item(event(f"drain-{path}"), handler)]
        connection.rpush(keys.pending_key(name), json.dumps({"delivery_id": path, "items": items}))
        queue.enqueue_call(path, args=(name,))

    drain(worker_env)
    assert sorted(c[0] for c in calls(worker_env["RECORDING_DB"])) == sorted(expected)
    assert FailedJobRegistry(queue=queue).get_job_ids() == []
