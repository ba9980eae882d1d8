"""Handler modules named in config and installed entry points load at start-up."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver import PluginError, Router, create_app
from receiver.routing import default_router

from .conftest import base_config


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    with default_router.isolated():
        yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_modules_from_config_and_environment(
    plugin_dir: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        plugin_dir,
        "plug_a",
        """
        from receiver import on
        @on("group.posts")
        def a(event): ...
    """,
    )
    write(
        plugin_dir,
        "plug_b",
        """
        from receiver import on
        @on("page.*", background=True)
        def b(event): ...
    """,
    )
    monkeypatch.setenv("RECEIVER_HANDLERS", "plug_b")
    app = create_app(base_config(redis_url=redis_url, handlers=["plug_a"]))
    ids = [h.id for h in app.extensions["receiver"].router.handlers()]
    assert "plug_a:a@group.posts" in ids and "plug_b:b@page.*" in ids


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "could not be imported.*ModuleNotFoundError"),
        ("import does_not_exist_anywhere\n", "could not be imported.*does_not_exist_anywhere"),
        ("from receiver import on\n@on('bad pattern')\ndef f(e): ...\n", "not an event pattern"),
    ],
)
def test_broken_module_stops_start_up(
    plugin_dir: Path, redis_url: str, source: str | None, message: str
) -> None:
    if source is not None:
        write(plugin_dir, "broken_plugin", source)
    with pytest.raises(PluginError, match=message):
        create_app(base_config(redis_url=redis_url, handlers=["broken_plugin"]), router=Router())


def test_entry_point_group(plugin_dir: Path, redis_url: str) -> None:
    write(
        plugin_dir,
        "installed_plugin",
        """
        from receiver import on
        @on("user.*")
        def from_package(event): ...

        def setup(router):
            router.connect("group.comments", from_package)
    """,
    )
    dist = plugin_dir / "installed_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: installed-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[receiver.handlers]\nmodule = installed_plugin\nhook = installed_plugin:setup\n"
    )
    router = Router()
    app = create_app(base_config(redis_url=redis_url), router=router)
    patterns = {h.pattern for h in app.extensions["receiver"].router.handlers()}
    # the module's decorator registers on the default router; the hook on the app's router
    assert "group.comments" in patterns
    assert any(h.pattern == "user.*" for h in default_router.handlers())
