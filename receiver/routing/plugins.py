"""Load handler modules: those the config names, then installed entry points.

A handler module is a plain module whose import registers handlers with
``@receiver.on``; an entry point may also name a callable taking the router.
Modules register on the router being built: imported here for the first
time, inside ``routing.loading``; imported before, their recorded
registrations are replayed onto it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points

from receiver.errors import PluginError
from receiver.routing.handlers import Router, loading, register_recorded
from receiver.settings import defaults

log = logging.getLogger("receiver.plugins")


def load_plugins(
    names: Iterable[str], router: Router, *, entry_point_group: str | None = None
) -> list[str]:
    """Import every named module and entry point; stop with a clear error on the first failure."""
    cwd = os.getcwd()
    if cwd not in sys.path:  # like `flask run`: modules next to the config are importable
        sys.path.insert(0, cwd)
    loaded: list[str] = []
    for name in names:
        _import(name, "it is listed in handlers / RECEIVER_HANDLERS", router)
        loaded.append(name)
    group = entry_point_group or defaults.ENTRY_POINT_GROUP
    for point in entry_points(group=group):
        try:
            with loading(router):
                target = point.load()
            register_recorded(point.module, router)
        except Exception as exc:
            raise PluginError(
                f"entry point {point.name!r} ({point.value}) in group {group!r} failed to load: "
                f"{type(exc).__name__}: {exc}; fix or uninstall the package that declares it",
                module=point.value,
            ) from exc
        if callable(target):
            target(router)
        loaded.append(point.value)
    return loaded


def _import(name: str, why: str, router: Router) -> None:
    try:
        with loading(router):
            importlib.import_module(name)
        register_recorded(name, router)
    except Exception as exc:
        raise PluginError(
            f"handler module {name!r} could not be imported ({why}): {type(exc).__name__}: {exc}",
            module=name,
        ) from exc
