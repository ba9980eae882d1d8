"""Running it: gunicorn's configuration and hooks, and ``receiver check``.

- ``gunicorn_config``  the Procfile's ``--config python:receiver.deploy.gunicorn_config``
- ``gunicorn_hooks``   start-up checks in gunicorn's master, metrics across workers
- ``checks``           what ``receiver check`` asks of Redis
- ``gunicorn_logging`` gunicorn's own logs, held to the receiver's rules

Layer: above the app, below the CLI. Internal (the Procfile names the module).
"""
