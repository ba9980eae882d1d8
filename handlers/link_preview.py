"""Answer Workplace link previews from a pluggable document source, per viewer.

``link.preview`` is a synchronous topic: what the handler returns is the
HTTP response body, so the lookup runs inline and must be fast (the answer
is dropped after ``answer_timeout``). The source decides three things:
whether a link is ours at all (others get no answer from this handler),
whether the Workplace user asking has linked an account with us (if not, we
answer ``linked_user: false`` and Workplace offers account linking), and
what that user may see of the document (nothing: an empty answer, so a
title never leaks to someone who may not open it).

Choose the source with ``use(source)`` in code, or ``LINK_PREVIEW_SOURCE``
(``module:attribute``, an object or a zero-argument factory). The default,
``SlugSource``, answers URLs matching ``LINK_PREVIEW_PATTERN`` with a title
made from the URL; ``JsonFileSource`` (``LINK_PREVIEW_DOCUMENTS=path.json``)
shows the shape a real source has.
"""

import importlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from receiver import Event, on


@dataclass(frozen=True)
class Document:
    """What Workplace shows in the preview card."""

    title: str
    description: str | None = None
    type: str = "DOCUMENT"
    privacy: str = "ORGANIZATION"
    icon: str | None = None
    download_url: str | None = None


class DocumentSource(Protocol):
    def owns(self, link: str) -> bool:
        """Is this one of our links (else: no answer, another handler may have one)?"""

    def is_linked(self, user_id: str | None) -> bool:
        """Has this Workplace user linked an account with our system?"""

    def find(self, link: str, user_id: str | None) -> Document | None:
        """The document as this user may see it; ``None`` when unknown or not allowed."""


class SlugSource:
    """Every URL matching ``pattern`` is a document titled after its last path segment."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    def owns(self, link: str) -> bool:
        return bool(self.pattern.search(link))

    def is_linked(self, user_id: str | None) -> bool:
        return True

    def find(self, link: str, user_id: str | None) -> Document | None:
        slug = urlsplit(link).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(link).netloc
        return Document(title=slug.replace("-", " ").replace("_", " ").capitalize())


class JsonFileSource:
    """Documents and their viewers from a JSON file, read once.

    ``{"linked_users": ["2001"], "documents": {"https://...": {"title": "...",
    "description": "...", "viewers": ["2001"]}}}``; a document without
    ``viewers`` is visible to every linked user.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        self.linked = {str(u) for u in data.get("linked_users", [])}
        self.documents: dict[str, dict[str, Any]] = data.get("documents", {})

    def owns(self, link: str) -> bool:
        return link in self.documents

    def is_linked(self, user_id: str | None) -> bool:
        return user_id is not None and user_id in self.linked

    def find(self, link: str, user_id: str | None) -> Document | None:
        entry = dict(self.documents.get(link) or {})
        viewers = entry.pop("viewers", None)
        if not entry or (viewers is not None and user_id not in {str(v) for v in viewers}):
            return None
        return Document(**entry)


def _configured_source() -> DocumentSource:
    named = os.environ.get("LINK_PREVIEW_SOURCE")
    if named:
        module, _, attribute = named.partition(":")
        found = getattr(importlib.import_module(module), attribute or "source")
        is_source = hasattr(found, "find") and not isinstance(found, type)
        return found if is_source else found()  # type: ignore[no-any-return]
    documents = os.environ.get("LINK_PREVIEW_DOCUMENTS")
    if documents:
        return JsonFileSource(documents)
    return SlugSource(os.environ.get("LINK_PREVIEW_PATTERN", r"^https://[^/]+\.example\.com/"))


source: DocumentSource = _configured_source()


def use(new_source: DocumentSource) -> DocumentSource:
    """Answer previews from ``new_source`` from now on; returns the previous source."""
    global source
    previous, source = source, new_source
    return previous


@on("link.preview")
def preview(event: Event) -> dict[str, Any] | None:
    value = event.value if isinstance(event.value, dict) else {}
    link = value.get("link")
    if not isinstance(link, str) or not source.owns(link):
        return None
    user = value.get("user")
    user_id = str(user["id"]) if isinstance(user, dict) and user.get("id") else None
    if not source.is_linked(user_id):
        return {"data": [], "linked_user": False}
    document = source.find(link, user_id)
    if document is None:
        return {"data": [], "linked_user": True}
    item = {k: v for k, v in asdict(document).items() if v is not None}
    return {"data": [{"link": link, **item}], "linked_user": True}
