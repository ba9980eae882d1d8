"""Routing: handlers, the router that finds them, and the types the layers exchange.

- ``handlers``   ``Handler``, ``Router``, ``@on``: which functions an event reaches
- ``plugins``    load the handler modules the settings name, then entry points
- ``signals``    the receiver's blinker signals
- ``contracts``  requests, results, work and the ``Backend`` protocol: the core
                 and the queue side name them without importing each other

Layer: above the settings; the public face (``from receiver import on``) stops
here, so nothing below imports Flask, Redis, RQ, httpx or prometheus_client.
Internal: handlers use ``receiver.on`` and ``receiver.Router``.
"""
