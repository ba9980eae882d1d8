"""The ``receiver`` command: serve, worker, routes, sign, check."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import load_settings
from .errors import ReceiverError

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(func: F) -> F:
    """Configuration and plugin mistakes end the command with their message, not a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ReceiverError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option(
    "--log-level",
    default="INFO",
    envvar="RECEIVER_LOG_LEVEL",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """Webhook receiver for Workplace from Meta and Graph API webhooks."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, envvar="PORT", show_default=True, type=int)
@click.option(
    "--worker/--no-worker",
    default=True,
    show_default=True,
    help="Run a background worker beside the server.",
)
@_friendly
def serve(host: str, port: int, worker: bool) -> None:
    """Development server (embedded Redis and a worker unless REDIS_URL is set)."""
    from .app import create_app
    from .embedded import EmbeddedRedis, spawn_worker

    settings = load_settings()
    # SIGTERM (a supervisor, `kill`) cleans up like Ctrl-C: worker and embedded Redis stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    embedded = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir)
        os.environ["REDIS_URL"] = embedded.ensure_running()
    child = spawn_worker(os.environ["REDIS_URL"]) if worker else None
    try:
        app = create_app()
        sample = Path(__file__).resolve().parent.parent / "tests" / "payloads"
        click.echo(
            f"\nreceiver listening on http://{host}:{port}/webhook\n"
            "send a signed sample:\n"
            f"  receiver sign --curl http://{host}:{port}/webhook PAYLOAD.json | sh\n"
            f"  (sample payloads: {sample if sample.exists() else 'tests/payloads/'})\n",
            err=True,
        )
        app.run(host=host, port=port, threaded=True)
    finally:
        if child is not None:
            child.terminate()
            child.wait(timeout=30)
        if embedded is not None and embedded.started_here:
            embedded.stop()


@main.command()
@click.option("--queue", "queues", multiple=True, help="Queue to listen on (repeatable).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--parent-pid", type=int, hidden=True)
@_friendly
def worker(queues: tuple[str, ...], burst: bool, parent_pid: int | None) -> None:
    """Run an RQ worker with the configured handler modules loaded."""
    from .worker import run_worker

    run_worker(list(queues) or None, burst=burst, parent_pid=parent_pid)


@main.command()
@_friendly
def routes() -> None:
    """Show which handlers each event name reaches."""
    from .app import build_core

    core = build_core()
    rows = [("EVENT", "HANDLER", "RUNS", "FILTER")]
    for handler in core.router.handlers():
        mode = (
            f"background ({handler.queue or core.settings.queue_name})"
            if handler.background
            else "inline"
        )
        target = f"{handler.func.__module__}.{handler.func.__qualname__}"
        rows.append(
            (handler.pattern, target, mode, handler.filter.description if handler.filter else "-")
        )
    if len(rows) == 1:
        click.echo(
            "no handlers registered; name handler modules in RECEIVER_HANDLERS or the config"
        )
        return
    _table(rows)


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
@_friendly
def sign(
    file: Any, secret: str | None, integration: str | None, sha1: bool, curl_url: str | None
) -> None:
    """Print the headers that make FILE's bytes a signed delivery."""
    import shlex

    from .signature import signature_headers

    body = file.read()
    if secret is None:
        found = load_settings().integration(integration)
        if found is None or not found.app_secrets:
            raise click.ClickException(
                f"integration {integration or 'default'!r} has no app secret; pass --secret"
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
@_friendly
def check() -> None:
    """Validate the configuration and import every handler module."""
    from .app import build_core
    from .jobs import WorkContext
    from .queue import InlineBackend
    from .routing import default_router

    settings = load_settings()
    core = build_core(settings, backend=InlineBackend(WorkContext(default_router, settings)))
    click.echo(f"configuration from: {settings.source}")
    for integration in settings.integrations.values():
        click.echo(
            f"integration {integration.name}: {len(integration.app_secrets)} secret(s), "
            f"verify token {'set' if integration.verify_token else 'MISSING'}, "
            f"sha1 {'accepted' if integration.accept_sha1 else 'refused'}, "
            f"{'enabled' if integration.enabled else 'disabled'}"
        )
    click.echo(f"handlers: {len(core.router.handlers())} from {len(settings.handlers)} module(s)")
    where = _mask(settings.redis_url) if settings.redis_url else f"embedded, in {settings.data_dir}"
    click.echo(f"redis: {where}")
    if settings.dev_mode:
        click.echo("WARNING: development mode is on", err=True)
    click.echo("ok")


def _operator_view() -> tuple[Any, list[str]]:
    """Settings, plugins and Redis, as ``receiver worker`` would see them."""
    from .app import build_core
    from .ops import queue_names

    core = build_core(require_redis=True)
    connection = core.work_context().connection
    return connection, queue_names(core.settings, core.router)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        click.echo("  ".join([*cells, row[-1]]))


@main.group(invoke_without_command=True)
@click.pass_context
@_friendly
def failed(ctx: click.Context) -> None:
    """List background items that failed every attempt."""
    if ctx.invoked_subcommand is not None:
        return
    from .ops import failed_items

    connection, queues = _operator_view()
    items, drains = failed_items(connection, queues)
    if not items:
        click.echo("no failed items")
    else:
        rows = [("JOB", "EVENT", "EVENT ID", "ATTEMPTS", "HANDLER", "ERROR")]
        rows += [
            (f.job_id, f.event_name, f.event_id, str(f.attempts), f.handler, f.error) for f in items
        ]
        _table(rows)
    if drains:
        click.echo(
            f"({len(drains)} abandoned drain job(s) hidden: their deliveries were recovered; "
            "`receiver failed requeue --all` clears them)"
        )


@failed.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every failed item.")
@_friendly
def failed_requeue(job_ids: tuple[str, ...], everything: bool) -> None:
    """Run failed items again (after fixing the handler)."""
    from .ops import requeue

    if not job_ids and not everything:
        raise click.UsageError("name job ids (see `receiver failed`) or pass --all")
    connection, queues = _operator_view()
    try:
        done = requeue(connection, queues, None if everything else list(job_ids))
    except KeyError as exc:
        raise click.ClickException(f"no failed item with job id {exc.args[0]}") from None
    click.echo(f"requeued {len(done)} item(s)")


@main.command()
@click.option("--drain", "drain_now", is_flag=True, help="Move spooled deliveries into Redis now.")
@_friendly
def spool(drain_now: bool) -> None:
    """Show (and drain) deliveries acknowledged while Redis was unreachable."""
    from .spool import Spool, spool_folder

    settings = load_settings()
    folder = Spool(spool_folder(settings))
    files = folder.files()
    click.echo(f"{len(folder)} delivery(ies) spooled in {folder.folder}")
    if files:
        click.echo(f"oldest: {files[0].name}")
    if drain_now and len(folder):
        from .app import build_core
        from .queue import RQBackend

        backend = build_core(settings, require_redis=True).backend
        assert isinstance(backend, RQBackend)
        try:
            moved = folder.drain(backend.push_spooled)
        except Exception as exc:
            raise click.ClickException(f"Redis did not take the spool yet: {exc}") from None
        click.echo(f"moved {moved} delivery(ies) into Redis")


@main.command()
@_friendly
def queues() -> None:
    """Queue depths: pending deliveries, drainers, RQ jobs, scheduled retries, failed."""
    from .ops import depths

    connection, names = _operator_view()
    rows = [("QUEUE", "PENDING", "DRAINERS", "RQ JOBS", "RETRIES", "FAILED")]
    for d in depths(connection, names):
        rows.append(
            (
                d.queue,
                str(d.pending_packets),
                str(d.drainers),
                str(d.rq_jobs),
                str(d.scheduled_retries),
                str(d.failed),
            )
        )
    _table(rows)


def _mask(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
