"""Welcome people who join a group: a background handler, run by ``receiver worker``.

With an access token configured for the integration it calls the Graph API
(``appsecret_proof`` included by ``event.graph``): a comment on the group's
welcome post when ``WELCOME_POST_ID`` names one (an "introduce yourself"
thread), otherwise a new post in the group. Without a token it only logs what
it would have sent. Replays never post. Failures raise, so the worker retries.
"""

import logging
import os
from typing import Any

from receiver import Event, graph, on

log = logging.getLogger("handlers.welcome")

MESSAGE = os.environ.get("WELCOME_MESSAGE", "Welcome to the group, {name}!")
WELCOME_POST_ID = os.environ.get("WELCOME_POST_ID") or None


@on("group.membership", verb="add", background=True)
def welcome_new_member(event: Event) -> dict[str, Any] | None:
    value = event.value if isinstance(event.value, dict) else {}
    member = value.get("member")
    member = member if isinstance(member, dict) else {}
    group_id = event.entry_id
    text = MESSAGE.format(name=member.get("name") or "there")
    if event.replayed or not group_id or not graph.configured(event.integration):
        log.info("would welcome %s in group %s: %r", member.get("id"), group_id, text)
        return None
    if WELCOME_POST_ID:
        return event.graph.comment(WELCOME_POST_ID, text)  # type: ignore[no-any-return]
    return event.graph.post_to_group(group_id, text)  # type: ignore[no-any-return]
