"""A test plugin whose inline handler fails with the payload's own text in its error."""

from __future__ import annotations

from receiver import Event, on


@on("hostile.echo")
def echo(event: Event) -> None:
    raise ValueError(event.value["message"])
