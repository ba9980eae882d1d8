"""Replay: in-process and over HTTP to a second receiver, marked, reported and compared."""

from __future__ import annotations

from pathlib import Path

from receiver import Event
from receiver.replay import Replayed, compare, load, report
from tests.conftest import PAYLOADS


def test_sources_plain_payloads_and_skips(tmp_path: Path) -> None:
    found, skipped = load([PAYLOADS])
    assert len(found) == 7
    assert any("response" in note for note in skipped)
    assert {d.topic for d in found} >= {"group", "page", "link", "user", "workplace_security"}


def test_compare_spots_changed_outcomes() -> None:
    a = report(
        "in-process",
        [Replayed("k", "s", 200, [["group.posts", "1"]], [["h", "1", True, "inline"]])],
    )
    b = report(
        "in-process",
        [Replayed("k", "s", 200, [["group.posts", "1"]], [["h", "1", False, "inline"]])],
    )
    assert compare(a, a) == []
    assert compare(a, b) == ["k: handler outcomes [('h', '1', True)] → [('h', '1', False)]"]
    c = report("in-process", [Replayed("k", "s", 403, [], [])])
    assert "k: status 200 → 403" in compare(a, c)


def test_in_process_replay_of_events_keeps_ids(tmp_path: Path) -> None:
    found, _ = load([PAYLOADS / "group__comments__add.json"])
    from receiver.model.envelope import parse

    [event] = parse(found[0].body, delivery_id="x", integration="default", max_depth=64)
    assert isinstance(event, Event) and event.id == "c590b0ab8a80107da514b1c8e7b21510"
