"""Accessors and the filters on them, through the factories a handler author tests with."""

from __future__ import annotations

from receiver import Event, Router


def test_kind_and_sender_id_are_accepted_keywords() -> None:
    router = Router()

    @router.on("whatsapp_business_account.messages", kind=["message"], sender_id="1")
    def handler(event: Event) -> None: ...

    [registered] = router.handlers()
    assert registered.filter is not None
    assert "kind in ['message']" in registered.filter.description
