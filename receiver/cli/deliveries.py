"""Deliveries by hand: ``sign`` one, list ``captures``, ``replay`` them.

``captures`` and ``replay`` share the filter options (``_filters``): time range,
topic, field and the status the receiver answered.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from receiver.cli.common import F, say, table
from receiver.settings.loading import load_settings


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--secret",
    envvar="RECEIVER_SIGN_SECRET",
    help="Secret to sign with (default: the integration's newest app secret).",
)
@click.option("--integration", default=None, help="Integration whose secret signs.")
@click.option("--sha1", is_flag=True, help="Add the legacy X-Hub-Signature header too.")
@click.option("--curl", "curl_url", metavar="URL", help="Print a curl command posting FILE to URL.")
def sign(
    file: Any, secret: str | None, integration: str | None, sha1: bool, curl_url: str | None
) -> None:
    """Print the headers that make FILE's bytes a signed delivery."""
    import shlex

    from receiver.core.signature import signature_headers

    body = file.read()
    if secret is not None and not secret.strip():
        # `--secret "$RECEIVER_APP_SECRET"` pasted into a shell where it is unset:
        # a signature keyed with "" would only earn a puzzling 403 bad_signature.
        raise click.ClickException(
            "--secret is empty (an unset variable?); set RECEIVER_APP_SECRET in this shell "
            "or pass the app secret itself"
        )
    if secret is None:
        # Signing needs a secret only, not a verify token or a complete integration.
        found = load_settings(require_integrations=False).integration(integration)
        if found is None or not found.app_secrets:
            where = "set RECEIVER_APP_SECRET, or " if integration is None else ""
            raise click.ClickException(
                f"integration {integration or 'default'!r} has no app secret to sign with; "
                f"{where}pass --secret"
            )
        secret = found.app_secrets[0]
    headers = signature_headers(body, secret, sha1=sha1)
    if curl_url:
        parts = ["curl", "-sS", "-X", "POST", curl_url]
        for name, value in headers.items():
            parts += ["-H", f"{name}: {value}"]
        parts += ["--data-binary", f"@{file.name}"]
        click.echo(" ".join(shlex.quote(p) for p in parts))
        return
    for name, value in headers.items():
        click.echo(f"{name}: {value}")


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _selected(
    found: list[Any],
    since: str | None,
    until: str | None,
    topic: str | None,
    field_name: str | None,
    status: int | None,
    integration: str | None = None,
) -> list[Any]:
    """The deliveries the shared filter options (``_filters``) keep."""
    from receiver.replay import select

    return select(
        found,
        topic=topic,
        field_name=field_name,
        since=_when(since),
        until=_when(until),
        status=status,
        integration=integration,
    )


def _filters(func: F) -> F:
    for option in reversed(
        [
            click.option("--since", help="Received at or after (ISO 8601)."),
            click.option("--until", help="Received at or before (ISO 8601)."),
            click.option("--topic", help="Only this topic (e.g. group)."),
            click.option("--field", "field_name", help="Only deliveries with this field."),
            click.option("--status", type=int, help="Only deliveries answered with this status."),
        ]
    ):
        func = option(func)
    return func


@click.group(invoke_without_command=True)
@click.option("--integration", help="Only this integration.")
@_filters
@click.pass_context
def captures(
    ctx: click.Context,
    integration: str | None,
    since: str | None,
    until: str | None,
    topic: str | None,
    field_name: str | None,
    status: int | None,
) -> None:
    """List captured deliveries (newest last)."""
    if ctx.invoked_subcommand is not None:
        return
    from receiver.app import capture_folder
    from receiver.observe.capture import capture_files
    from receiver.replay import load

    folder = capture_folder(load_settings())
    found, _ = load(capture_files(folder))
    chosen = _selected(found, since, until, topic, field_name, status, integration)
    if not chosen:
        click.echo(f"no captured deliveries match (folder: {folder})")
        return
    rows = [("ID", "RECEIVED", "INTEGRATION", "STATUS", "EVENTS")]
    for d in chosen:
        received = d.received_at.isoformat(timespec="seconds") if d.received_at else "-"
        events = f"{d.topic}.{','.join(d.fields)}" if d.topic else "-"
        rows.append((d.key, received, d.integration or "-", str(d.status), events))
    table(rows)


@captures.command("show")
@click.argument("capture_id")
def captures_show(capture_id: str) -> None:
    """Print one captured delivery."""
    import json

    from receiver.app import capture_folder
    from receiver.observe.capture import capture_files, read_captures

    for _, record in read_captures(capture_files(capture_folder(load_settings()))):
        if str(record.get("id")) == capture_id:
            say(json.dumps(record, indent=2, ensure_ascii=False))
            return
    raise click.ClickException(f"no captured delivery {capture_id!r}")


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--to", "url", help="POST to this callback URL (re-signed, marked as a replay).")
@click.option("--in-process", is_flag=True, help="Run through the core and loaded handlers here.")
@click.option(
    "--integration", help="Integration whose secret signs (and that receives, in-process)."
)
@click.option("--secret", envvar="RECEIVER_REPLAY_SECRET", help="Secret to sign with instead.")
@click.option("--sha1", is_flag=True, help="Add the legacy sha1 signature too.")
@_filters
@click.option("--rate", type=float, help="Deliveries per second at most.")
@click.option("--concurrency", type=int, default=1, show_default=True)
@click.option("--preserve-timing", is_flag=True, help="Keep the recorded gaps between deliveries.")
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="With --preserve-timing: 2 replays twice as fast.",
)
@click.option(
    "--include-replays",
    is_flag=True,
    help="Also send captures that were themselves replays (left out by default).",
)
@click.option("--dry-run", is_flag=True, help="List what would be sent; send nothing.")
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write results as JSON."
)
@click.option(
    "--compare",
    "compare_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Diff the results against an earlier --report.",
)
def replay(
    sources: tuple[str, ...],
    url: str | None,
    in_process: bool,
    integration: str | None,
    secret: str | None,
    sha1: bool,
    since: str | None,
    until: str | None,
    topic: str | None,
    field_name: str | None,
    status: int | None,
    rate: float | None,
    concurrency: int,
    preserve_timing: bool,
    speed: float,
    include_replays: bool,
    dry_run: bool,
    report_path: str | None,
    compare_path: str | None,
) -> None:
    """Replay capture files, folders or payload files, re-signed."""
    import json

    from receiver import replay as rp

    if (url is None) == (not in_process) and not dry_run:
        raise click.UsageError("choose one of --to URL or --in-process")
    found, skipped = rp.load(sources)
    for note in skipped:
        click.echo(f"skipped {note}", err=True)
    chosen = _selected(found, since, until, topic, field_name, status)
    for d in [d for d in chosen if not d.replayable]:
        click.echo(f"skipped {d.source}: its signature did not verify when received", err=True)
    chosen = [d for d in chosen if d.replayable]
    copies = [d for d in chosen if d.replayed]
    if copies and not include_replays:
        click.echo(
            f"left out {len(copies)} captured replay(s) (--include-replays sends them too)",
            err=True,
        )
        chosen = [d for d in chosen if not d.replayed]
    if dry_run:
        for d in chosen:
            say(f"{d.source}  {d.topic}.{','.join(d.fields)}  {len(d.body)} bytes")
        click.echo(f"{len(chosen)} delivery(ies) would be sent")
        return
    settings = load_settings()
    if secret is None:
        target = settings.integration(integration)
        if target is None or not target.app_secrets:
            raise click.ClickException(
                f"no app secret for integration {integration or 'default'!r}; pass --secret"
            )
        secret = target.app_secrets[0]
    if in_process:
        from receiver.app import build_core, inline_backend

        core = build_core(settings, backend=inline_backend(settings))
        stream = rp.in_process(chosen, core, secret, integration, sha1)
        mode = "in-process"
    else:
        assert url is not None
        from receiver.model import replay_mark

        key = settings.secret_key or replay_mark.key_for(secret)
        stream = rp.over_http(
            chosen,
            url,
            secret,
            marker_key=key,
            sha1=sha1,
            rate=rate,
            concurrency=concurrency,
            preserve_timing=preserve_timing,
            speed=speed,
            integration=integration or settings.default_integration,
        )
        mode = f"http {url}"
    results: list[rp.Replayed] = []
    with click.progressbar(stream, length=len(chosen), label="replaying", file=sys.stderr) as bar:
        for outcome in bar:
            results.append(outcome)
    summary = rp.summarize(results)
    click.echo(
        f"sent {summary['sent']} ({mode}); events routed {summary['events']}; "
        f"handler errors {summary['handler_errors']}"
    )
    rows = [("STATUS", "DELIVERIES")] + [(str(k), str(v)) for k, v in summary["statuses"].items()]
    table(rows)
    current = rp.report(mode, results)
    if report_path:
        Path(report_path).write_text(json.dumps(current, indent=2))
    differences: list[str] = []
    if compare_path:
        differences = rp.compare(json.loads(Path(compare_path).read_text()), current)
        for line in differences:
            say(f"DIFF {line}")
        click.echo(
            "same events and handler outcomes as the earlier report"
            if not differences
            else f"{len(differences)} difference(s)"
        )
    if summary["failed"] or differences or not results:
        sys.exit(1)
