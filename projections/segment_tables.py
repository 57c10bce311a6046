"""Read-model tables of live segment membership, kept by the "member_behaviour" projection.

Membership is decided from the same rows profiles are computed from (behaviour_tables), in
the same transaction as the event that changed them, so a member's joins and leaves carry
that event's time and a rebuild from zero records exactly the same history. Changes that
come from the passing of time or from the rest of the member base (decay, "within N
days", lifecycle, RFM quintiles) are picked up by `SegmentReview` events the scheduler
records at a fixed interval; they too are events, so they replay identically.

Migration 0006 creates these tables; a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

# One row per segment, as admins defined it, with its current size.
segments = Table(
    "segments",
    metadata,
    Column("segment_id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    # Canonical rule text (domain.segment_rules.Rule.text).
    Column("rule", Text, nullable=False),
    # 'active' | 'archived'
    Column("state", String(10), nullable=False),
    Column("defined_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("archived_at", UtcDateTime()),
    # Members now.
    Column("size", Integer, nullable=False),
    # The latest evaluation of every member against the segment (definition, rule change
    # or review): membership is correct as of this moment.
    Column("evaluated_at", UtcDateTime()),
    Column("position", BigInteger, nullable=False),
)

# Current members, with the moment they joined and why the rule holds for them.
segment_members = Table(
    "segment_members",
    metadata,
    Column("segment_id", String(36), primary_key=True),
    Column("member_id", String(36), primary_key=True),
    Column("joined_at", UtcDateTime(), nullable=False),
    # [{condition, fact, value, held, negated}]: the reasons, as of `evaluated_at` (later
    # evaluations that found the same reasons leave the row alone).
    Column("why", JSONType, nullable=False),
    Column("evaluated_at", UtcDateTime(), nullable=False),
    Index("ix_segment_members_page", "segment_id", "joined_at", "member_id"),
    Index("ix_segment_members_member_id", "member_id"),
)

# Every join and leave, at the time of the event (or review) that caused it.
segment_membership_changes = Table(
    "segment_membership_changes",
    metadata,
    Column("segment_id", String(36), primary_key=True),
    Column("member_id", String(36), primary_key=True),
    # The event whose processing made the change: one change per member, segment and event.
    Column("position", BigInteger, primary_key=True),
    # 'joined' | 'left'
    Column("change", String(6), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_segment_membership_changes_segment_at", "segment_id", "at"),
    Index("ix_segment_membership_changes_member_id", "member_id"),
)

# Per segment and UTC day with a change: joins, leaves and the size at the day's end, so
# sizes over time read one row per day instead of replaying the changes.
segment_daily = Table(
    "segment_daily",
    metadata,
    Column("segment_id", String(36), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("joins", Integer, nullable=False),
    Column("leaves", Integer, nullable=False),
    Column("size", Integer, nullable=False),
)

SEGMENT_TABLES = (segments, segment_members, segment_membership_changes, segment_daily)
