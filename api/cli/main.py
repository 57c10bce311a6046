"""The `patron` group itself: logging for every command (tracebacks without messages:
see projections/redaction.py)."""

from __future__ import annotations

import logging

import click


@click.group()
@click.option("--log-level", default="INFO", envvar="PATRON_LOG_LEVEL", show_default=True)
def main(log_level: str) -> None:
    """Patron: a member-centric e-commerce backend (GraphQL over an event-sourced core)."""
    from projections.redaction import RedactingFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
