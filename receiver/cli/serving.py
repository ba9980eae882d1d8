"""Running the receiver: ``serve`` (development server), ``worker`` and ``embedded``.

``serve`` starts the embedded Redis and a worker unless ``REDIS_URL`` is set, and
prints a hint (``banner``) that sends it a signed sample from any shell.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click

from receiver.cli.common import ping_redis
from receiver.settings.loading import load_settings
from receiver.settings.model import Integration


@click.command()
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


@click.group(invoke_without_command=True)
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


SAMPLES = Path(__file__).resolve().parent.parent / "samples"
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


@click.command()
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
        ping_redis()
    run_worker(
        list(queues) or None,
        burst=burst,
        parent_pid=parent_pid,
        concurrency=concurrency,
        metrics=(metrics_host, metrics_port) if metrics_port else None,
    )
