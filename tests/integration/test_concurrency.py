"""An inline async handler answers a sync topic, through the app on a real Redis.

The tests of a real ``receiver worker`` running handlers concurrently are in
``tests/system/test_concurrency.py``.
"""

from __future__ import annotations

from typing import Any

from receiver import Event, Router, create_app
from tests.conftest import base_config, envelope, signed

# -- inline async handlers, options, settings ------------------------------------------------


def test_inline_async_handler_answers_a_sync_topic(redis_url: str) -> None:
    router = Router()

    async def preview(event: Event) -> dict[str, Any]:
        return {"data": [{"link": event.value["link"], "title": "async"}]}

    router.connect("link.preview", preview)
    app = create_app(base_config(redis_url=redis_url), router=router)
    body = envelope("link", {"field": "preview", "value": {"link": "https://x.example/a"}})
    answer = app.test_client().post("/webhook", data=body, headers=signed(body)).get_json()
    assert answer["data"] == [{"link": "https://x.example/a", "title": "async"}]
