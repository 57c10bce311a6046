"""`patron migrate`: read-model and event-store tables, to the current schema."""

from __future__ import annotations

import click

from api.cli.common import database_option
from api.cli.main import main
from projections.database import DatabaseConfig, DatabaseURLError


@main.command()
@database_option
def migrate(database_url: str | None) -> None:
    """Apply database migrations (read models and event store tables)."""
    from api.runtime import migrate as apply

    try:
        database = DatabaseConfig.from_env(database_url)
        apply(database)
    except DatabaseURLError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"migrated {database.safe_url}")
