"""`patron loyalty tick|liability`: due loyalty events, and the points the shop owes."""

from __future__ import annotations

import json

import click

from api.cli.common import database_option, runtime_for, settings_for
from api.cli.main import main


@main.group()
def loyalty() -> None:
    """Loyalty operations."""


@loyalty.command("tick")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def loyalty_tick(database_url: str | None, as_json: bool) -> None:
    """Emit every due event once (releases, expiries, tier maintenance, birthdays, order
    completion): for cron-style operation beside or instead of the in-server scheduler."""
    runtime = runtime_for(settings_for(database_url))
    try:
        report = runtime.scheduler.tick()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"{report.at.isoformat()}: settled {report.accounts_settled} accounts, "
            f"{report.birthdays} birthdays, completed {report.orders_completed} orders"
        )
    if report.errors:
        raise click.ClickException("; ".join(report.errors))


@loyalty.command("liability")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def loyalty_liability(database_url: str | None, as_json: bool) -> None:
    """The points the shop owes its members (available, pending, debt), by tier and by
    expiry, with their value at the redemption rate: the figures of `pointsLiability`."""
    import asyncio

    from api.commerce_readmodels import points_liability

    runtime = runtime_for(settings_for(database_url))
    try:
        book = asyncio.run(points_liability(runtime.async_engine))
        rules = runtime.rules
    finally:
        runtime.close()

    def worth(points: int) -> str:
        value = rules.points_value(points)
        return f"{value // rules.minor_units_per_unit}.{value % rules.minor_units_per_unit:02d}"

    report = {
        "position": book.position,
        "currency": rules.currency,
        "total": {**vars(book.total), "available_value": rules.points_value(book.total.available),
                  "pending_value": rules.points_value(book.total.pending)},
        "by_tier": {tier: vars(bucket) for tier, bucket in book.by_tier.items()},
        "by_expiry": [{"expires_at": e.expires_at.isoformat() if e.expires_at else None,
                       "points": e.points, "value": rules.points_value(e.points)}
                      for e in book.by_expiry],
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    total = book.total
    click.echo(f"as of position {book.position}: {total.members} accounts, "
               f"{total.available} available ({worth(total.available)} {rules.currency}), "
               f"{total.pending} pending ({worth(total.pending)} {rules.currency}), "
               f"{total.debt} owed by members")
    for tier, bucket in book.by_tier.items():
        click.echo(f"  {tier:<9} {bucket.members:>7} accounts {bucket.available:>12} available "
                   f"{bucket.pending:>10} pending {bucket.debt:>8} debt")
    for entry in book.by_expiry:
        when = entry.expires_at.date().isoformat() if entry.expires_at else "never"
        click.echo(f"  expiring {when}: {entry.points} ({worth(entry.points)} "
                   f"{rules.currency})")
