"""The public surface is exactly what ``receiver/__init__.py`` exports."""

import receiver


def test_exported_members() -> None:
    public = {name for name in dir(receiver) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(receiver, name)).__name__ == "module"}
    assert public - modules == set(receiver.__all__) - {"filters"}


def test_contract_names() -> None:
    for name in ("create_app", "on", "Event"):
        assert name in receiver.__all__


def test_lazy_names_resolve_to_the_real_objects() -> None:
    from receiver.app import create_app
    from receiver.core.handling import Core

    assert receiver.create_app is create_app and receiver.Core is Core
