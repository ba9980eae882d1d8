"""The web side: WSGI in, the core, WSGI out; and Flask for everything else.

- ``callback``   the callback paths, answered before Flask: adapter only
- ``endpoints``  health, readiness, metrics and JSON answers for other paths
- ``health``     can this process take deliveries and keep its promise?
- ``deadline``   a total deadline on reading a request body

Layer: beside the worker and the dashboard; imports the queue side and below.
Internal: ``receiver.create_app()`` is the public way in.
"""
