"""Read-model and bookkeeping tables. Alembic migrations in `migrations/` create them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from projections.timestamps import UtcDateTime

metadata = MetaData()

JSONType = JSON().with_variant(JSONB(), "postgresql")

projection_tracking = Table(
    "projection_tracking",
    metadata,
    Column("name", String(100), primary_key=True),
    # Global event-store position of the last event this projection has applied.
    Column("position", BigInteger, nullable=False, default=0),
    Column("events_applied", BigInteger, nullable=False, default=0),
    Column("updated_at", UtcDateTime()),
    Column("last_error", Text),
    Column("last_error_at", UtcDateTime()),
    # Leader election: only the lease holder processes, so two runners never race for work.
    Column("lease_owner", String(200)),
    Column("lease_expires_at", UtcDateTime()),
)

# Events an operator told one read model to pass over (`patron projections skip`).
projection_skips = Table(
    "projection_skips",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("position", BigInteger, primary_key=True),
    Column("topic", String(400), nullable=False),
    Column("reason", Text, nullable=False),
    Column("skipped_by", String(200), nullable=False),
    Column("skipped_at", UtcDateTime(), nullable=False),
)

member_profiles = Table(
    "member_profiles",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("version", Integer, nullable=False),
    # Personal data: NULL once the member is erased.
    Column("name", String(100)),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("birthday", Date),
    Column("default_address", JSONType),
    # Non-personal profile.
    Column("gender", String(20)),
    Column("occupation", String(100)),
    Column("education", String(20)),
    Column("income_band", String(20)),
    Column("city", String(100)),
    Column("region", String(100)),
    Column("preferred_channel", String(20)),
    Column("language", String(35)),
    Column("preferences", JSONType, nullable=False),
    Column("consents", JSONType, nullable=False),
    Column("status", String(10), nullable=False),
    Column("status_reason", String(500)),
    Column("tier", String(20), nullable=False),
    Column("erased", Boolean, nullable=False),
    Column("erased_at", UtcDateTime()),
    Column("profile_complete", Boolean, nullable=False),
    Column("registration_channel", String(20), nullable=False),
    # Events per channel, so one profile shows activity from every channel.
    Column("channel_activity", JSONType, nullable=False),
    Column("registered_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_member_profiles_status", "status"),
    Index("ix_member_profiles_city", "city"),
    Index("ix_member_profiles_email", "email"),
)

member_tags = Table(
    "member_tags",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("tag", String(40), primary_key=True),
    Column("reason", String(500)),
    Column("tagged_by", String(100), nullable=False),
    Column("tagged_at", UtcDateTime(), nullable=False),
    Index("ix_member_tags_tag", "tag"),
)

member_data_keys = Table(
    "member_data_keys",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # NULL once destroyed: the member's personal data is then unreadable everywhere.
    Column("data_key", String(64)),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("destroyed_at", UtcDateTime()),
)
