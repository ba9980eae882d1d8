"""Wiring in one place: state is handed over, never set into another module from outside."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import receiver
from receiver.queue import keys
from receiver.worker.claims import WorkContext, WorkerControl

PACKAGE = Path(receiver.__file__).parent


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def foreign_assignments(source: str, where: str = "<source>") -> list[str]:
    """``module.name = ...`` (or ``setattr(module, ...)``) where ``module`` is another
    receiver module this source imported: a global set from outside its module."""
    tree = ast.parse(source)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "receiver":
                    modules.add(alias.asname or "receiver")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("receiver"):
            for alias in node.names:
                if _is_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)

    def root(node: ast.expr) -> str | None:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and node.args
        ):
            targets = [ast.Attribute(value=node.args[0], attr="?", ctx=ast.Store())]
            ast.copy_location(targets[0], node)
        for target in targets:
            if isinstance(target, ast.Attribute) and root(target.value) in modules:
                found.append(f"{where}:{node.lineno}: {ast.unparse(target)}")
    return found


def test_no_module_global_is_set_from_outside_its_module() -> None:
    found = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in foreign_assignments(path.read_text(), str(path.relative_to(PACKAGE)))
    ]
    assert found == []


def test_the_check_finds_a_global_set_from_outside() -> None:
    """Not vacuous: what the worker did to the drain loop's globals is caught."""
    source = (
        "from receiver.worker import drain as worker_drain\n"
        "import receiver.worker.claims\n"
        "from receiver.worker.claims import WorkContext\n"
        "worker_drain.keepalive = None\n"
        "receiver.worker.claims._context = None\n"
        "setattr(worker_drain, 'on_restart', None)\n"
        "WorkContext.runner = None\n"  # a class, not a module: not this check's business
    )
    assert [line.split(": ")[1] for line in foreign_assignments(source)] == [
        "worker_drain.keepalive",
        "receiver.worker.claims._context",
        "worker_drain.?",
    ]


def test_each_work_context_has_its_own_stop_and_restart_state() -> None:
    """The worker's stop and restart state lives on what the worker hands its drain jobs."""
    from receiver.routing.handlers import Router
    from receiver.settings.loading import load_settings

    settings = load_settings({"receiver": {"dev_mode": True}})
    one, other = WorkContext(Router(), settings), WorkContext(Router(), settings)
    one.control.stop.set()
    assert not other.control.stop.is_set()
    restarts: list[bool] = []
    control = WorkerControl()
    control.on_restart = lambda: restarts.append(True)
    control.request_restart()
    control.request_restart()  # asked once: the worker is already stopping
    assert control.restart.is_set() and restarts == [True]


def test_every_job_path_an_earlier_version_stored_resolves_to_todays_function() -> None:
    from redis import Redis

    from receiver.worker import drain, retries
    from receiver.worker.process import AliasedJob

    connection = Redis()  # never reached: the job is only built, not saved
    assert keys.RETRY_FUNCTION == "receiver.worker.retries.retry_item"
    assert "receiver.worker.drain.retry_item" in keys.LEGACY_RETRY_FUNCTIONS
    for path, function in [
        *((p, retries.retry_item) for p in (keys.RETRY_FUNCTION, *keys.LEGACY_RETRY_FUNCTIONS)),
        *((p, drain.drain) for p in (keys.DRAIN_FUNCTION, *keys.LEGACY_DRAIN_FUNCTIONS)),
    ]:
        job = AliasedJob.create(path, args=("q",), connection=connection)
        assert job.func is function, path


def test_the_app_hands_the_core_the_dashboards_switches() -> None:
    """Given to the core when the app builds it (the dashboard on), not patched in later;
    a core given any switch check refuses what it says is switched off."""
    from receiver import Router, create_app
    from receiver.admin.switches import Switches
    from receiver.core.handling import Core, Request
    from receiver.settings.loading import load_settings
    from receiver.worker.inline import InlineBackend
    from tests.conftest import PASSWORD, TOKEN, base_config

    config = base_config()
    on = create_app({**config, "receiver": {"admin_password": PASSWORD}}, router=Router())
    assert isinstance(on.extensions["receiver"].switched_off, Switches)
    assert create_app(config, router=Router()).extensions["receiver"].switched_off is None

    settings, router = load_settings(config), Router()
    core = Core(
        settings,
        router,
        InlineBackend(WorkContext(router, settings)),
        switched_off=lambda name: name == "default",
    )
    query = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "c"}
    answer = core.handle(Request("GET", query=query))
    assert (answer.status, answer.error) == (403, "integration_switched_off")
