"""The public surface is exactly what ``receiver/__init__.py`` exports."""

import receiver


def test_exported_members() -> None:
    public = {name for name in dir(receiver) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(receiver, name)).__name__ == "module"}
    assert public - modules == set(receiver.__all__) - {"filters"}


def test_contract_names() -> None:
    for name in ("create_app", "on", "Event"):
        assert name in receiver.__all__


def test_a_handler_module_imports_no_heavy_library() -> None:
    """``from receiver import on`` is what every handler module runs: milliseconds, not the
    web and queue stacks (measured with ``python -X importtime``)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from receiver import Event, filters, on\n"
        "heavy = ('rq', 'redis', 'prometheus_client', 'gevent', 'httpx', 'flask')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert loaded == ""


def test_lazy_names_resolve_to_the_real_objects() -> None:
    from receiver.app import create_app
    from receiver.core.handling import Core

    assert receiver.create_app is create_app and receiver.Core is Core
