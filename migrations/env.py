"""Alembic environment: one URL (PATRON_DATABASE_URL or the caller's) for every table."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import projections.after_sales_tables
import projections.behaviour_tables
import projections.campaign_tables
import projections.catalogue_tables
import projections.commerce_tables
import projections.experiment_tables
import projections.recommender_tables
import projections.segment_tables
import projections.shipping_tables  # noqa: F401
from projections.database import DatabaseConfig
from projections.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    database = DatabaseConfig.from_env(config.attributes.get("database_url"))
    engine = database.create_sync_engine()
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=str(DatabaseConfig.from_env().sync_url()), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
