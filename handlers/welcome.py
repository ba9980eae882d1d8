"""Welcome people who join a group: a background handler, run by ``receiver worker``.

With an access token configured for the integration, it posts the welcome
through the Graph API (with ``appsecret_proof``); without one it only logs
what it would have sent. Replays never post.
"""

import logging
import os
from typing import Any

from receiver import Event, on
from receiver.graph import GraphClient
from receiver.runtime import integration

log = logging.getLogger("handlers.welcome")

MESSAGE = os.environ.get("WELCOME_MESSAGE", "Welcome to the group, {name}!")


@on("group.membership", verb="add", background=True)
def welcome_new_member(event: Event) -> dict[str, Any] | None:
    value = event.value if isinstance(event.value, dict) else {}
    member = value.get("member") or {}
    group_id = event.entry_id
    text = MESSAGE.format(name=member.get("name") or "there")
    target = integration(event.integration)
    if event.replayed or target is None or not target.access_token or not group_id:
        log.info("would welcome %s in group %s: %r", member.get("id"), group_id, text)
        return None
    return GraphClient(target).post(f"{group_id}/feed", {"message": text})  # type: ignore[no-any-return]
