"""The capture journal: every delivery of a capturing integration, lossless, secrets kept out."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

from receiver.core.handling import Headers, Request, Result
from receiver.observe.capture import CaptureJournal, capture_files, read_captures, record_body


def test_non_utf8_body_kept_losslessly(tmp_path: Path) -> None:
    journal = CaptureJournal(tmp_path)
    raw = b'{"object":"\xff\xfe"}'
    journal.record(
        Request("POST", raw, Headers({})),
        Result(400, b"{}", error="invalid_encoding"),
        datetime.now(UTC),
    )
    [(_, record)] = list(read_captures(capture_files(tmp_path)))
    assert base64.b64decode(record["body_b64"]) == raw and record_body(record) == raw


def test_rotation_by_size_and_day(tmp_path: Path) -> None:
    journal = CaptureJournal(tmp_path, max_bytes=2000)
    request = Request("POST", b"x" * 600, Headers({}))
    for _ in range(6):
        journal.record(request, Result(200, b"{}"), datetime(2026, 11, 27, tzinfo=UTC))
    journal.record(request, Result(200, b"{}"), datetime(2026, 11, 28, tzinfo=UTC))
    names = [p.name for p in capture_files(tmp_path)]
    assert len([n for n in names if "-20261127-" in n]) >= 3
    assert len([n for n in names if "-20261128-" in n]) == 1
    assert all(p.stat().st_size <= 2000 for p in capture_files(tmp_path))
    assert len(list(read_captures(capture_files(tmp_path)))) == 7
