"""Live segment membership, and the loyalty tier segment rules read.

Written by hand to match projections/segment_tables.py and the new `tier` column of
projections/behaviour_tables.py. The "member_behaviour" projection now also follows tier
changes and segments, which it did not record before, so this migration empties its tables
and sets it back to position zero: it replays the event store on its next run, and every
profile and membership is then exactly what the events say.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BEHAVIOUR_TABLES = ("member_activity", "member_interests", "member_product_purchases",
                    "behaviour_sessions", "session_interests", "behaviour_consents",
                    "behaviour_orders", "behaviour_reviews", "behaviour_daily")


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("member_activity") as batch:
        batch.add_column(sa.Column("tier", sa.String(20)))
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("defined_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("archived_at", _tz()),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("evaluated_at", _tz()),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("joined_at", _tz(), nullable=False),
        sa.Column("why", JSONType, nullable=False),
        sa.Column("evaluated_at", _tz(), nullable=False),
    )
    op.create_index("ix_segment_members_page", "segment_members",
                    ["segment_id", "joined_at", "member_id"])
    op.create_index("ix_segment_members_member_id", "segment_members", ["member_id"])
    op.create_table(
        "segment_membership_changes",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("change", sa.String(6), nullable=False),
        sa.Column("at", _tz(), nullable=False),
    )
    op.create_index("ix_segment_membership_changes_segment_at",
                    "segment_membership_changes", ["segment_id", "at"])
    op.create_index("ix_segment_membership_changes_member_id",
                    "segment_membership_changes", ["member_id"])
    op.create_table(
        "segment_daily",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("joins", sa.Integer, nullable=False),
        sa.Column("leaves", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
    )
    # Replay member_behaviour from zero (see the module docstring).
    for table in BEHAVIOUR_TABLES:
        op.execute(sa.text(f"DELETE FROM {table}"))
    op.execute(sa.text("UPDATE projection_tracking SET position = 0, events_applied = 0 "
                       "WHERE name = 'member_behaviour'"))


def downgrade() -> None:
    for table in ("segment_daily", "segment_membership_changes", "segment_members",
                  "segments"):
        op.drop_table(table)
    with op.batch_alter_table("member_activity") as batch:
        batch.drop_column("tier")
