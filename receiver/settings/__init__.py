"""Settings: defaults, then a TOML file, then the environment; and the process's active ones.

- ``defaults``  every default in one place
- ``model``     ``Settings`` and ``Integration``: the configuration as plain data
- ``loading``   reading the file and the environment into them, and validating
- ``active``    the settings of the app or worker in this process (set by ``receiver.app``)

Layer: above the model and ``receiver.filters``; imports nothing higher. Internal.
"""
