"""The unit tier: in-process tests with no socket, no subprocess and no Redis server.

Every unit test runs under ``no_sockets_or_processes``: a test that connects or binds a
socket, or starts a process, fails with a message saying where it belongs. Threads that
were already running when the test started (an earlier test's trace writer, say) are
left alone; threads the test starts are held to the same rule.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ELSEWHERE = (
    "move it to tests/integration (a Redis server, a local server) "
    "or tests/system (receiver, gunicorn or worker processes, a browser)"
)


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    report: pytest.TestReport = yield
    if call.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def no_sockets_or_processes(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[None]:
    earlier = set(threading.enumerate()) - {threading.current_thread()}
    violations: list[str] = []

    def refusing(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def guard(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() in earlier:
                return original(*args, **kwargs)
            violations.append(what)
            pytest.fail(f"a unit test {what}: {ELSEWHERE}", pytrace=False)

        return guard

    for name in ("connect", "connect_ex"):
        original = getattr(socket.socket, name)
        monkeypatch.setattr(socket.socket, name, refusing("opens a socket", original))
    monkeypatch.setattr(socket.socket, "bind", refusing("binds a socket", socket.socket.bind))
    monkeypatch.setattr(
        subprocess.Popen, "__init__", refusing("starts a subprocess", subprocess.Popen.__init__)
    )
    monkeypatch.setattr(os, "fork", refusing("forks", os.fork))
    yield
    if violations and not request.node.stash.get(CALL_FAILED, False):
        # the failure was caught on its way (by a library, in a thread): fail all the same
        pytest.fail(f"a unit test {violations[0]}: {ELSEWHERE}", pytrace=False)
