"""The core: one request in, one result out. No Flask, no RQ, no Redis client.

- ``handling``   ``Core``: verify, parse, route, run inline handlers, hand off the rest
- ``signature``  Meta's HMAC signatures and ``appsecret_proof``
- ``network``    allowed networks and Meta's client certificate
- ``runner``     run handler calls concurrently, each under a time limit

Layer: above observe; the web adapter, the worker and replay all call it, so
they share one path. Internal: ``receiver.Core`` is the public name.
"""
