"""Calling the Graph API back from handlers (public): one client per integration.

``from receiver import graph`` then ``graph.client(event.integration)`` or
``graph.async_client(...)``. Layer: above the core, beside the queue; imports
the settings, the core's signing (``appsecret_proof``) and the log masking.

- ``calls``          the clients, their configuration, and the per-process cache
- ``ratelimit``      when a call is retried and how long to wait (no I/O)
- ``subscriptions``  the app's webhook subscriptions (``receiver subscribe``)
"""

from receiver.graph.calls import (
    AsyncGraphClient,
    GraphClient,
    GraphConfig,
    async_client,
    client,
    close_all,
    config_for,
    configured,
    graph_id,
)

__all__ = [
    "AsyncGraphClient",
    "GraphClient",
    "GraphConfig",
    "async_client",
    "client",
    "close_all",
    "config_for",
    "configured",
    "graph_id",
]
