"""A stand-in for live segment membership, for the campaign tests.

Campaigns read who is in a segment from the `segments` and `segment_members` read models,
which the "member_behaviour" projection keeps from the members' profiles. The campaign
tests need membership to be exactly what each test says, at the moment it says it (a
member leaves, rejoins, a segment is archived), whatever profiles the test members have,
so these helpers write those two tables directly, as the projection would. The Segment
aggregate itself is defined through the domain, since launching checks it exists.

Writes are upserts: when the real projection has already recorded the segment (the API
tests run every projection), the stand-in changes its rows instead of clashing with them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, insert, select, update

from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role
from domain.segments import Segment
from projections.segment_tables import segment_members, segments

# A rule every member with a tier satisfies: the real projection, where it runs, then
# agrees with the stand-in about who is in the segment.
EVERYONE = "tier in [regular, silver, gold, platinum]"


def admin_meta(reason: str | None = "campaign tests") -> EventMetadata:
    return EventMetadata("admin-1", Role.ADMIN, Channel.ADMIN, "corr", None, uuid.uuid4().hex,
                         reason)


def define_segment(runtime: Runtime, name: str = "Everyone", rule: str = EVERYONE) -> UUID:
    """The Segment aggregate, defined through the domain (nothing written to read models)."""
    segment_id = uuid.uuid4()
    runtime.uow.create(lambda: Segment.define(segment_id, name, None, rule,
                                              runtime.clock.now(), admin_meta()))
    return segment_id


def seed_segment(runtime: Runtime, segment_id: UUID, member_ids: Iterable[str | UUID] = (),
                 at: datetime | None = None, state: str = "active") -> None:
    """The segment's row in the read model, and these members in it (joined `at`, or now;
    members already in it keep their joining time)."""
    moment = at or runtime.clock.now()
    key = str(segment_id)
    with runtime.sync_engine.begin() as conn:
        changed = conn.execute(update(segments).where(segments.c.segment_id == key).values(
            state=state, updated_at=moment)).rowcount
        if not changed:
            conn.execute(insert(segments).values(
                segment_id=key, name="stand-in", description=None, rule=EVERYONE, state=state,
                defined_at=moment, updated_at=moment, archived_at=None, size=0,
                evaluated_at=moment, position=0))
        present = set(conn.execute(select(segment_members.c.member_id).where(
            segment_members.c.segment_id == key)).scalars())
        for member_id in (str(m) for m in member_ids):
            if member_id not in present:
                present.add(member_id)
                conn.execute(insert(segment_members).values(
                    segment_id=key, member_id=member_id, joined_at=moment,
                    why=[{"condition": "stand-in", "held": True}], evaluated_at=moment))
        conn.execute(update(segments).where(segments.c.segment_id == key).values(
            size=len(present)))


def leave_segment(runtime: Runtime, segment_id: UUID, *member_ids: str | UUID) -> None:
    """These members are no longer in the segment."""
    with runtime.sync_engine.begin() as conn:
        conn.execute(delete(segment_members).where(
            (segment_members.c.segment_id == str(segment_id))
            & segment_members.c.member_id.in_([str(m) for m in member_ids])))


def archive_in_read_model(runtime: Runtime, segment_id: UUID) -> None:
    """The read model shows the segment archived (its members are kept, as a stale list)."""
    with runtime.sync_engine.begin() as conn:
        conn.execute(update(segments).where(segments.c.segment_id == str(segment_id)).values(
            state="archived", archived_at=runtime.clock.now()))
