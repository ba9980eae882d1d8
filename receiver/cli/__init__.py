"""The ``receiver`` command: serve, worker, routes, sign, check."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import redis

from receiver.errors import ReceiverError
from receiver.observe import logsafe
from receiver.settings.config import Integration, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
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
    logsafe.install(log_level, "%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, envvar="PORT", show_default=True, type=int)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Run a background worker beside the server.",
)
def serve(host: str, port: int, worker: bool) -> None:
    """Development server (embedded Redis and a worker unless REDIS_URL is set)."""
    from receiver.app import create_app
    from receiver.server.embedded import EmbeddedRedis, EmbeddedWatchdog, spawn_worker

    settings = load_settings()
    _check_port_free(host, port)
    # SIGTERM (a supervisor, `kill`) cleans up like Ctrl-C: worker and embedded Redis stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    embedded = None
    watchdog = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        embedded.claim()
        os.environ["REDIS_URL"] = embedded.ensure_running(announce=True)
        watchdog = EmbeddedWatchdog(embedded)
        watchdog.start()
    # The worker logs at this command's level: `receiver --log-level DEBUG serve` covers both.
    level = {"RECEIVER_LOG_LEVEL": logging.getLevelName(logging.getLogger().level)}
    child = spawn_worker(os.environ["REDIS_URL"], extra_env=level) if worker else None
    try:
        app = create_app()
        secret = (settings.integration(None) or Integration(name="")).app_secrets[:1]
        click.echo(
            banner(host, port, secret[0] if secret else None, _stderr_is_terminal()), err=True
        )
        from werkzeug import serving

        serving._log_add_style = False  # its colour codes would only show escaped in our log
        app.run(host=host, port=port, threaded=True)
    finally:
        if watchdog is not None:
            watchdog.stop()
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
        if embedded is not None:
            if embedded.started_here:
                embedded.stop()
            embedded.release()


@main.group(invoke_without_command=True)
@click.pass_context
def embedded(ctx: click.Context) -> None:
    """The embedded server (REDIS_URL unset): where it is, whether it runs, who owns it."""
    if ctx.invoked_subcommand is not None:
        return
    from receiver.server.embedded import EmbeddedRedis

    server = EmbeddedRedis(load_settings().data_dir)
    owner = server.owner()
    state = "running" if server.running() else "stopped"
    click.echo(f"{server.url}  {state}  data in {server.folder}")
    if owner is not None:
        click.echo(f"owned by `receiver serve`, pid {owner}")


@embedded.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server (its data is kept), unless a running `serve` owns it."""
    from receiver.server.embedded import EmbeddedRedis

    server = EmbeddedRedis(load_settings().data_dir)
    owner = server.owner()
    if owner is not None:
        raise click.ClickException(
            f"`receiver serve` (pid {owner}) owns the embedded server in {server.folder}: "
            "stop that process instead (Ctrl-C); it stops the server it started"
        )
    if not server.running():
        click.echo(f"not running ({server.folder})")
        return
    server.stop()
    click.echo(f"stopped; data kept in {server.folder}")


def _check_port_free(host: str, port: int) -> None:
    """Refuse a taken port before Redis, a worker and the banner start, not after them."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "stop what uses it, or pick another port with --port N"
            ) from None


SAMPLES = Path(__file__).resolve().parent / "samples"
"""Sample deliveries shipped inside the package, so a hint can name one from any directory."""


def banner(host: str, port: int, secret: str | None, show_secret: bool) -> str:
    """What ``serve`` prints: a command that works pasted into a new shell, from anywhere.

    The secret itself appears only on the developer's own terminal (``show_secret``);
    when stderr goes to a file or a log collector the hint reads it from the environment.
    """
    import shlex

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}/webhook"
    sample = SAMPLES / "group__membership__add.json"
    if secret is None:
        secret_arg, note = "--secret unsigned", "  (development mode: no secret is checked)\n"
    elif show_secret:
        secret_arg, note = f"--secret {shlex.quote(secret)}", ""
    else:
        secret_arg = '--secret "$RECEIVER_APP_SECRET"'
        note = "  (set RECEIVER_APP_SECRET to the app secret in that shell first)\n"
    command = (
        f"{shlex.join(receiver_executable())} sign {secret_arg} "
        f"--curl {shlex.quote(url)} {shlex.quote(str(sample))} | sh"
    )
    return (
        f"\nreceiver listening on {url}\n"
        "send it a signed sample (someone joins a group) from any shell:\n"
        f"  {command}\n{note}"
        f"  (more samples: {SAMPLES})\n"
    )


def receiver_executable() -> list[str]:
    """The ``receiver`` script beside this interpreter (a venv's bin), by its absolute path.

    Not resolved through symlinks: a venv's ``python`` links to the system one,
    whose folder has no ``receiver``. Without the script: ``python -m receiver``.
    """
    python = os.path.abspath(sys.executable)
    here = Path(python).parent / "receiver"
    if here.exists():
        return [str(here)]
    import shutil

    found = shutil.which("receiver")
    return [os.path.abspath(found)] if found else [python, "-m", "receiver"]


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False


@main.command()
@click.option("--queue", "queues", multiple=True, help="Queue to listen on (repeatable).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Handler calls at once in this process (default: worker_concurrency, 32).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="RECEIVER_WORKER_METRICS_PORT",
    help="Serve this worker's Prometheus metrics on this port (/metrics).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port binds (0.0.0.0 to let another machine scrape).",
)
@click.option("--parent-pid", type=int, hidden=True)
def worker(
    queues: tuple[str, ...],
    burst: bool,
    concurrency: int | None,
    metrics_port: int | None,
    metrics_host: str,
    parent_pid: int | None,
) -> None:
    """Run an RQ worker with the configured handler modules loaded."""
    from receiver.app import run_worker

    if burst:  # a burst must do its work now: an unreachable Redis is one error line, exit 1
        _ping_redis()
    run_worker(
        list(queues) or None,
        burst=burst,
        parent_pid=parent_pid,
        concurrency=concurrency,
        metrics=(metrics_host, metrics_port) if metrics_port else None,
    )


@main.command()
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
    _table(rows)


def _callable_name(func: Any) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


@main.command()
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


@main.command()
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


def _ping_redis() -> Settings:
    """The settings, once the configured Redis answered (before any start-up warning)."""
    from receiver.app import connect
    from receiver.deploy.checks import CHECK_TIMEOUT

    settings = load_settings()
    if settings.redis_url is not None:
        connect(settings.redis_url, CHECK_TIMEOUT).ping()
    return settings


def _operator_view() -> tuple[Any, list[str]]:
    """Settings, plugins and Redis, as ``receiver worker`` would see them.

    An unreachable Redis fails here, before the start-up warning a web process would log.
    """
    from receiver.app import build_core
    from receiver.queue.ops import queue_names

    settings = _ping_redis()
    core = build_core(settings, require_redis=True)
    connection = core.backend.connection
    return connection, queue_names(core.settings, core.router)


def _say(text: str) -> None:
    """Echo text that may quote payload data (topics, fields, ids, handler errors).

    A signed payload is Meta's, its text any user's: each line is escaped (``logsafe.escape``),
    so an ESC or BEL in a field name reaches the terminal as ``\\x1b``, never as a command.
    """
    click.echo("\n".join(logsafe.escape(line) for line in text.split("\n")))


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    rows = [tuple(logsafe.escape(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        click.echo("  ".join([*cells, row[-1]]))


@main.group(invoke_without_command=True)
@click.pass_context
def failed(ctx: click.Context) -> None:
    """List background items that failed every attempt."""
    if ctx.invoked_subcommand is not None:
        return
    from receiver.queue.ops import failed_items

    connection, queues = _operator_view()
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
        _table(rows)
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

    connection, queues = _operator_view()
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
    connection, queues = _operator_view()
    done = requeue(connection, queues, None if everything else list(job_ids))  # ReceiverGroup
    click.echo(f"requeued {len(done)} item(s)")


@main.command()
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


@main.command()
def queues() -> None:
    """Queue depths: pending deliveries, drainers, RQ jobs, scheduled retries, failed, order
    keys; then the keys waiting behind a failing event."""
    from receiver.queue.ops import depths
    from receiver.queue.ordering import held

    connection, names = _operator_view()
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
    _table(rows)
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
        _table(held_rows)


@main.command("trace")
@click.argument("delivery_id", required=False)
@click.option("--event", "event_id", help="Find the deliveries that carried this event id.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def trace_command(delivery_id: str | None, event_id: str | None, as_json: bool) -> None:
    """What happened to a delivery: events, inline outcomes, background attempts."""
    from receiver.observe import trace

    if (delivery_id is None) == (event_id is None):
        raise click.UsageError("give a DELIVERY_ID, or --event EVENT_ID")
    connection, _ = _operator_view()
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
        _say(json.dumps(record, indent=2) if as_json else _trace_text(record))


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


@main.command()
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 7))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats(days: int, as_json: bool) -> None:
    """Per integration: last delivery and handshake, deliveries per day and topic."""
    from receiver.observe import trace

    connection, _ = _operator_view()
    figures = trace.stats(connection, sorted(load_settings().integrations), days)
    if as_json:
        _say(json.dumps(figures, indent=2))
        return
    for name, data in figures.items():
        last = data["last"]
        _say(
            f"{name}: last delivery {last.get('at', 'never')}"
            + (f" (status {last['status']})" if "status" in last else "")
            + f"; last handshake {last.get('handshake_at', 'never')}"
            + (f" (status {last['handshake_status']})" if "handshake_status" in last else "")
        )
        if "refused_at" in last:
            hour = trace.refusals(connection, name)
            _say(
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
        _table([(*row, "") for row in rows])


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


@main.group(invoke_without_command=True)
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
    _table(rows)


@captures.command("show")
@click.argument("capture_id")
def captures_show(capture_id: str) -> None:
    """Print one captured delivery."""
    import json

    from receiver.app import capture_folder
    from receiver.observe.capture import capture_files, read_captures

    for _, record in read_captures(capture_files(capture_folder(load_settings()))):
        if str(record.get("id")) == capture_id:
            _say(json.dumps(record, indent=2, ensure_ascii=False))
            return
    raise click.ClickException(f"no captured delivery {capture_id!r}")


@main.command()
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
            _say(f"{d.source}  {d.topic}.{','.join(d.fields)}  {len(d.body)} bytes")
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
        from receiver.model import marking

        key = settings.secret_key or marking.key_for(secret)
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
    _table(rows)
    current = rp.report(mode, results)
    if report_path:
        Path(report_path).write_text(json.dumps(current, indent=2))
    differences: list[str] = []
    if compare_path:
        differences = rp.compare(json.loads(Path(compare_path).read_text()), current)
        for line in differences:
            _say(f"DIFF {line}")
        click.echo(
            "same events and handler outcomes as the earlier report"
            if not differences
            else f"{len(differences)} difference(s)"
        )
    if summary["failed"] or differences or not results:
        sys.exit(1)


def _mask(url: str) -> str:
    from receiver.deploy.checks import masked

    return masked(url)


def _subscription_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--integration",
                "integration_name",
                metavar="NAME",
                help="Integration whose app_id and app secret to use (default: the default one).",
            ),
            click.option(
                "--dry-run", is_flag=True, help="Print the request instead of sending it."
            ),
        ]
    ):
        func = option(func)
    return func


def _group_option(name: str, value: Any) -> Any:
    """``receiver subscribe --dry-run add ...`` means the same as ``... add --dry-run``."""
    parent = click.get_current_context().parent
    return value or (parent.params.get(name) if parent is not None else None)


def _app_graph(integration_name: str | None) -> Any:
    from receiver.graph.subscriptions import app_config

    integration_name = _group_option("integration_name", integration_name)
    settings = load_settings()
    integration = settings.integration(integration_name)
    if integration is None:
        raise click.ClickException(f"no integration named {integration_name!r} is configured")
    return integration, app_config(integration, settings)


def _send_planned(config: Any, planned: Any, dry_run: bool) -> Any:
    from receiver.graph.calls import GraphClient
    from receiver.graph.subscriptions import describe, send

    if dry_run:
        click.echo(describe(config, planned))
        return None
    with GraphClient(config) as client:
        return send(client, planned)


@main.group(invoke_without_command=True)
@_subscription_options
@click.pass_context
def subscribe(ctx: click.Context, integration_name: str | None, dry_run: bool) -> None:
    """List, add and remove the app's webhook subscriptions (needs app_id)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(subscribe_list)


@subscribe.command("list")
@_subscription_options
def subscribe_list(integration_name: str | None = None, dry_run: bool = False) -> None:
    """Objects the app is subscribed to, with fields and callback URL."""
    from receiver.graph.subscriptions import parse, plan_list

    dry_run = _group_option("dry_run", dry_run)
    _, config = _app_graph(integration_name)
    answer = _send_planned(config, plan_list(config), dry_run)
    if dry_run:
        return
    rows = [("OBJECT", "FIELDS", "CALLBACK URL", "ACTIVE")]
    for sub in parse(answer):
        rows.append((sub.object, ",".join(sub.fields), sub.callback_url, str(sub.active).lower()))
    _table(rows)


@subscribe.command("add")
@click.argument("object_name", metavar="OBJECT")
@click.option("--fields", required=True, help="Comma-separated fields, e.g. messages,mention.")
@click.option(
    "--callback-url", required=True, help="Where Meta will POST, e.g. https://.../webhook."
)
@click.option("--verify-token", help="Default: the integration's verify token.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="First check that the callback URL answers the handshake.",
)
@click.option("--include-values/--no-include-values", default=True, show_default=True)
@_subscription_options
def subscribe_add(
    object_name: str,
    fields: str,
    callback_url: str,
    verify_token: str | None,
    check: bool,
    include_values: bool,
    integration_name: str | None,
    dry_run: bool,
) -> None:
    """Subscribe OBJECT (page, group, user, workplace_security, link...) to FIELDS."""
    from receiver.graph.subscriptions import check_handshake, plan_add

    dry_run = _group_option("dry_run", dry_run)
    integration, config = _app_graph(integration_name)
    token = verify_token or integration.verify_token
    if not token:
        raise click.ClickException("no verify token: pass --verify-token or configure one")
    names = [f.strip() for f in fields.split(",") if f.strip()]
    planned = plan_add(
        config, object_name, names, callback_url, token, include_values=include_values
    )
    if check and dry_run:
        click.echo(f"# would first check the handshake: GET {callback_url}?hub.mode=subscribe&...")
    elif check:
        check_handshake(callback_url, token)
        click.echo(f"handshake ok: {callback_url}", err=True)
    answer = _send_planned(config, planned, dry_run)
    if not dry_run:
        click.echo(f"subscribed {object_name}: {','.join(names)} -> {callback_url} ({answer})")


@subscribe.command("remove")
@click.argument("object_name", metavar="OBJECT")
@click.option("--fields", default="", help="Only these fields (default: the whole object).")
@_subscription_options
def subscribe_remove(
    object_name: str, fields: str, integration_name: str | None, dry_run: bool
) -> None:
    """Unsubscribe OBJECT, or only some of its fields."""
    from receiver.graph.subscriptions import plan_remove

    dry_run = _group_option("dry_run", dry_run)
    _, config = _app_graph(integration_name)
    names = [f.strip() for f in fields.split(",") if f.strip()]
    answer = _send_planned(config, plan_remove(config, object_name, names), dry_run)
    if not dry_run:
        which = f": {','.join(names)}" if names else ""
        click.echo(f"unsubscribed {object_name}{which} ({answer})")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
