"""Acknowledge a bot's mentions: a reply under the post or comment that mentions it.

``page.mention`` arrives when someone @mentions the bot in a group post or
comment; the value names the ``post_id`` and, for a comment, the
``comment_id``. A background handler, so the reply never slows the webhook's
answer; replays and integrations without an access token only log.
"""

import logging
import os

from receiver import Event, graph, on

log = logging.getLogger("handlers.mention_ack")

MESSAGE = os.environ.get("MENTION_REPLY", "Thanks for the mention, I'm on it.")


@on("page.mention", verb="add", background=True)
def acknowledge_mention(event: Event) -> str | None:
    value = event.value if isinstance(event.value, dict) else {}
    # Reply in the thread: under the comment when the mention is in one, else under the post.
    target = value.get("comment_id") if value.get("item") == "comment" else value.get("post_id")
    if not isinstance(target, str) or not target:
        return None
    if event.replayed or not graph.configured(event.integration):
        log.info("would acknowledge the mention in %s: %r", target, MESSAGE)
        return None
    event.graph.comment(target, MESSAGE)
    return target
