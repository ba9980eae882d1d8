"""receiver: the callback URL for Workplace from Meta and Graph API webhooks."""

from . import filters
from .app import build_core, create_app
from .core import Core, Request, Result
from .errors import (
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
from .events import Event
from .routing import Handler, Router, connect, default_router, on

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
