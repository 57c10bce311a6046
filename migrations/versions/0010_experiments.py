"""Experiment read models: experiments, per-variant results, and the per-member bookkeeping
that counts exposure and conversion.

Written by hand to match projections/experiment_tables.py, so the schema a deployment runs
is reviewed, not generated. The "experiment_results" projection fills the tables from
position zero on its first run.

Revision ID: 0010
Revises: 0009
Create Date: 2027-02-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

INDEXES = (
    ("experiments", "ix_experiments_placement_status", ["placement", "status"]),
    ("experiments", "ix_experiments_defined_at", ["defined_at"]),
    ("experiment_exposures", "ix_experiment_exposures_member_id", ["member_id"]),
    ("experiment_clicks", "ix_experiment_clicks_member_product", ["member_id", "product_id"]),
    ("experiment_orders", "ix_experiment_orders_member_id", ["member_id"]),
)
TABLES = ("experiments", "experiment_variant_results", "experiment_exposures",
          "experiment_clicks", "experiment_orders")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("placement", sa.String(10), nullable=False),
        sa.Column("variants", JSONType, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("defined_at", _tz(), nullable=False),
        sa.Column("defined_by", sa.String(100), nullable=False),
        sa.Column("define_reason", sa.Text),
        sa.Column("stopped_at", _tz()),
        sa.Column("stopped_by", sa.String(100)),
        sa.Column("stop_reason", sa.Text),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "experiment_variant_results",
        sa.Column("experiment_id", sa.String(36), primary_key=True),
        sa.Column("variant", sa.String(40), primary_key=True),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("impressions", sa.BigInteger, nullable=False),
        sa.Column("clicks", sa.BigInteger, nullable=False),
        sa.Column("exposed_members", sa.Integer, nullable=False),
        sa.Column("clicking_members", sa.Integer, nullable=False),
        sa.Column("converted_members", sa.Integer, nullable=False),
        sa.Column("conversions", sa.Integer, nullable=False),
        sa.Column("revenue", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "experiment_exposures",
        sa.Column("experiment_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("variant", sa.String(40), nullable=False),
        sa.Column("first_shown_at", _tz(), nullable=False),
        sa.Column("first_clicked_at", _tz()),
        sa.Column("converted_at", _tz()),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "experiment_clicks",
        sa.Column("experiment_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("product_id", sa.String(100), primary_key=True),
        sa.Column("last_clicked_at", _tz(), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "experiment_orders",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("product_totals", JSONType, nullable=False),
        sa.Column("placed_at", _tz(), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for table, name, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for table, name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
