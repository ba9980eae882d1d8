"""Operating the queue: ``failed`` (``skip``, ``requeue``), ``queues`` and ``spool``.

``failed`` and ``queues`` read Redis as a worker would (``operator_view``);
``spool`` shows what the web side acknowledged while Redis was unreachable, and
can drain it.
"""

from __future__ import annotations

import time

import click

from receiver.cli.common import operator_view, table
from receiver.settings.loading import load_settings


@click.group(invoke_without_command=True)
@click.pass_context
def failed(ctx: click.Context) -> None:
    """List background items that failed every attempt."""
    if ctx.invoked_subcommand is not None:
        return
    from receiver.queue.ops import failed_items

    connection, queues = operator_view()
    items, drains = failed_items(connection, queues)
    if not items:
        click.echo("no failed items")
    else:
        keyed = any(f.key is not None for f in items)
        rows = [("JOB", "EVENT", "EVENT ID", "ATTEMPTS", "HANDLER", *(("KEY",) * keyed), "ERROR")]
        rows += [
            (f.job_id, f.event_name, f.event_id, str(f.attempts), f.handler)
            + ((_key_cell(f.key, f.blocks),) if keyed else ())
            + (f.error,)
            for f in items
        ]
        table(rows)
    if drains:
        click.echo(
            f"({len(drains)} abandoned drain job(s) hidden: their deliveries were recovered; "
            "`receiver failed requeue --all` clears them)"
        )


def _key_cell(key: str | None, blocks: bool) -> str:
    if key is None:
        return "-"
    return f"{key} (held until requeued or skipped)" if blocks else key


@failed.command("skip")
@click.argument("job_ids", nargs=-1, required=True)
def failed_skip(job_ids: tuple[str, ...]) -> None:
    """Drop failed items for good; a key held by one goes on with its next event."""
    from receiver.queue.ops import skip

    connection, queues = operator_view()
    moved = skip(connection, queues, list(job_ids))  # ReceiverGroup turns unknown ids into one line
    click.echo(
        f"skipped {len(job_ids)} item(s)"
        + (f"; key(s) {', '.join(map(repr, moved))} go on" if moved else "")
    )


@failed.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every failed item.")
def failed_requeue(job_ids: tuple[str, ...], everything: bool) -> None:
    """Run failed items again (after fixing the handler)."""
    from receiver.queue.ops import requeue

    if not job_ids and not everything:
        raise click.UsageError("name job ids (see `receiver failed`) or pass --all")
    connection, queues = operator_view()
    done = requeue(connection, queues, None if everything else list(job_ids))  # ReceiverGroup
    click.echo(f"requeued {len(done)} item(s)")


@click.command()
def queues() -> None:
    """Queue depths: pending deliveries, drainers, RQ jobs, scheduled retries, failed, order
    keys; then the keys waiting behind a failing event."""
    from receiver.queue.ops import depths
    from receiver.queue.ordering import held

    connection, names = operator_view()
    rows = [("QUEUE", "PENDING", "OLDEST", "DRAINERS", "RQ JOBS", "RETRIES", "FAILED", "KEYS")]
    now = time.time()
    for d in depths(connection, names):
        oldest = f"{now - d.oldest_pending_at:.0f}s" if d.oldest_pending_at else "-"
        rows.append(
            (
                d.queue,
                str(d.pending_packets),
                oldest,
                str(d.drainers),
                str(d.rq_jobs),
                str(d.scheduled_retries),
                str(d.failed),
                f"{d.ordered_keys} ({d.held_keys} held)" if d.held_keys else str(d.ordered_keys),
            )
        )
    table(rows)
    waiting = held(connection, names)
    if waiting:
        click.echo("\nkeys held by a failing event (the rest of their events wait):")
        held_rows = [("QUEUE", "KEY", "WAITING", "HELD BY", "HANDLER", "WHY")]
        for h in waiting:
            why = (
                f"blocked: `receiver failed requeue {h.job_id}` or `... skip {h.job_id}`"
                if h.why == "blocked"
                else f"retrying (attempt {h.attempts} failed)"
            )
            event = f"{h.event_name} {h.event_id}"
            held_rows.append(
                (h.queue, h.key, str(h.waiting), event, h.handler, f"{why} since {h.since}")
            )
        table(held_rows)


@click.command()
@click.option("--drain", "drain_now", is_flag=True, help="Move spooled deliveries into Redis now.")
def spool(drain_now: bool) -> None:
    """Show (and drain) deliveries acknowledged while Redis was unreachable."""
    from receiver.queue.web_spool import Spool, spool_folder

    settings = load_settings()
    folder = Spool(spool_folder(settings))
    files = folder.files()
    click.echo(f"{len(folder)} delivery(ies) spooled in {folder.folder}")
    if files:
        click.echo(f"oldest: {files[0].name}")
    held = folder.held()
    if held:
        click.echo(f"{len(held)} more in Redis, kept here until replicas confirm them")
    if drain_now and len(folder):
        from receiver.app import build_core
        from receiver.queue.web_store import RedisBackend

        backend = build_core(settings, require_redis=True).backend
        assert isinstance(backend, RedisBackend)
        try:
            moved = folder.flush(backend.push_spooled)
        except Exception as exc:
            raise click.ClickException(f"Redis did not take the spool yet: {exc}") from None
        click.echo(f"moved {moved} delivery(ies) into Redis")
