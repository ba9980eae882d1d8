"""Multiprocess metrics folded from memory: a scrape, a fork and an exit fold; SIGKILL loses.

A Python process of its own (prometheus_client's multiprocess mode is chosen at its
import) counts deliveries with the timer out of the way (``FOLD_SECONDS`` an hour), so
only the rules under test move counts into the shared files: what the files hold is
read with a bare ``MultiProcessCollector``, which folds nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from receiver import Event
    from receiver.observe import metrics
    from receiver.routing.contracts import HandlerResult, Request, Result

    metrics.FOLD_SECONDS = 3600.0 if sys.argv[1] == "rules" else 0.05

    def deliver(count):
        for _ in range(count):
            result = Result(
                status=200, body=b"", integration="default", seconds=0.25,
                events=[Event("group", "comments", {}, "e", "d", "default")],
                results=[HandlerResult("h", "e", True, None, 0.5)],
            )
            metrics.observe_delivery(None, request=Request(method="POST"), result=result)

    def on_disk():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        found = {}
        for family in registry.collect():
            for s in family.samples:
                found[s.name + repr(sorted(s.labels.items()))] = s.value
        return found

    DELIVERED = "receiver_deliveries_total[('integration', 'default'), ('status', '200')]"
    EVENTS = "receiver_events_total[('integration', 'default'), ('name', 'group.comments')]"
    SUM = "receiver_delivery_duration_seconds_sum[('integration', 'default')]"
    RUNS = "receiver_handler_runs_total[('handler', 'h'), ('mode', 'inline'), ('outcome', 'ok')]"

    def show(label):
        found = on_disk()
        print(label, found.get(DELIVERED, 0.0), found.get(EVENTS, 0.0), found.get(SUM, 0.0),
              found.get(RUNS, 0.0), flush=True)

    if sys.argv[1] == "timer":
        deliver(2)
        import time
        deadline = time.monotonic() + 30
        def folded():  # another thread writes the four one after another
            found = on_disk()
            return [found.get(k) for k in (DELIVERED, EVENTS, SUM, RUNS)] == [2.0, 2.0, 0.5, 2.0]
        while not folded() and time.monotonic() < deadline:
            time.sleep(0.01)
        show("timer")
        sys.exit(0)

    deliver(3)
    show("pending")
    text = generate_latest(metrics.registry_for(metrics.BacklogCollector(
        None, lambda: None, lambda c: [], lambda: (0, 0)
    ))).decode()
    print("scraped", 'receiver_deliveries_total{integration="default",status="200"} 3.0' in text)
    show("after-scrape")
    deliver(2)
    child = os.fork()
    if child == 0:
        show("child-sees")
        deliver(4)
        sys.exit(0)  # a normal exit: atexit folds
    os.waitpid(child, 0)
    show("after-exit")
    killed = os.fork()
    if killed == 0:
        deliver(7)
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(killed, 0)
    show("after-kill")
    """
)


def run(tmp_path: Path, mode: str) -> list[list[str]]:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()]


def test_a_scrape_a_fork_and_an_exit_fold_and_sigkill_loses_the_pending(tmp_path: Path) -> None:
    lines = {line[0]: line[1:] for line in run(tmp_path, "rules")}
    # deliveries, events, seconds summed, inline handler runs (each delivery: 0.25 s, one of each)
    assert lines["pending"] == ["0.0", "0.0", "0.0", "0.0"]  # in memory until something folds
    assert lines["scraped"] == ["True"]  # the scraping process's own counts, at once
    assert lines["after-scrape"] == ["3.0", "3.0", "0.75", "3.0"]
    assert lines["child-sees"] == ["5.0", "5.0", "1.25", "5.0"]  # folded before the fork, once
    assert lines["after-exit"] == ["9.0", "9.0", "2.25", "9.0"]  # the child's, folded at exit
    assert lines["after-kill"] == ["9.0", "9.0", "2.25", "9.0"]  # SIGKILL: its pending are lost


def test_the_timer_folds_within_its_interval(tmp_path: Path) -> None:
    [line] = run(tmp_path, "timer")
    assert line == ["timer", "2.0", "2.0", "0.5", "2.0"]
