"""Log one line per event: the smallest useful handler module."""

import logging

from receiver import Event, on

log = logging.getLogger("handlers.log_events")


@on("*")
def log_event(event: Event) -> None:
    log.info(
        "%s verb=%s entry=%s id=%s delivery=%s",
        event.name,
        event.verb,
        event.entry_id,
        event.id,
        event.delivery_id,
    )
