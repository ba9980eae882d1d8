"""The unit tier keeps its promise: its guard fails a test that reaches out of the process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import ELSEWHERE

pytest_plugins = ["pytester"]

REACHING_OUT = """
import socket
import subprocess
import threading


def test_connecting_a_socket():
    with socket.socket() as sock:
        sock.connect(("127.0.0.1", 9))


def test_binding_a_socket():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))


def test_starting_a_process():
    subprocess.run(["true"], check=True)


def test_a_violation_a_library_swallows():
    with socket.socket() as sock:
        try:
            sock.connect(("127.0.0.1", 9))
        except BaseException:
            pass


def test_a_process_started_from_a_thread_of_the_test():
    thread = threading.Thread(target=subprocess.run, args=(["true"],))
    thread.start()
    thread.join()


def test_staying_in_process():
    assert sorted([3, 1, 2]) == [1, 2, 3]
"""


def test_the_guard_fails_a_unit_test_that_opens_a_socket_or_starts_a_process(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_reaching_out=REACHING_OUT)
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-W", "ignore")
    failed = {
        report.nodeid.rpartition("::")[2]: str(report.longrepr)
        for report in recorder.getreports("pytest_runtest_logreport")
        if report.failed
    }
    # Caught on its way (by a library, in a thread), a violation fails the test at teardown.
    assert failed == {
        "test_connecting_a_socket": f"a unit test opens a socket: {ELSEWHERE}",
        "test_binding_a_socket": f"a unit test binds a socket: {ELSEWHERE}",
        "test_starting_a_process": f"a unit test starts a subprocess: {ELSEWHERE}",
        "test_a_violation_a_library_swallows": f"a unit test opens a socket: {ELSEWHERE}",
        "test_a_process_started_from_a_thread_of_the_test": (
            f"a unit test starts a subprocess: {ELSEWHERE}"
        ),
    }
    assert "test_staying_in_process" not in failed
