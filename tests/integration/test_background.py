"""Background handlers go through a real Redis and run in a real `receiver worker` process."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
import redis
from flask.testing import FlaskClient

from receiver import create_app
from tests.conftest import base_config, payload, signed

pytestmark = pytest.mark.redis  # starts servers of its own


@pytest.fixture
def client(recording_client: FlaskClient) -> FlaskClient:
    return recording_client


@pytest.mark.parametrize("mode", ["spool", "reject"])
def test_redis_down_spools_or_rejects(
    worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    from receiver.testing import free_port

    monkeypatch.setenv("RECORDING_DB", worker_env["RECORDING_DB"])
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = base_config(redis_url=dead, handlers=["tests.plugins.recording"], spool_mode=mode)
    client = create_app(config).test_client()
    body = payload("group__posts__status_add.json")
    response = client.post("/webhook", data=body, headers=signed(body))
    spooled = list((tmp_path / "data" / "spool").glob("*.json"))
    if mode == "spool":
        assert response.status_code == 200
        [path] = spooled
        assert path.stat().st_mode & 0o777 == 0o600
    else:
        assert response.status_code == 503
        assert response.get_json()["error"] == "queue_unavailable"
        assert spooled == []


def test_spool_unwritable_means_503(
    worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.testing import free_port

    monkeypatch.setenv("RECORDING_DB", worker_env["RECORDING_DB"])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    monkeypatch.setenv("RECEIVER_DATA_DIR", str(blocker))
    config = base_config(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", handlers=["tests.plugins.recording"]
    )
    client = create_app(config).test_client()
    body = payload("group__posts__status_add.json")
    response = client.post("/webhook", data=body, headers=signed(body))
    assert response.status_code == 503
    assert response.get_json()["error"] == "queue_unavailable"


@pytest.mark.parametrize("appendonly", [False, True])
def test_warns_when_redis_keeps_nothing_on_disk(
    tmp_path: Path, appendonly: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from receiver.testing import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=appendonly)
    server.start()
    try:
        with caplog.at_level("WARNING"):
            create_app(base_config(redis_url=server.url))
    finally:
        server.stop()
    warned = "keeps nothing on disk" in caplog.text
    assert warned is not appendonly


def test_test_servers_get_ports_no_outgoing_connection_can_take(tmp_path: Path) -> None:
    """A restarted test Redis keeps its port: it must not be one the kernel lends clients."""
    from receiver.testing import RedisServer, free_port
    from receiver.testing.servers import _ephemeral_ports_from

    ports = {free_port() for _ in range(50)}
    assert all(10000 <= port < _ephemeral_ports_from() for port in ports)
    assert len(ports) > 40  # random, not the same few ports every time

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        server.stop()
        server.start()  # the outage tests' restart, on the same port
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()


def test_the_group_writer_s_held_connection_recovers_and_is_never_reused_after_a_failure(
    redis_url: str,
) -> None:
    """``scripts.Held``: a connection the server closed is opened again; one whose call
    failed is dropped, so no half-read reply is taken for the next call's."""
    from receiver.app import connect
    from receiver.queue import scripts

    client = connect(redis_url, 5.0)  # the receiver's client: one quick retry
    held = scripts.Held(client)
    source = "return redis.call('INCR', KEYS[1])"
    assert scripts.run(client, source, ["held-counter"], [], held=held) == 1
    first = held.connection()
    first.send_command("CLIENT", "ID")
    assert client.client_kill_filter(_id=first.read_response()) == 1
    assert scripts.run(client, source, ["held-counter"], [], held=held) == 2  # reconnected
    assert held.connection() is first
    refusing = "if ARGV[1] == 'no' then return redis.error_reply('no') end return 0"
    assert scripts.run(client, refusing, [], ["yes"], held=held) == 0  # loaded (NOSCRIPT)
    with pytest.raises(redis.ResponseError):
        scripts.run(client, refusing, [], ["no"], held=held)
    assert first._sock is None  # dropped after the failed call
    assert scripts.run(client, source, ["held-counter"], [], held=held) == 3
    assert client.get("held-counter") == b"3"


def test_drainer_ids_differ_in_a_forked_child() -> None:
    """``random`` seeds itself again in a child: two workers never draw the same ids."""
    from receiver.queue.handoff import uuid4_hex

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, to the parent
        os.write(write, uuid4_hex().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert len(theirs) == 32 and theirs != uuid4_hex()


def test_the_held_connection_times_out_on_a_slow_redis_and_recovers(redis_url: str) -> None:
    """``scripts.Held`` with the kernel's socket timeouts: a Redis slower than the client's
    timeout gives redis-py's ``TimeoutError`` (the web side then spools), the connection is
    dropped, and the next call, once Redis answers again, goes through."""
    from receiver.app import connect
    from receiver.queue import scripts

    client = connect(redis_url, 0.2)
    held = scripts.Held(client)
    source = "return redis.call('INCR', KEYS[1])"
    assert scripts.run(client, source, ["held-slow"], [], held=held) == 1
    assert held.connection()._sock.gettimeout() is None  # the kernel's timeouts now
    other = redis.Redis.from_url(redis_url)
    other.client_pause(1000)
    try:
        with pytest.raises(redis.TimeoutError):
            scripts.run(client, source, ["held-slow"], [], held=held)
        assert held.connection()._sock is None
    finally:
        other.client_unpause()
    assert scripts.run(client, source, ["held-slow"], [], held=held) >= 2  # a timed-out
    # call may still have run once Redis went on: what the per-item dedupe is for


def test_the_held_connection_reads_past_a_resp3_push_message(redis_url: str) -> None:
    """A push message (RESP3: here a client-tracking invalidation) that arrives before a
    reply goes to redis-py's handler, and the call still returns its own reply."""
    from receiver.app import connect
    from receiver.queue import scripts

    client = connect(redis_url, 5.0)
    held = scripts.Held(client)
    source = "return redis.call('INCR', KEYS[1])"
    assert scripts.run(client, source, ["held-pushed"], [], held=held) == 1
    conn = held.connection()
    if str(conn.protocol) != "3":
        pytest.skip("redis-py speaks RESP2 here: no push messages")
    conn.send_command("CLIENT", "TRACKING", "ON")
    assert conn.read_response() in (b"OK", "OK")
    conn.send_command("GET", "held-tracked")
    conn.read_response()  # tracked now: a change elsewhere sends this connection a push
    redis.Redis.from_url(redis_url).set("held-tracked", "changed")
    pushes: list[object] = []
    after_push = scripts._Direct._after_push

    def spy(direct: scripts._Direct, push: object) -> object:
        pushes.append(push)
        return after_push(direct, push)

    with mock.patch.object(scripts._Direct, "_after_push", spy):
        assert scripts.run(client, source, ["held-pushed"], [], held=held) == 2
    assert len(pushes) == 1
    assert scripts.run(client, source, ["held-pushed"], [], held=held) == 3
    assert held._io is not None and held._io.sock is conn._sock  # the direct path, kept


def test_a_connection_class_with_its_own_read_response_keeps_redis_py_s_path(
    redis_url: str,
) -> None:
    """Sentinel's connections turn a demoted master's READONLY into a retried
    ``ConnectionError`` in their ``read_response``: the held connection's direct path
    is not taken for such a class."""
    from redis.sentinel import SentinelManagedConnection

    from receiver.queue import scripts

    assert "read_response" in vars(SentinelManagedConnection)

    class OwnRead(redis.connection.Connection):
        def read_response(self, *args: object, **kwargs: object) -> object:
            return super().read_response(*args, **kwargs)

    client = redis.Redis.from_url(redis_url, connection_class=OwnRead)
    held = scripts.Held(client)
    source = "return redis.call('INCR', KEYS[1])"
    assert scripts.run(client, source, ["held-own"], [], held=held) == 1
    assert scripts.run(client, source, ["held-own"], [], held=held) == 2
    assert held._io is None
