"""Every corpus body (real deliveries other projects published), signed and posted.

``tests/corpus/`` is a copy of the shared corpus (its ``SOURCES.md`` says where
each body came from). The table holds what a catch-all handler must see per
file: event names, their count, and per event the time and the accessors;
``FRAGMENT__*`` pieces of deliveries get their clean 4xx instead.
"""

# ruff: noqa: E501  (the table keeps one event per line; ids and texts are long)

from __future__ import annotations

import json

from flask.testing import FlaskClient

from tests.conftest import drain_worker, signed
from tests.integration.test_corpus import RETRY
from tests.plugins.recording import calls
from tests.unit.test_corpus import CORPUS

drain = drain_worker


def test_instagram_retry_runs_background_handler_once(
    recording_client: FlaskClient, worker_env: dict[str, str]
) -> None:
    for name in RETRY:
        body = (CORPUS / name).read_bytes()
        response = recording_client.post("/webhook", data=body, headers=signed(body))
        assert response.get_json()["queued"] == 1
    drain(worker_env)
    assert [c[1] for c in calls(worker_env["RECORDING_DB"])] == ["instagram.messaging_seen"]


def test_whatsapp_batch_runs_background_handler_once_per_item(
    recording_client: FlaskClient, worker_env: dict[str, str]
) -> None:
    """A message and two statuses batched in one value, as Meta may send them: three events."""
    text = json.loads((CORPUS / "pywa__message_text.json").read_bytes())
    value = text["entry"][0]["changes"][0]["value"]
    for name in ("pywa__message_status_sent.json", "pywa__message_status_read.json"):
        other = json.loads((CORPUS / name).read_bytes())["entry"][0]["changes"][0]["value"]
        value.setdefault("statuses", []).extend(other["statuses"])
    body = json.dumps(text).encode()
    for _ in range(2):  # the second post is a redelivery: nothing runs twice
        response = recording_client.post("/webhook", data=body, headers=signed(body))
        assert response.get_json()["events"] == 3
    drain(worker_env)
    recorded = calls(worker_env["RECORDING_DB"])
    assert [c[1] for c in recorded] == ["whatsapp_business_account.messages"] * 3
    assert len({c[0] for c in recorded}) == 3
