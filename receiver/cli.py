"""The ``receiver`` command: serve, worker, routes, sign, check."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
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
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row))
        )


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


def _mask(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
