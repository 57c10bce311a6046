"""`patron token`: mint a bearer token signed with the server's key."""

from __future__ import annotations

import click

from api.auth import PII_SCOPE, mint_token, parse_duration
from api.cli.common import database_option, settings_for
from api.cli.main import main
from domain.metadata import Role


@main.command()
@click.option(
    "--role", required=True, type=click.Choice(["member", "agent", "admin", "auditor"])
)
@click.option("--member-id", default=None, help="Required for --role member.")
@click.option("--subject", default=None, help="Staff id to record as the actor.")
@click.option("--expires", default="1h", show_default=True, help="e.g. 30m, 12h, 7d")
@click.option("--pii", is_flag=True, help="Auditors: allow unmasked personal data.")
@database_option
def token(
    role: str,
    member_id: str | None,
    subject: str | None,
    expires: str,
    pii: bool,
    database_url: str | None,
) -> None:
    """Mint a bearer token for development."""
    settings = settings_for(database_url)
    try:
        value = mint_token(
            settings.secret_key,
            Role(role),
            member_id if role == "member" else subject,
            parse_duration(expires),
            (PII_SCOPE,) if pii else (),
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(value)
