"""Projection tracking, member data keys and the member_profiles read model.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "projection_tracking",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("events_applied", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.String(200)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "member_data_keys",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("data_key", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "member_profiles",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100)),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(32)),
        sa.Column("birthday", sa.Date),
        sa.Column("default_address", JSONType),
        sa.Column("gender", sa.String(20)),
        sa.Column("occupation", sa.String(100)),
        sa.Column("education", sa.String(20)),
        sa.Column("income_band", sa.String(20)),
        sa.Column("city", sa.String(100)),
        sa.Column("region", sa.String(100)),
        sa.Column("preferred_channel", sa.String(20)),
        sa.Column("language", sa.String(35)),
        sa.Column("preferences", JSONType, nullable=False),
        sa.Column("consents", JSONType, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("status_reason", sa.String(500)),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("erased", sa.Boolean, nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True)),
        sa.Column("profile_complete", sa.Boolean, nullable=False),
        sa.Column("registration_channel", sa.String(20), nullable=False),
        sa.Column("channel_activity", JSONType, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_member_profiles_status", "member_profiles", ["status"])
    op.create_index("ix_member_profiles_city", "member_profiles", ["city"])
    op.create_index("ix_member_profiles_email", "member_profiles", ["email"])
    op.create_table(
        "member_tags",
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.String(40), primary_key=True),
        sa.Column("reason", sa.String(500)),
        sa.Column("tagged_by", sa.String(100), nullable=False),
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_member_tags_tag", "member_tags", ["tag"])


def downgrade() -> None:
    op.drop_table("member_tags")
    op.drop_table("member_profiles")
    op.drop_table("member_data_keys")
    op.drop_table("projection_tracking")
