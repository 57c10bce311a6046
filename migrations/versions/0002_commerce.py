"""Read models for orders, loyalty accounts, lots, ledger, spend, tiers, coupons and rewards.

Written by hand to match projections/commerce_tables.py (as 0001 matches tables.py), so
the schema a deployment runs is reviewed, not generated.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("lines", JSONType, nullable=False),
        sa.Column("pricing", JSONType, nullable=False),
        sa.Column("coupon_id", sa.String(36)),
        sa.Column("payments", JSONType, nullable=False),
        sa.Column("failed_payments", sa.Integer, nullable=False),
        sa.Column("flags", JSONType, nullable=False),
        sa.Column("refunds", JSONType, nullable=False),
        sa.Column("paid_amount", sa.BigInteger, nullable=False),
        sa.Column("refunded_amount", sa.BigInteger, nullable=False),
        sa.Column("cancellation", JSONType),
        sa.Column("history", JSONType, nullable=False),
        sa.Column("placed_at", _tz(), nullable=False),
        sa.Column("paid_at", _tz()),
        sa.Column("delivered_at", _tz()),
        sa.Column("completed_at", _tz()),
        sa.Column("cancelled_at", _tz()),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_orders_member_id", "orders", ["member_id"])
    op.create_index("ix_orders_state", "orders", ["state"])

    op.create_table(
        "loyalty_accounts",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("tier_since", _tz()),
        sa.Column("maintenance_due", _tz()),
        sa.Column("available", sa.BigInteger, nullable=False),
        sa.Column("pending", sa.BigInteger, nullable=False),
        sa.Column("debt", sa.BigInteger, nullable=False),
        sa.Column("lifetime_earned", sa.BigInteger, nullable=False),
        sa.Column("lifetime_redeemed", sa.BigInteger, nullable=False),
        sa.Column("lifetime_expired", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_loyalty_accounts_account_id", "loyalty_accounts", ["account_id"], unique=True
    )

    op.create_table(
        "loyalty_lots",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("lot_id", sa.String(100), primary_key=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("clawed_back", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("earned_at", _tz(), nullable=False),
        sa.Column("release_at", _tz()),
        sa.Column("available_at", _tz()),
        sa.Column("expires_at", _tz()),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_loyalty_lots_status_expires_at", "loyalty_lots", ["status", "expires_at"]
    )
    op.create_index(
        "ix_loyalty_lots_status_release_at", "loyalty_lots", ["status", "release_at"]
    )

    op.create_table(
        "loyalty_ledger",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("entry", sa.Integer, primary_key=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("bucket", sa.String(10), nullable=False),
        sa.Column("cause", sa.String(40), nullable=False),
        sa.Column("ref", sa.String(200)),
        sa.Column("lot_id", sa.String(100)),
        sa.Column("available_after", sa.BigInteger, nullable=False),
        sa.Column("pending_after", sa.BigInteger, nullable=False),
        sa.Column("debt_after", sa.BigInteger, nullable=False),
        sa.Column("actor_id", sa.String(100)),
        sa.Column("reason", sa.String(500)),
    )

    op.create_table(
        "loyalty_spend",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("entry", sa.Integer, primary_key=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
    )

    op.create_table(
        "tier_history",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("entry", sa.Integer, primary_key=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("from_tier", sa.String(20), nullable=False),
        sa.Column("to_tier", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
    )

    op.create_table(
        "coupons",
        sa.Column("coupon_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("min_spend", sa.BigInteger, nullable=False),
        sa.Column("valid_from", _tz(), nullable=False),
        sa.Column("valid_until", _tz(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("order_id", sa.String(36)),
        sa.Column("ref", sa.String(200)),
        sa.Column("issued_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_coupons_member_id", "coupons", ["member_id"])

    op.create_table(
        "rewards",
        sa.Column("reward_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("cost_points", sa.BigInteger, nullable=False),
        sa.Column("stock", sa.BigInteger, nullable=False),
        sa.Column("per_member_limit", sa.Integer, nullable=False),
        sa.Column("valid_from", _tz(), nullable=False),
        sa.Column("valid_until", _tz(), nullable=False),
        sa.Column("coupon", JSONType, nullable=False),
        sa.Column("coupon_valid_days", sa.Integer, nullable=False),
        sa.Column("redeemed_count", sa.BigInteger, nullable=False),
        sa.Column("defined_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rewards")
    op.drop_index("ix_coupons_member_id", table_name="coupons")
    op.drop_table("coupons")
    op.drop_table("tier_history")
    op.drop_table("loyalty_spend")
    op.drop_table("loyalty_ledger")
    op.drop_index("ix_loyalty_lots_status_release_at", table_name="loyalty_lots")
    op.drop_index("ix_loyalty_lots_status_expires_at", table_name="loyalty_lots")
    op.drop_table("loyalty_lots")
    op.drop_index("ix_loyalty_accounts_account_id", table_name="loyalty_accounts")
    op.drop_table("loyalty_accounts")
    op.drop_index("ix_orders_state", table_name="orders")
    op.drop_index("ix_orders_member_id", table_name="orders")
    op.drop_table("orders")
