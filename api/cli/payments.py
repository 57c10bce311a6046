"""`patron payments simulate`: sign and post a provider's callback, as a provider would."""

from __future__ import annotations

import json
from typing import Any

import click

from api.cli.common import database_option, runtime_for, settings_for
from api.cli.main import main


@main.group()
def payments() -> None:
    """Payment provider operations for development and the demo."""


def _order_uuid(order_id: str) -> Any:
    """An order id as printed by the API: its UUID or its global id (`Order:<uuid>`)."""
    import uuid

    from strawberry.relay import GlobalID

    try:
        return uuid.UUID(order_id)
    except ValueError:
        pass
    try:
        global_id = GlobalID.from_id(order_id)
        if global_id.type_name == "Order":
            return uuid.UUID(global_id.node_id)
    except Exception:
        pass
    raise click.BadParameter(f"{order_id!r} is not an order id", param_hint="ORDER_ID")


@payments.command("simulate")
@click.argument("order_id")
@click.option("--outcome", type=click.Choice(["succeeded", "failed"]), required=True)
@click.option("--amount", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Minor units the provider reports (default: the attempt's amount due).")
@click.option("--reference", default=None,
              help="The attempt's provider reference (default: the order's latest attempt).")
@click.option("--failure-reason", default=None, help="With --outcome failed.")
@click.option("--url", default=None,
              help="POST to this running server (e.g. http://127.0.0.1:8000); default: "
                   "deliver in-process through the same verification and service code.")
@database_option
def payments_simulate(order_id: str, outcome: str, amount: int | None, reference: str | None,
                      failure_reason: str | None, url: str | None,
                      database_url: str | None) -> None:
    """Sign and send the payment provider's callback for ORDER_ID's payment attempt, exactly
    as the provider would (HMAC-SHA256 over timestamp and body, api/signing.py)."""
    from api.payment_simulator import SimulationError, simulate

    target = _order_uuid(order_id)
    runtime = runtime_for(settings_for(database_url))
    try:
        status, answer = simulate(runtime, target, outcome, amount, reference=reference,
                                  failure_reason=failure_reason, url=url)
    except SimulationError as error:
        raise click.ClickException(error.message) from None
    finally:
        runtime.close()
    click.echo(json.dumps({"status": status, **answer}))
    if status != 202:
        raise click.ClickException(f"the callback was refused with HTTP {status}")
