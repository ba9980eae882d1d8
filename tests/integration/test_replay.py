"""Replay: in-process and over HTTP to a second receiver, marked, reported and compared."""

from __future__ import annotations

from flask.testing import FlaskClient

from receiver import Router
from receiver.model import replay_mark
from tests.conftest import SECRET, payload, signed


def test_replay_marker_is_read_and_cannot_be_forged(router: Router, client: FlaskClient) -> None:
    flags: list[bool] = []
    router.connect("*", lambda e: flags.append(e.replayed))
    body = payload("group__posts__status_add.json")
    genuine = replay_mark.token(replay_mark.key_for(SECRET))
    forged = replay_mark.token(replay_mark.key_for("someone-else"))
    for extra in ({}, {replay_mark.HEADER: genuine}, {replay_mark.HEADER: forged}):
        assert client.post("/webhook", data=body, headers=signed(body, **extra)).status_code == 200
    assert flags == [False, True, False]
