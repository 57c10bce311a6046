"""Shipment tracking and notification read models, the notification outbox and webhooks.

Written by hand to match projections/shipping_tables.py (as 0002 matches
commerce_tables.py), so the schema a deployment runs is reviewed, not generated.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "shipment_tracking",
        sa.Column("shipment_id", sa.String(36), primary_key=True),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("carrier", sa.String(40), nullable=False),
        sa.Column("tracking_number", sa.String(60), nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("speed", sa.String(20), nullable=False),
        sa.Column("priority_dispatch", sa.Boolean, nullable=False),
        sa.Column("pickup_point", sa.String(100)),
        sa.Column("window", JSONType),
        sa.Column("items", JSONType, nullable=False),
        sa.Column("packaging", JSONType, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("status_at", _tz()),
        sa.Column("eta", _tz()),
        sa.Column("promised_by", _tz(), nullable=False),
        sa.Column("timeline", JSONType, nullable=False),
        sa.Column("exception_state", sa.String(10), nullable=False),
        sa.Column("open_exceptions", JSONType, nullable=False),
        sa.Column("resolutions", JSONType, nullable=False),
        sa.Column("rating", JSONType),
        sa.Column("rated", sa.Boolean, nullable=False),
        sa.Column("complaint", JSONType),
        sa.Column("replaces", sa.String(36)),
        sa.Column("reshipped_as", sa.String(36)),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("delivered_at", _tz()),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_shipment_tracking_order_id", "shipment_tracking", ["order_id"])
    op.create_index("ix_shipment_tracking_member_id", "shipment_tracking", ["member_id"])
    op.create_index("ix_shipment_tracking_status", "shipment_tracking", ["status"])
    op.create_index(
        "ix_shipment_tracking_exception_state", "shipment_tracking", ["exception_state"]
    )
    op.create_index("ix_shipment_tracking_rated", "shipment_tracking", ["rated"])
    op.create_index(
        "ix_shipment_tracking_carrier_tracking_number", "shipment_tracking",
        ["carrier", "tracking_number"], unique=True,
    )

    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(100), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("topic", sa.String(60), nullable=False),
        sa.Column("shipment_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("channels", JSONType, nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_notifications_member_id", "notifications", ["member_id"])

    op.create_table(
        "notification_consents",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("channel", sa.String(20), primary_key=True),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("changed_at", _tz(), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "notification_shipments",
        sa.Column("shipment_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("carrier", sa.String(40), nullable=False),
        sa.Column("tracking_number", sa.String(60), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("latest_occurred_at", sa.String(64)),
        sa.Column("latest_recorded_at", sa.String(64)),
    )
    op.create_index(
        "ix_notification_shipments_member_id", "notification_shipments", ["member_id"]
    )

    op.create_table(
        "notification_erasures",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("erased_at", _tz(), nullable=False),
    )

    op.create_table(
        "notification_outbox",
        sa.Column("notification_id", sa.String(100), primary_key=True),
        sa.Column("channel", sa.String(20), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _tz()),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", _tz(), nullable=False),
        sa.Column("sent_at", _tz()),
    )
    op.create_index(
        "ix_notification_outbox_status_next_attempt_at", "notification_outbox",
        ["status", "next_attempt_at"],
    )
    op.create_index("ix_notification_outbox_member_id", "notification_outbox", ["member_id"])

    op.create_table(
        "notification_webhooks",
        sa.Column("webhook_id", sa.String(36), primary_key=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", _tz(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_webhooks")
    op.drop_index("ix_notification_outbox_member_id", table_name="notification_outbox")
    op.drop_index(
        "ix_notification_outbox_status_next_attempt_at", table_name="notification_outbox"
    )
    op.drop_table("notification_outbox")
    op.drop_table("notification_erasures")
    op.drop_index(
        "ix_notification_shipments_member_id", table_name="notification_shipments"
    )
    op.drop_table("notification_shipments")
    op.drop_table("notification_consents")
    op.drop_index("ix_notifications_member_id", table_name="notifications")
    op.drop_table("notifications")
    for name in (
        "ix_shipment_tracking_carrier_tracking_number",
        "ix_shipment_tracking_rated",
        "ix_shipment_tracking_exception_state",
        "ix_shipment_tracking_status",
        "ix_shipment_tracking_member_id",
        "ix_shipment_tracking_order_id",
    ):
        op.drop_index(name, table_name="shipment_tracking")
    op.drop_table("shipment_tracking")
