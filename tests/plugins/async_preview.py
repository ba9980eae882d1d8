"""An inline ``async def`` handler answering link previews, for the gunicorn (gevent) test.

Kept apart from the other plugins: a test process that imports it would answer
every other test's link previews too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from receiver import Event, on


@on("link.preview")
async def preview(event: Event) -> dict[str, Any]:
    await asyncio.sleep(0.2)  # other deliveries are answered meanwhile
    return {"data": [{"link": event.value["link"], "title": "async preview"}]}
