"""Recommender tables: the behaviour it learns from, trained model versions, model files.

Written by hand to match projections/recommender_tables.py. The "recommendation_signals"
and "recommender_models" projections fill their tables from position zero on first run.

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

SIGNAL_INDEXES = (
    ("ix_recommendation_signals_member", ["member_id", "occurred_at"]),
    ("ix_recommendation_signals_order", ["order_id"]),
)


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recommendation_signals",
        sa.Column("signal_id", sa.String(80), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("product_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("occurred_at", _tz(), nullable=False),
        sa.Column("stars", sa.Integer),
        sa.Column("dwell_seconds", sa.Integer),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("order_id", sa.String(36)),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for name, columns in SIGNAL_INDEXES:
        op.create_index(name, "recommendation_signals", columns)

    op.create_table(
        "recommendation_orders",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("product_ids", JSONType, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "recommendation_consents",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("personalisation", sa.Boolean, nullable=False),
        sa.Column("changed_at", _tz()),
        sa.Column("position", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "recommender_models",
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("trained_at", _tz(), nullable=False),
        sa.Column("trained_by", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("data_position", sa.BigInteger, nullable=False),
        sa.Column("interactions", sa.Integer, nullable=False),
        sa.Column("members", sa.Integer, nullable=False),
        sa.Column("products", sa.Integer, nullable=False),
        sa.Column("training_seconds", sa.Float, nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("activated_at", _tz()),
        sa.Column("activated_by", sa.String(100)),
        sa.Column("position", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "recommender_artifacts",
        sa.Column("checksum", sa.String(64), primary_key=True),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recommender_artifacts")
    op.drop_table("recommender_models")
    op.drop_table("recommendation_consents")
    op.drop_table("recommendation_orders")
    for name, _columns in reversed(SIGNAL_INDEXES):
        op.drop_index(name, table_name="recommendation_signals")
    op.drop_table("recommendation_signals")
