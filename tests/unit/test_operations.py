"""Operating the receiver: readiness, metrics, JSON logs, traces, stats, signature diagnoses.

The process-level cases run the Procfile's gunicorn (two workers) on a Redis
of their own and stop that Redis to see readiness flip.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from receiver import Event, Router, create_app
from receiver.core.signature import SHA1_HEADER, SHA256_HEADER, diagnose, sign
from receiver.observe import outcomes
from tests.conftest import SECRET, base_config, payload, signed

# --- why a signature failed --------------------------------------------------------------------

BODY = b'{"object":"group","entry":[{"id":"1","changes":[{"field":"posts","value":{"link":"https:\\/\\/x.example\\/\\u00e9"}}]}]}'  # noqa: E501


@pytest.mark.parametrize(
    ("received", "headers", "code", "reason"),
    [
        (BODY, {}, "missing_signature", "missing"),
        (BODY, {SHA1_HEADER: sign(BODY, SECRET, "sha1")}, "sha1_not_accepted", "sha1_not_accepted"),
        (BODY, {SHA256_HEADER: "sha256=zz"}, "malformed_signature", "malformed"),
        (
            BODY,
            {SHA256_HEADER: f"{sign(BODY, 'other')}, {sign(BODY, SECRET)}"},
            "malformed_signature",
            "header_mangled",
        ),
        (BODY, {SHA256_HEADER: f'"{sign(BODY, SECRET)}"'}, "malformed_signature", "header_mangled"),
        # A proxy re-encoded the JSON: unescaped slashes and unicode, spaces after separators.
        (
            json.dumps(json.loads(BODY), ensure_ascii=False).encode(),
            {SHA256_HEADER: sign(BODY, SECRET)},
            "bad_signature",
            "body_reencoded",
        ),
        (BODY + b"\n", {SHA256_HEADER: sign(BODY, SECRET)}, "bad_signature", "body_reencoded"),
        (
            BODY,
            {SHA256_HEADER: sign(BODY, "rotated"), SHA1_HEADER: sign(BODY, SECRET, "sha1")},
            "bad_signature",
            "sha1_only",
        ),
        (BODY, {SHA256_HEADER: sign(BODY, "forged")}, "bad_signature", "no_secret_matches"),
    ],
)
def test_signature_failures_say_why(
    received: bytes, headers: dict[str, str], code: str, reason: str
) -> None:
    assert diagnose(headers, received, [SECRET], code) == reason


def test_metrics_are_off_unless_a_token_is_set(router: Router) -> None:
    app = create_app(base_config(), router=router)
    assert app.test_client().get("/metrics").status_code == 404


def test_event_names_and_handler_outcomes_count_in_process(router: Router) -> None:
    seen: list[Event] = []
    router.connect("*", seen.append)
    app = create_app(base_config(metrics_token="t"), router=router)
    body = payload("group__comments__add.json")
    app.test_client().post("/webhook", data=body, headers=signed(body))
    text = app.test_client().get("/metrics", headers={"Authorization": "Bearer t"}).text
    assert 'receiver_events_total{integration="default",name="group.comments"}' in text
    assert seen


# --- the worker's side: attempts traced, logged and counted -----------------------------------


def test_a_failed_attempt_is_logged_at_the_warning_level_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Operators running at WARNING saw "retry ..." without the error that caused it."""
    caplog.set_level(logging.WARNING, logger="receiver.worker")
    event = Event("group", "posts", {}, "e1", "d1", "hr-bot")
    outcomes.attempt_ended(event, "mod:ok", 1, None, 0.01)
    outcomes.attempt_ended(event, "mod:flaky", 1, "Traceback...\nValueError: boom", 0.01)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "handler='mod:flaky'" in record.getMessage()
    assert "ValueError: boom" in record.getMessage()


# --- gevent workers take turns -----------------------------------------------------------------


def test_take_turns_yields_only_when_the_hub_has_not_polled_since_the_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer after a wait (the hub polled: others ran) needs no extra turn; two in a row do."""
    import gevent

    from receiver.deploy import gunicorn_hooks

    gevent.sleep(0.001)  # a poll: whatever was ready has run
    yields: list[float] = []
    real_sleep = gevent.sleep
    monkeypatch.setattr(gevent, "sleep", lambda seconds=0: yields.append(seconds))
    gunicorn_hooks.take_turns(None, None, None, None)
    assert yields == []  # the hub polled since the previous answer
    gunicorn_hooks.take_turns(None, None, None, None)
    assert yields == [0]  # served again without the hub running: a turn for the others
    real_sleep(0.001)
    gunicorn_hooks.take_turns(None, None, None, None)
    assert yields == [0]


# --- the trace writer's turns ------------------------------------------------------------------


def test_a_trace_flush_writes_what_was_queued_in_one_pipeline_not_what_arrives_meanwhile() -> None:
    """Records queued during the round trip wait for the next turn: with gthread, writing
    them at once meant a pipeline (and its Redis commands) for every few requests."""
    from receiver.observe import trace
    from receiver.routing.contracts import Request, Result

    def deliver(writer: trace.TraceWriter) -> None:
        result = Result(status=200, body=b"{}", delivery_id="d", integration="i", received_at=1e9)
        writer(None, Request(method="POST", path="/webhook"), result)

    pipelines: list[list[str]] = []

    class Pipeline:
        def __init__(self) -> None:
            self.commands: list[str] = []
            pipelines.append(self.commands)

        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: self.commands.append(name)

        def execute(self, raise_on_error: bool = True) -> list[None]:
            if len(pipelines) == 1:
                deliver(writer)  # a request answered while Redis answers
            return [None] * len(self.commands)

    class Connection:
        def pipeline(self, transaction: bool = True) -> Pipeline:
            return Pipeline()

    writer = trace.TraceWriter(60, lambda: Connection())  # type: ignore[arg-type,return-value]
    writer._thread = object()  # type: ignore[assignment]  # flushed by hand
    for _ in range(3):
        deliver(writer)
    assert writer.flush() == 3
    assert len(pipelines) == 1
    assert writer.flush() == 1  # the one that arrived meanwhile: on the next turn
    assert len(pipelines) == 2
