"""The model: what a delivery is made of, as plain data. No I/O, no settings.

- ``events``       ``Event``, one routed item (``topic.field``) that survives JSON
- ``envelope``     a verified body in, its ``Event`` list out
- ``shapes``       where Meta puts the same facts in each payload shape
- ``replay_mark``  the header that marks a replayed delivery, and cannot be forged

Layer: the lowest but ``receiver.errors`` (``.importlinter`` holds the map);
imports nothing else of the package. Internal: handlers use ``receiver.Event``.
"""
