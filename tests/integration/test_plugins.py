"""Handler modules named in config and installed entry points load at start-up."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver import PluginError, Router, create_app
from receiver.routing.handlers import default_router
from tests.conftest import base_config, envelope, signed


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
    # the module's decorator and the hook both register on the router being built
    assert {"group.comments", "user.*"} <= patterns
    assert not any(h.pattern == "user.*" for h in default_router.handlers())


def test_modules_register_on_the_router_being_built(plugin_dir: Path, redis_url: str) -> None:
    """First import, a module already imported, and the default app: each app gets the handlers."""
    write(
        plugin_dir,
        "plug_c",
        """
        from receiver import on
        seen = []
        @on("group.posts", verb="add")
        def c(event):
            seen.append(event.value["post_id"])
    """,
    )
    config = base_config(redis_url=redis_url, handlers=["plug_c"])
    first, second = Router(), Router()
    apps = [create_app(config, router=first), create_app(config, router=second)]
    # loading for an app of its own leaves the default router alone
    assert not [h for h in default_router.handlers() if h.func.__module__ == "plug_c"]
    default_app = create_app(config)
    # the default router may hold earlier tests' handlers too: only ours matters here
    assert "plug_c:c@group.posts" in [h.id for h in default_router.handlers()]
    import plug_c  # type: ignore[import-not-found]

    for n, app in enumerate(apps):
        assert [h.id for h in app.extensions["receiver"].router.handlers()] == [
            "plug_c:c@group.posts"
        ]
        body = envelope("group", {"field": "posts", "value": {"verb": "add", "post_id": n}})
        answer = app.test_client().post("/webhook", data=body, headers=signed(body))
        assert answer.status_code == 200, answer.get_data(as_text=True)
    assert plug_c.seen == [0, 1]
    assert default_app.extensions["receiver"].router is default_router
