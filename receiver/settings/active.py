"""What a handler may ask about the process it runs in: the active settings."""

from __future__ import annotations

from receiver.settings.model import Integration, Settings

_settings: Settings | None = None


def activate(settings: Settings) -> None:
    global _settings
    _settings = settings


def settings() -> Settings | None:
    """The settings of the app or worker in this process, once one is built."""
    return _settings


def integration(name: str) -> Integration | None:
    return _settings.integration(name) if _settings is not None else None
