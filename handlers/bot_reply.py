"""Answer messages sent to a bot (its page): a background handler using the Send API.

``page.messages`` carries what people write to the bot; echoes of the bot's
own messages arrive as ``page.message_echoes`` and never reach this handler,
so it cannot answer itself. ``answer()`` is the part to replace with your
bot's logic. Replays and integrations without an access token only log.
"""

import logging

from receiver import Event, graph, on

log = logging.getLogger("handlers.bot_reply")

HELP = "I answer 'help' and 'ping'; anything else I just acknowledge."


def answer(text: str) -> str:
    """The reply to one message: replace this with your bot's logic."""
    command = text.strip().lower()
    if command == "help":
        return HELP
    if command == "ping":
        return "pong"
    return f"Got it: {text.strip()[:200]}"


@on("page.messages", background=True)
def reply_to_message(event: Event) -> str | None:
    sender, text = event.sender_id, event.text
    if not sender or not text:
        return None  # attachments, stickers: nothing to answer
    reply = answer(text)
    if event.replayed or not graph.configured(event.integration):
        log.info("would answer %s: %r", sender, reply)
        return None
    event.graph.send_message(sender, reply)
    return reply
