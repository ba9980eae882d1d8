"""The hint `receiver serve` prints, as text (pasted into a new shell: tests/system)."""

from __future__ import annotations

from receiver.cli.serving import banner


def test_hint_without_a_secret_in_development_mode() -> None:
    text = banner("0.0.0.0", 8000, None, show_secret=True)
    assert "http://127.0.0.1:8000/webhook" in text and "development mode" in text
