"""After-sales read models, and return/replacement parcels in shipment tracking.

Written by hand to match projections/after_sales_tables.py and the two columns
projections/shipping_tables.py gained for after-sales parcels (direction, case_id), so the
schema a deployment runs is reviewed, not generated. Existing parcels are all outbound:
the server default fills them in.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-13
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

CASE_QUEUE_INDEXES = (
    ("ix_case_queue_member_id", "member_id"),
    ("ix_case_queue_order_id", "order_id"),
    ("ix_case_queue_state", "state"),
    ("ix_case_queue_team", "team"),
    ("ix_case_queue_assignee", "assignee"),
    ("ix_case_queue_next_due_at", "next_due_at"),
    ("ix_case_queue_opened_at", "opened_at"),
)


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # Batch mode: SQLite cannot alter tables in place beyond adding a column.
    with op.batch_alter_table("shipment_tracking") as batch:
        batch.add_column(sa.Column("direction", sa.String(10), nullable=False,
                                   server_default="outbound"))
        batch.add_column(sa.Column("case_id", sa.String(36)))
        batch.create_index("ix_shipment_tracking_case_id", ["case_id"])

    op.create_table(
        "case_queue",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("case_number", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(36), nullable=False),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("case_type", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(100), nullable=False),
        sa.Column("lines", JSONType, nullable=False),
        sa.Column("preferred_outcome", sa.String(20)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("team", sa.String(60), nullable=False),
        sa.Column("assignee", sa.String(100)),
        sa.Column("opened_at", _tz(), nullable=False),
        sa.Column("opened_by_role", sa.String(20), nullable=False),
        sa.Column("first_review_due", _tz(), nullable=False),
        sa.Column("first_reviewed_at", _tz()),
        sa.Column("first_response_at", _tz()),
        sa.Column("resolution_due", _tz(), nullable=False),
        sa.Column("resolved_at", _tz()),
        sa.Column("closed_at", _tz()),
        sa.Column("outcome", sa.String(20)),
        sa.Column("refund", JSONType),
        sa.Column("replacement_shipment_id", sa.String(36)),
        sa.Column("return_shipment_id", sa.String(36)),
        sa.Column("return_carrier", sa.String(40)),
        sa.Column("return_tracking_number", sa.String(60)),
        sa.Column("label_url", sa.String(500)),
        sa.Column("inspection_result", sa.String(20)),
        sa.Column("disposition", sa.String(20)),
        sa.Column("first_review_breached", sa.Boolean, nullable=False),
        sa.Column("resolution_breached", sa.Boolean, nullable=False),
        sa.Column("breached", sa.Boolean, nullable=False),
        sa.Column("next_due_at", _tz()),
        sa.Column("follow_up_scheduled_for", _tz()),
        sa.Column("follow_up_outcome", sa.String(20)),
        sa.Column("rating", JSONType),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("last_message_at", _tz()),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_case_queue_case_number", "case_queue", ["case_number"])
    for name, column in CASE_QUEUE_INDEXES:
        op.create_index(name, "case_queue", [column])

    op.create_table(
        "case_timeline",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("at", _tz(), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("actor_id", sa.String(100), nullable=False),
        sa.Column("actor_role", sa.String(20), nullable=False),
        sa.Column("detail", JSONType, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "service_kpis",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("team", sa.String(60), nullable=False),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("case_type", sa.String(20), nullable=False),
        sa.Column("opened_at", _tz(), nullable=False),
        sa.Column("opened_on", sa.Date, nullable=False),
        sa.Column("first_response_seconds", sa.Float),
        sa.Column("first_review_seconds", sa.Float),
        sa.Column("resolution_seconds", sa.Float),
        sa.Column("resolved_at", _tz()),
        sa.Column("first_review_breached", sa.Boolean, nullable=False),
        sa.Column("resolution_breached", sa.Boolean, nullable=False),
        sa.Column("attitude", sa.Integer),
        sa.Column("ability", sa.Integer),
        sa.Column("efficiency", sa.Integer),
        sa.Column("category", sa.String(20)),
        sa.Column("rated_at", _tz()),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_service_kpis_opened_at", "service_kpis", ["opened_at"])


def downgrade() -> None:
    op.drop_index("ix_service_kpis_opened_at", table_name="service_kpis")
    op.drop_table("service_kpis")
    op.drop_table("case_timeline")
    for name, _column in reversed(CASE_QUEUE_INDEXES):
        op.drop_index(name, table_name="case_queue")
    op.drop_index("ix_case_queue_case_number", table_name="case_queue")
    op.drop_table("case_queue")
    with op.batch_alter_table("shipment_tracking") as batch:
        batch.drop_index("ix_shipment_tracking_case_id")
        batch.drop_column("case_id")
        batch.drop_column("direction")
