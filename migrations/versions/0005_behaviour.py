"""Behaviour read models: the facts member profiles are computed from.

Written by hand to match projections/behaviour_tables.py, so the schema a deployment runs
is reviewed, not generated. The "member_behaviour" projection fills the tables from
position zero on its first run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

INTEREST_PARTS = ("views", "dwell_minutes", "searches", "cart_adds", "cart_removes",
                  "wish_lists", "shares", "purchases", "review_stars", "reviews")
BEHAVIOUR_COUNTS = ("behaviour_events", "views", "searches", "cart_adds", "cart_removes",
                    "wish_lists", "shares")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _behaviour_columns() -> list[sa.Column[Any]]:
    return [
        *(sa.Column(name, sa.Integer, nullable=False) for name in BEHAVIOUR_COUNTS),
        sa.Column("dwell_seconds", sa.BigInteger, nullable=False),
        sa.Column("viewed_price_sum", sa.BigInteger, nullable=False),
        sa.Column("viewed_price_count", sa.Integer, nullable=False),
        sa.Column("behaviour_channels", JSONType, nullable=False),
        sa.Column("first_behaviour_at", _tz()),
        sa.Column("last_behaviour_at", _tz()),
        sa.Column("last_cart_add_at", _tz()),
    ]


def _interest_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("dimension", sa.String(10), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        *(sa.Column(name, sa.Float, nullable=False) for name in INTEREST_PARTS),
        sa.Column("as_of", _tz(), nullable=False),
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("last_event_at", _tz(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "member_activity",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("joined_at", _tz()),
        *_behaviour_columns(),
        sa.Column("orders_placed", sa.Integer, nullable=False),
        sa.Column("order_channels", JSONType, nullable=False),
        sa.Column("last_order_at", _tz()),
        sa.Column("reviews", sa.Integer, nullable=False),
        sa.Column("review_stars", sa.Integer, nullable=False),
        sa.Column("review_channels", JSONType, nullable=False),
        sa.Column("last_review_at", _tz()),
        sa.Column("purchases", sa.Integer, nullable=False),
        sa.Column("purchase_total", sa.BigInteger, nullable=False),
        sa.Column("refunded_total", sa.BigInteger, nullable=False),
        sa.Column("first_purchase_at", _tz()),
        sa.Column("last_purchase_at", _tz()),
        sa.Column("bought_price_sum", sa.BigInteger, nullable=False),
        sa.Column("bought_lines", sa.Integer, nullable=False),
        sa.Column("products", sa.Integer, nullable=False),
        sa.Column("repeat_products", sa.Integer, nullable=False),
        sa.Column("last_activity_at", _tz()),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_member_activity_last_activity_at", "member_activity",
                    ["last_activity_at"])
    op.create_index("ix_member_activity_last_purchase_at", "member_activity",
                    ["last_purchase_at"])

    op.create_table(
        "member_interests",
        sa.Column("member_id", sa.String(36), primary_key=True),
        *_interest_columns(),
    )

    op.create_table(
        "member_product_purchases",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("product_id", sa.String(200), primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
        sa.Column("first_at", _tz(), nullable=False),
        sa.Column("last_at", _tz(), nullable=False),
    )

    op.create_table(
        "behaviour_sessions",
        sa.Column("session_id", sa.String(100), primary_key=True),
        sa.Column("member_id", sa.String(36)),
        sa.Column("attributed", sa.Boolean, nullable=False),
        sa.Column("linked_at", _tz()),
        *_behaviour_columns(),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_behaviour_sessions_member_id", "behaviour_sessions", ["member_id"])

    op.create_table(
        "session_interests",
        sa.Column("session_id", sa.String(100), primary_key=True),
        *_interest_columns(),
    )

    op.create_table(
        "behaviour_consents",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("personalisation", sa.Boolean, nullable=False),
        sa.Column("changed_at", _tz()),
        sa.Column("erased", sa.Boolean, nullable=False),
    )

    op.create_table(
        "behaviour_orders",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("lines", JSONType, nullable=False),
        sa.Column("placed_at", _tz(), nullable=False),
        sa.Column("paid_at", _tz()),
    )
    op.create_index("ix_behaviour_orders_member_id", "behaviour_orders", ["member_id"])

    op.create_table(
        "behaviour_reviews",
        sa.Column("review_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("category", sa.String(100)),
        sa.Column("brand", sa.String(100)),
        sa.Column("stars", sa.Integer, nullable=False),
    )
    op.create_index("ix_behaviour_reviews_member_id", "behaviour_reviews", ["member_id"])

    op.create_table(
        "behaviour_daily",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("kind", sa.String(20), primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("behaviour_daily")
    op.drop_index("ix_behaviour_reviews_member_id", table_name="behaviour_reviews")
    op.drop_table("behaviour_reviews")
    op.drop_index("ix_behaviour_orders_member_id", table_name="behaviour_orders")
    op.drop_table("behaviour_orders")
    op.drop_table("behaviour_consents")
    op.drop_table("session_interests")
    op.drop_index("ix_behaviour_sessions_member_id", table_name="behaviour_sessions")
    op.drop_table("behaviour_sessions")
    op.drop_table("member_product_purchases")
    op.drop_table("member_interests")
    op.drop_index("ix_member_activity_last_purchase_at", table_name="member_activity")
    op.drop_index("ix_member_activity_last_activity_at", table_name="member_activity")
    op.drop_table("member_activity")
