"""Answer Workplace link previews for URLs matching a pattern.

``link.preview`` is a synchronous topic: what the handler returns is the
HTTP response body. Set ``LINK_PREVIEW_PATTERN`` (a regular expression) to
the URLs your system owns; other links get no answer from this handler.
"""

import os
import re
from typing import Any
from urllib.parse import urlsplit

from receiver import Event, on

PATTERN = re.compile(os.environ.get("LINK_PREVIEW_PATTERN", r"^https://[^/]+\.example\.com/"))


def _title(link: str) -> str:
    slug = urlsplit(link).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(link).netloc
    return slug.replace("-", " ").replace("_", " ").capitalize()


@on("link.preview")
def preview(event: Event) -> dict[str, Any] | None:
    link = event.value.get("link") if isinstance(event.value, dict) else None
    if not isinstance(link, str) or not PATTERN.search(link):
        return None
    return {
        "data": [
            {"link": link, "title": _title(link), "privacy": "ORGANIZATION", "type": "DOCUMENT"}
        ],
        "linked_user": True,
    }
