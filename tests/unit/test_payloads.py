"""Every sample delivery has its expected event (posting them is in tests/integration)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.conftest import PAYLOADS

EXPECTED = {
    "group__comments__add.json": (
        "group.comments",
        "add",
        datetime(2018, 1, 16, 3, 3, 13, tzinfo=UTC),  # the comment's created_time
        "483499012017824",
    ),
    "group__posts__status_add.json": (
        "group.posts",
        "add",
        datetime(2018, 1, 16, 2, 59, 58, tzinfo=UTC),
        "483499012017824",
    ),
    "link__preview__request_RECONSTRUCTED.json": (
        "link.preview",
        None,
        datetime(2017, 7, 31, 15, 31, 37, 793000, tzinfo=UTC),
        None,
    ),
    "page__messages__text_workplace_bot.json": (
        "page.messages",
        None,
        datetime(1970, 1, 1, 0, 2, 3, tzinfo=UTC),
        "entry_id",
    ),
    "page__messaging_postbacks__button_workplace_bot.json": (
        "page.messaging_postbacks",
        None,
        datetime(1970, 1, 1, 0, 2, 3, tzinfo=UTC),
        "entry_id",
    ),
    "user__photos__update_graphapi_doc_example.json": (
        "user.photos",
        "update",
        datetime(2018, 3, 7, 0, 46, 11, tzinfo=UTC),
        "10210299214172187",
    ),
    "workplace_security__admin_activity__admin_deactivate_account_RECONSTRUCTED.json": (
        "workplace_security.admin_activity",
        None,
        datetime(2021, 3, 29, 12, 0, 20, tzinfo=UTC),
        "100000000000001",
    ),
}


def test_every_sample_is_covered() -> None:
    requests = {p.name for p in PAYLOADS.glob("*.json") if "__response_" not in p.name}
    assert requests == set(EXPECTED)
