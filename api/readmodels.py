"""Async queries over read-model tables: what the API answers from (never from events)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.tables import member_profiles, member_tags

ProfileRow = dict[str, Any]


class InvalidCursorError(ValueError):
    pass


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, default=str).encode()).decode()


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError):
        raise InvalidCursorError("malformed cursor") from None
    if not isinstance(parts, list) or len(parts) != arity:
        raise InvalidCursorError("malformed cursor")
    return parts


def contains_text(column: Any, text: str) -> ColumnElement[bool]:
    """`column` contains `text`, ignoring letter case, with `text` taken literally.

    Every substring search goes through here. A client's `%` or `_` would otherwise be a
    LIKE wildcard: `a_n` would match "ann" and "%" everything, so a caller could probe a
    column one pattern at a time. SQLAlchemy's autoescape escapes `%`, `_` and the escape
    character itself (`/`); ILIKE on PostgreSQL, lower() on both sides on SQLite.
    """
    return column.icontains(text, autoescape=True)  # type: ignore[no-any-return]


def instant(value: Any) -> datetime | None:
    """A time from JSON, an aggregate or a cursor (ISO text), or a column (already aware:
    see projections/timestamps.py); every instant in Patron is UTC, so one without a zone
    is taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def required_instant(value: Any) -> datetime:
    moment = instant(value)
    assert moment is not None
    return moment


@dataclass(frozen=True)
class MemberFilter:
    status: str | None = None
    tag: str | None = None
    city: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class RowPage:
    """One page of read-model rows, whether another follows, and how many match in all."""

    rows: list[dict[str, Any]]
    has_next: bool
    total: int


async def fetch_rows(engine: AsyncEngine, query: Select[Any]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]



def cursor_moment(value: Any) -> datetime:
    """A time inside a cursor: ISO text with a zone, or the cursor is malformed."""
    try:
        moment = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise InvalidCursorError("malformed cursor") from None
    if moment.tzinfo is None:
        raise InvalidCursorError("malformed cursor")
    return moment.astimezone(UTC)


async def fetch_page(engine: AsyncEngine, query: Select[Any], count: Select[Any],
                     first: int) -> RowPage:
    """`first` rows of an ordered query (one more is read to know if a next page exists)."""
    async with engine.connect() as conn:
        rows = [dict(row._mapping) for row in await conn.execute(query.limit(first + 1))]
        total = int(await conn.scalar(count) or 0)
    return RowPage(rows[:first], len(rows) > first, total)


@dataclass(frozen=True)
class Page:
    rows: list[ProfileRow]
    has_next: bool
    total: int


async def get_member_profiles(engine: AsyncEngine, member_ids: list[str]) -> dict[str, ProfileRow]:
    if not member_ids:
        return {}
    async with engine.connect() as conn:
        result = await conn.execute(
            select(member_profiles).where(member_profiles.c.member_id.in_(member_ids))
        )
        return {row.member_id: dict(row._mapping) for row in result}


async def get_member_tags(engine: AsyncEngine, member_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(member_tags)
            .where(member_tags.c.member_id == member_id)
            .order_by(member_tags.c.tag)
        )
        return [dict(row._mapping) for row in result]


def _filtered(query: Select[Any], where: MemberFilter) -> Select[Any]:
    if where.status:
        query = query.where(member_profiles.c.status == where.status)
    if where.city:
        query = query.where(func.lower(member_profiles.c.city) == where.city.strip().lower())
    if where.tag:
        query = query.where(
            member_profiles.c.member_id.in_(
                select(member_tags.c.member_id).where(member_tags.c.tag == where.tag.lower())
            )
        )
    if where.search and where.search.strip():
        text = where.search.strip()
        query = query.where(
            or_(
                contains_text(member_profiles.c.name, text),
                contains_text(member_profiles.c.email, text),
                member_profiles.c.member_id == text,
            )
        )
    return query


async def list_member_profiles(
    engine: AsyncEngine, where: MemberFilter, first: int, after: str | None
) -> Page:
    """Keyset pagination in registration order: stable while members keep registering."""
    query = _filtered(select(member_profiles), where)
    if after:
        registered_at, member_id = decode_cursor(after, 2)
        try:
            moment = instant(registered_at)
        except (TypeError, ValueError):
            raise InvalidCursorError("malformed cursor") from None
        query = query.where(
            or_(
                member_profiles.c.registered_at > moment,
                (member_profiles.c.registered_at == moment)
                & (member_profiles.c.member_id > str(member_id)),
            )
        )
    query = query.order_by(member_profiles.c.registered_at, member_profiles.c.member_id).limit(
        first + 1
    )
    count_query = _filtered(select(func.count()).select_from(member_profiles), where)
    async with engine.connect() as conn:
        rows = [dict(row._mapping) for row in await conn.execute(query)]
        total = int(await conn.scalar(count_query) or 0)
    return Page(rows=rows[:first], has_next=len(rows) > first, total=total)


def member_cursor(row: ProfileRow) -> str:
    registered_at = row["registered_at"]
    assert registered_at is not None
    return encode_cursor(registered_at.astimezone(UTC).isoformat(), row["member_id"])


async def rows_by_id(engine: AsyncEngine, column: Any, ids: list[str]) -> dict[str, ProfileRow]:
    """Rows of `column`'s table whose `column` is one of `ids`, keyed by it (for Relay nodes)."""
    if not ids:
        return {}
    async with engine.connect() as conn:
        result = await conn.execute(select(column.table).where(column.in_(ids)))
        return {row._mapping[column.name]: dict(row._mapping) for row in result}
