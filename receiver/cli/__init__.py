"""The ``receiver`` command: the ``main`` group, with the commands of each area registered.

- ``serving``     serve, worker, embedded (stop)
- ``inspect``     routes, check, trace, stats
- ``queue``       failed (skip, requeue), queues, spool
- ``deliveries``  sign, captures (show), replay
- ``graph``       subscribe (list, add, remove)
- ``common``      what several share: Redis as a worker sees it, escaped output

Layer: the top (beside ``receiver.testing``). Commands import what they need
inside their function, so ``receiver --help`` starts fast.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click
import redis

from receiver.cli import deliveries, graph, inspect, queue, serving
from receiver.errors import ReceiverError
from receiver.observe import logsafe

log = logging.getLogger("receiver.cli")


class ReceiverGroup(click.Group):
    """Every command, nested ones included, ends a known failure with one line, not a traceback.

    Configuration and plugin mistakes (``ReceiverError``) and an unreachable or
    refusing Redis become a click error (exit 1); ``--log-level DEBUG`` still
    logs the traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReceiverError as exc:
            log.debug("command failed", exc_info=True)
            raise click.ClickException(_one_line(str(exc))) from None
        except redis.RedisError as exc:
            log.debug("command failed", exc_info=True)
            raise click.ClickException(_one_line(_redis_failure(exc))) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _redis_failure(exc: redis.RedisError) -> str:
    where = os.environ.get("REDIS_URL")
    target = f"Redis at {_mask(where)}" if where else "Redis"
    if isinstance(exc, redis.AuthenticationError):
        return f"{target} refused the credentials ({exc}); fix the password in REDIS_URL"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return (
            f"{target} is unreachable ({exc}); start it, or fix REDIS_URL "
            "(unset it for the embedded Redis)"
        )
    return f"{target} answered with an error: {exc}"


def _mask(url: str) -> str:
    from receiver.deploy.checks import masked

    return masked(url)


@click.group(cls=ReceiverGroup)
@click.option(
    "--log-level",
    default="INFO",
    envvar="RECEIVER_LOG_LEVEL",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """Webhook receiver for Workplace from Meta and Graph API webhooks."""
    logsafe.install(
        log_level,
        "%(asctime)s %(levelname)s %(name)s: %(message)s",
        batched=click.get_current_context().invoked_subcommand in BATCHED_COMMANDS,
    )


BATCHED_COMMANDS = ("worker",)
"""Commands whose per-item lines are written in batches (``logsafe.BatchedStreamHandler``):
a worker logs a line per attempt, whose ``write`` and ``flush`` were a system call an
event of its drain (3.8 µs CPU a line to a file, 0.7 µs batched: timeit); the web side's
gunicorn config does the same for its request lines. What a SIGKILLed worker loses: its
last ``FLUSH_SECONDS`` of attempt lines (docs/operating.md); a WARNING or worse is written
at once, the batch before it."""


for _command in (
    serving.serve,
    serving.worker,
    serving.embedded,
    inspect.routes,
    inspect.check,
    inspect.trace_command,
    inspect.stats,
    queue.failed,
    queue.queues,
    queue.spool,
    deliveries.sign,
    deliveries.captures,
    deliveries.replay,
    graph.subscribe,
):
    main.add_command(_command)
