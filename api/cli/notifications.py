"""`patron notifications add-webhook|remove-webhook`: outbound notice endpoints."""

from __future__ import annotations

import click

from api.cli.common import database_option, runtime_for, settings_for
from api.cli.main import main


@main.group()
def notifications() -> None:
    """Where member notices are delivered besides the in-app inbox."""


@notifications.command("add-webhook")
@click.argument("url")
@click.option("--secret", required=True, help="Shared secret for X-Patron-Signature (16+ chars).")
@database_option
def notifications_add_webhook(url: str, secret: str, database_url: str | None) -> None:
    """Deliver every notice to URL as signed JSON, with retries and back-off."""
    from api.outbound import register_webhook

    runtime = runtime_for(settings_for(database_url))
    try:
        webhook_id = register_webhook(runtime.sync_engine, url, secret)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    finally:
        runtime.close()
    click.echo(f"registered webhook {webhook_id} for {url}")


@notifications.command("remove-webhook")
@click.argument("webhook_id")
@database_option
def notifications_remove_webhook(webhook_id: str, database_url: str | None) -> None:
    """Stop delivering notices to a registered webhook."""
    from api.outbound import deactivate_webhook

    runtime = runtime_for(settings_for(database_url))
    try:
        found = deactivate_webhook(runtime.sync_engine, webhook_id)
    finally:
        runtime.close()
    if not found:
        raise click.ClickException(f"no webhook {webhook_id}")
    click.echo(f"webhook {webhook_id} deactivated")
