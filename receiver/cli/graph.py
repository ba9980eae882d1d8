"""The app's webhook subscriptions on the Graph API: ``subscribe`` (``list``, ``add``, ``remove``).

``--integration`` and ``--dry-run`` are accepted before or after the subcommand.
"""

from __future__ import annotations

from typing import Any

import click

from receiver.cli.common import F, table
from receiver.settings.loading import load_settings


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


@click.group(invoke_without_command=True)
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
    table(rows)


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
