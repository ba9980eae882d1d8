"""The pytest plugin itself, run in a fresh project with pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HANDLERS = """
from receiver import on

seen = []

@on("page.messages")
def echo(event):
    seen.append(("inline", event.value["message"]["text"]))

@on("group.posts", background=True)
def archive(event):
    import os
    with open(os.environ["ARCHIVE"], "a") as fh:
        fh.write(event.value["message"] + "\\n")

@on("group.comments", background=True, retry=0)
def refuse(event):
    raise ValueError("comments are closed")

@on("group.comments", background=True)
def flaky(event):
    raise KeyError("not yet")

@on("workplace_security.*", verb=None)
def alarm(event):
    if event.value.get("event") == "BROKEN":
        raise RuntimeError("alarm failed")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(my_handlers=HANDLERS)
    pytester.makeini("[pytest]\nreceiver_handlers = my_handlers\n")
    return pytester


def test_inline_mode_in_a_few_lines(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_mine="""
from receiver import testing
import my_handlers

def test_message(receiver_client, receiver_recorder):
    response = receiver_client.deliver(testing.page_message(text="ping"))
    assert response.status_code == 200
    assert my_handlers.seen[-1] == ("inline", "ping")
    assert receiver_recorder.names == ["page.messages"]

def test_background_runs_inline(receiver_client, receiver_recorder, tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE", str(tmp_path / "archive"))
    receiver_client.deliver(testing.group_post(message="kept"))
    assert (tmp_path / "archive").read_text() == "kept\\n"
    assert receiver_recorder.calls(my_handlers.archive)[0].ok

def test_failures_are_recorded(receiver_client, receiver_recorder):
    assert receiver_client.deliver(testing.security_event(event="BROKEN")).status_code == 200
    [call] = receiver_recorder.calls("alarm")
    assert not call.ok and call.error == "RuntimeError: alarm failed"

def test_unsigned_is_refused(receiver_app):
    assert receiver_app.test_client().post("/webhook", json=testing.group_post()).status_code == 401

def test_payload_folder(receiver_payloads, tmp_path):
    (tmp_path / "a.json").write_text("{}")
    assert receiver_payloads(tmp_path) == {"a.json": b"{}"}

def test_missing_or_empty_payload_folder_raises(receiver_payloads, tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError, match="does not exist; fix the path"):
        receiver_payloads("tests/payloadz")
    with pytest.raises(FileNotFoundError, match="holds no \\*.json files"):
        receiver_payloads(tmp_path)
"""
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


@pytest.mark.redis  # the project's run starts a Redis of its own
def test_worker_mode_uses_real_redis_and_worker(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_worker="""
import pytest
from receiver import testing

@pytest.fixture
def receiver_background():
    return "worker"

def test_archived_by_a_worker(receiver_client, receiver_recorder, tmp_path, monkeypatch):
    import my_handlers
    monkeypatch.setenv("ARCHIVE", str(tmp_path / "archive"))
    response = receiver_client.deliver(testing.group_post(message="by worker"))
    assert response.get_json()["queued"] == 1
    assert (tmp_path / "archive").read_text() == "by worker\\n"
    [call] = receiver_recorder.calls(my_handlers.archive)
    assert call.ok and call.event_id == receiver_recorder.events[0].id
    receiver_client.deliver(testing.group_post(message="by worker"))  # Meta redelivers
    assert len(receiver_recorder.calls(my_handlers.archive)) == 1  # skipped by the worker
    assert (tmp_path / "archive").read_text() == "by worker\\n"

def test_worker_failure_is_recorded(receiver_client, receiver_recorder):
    receiver_client.deliver(testing.group_comment())
    [call] = receiver_recorder.calls("refuse")
    assert not call.ok and call.error == "ValueError: comments are closed"
    [retried] = receiver_recorder.calls("flaky")  # retries left: a burst worker does not wait
    assert not retried.ok and retried.error == "retry scheduled"
"""
    )
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
