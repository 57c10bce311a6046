"""`patron members reserve-emails`: claim the addresses of members registered before
email reservations existed."""

from __future__ import annotations

import json
import sys

import click

from api.cli.common import database_option, runtime_for, settings_for
from api.cli.main import main


@main.group()
def members() -> None:
    """Member maintenance."""


@members.command("reserve-emails")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def members_reserve_emails(database_url: str | None, as_json: bool) -> None:
    """Reserve every member's email (one member per email): run once after upgrading a
    database whose members registered before reservations existed; safe to run again.

    Members are taken in registration order, so the first to register an address keeps
    it; later members with the same address are listed by id (never by address) as
    conflicts for staff to resolve, and the command then exits with status 1."""
    from api.service import ReservationOutcome

    runtime = runtime_for(settings_for(database_url))
    try:
        report = runtime.members.reserve_all_emails()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps({outcome.value: ids for outcome, ids in report.items()}))
    else:
        click.echo(", ".join(f"{len(ids)} {outcome.value}" for outcome, ids in report.items()))
        for member_id in report[ReservationOutcome.CONFLICT]:
            click.echo(f"conflict: member {member_id} uses an email an earlier member holds")
    if report[ReservationOutcome.CONFLICT]:
        sys.exit(1)
