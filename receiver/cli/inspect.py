"""Looking at a receiver: ``routes``, ``check``, ``trace`` and ``stats``.

What the configuration and plugins make of events, whether start-up would
succeed, and what happened to deliveries (from the traces kept in Redis).
"""

from __future__ import annotations

import json
from typing import Any

import click

from receiver.cli.common import operator_view, say, table
from receiver.settings.loading import load_settings


@click.command()
def routes() -> None:
    """Show which handlers each event name reaches (no secret, token or Redis needed)."""
    from receiver.app import build_core, inline_backend

    settings = load_settings(require_integrations=False)
    core = build_core(settings, backend=inline_backend(settings))
    rows = [("EVENT", "HANDLER", "RUNS", "FILTER")]
    for handler in core.router.handlers():
        mode = (
            f"background ({handler.queue or core.settings.queue_name})"
            if handler.background
            else "inline"
        )
        if handler.ordered_by is not None:
            by = handler.ordered_by
            mode += f", ordered by {by if isinstance(by, str) else _callable_name(by)}"
            mode += ", blocks on failure" if handler.on_failure == "block" else ""
        target = _callable_name(handler.func)
        rows.append(
            (handler.pattern, target, mode, handler.filter.description if handler.filter else "-")
        )
    if len(rows) == 1:
        click.echo(
            "no handlers registered; name handler modules in RECEIVER_HANDLERS or the config"
        )
        return
    table(rows)


def _callable_name(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


@click.command()
def check() -> None:
    """Validate the configuration, import every handler module, and check Redis."""
    from receiver.app import build_core, inline_backend
    from receiver.deploy.checks import check_redis

    settings = load_settings()
    core = build_core(settings, backend=inline_backend(settings))
    click.echo(f"configuration from: {settings.source}")
    for integration in settings.integrations.values():
        click.echo(
            f"integration {integration.name}: {len(integration.app_secrets)} secret(s), "
            f"verify token {'set' if integration.verify_token else 'MISSING'}, "
            f"sha1 {'accepted' if integration.accept_sha1 else 'refused'}, "
            f"{'enabled' if integration.enabled else 'disabled'}"
        )
    click.echo(f"handlers: {len(core.router.handlers())} from {len(settings.handlers)} module(s)")
    for line in check_redis(settings):
        click.echo(line)
    if settings.dev_mode:
        click.echo("WARNING: development mode is on", err=True)
    click.echo("ok")


@click.command("trace")
@click.argument("delivery_id", required=False)
@click.option("--event", "event_id", help="Find the deliveries that carried this event id.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def trace_command(delivery_id: str | None, event_id: str | None, as_json: bool) -> None:
    """What happened to a delivery: events, inline outcomes, background attempts."""
    from receiver.observe import trace

    if (delivery_id is None) == (event_id is None):
        raise click.UsageError("give a DELIVERY_ID, or --event EVENT_ID")
    connection, _ = operator_view()
    known = load_settings().integrations
    ids = [delivery_id] if delivery_id else trace.deliveries_of(connection, str(event_id))
    if not ids:
        raise click.ClickException(
            f"no delivery of event {event_id} is traced (traces last trace_ttl, 24 h by default)"
        )
    for found in ids:
        record = trace.load(connection, found, known)
        if record is None:
            raise click.ClickException(
                f"no trace of delivery {found} (unknown, or older than trace_ttl)"
            )
        if record.get("ordered"):
            from receiver.queue.ordering import waiting

            record["waiting"] = waiting(connection, record)
        say(json.dumps(record, indent=2) if as_json else _trace_text(record))


def _trace_text(record: dict[str, Any]) -> str:
    lines = [
        f"delivery {record.get('delivery_id')}  integration {record.get('integration', '?')}  "
        f"received {record.get('received_at', '?')}  status {record.get('status', '?')}"
        + (f" ({record['error']}: {record['reason']})" if record.get("reason") else "")
        + (f" ({record['error']})" if record.get("error") and not record.get("reason") else "")
    ]
    if record.get("events"):
        lines.append("events:")
        lines += [f"  {name}  {event_id}" for name, event_id in record["events"]]
    if record.get("inline"):
        lines.append("inline handlers:")
        for run in record["inline"]:
            lines.append(
                f"  {run['handler']}  {run['event_id']}  {run['outcome']}"
                + (f" ({run['error']})" if run.get("error") else "")
                + f"  {run['duration_ms']} ms"
            )
    if record.get("queued"):
        lines.append(f"background ({record['queued']} queued, stored in {record.get('stored')}):")
        if not record.get("background"):
            lines.append("  no attempt recorded yet")
        for run in record.get("background", []):
            lines.append(
                f"  attempt {run['attempt'] or '-'}  {run['at']}  {run['handler']}  "
                f"{run['event_id']}  "
                f"{run['outcome']}"
                + (f" ({run['error']})" if run.get("error") else "")
                + f"  {run['duration_ms']} ms"
            )
        lines += [f"  {w['event_id']}  {w['text']}" for w in record.get("waiting", [])]
    return "\n".join(lines)


@click.command()
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 7))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(days: int, as_json: bool) -> None:
    """Per integration: last delivery and handshake, deliveries per day and topic."""
    from receiver.observe import trace

    connection, _ = operator_view()
    figures = trace.stats(connection, sorted(load_settings().integrations), days)
    if as_json:
        say(json.dumps(figures, indent=2))
        return
    for name, data in figures.items():
        last = data["last"]
        say(
            f"{name}: last delivery {last.get('at', 'never')}"
            + (f" (status {last['status']})" if "status" in last else "")
            + f"; last handshake {last.get('handshake_at', 'never')}"
            + (f" (status {last['handshake_status']})" if "handshake_status" in last else "")
        )
        if "refused_at" in last:
            hour = trace.refusals(connection, name)
            say(
                f"  last refusal {last['refused_at']} (status {last['refused_status']} "
                f"{last['refused_error']}"
                + (f"/{last['refused_reason']}" if last.get("refused_reason") else "")
                + f"); {sum(hour.values())} refused in the last hour"
                + (f": {', '.join(f'{k} {v}' for k, v in sorted(hour.items()))}" if hour else "")
            )
        topics = sorted({t for counts in data["days"].values() for t in counts})
        rows = [("DAY", *topics, "TOTAL")]
        for day, counts in data["days"].items():
            rows.append((day, *(str(counts.get(t, 0)) for t in topics), str(sum(counts.values()))))
        table([(*row, "") for row in rows])
