"""In-process: run background work at once, in this process (replay and handler tests).

The same claims as a worker's (``receiver.worker.claims``), without Redis when none is
configured: what ran, ran once.
"""

from __future__ import annotations

from redis import Redis

from receiver.queue import keys
from receiver.queue.handoff import item
from receiver.routing.contracts import Work
from receiver.worker.claims import Outcome, WorkContext, execute


class InlineBackend:
    """Runs background handlers at once, in this process: replay and handler tests."""

    started = True

    def __init__(self, context: WorkContext) -> None:
        self.context = context
        self.outcomes: list[Outcome] = []

    @property
    def connection(self) -> Redis | None:
        """Where the claims live: ``None`` unless its context names a Redis."""
        return self.context.connection

    def submit(self, delivery_id: str, work: Work) -> str:
        if work:
            self.outcomes = execute(
                [item(e, h) for e, h in work],
                self.context,
                token=keys.inline_token(delivery_id),
                failed_state=lambda o: keys.FAILED,
            )
        return "inline"
