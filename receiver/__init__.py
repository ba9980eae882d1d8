"""receiver: the callback URL for Workplace from Meta and Graph API webhooks.

A handler module's ``from receiver import on, Event, filters`` loads the
routing layer only: the app, the core and with them Flask, Redis, RQ and
prometheus_client are imported on first use of their names (PEP 562), as
Flask's ``__init__`` imports no extension.
"""

import importlib as _importlib
import typing as _typing

from receiver import filters
from receiver.errors import (
    ConfigError,
    GraphAuthError,
    GraphBadId,
    GraphError,
    GraphRequestError,
    GraphThrottled,
    GraphUnavailable,
    HandlerFailed,
    HandshakeRejected,
    PayloadRejected,
    PluginError,
    QueueUnavailable,
    ReceiverError,
    Rejected,
    ReplayError,
    SignatureRejected,
    TargetRejected,
)
from receiver.model.events import Event
from receiver.routing.handlers import Handler, Router, connect, default_router, on

if _typing.TYPE_CHECKING:
    from receiver.app import build_core, create_app
    from receiver.core.handling import Core, Request, Result

_LAZY = {
    "build_core": "app",
    "create_app": "app",
    "Core": "core.handling",
    "Request": "core.handling",
    "Result": "core.handling",
}
"""Public names whose modules are heavy: imported when first asked for."""


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ConfigError",
    "Core",
    "Event",
    "GraphAuthError",
    "GraphBadId",
    "GraphError",
    "GraphRequestError",
    "GraphThrottled",
    "GraphUnavailable",
    "Handler",
    "HandlerFailed",
    "HandshakeRejected",
    "PayloadRejected",
    "PluginError",
    "QueueUnavailable",
    "ReceiverError",
    "Rejected",
    "ReplayError",
    "Request",
    "Result",
    "Router",
    "SignatureRejected",
    "TargetRejected",
    "build_core",
    "connect",
    "create_app",
    "default_router",
    "filters",
    "on",
]
