"""Queries over live segment membership (projections/segment_tables.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import (
    InvalidCursorError,
    RowPage,
    decode_cursor,
    encode_cursor,
    fetch_page,
    fetch_rows,
    instant,
)
from projections.segment_tables import (
    segment_daily,
    segment_members,
    segment_membership_changes,
    segments,
)

Row = dict[str, Any]
MAX_SIZE_DAYS = 366


def _moment(value: Any) -> datetime:
    try:
        moment = instant(str(value))
    except (TypeError, ValueError):
        raise InvalidCursorError("malformed cursor") from None
    assert moment is not None
    return moment


async def get_segments(engine: AsyncEngine, segment_ids: list[str]) -> dict[str, Row]:
    if not segment_ids:
        return {}
    rows = await fetch_rows(engine, select(segments).where(
        segments.c.segment_id.in_(segment_ids)))
    return {row["segment_id"]: row for row in rows}


async def segments_by_name(engine: AsyncEngine) -> list[Row]:
    """Every segment, archived ones too (their sizes over time still tell a story)."""
    return await fetch_rows(engine, select(segments).order_by(segments.c.name,
                                                             segments.c.segment_id))


def segment_cursor(row: Row) -> str:
    return encode_cursor(row["name"], row["segment_id"])


async def list_segments(engine: AsyncEngine, state: str | None, first: int,
                        after: str | None) -> RowPage:
    """By name (then id): the order admins look for a segment in."""
    conditions = [segments.c.state == state] if state else []
    query = select(segments).where(*conditions)
    if after:
        name, segment_id = decode_cursor(after, 2)
        query = query.where(or_(segments.c.name > str(name),
                                (segments.c.name == str(name))
                                & (segments.c.segment_id > str(segment_id))))
    query = query.order_by(segments.c.name, segments.c.segment_id)
    count = select(func.count()).select_from(segments).where(*conditions)
    return await fetch_page(engine, query, count, first)


def member_cursor(row: Row) -> str:
    joined = row["joined_at"]
    assert joined is not None
    return encode_cursor(joined.isoformat(), row["member_id"])


async def segment_members_page(engine: AsyncEngine, segment_id: str, first: int,
                               after: str | None) -> RowPage:
    """Current members in the order they joined: members who join while someone pages
    through come at the end, so nothing repeats or is skipped."""
    m = segment_members.c
    query = select(segment_members).where(m.segment_id == segment_id)
    if after:
        joined, member_id = decode_cursor(after, 2)
        moment = _moment(joined)
        query = query.where(or_(m.joined_at > moment,
                                (m.joined_at == moment) & (m.member_id > str(member_id))))
    query = query.order_by(m.joined_at, m.member_id)
    count = select(func.count()).select_from(segment_members).where(m.segment_id == segment_id)
    return await fetch_page(engine, query, count, first)


def change_cursor(row: Row) -> str:
    return encode_cursor(row["position"], row["member_id"])


async def membership_changes_page(engine: AsyncEngine, segment_id: str,
                                  member_id: str | None, first: int,
                                  after: str | None) -> RowPage:
    """Joins and leaves, newest first."""
    c = segment_membership_changes.c
    conditions = [c.segment_id == segment_id]
    if member_id:
        conditions.append(c.member_id == member_id)
    query = select(segment_membership_changes).where(*conditions)
    if after:
        position, last_member = decode_cursor(after, 2)
        if not isinstance(position, int):
            raise InvalidCursorError("malformed cursor")
        query = query.where(or_(c.position < position,
                                (c.position == position) & (c.member_id < str(last_member))))
    query = query.order_by(c.position.desc(), c.member_id.desc())
    count = select(func.count()).select_from(segment_membership_changes).where(*conditions)
    return await fetch_page(engine, query, count, first)


async def member_segments(engine: AsyncEngine, member_id: str) -> list[Row]:
    """The segments a member is in now, with when they joined and why, oldest first."""
    m = segment_members.c
    query = (select(segment_members, segments.c.name)
             .join(segments, segments.c.segment_id == m.segment_id)
             .where(m.member_id == member_id)
             .order_by(m.joined_at, m.segment_id))
    return await fetch_rows(engine, query)


@dataclass(frozen=True)
class SegmentSizeDay:
    day: date
    # Members at the end of the UTC day, and who joined and left during it.
    size: int
    joins: int
    leaves: int


async def segment_sizes(engine: AsyncEngine, segment_ids: list[str], start: date,
                        end: date) -> dict[str, list[SegmentSizeDay]]:
    """Every UTC day from `start` to `end` inclusive, per segment: days without a change
    carry the size of the latest day before them that had one (0 before the first)."""
    if end < start:
        raise ValueError("end must not be before start")
    if (end - start).days + 1 > MAX_SIZE_DAYS:
        raise ValueError(f"at most {MAX_SIZE_DAYS} days at a time")
    if not segment_ids:
        return {}
    d = segment_daily.c
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(d.segment_id, d.day, d.joins, d.leaves, d.size)
            .where(d.segment_id.in_(segment_ids), d.day <= end)
            .order_by(d.segment_id, d.day))).all()
    by_segment: dict[str, list[Any]] = {segment_id: [] for segment_id in segment_ids}
    for row in rows:
        by_segment[row.segment_id].append(row)
    result: dict[str, list[SegmentSizeDay]] = {}
    for segment_id, changes in by_segment.items():
        days: list[SegmentSizeDay] = []
        size, i = 0, 0
        day = start
        while day <= end:
            joins = leaves = 0
            while i < len(changes) and _day(changes[i].day) <= day:
                size = int(changes[i].size)
                if _day(changes[i].day) == day:
                    joins, leaves = int(changes[i].joins), int(changes[i].leaves)
                i += 1
            days.append(SegmentSizeDay(day, size, joins, leaves))
            day += timedelta(days=1)
        result[segment_id] = days
    return result


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
