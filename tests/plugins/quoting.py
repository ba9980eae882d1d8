"""A test plugin whose background handler fails quoting the comment it was given, as a parser
that chokes on a message might: the failure (with the payload's text) lands in RQ's failed
registry, shown by the admin dashboard and rq-dashboard."""

from __future__ import annotations

from receiver import Event, on


@on("group.comments", background=True)
def choke(event: Event) -> None:
    raise ValueError(f"cannot parse comment {event.value.get('message')!s}")
