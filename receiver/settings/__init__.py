"""Settings: defaults, then a TOML file, then the environment; and the process's active ones.

- ``defaults``  every default in one place
- ``config``    the ``Settings`` model, loading and validation
- ``active``    the settings of the app or worker in this process (set by ``receiver.app``)

Layer: above the model and ``receiver.filters``; imports nothing higher. Internal.
"""
