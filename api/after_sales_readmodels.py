"""Async queries over the after-sales read models: the case queue, timelines and KPIs.

The tables are written by the "case_queue" and "service_kpis" projections, so what these
functions return includes changes recorded by any process, a little behind the event
store. Datetimes in the returned rows are aware UTC datetimes on every backend (SQLite
hands them back naive; they are normalised here, so callers need not).

No personal data can come out of here: the tables never hold any (see
projections/after_sales_tables.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import InvalidCursorError, RowPage, decode_cursor, encode_cursor
from domain.after_sales import OPEN_STATES
from projections import after_sales_tables as tables
from projections.after_sales_tables import case_queue

Row = dict[str, Any]

OPEN_STATE_VALUES = tuple(sorted(str(s.value) for s in OPEN_STATES))


def _normalised(row: Any) -> Row:
    return dict(row._mapping)


async def _rows(engine: AsyncEngine, query: Select[Any]) -> list[Row]:
    async with engine.connect() as conn:
        return [_normalised(row) for row in await conn.execute(query)]


def _utc(moment: datetime) -> datetime:
    """A bound time in UTC: SQLite compares datetimes as text, without their offset."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC)


# -- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseFilter:
    member_id: str | None = None
    order_id: str | None = None
    open_only: bool = False  # states in OPEN_STATES
    states: tuple[str, ...] | None = None
    case_types: tuple[str, ...] | None = None
    teams: tuple[str, ...] | None = None
    tiers: tuple[str, ...] | None = None
    assignee: str | None = None
    unassigned: bool | None = None  # True: assignee IS NULL; False: NOT NULL
    breached: bool | None = None


class CaseSort(StrEnum):
    # Open cases by the deadline they work towards, soonest first; the rest after them.
    URGENCY = "urgency"
    NEWEST = "newest"
    OLDEST = "oldest"


async def get_cases(engine: AsyncEngine, case_ids: list[str]) -> dict[str, Row]:
    if not case_ids:
        return {}
    rows = await _rows(engine, select(case_queue).where(case_queue.c.case_id.in_(case_ids)))
    return {row["case_id"]: row for row in rows}


def _conditions(where: CaseFilter) -> list[ColumnElement[bool]]:
    c = case_queue.c
    conditions: list[ColumnElement[bool]] = []
    if where.member_id:
        conditions.append(c.member_id == where.member_id)
    if where.order_id:
        conditions.append(c.order_id == where.order_id)
    if where.open_only:
        conditions.append(c.state.in_(OPEN_STATE_VALUES))
    # An empty tuple is a filter that nothing passes, not "no filter".
    if where.states is not None:
        conditions.append(c.state.in_(list(where.states)))
    if where.case_types is not None:
        conditions.append(c.case_type.in_(list(where.case_types)))
    if where.teams is not None:
        conditions.append(c.team.in_(list(where.teams)))
    if where.tiers is not None:
        conditions.append(c.tier.in_(list(where.tiers)))
    if where.assignee:
        conditions.append(c.assignee == where.assignee)
    if where.unassigned is not None:
        conditions.append(c.assignee.is_(None) if where.unassigned else c.assignee.is_not(None))
    if where.breached is not None:
        conditions.append(c.breached.is_(where.breached))
    return conditions


def _sort_key(row: Row, sort: CaseSort) -> datetime | None:
    value = row["next_due_at"] if sort == CaseSort.URGENCY else row["opened_at"]
    return value


def case_cursor(row: Row, sort: CaseSort) -> str:
    """Where a page ends, for this sort order (a cursor of one order fails in another)."""
    key = _sort_key(row, sort)
    return encode_cursor(CaseSort(sort).value, key.isoformat() if key else None,
                         row["case_id"])


def _after(after: str, sort: CaseSort) -> tuple[datetime | None, str]:
    sort_name, key, case_id = decode_cursor(after, 3)
    if sort_name != sort.value or not isinstance(case_id, str) or not (
            key is None or isinstance(key, str)):
        raise InvalidCursorError("malformed cursor")
    if key is None:
        if sort != CaseSort.URGENCY:  # every case has an opening time
            raise InvalidCursorError("malformed cursor")
        return None, case_id
    try:
        moment = datetime.fromisoformat(key)
    except ValueError:
        raise InvalidCursorError("malformed cursor") from None
    if moment.tzinfo is None:
        raise InvalidCursorError("malformed cursor")
    return moment.astimezone(UTC), case_id


def _keyset(sort: CaseSort, key: datetime | None, case_id: str) -> ColumnElement[bool]:
    c = case_queue.c
    if sort == CaseSort.URGENCY:
        # next_due_at ascending with NULLs last, then case_id.
        if key is None:
            return c.next_due_at.is_(None) & (c.case_id > case_id)
        return (
            (c.next_due_at > key)
            | ((c.next_due_at == key) & (c.case_id > case_id))
            | c.next_due_at.is_(None)
        )
    assert key is not None  # `_after` lets no cursor without an opening time through
    if sort == CaseSort.NEWEST:
        return (c.opened_at < key) | ((c.opened_at == key) & (c.case_id < case_id))
    return (c.opened_at > key) | ((c.opened_at == key) & (c.case_id > case_id))


def _order(sort: CaseSort) -> list[Any]:
    c = case_queue.c
    if sort == CaseSort.URGENCY:
        # "IS NULL" first sorts the same on both backends (no NULLS LAST needed).
        return [c.next_due_at.is_(None), c.next_due_at, c.case_id]
    if sort == CaseSort.NEWEST:
        return [c.opened_at.desc(), c.case_id.desc()]
    return [c.opened_at, c.case_id]


async def list_cases(
    engine: AsyncEngine, where: CaseFilter, sort: CaseSort, first: int, after: str | None
) -> RowPage:
    """A page of the queue, keyset-paginated (no offsets): cases opened while someone pages
    through do not shift the pages they have not read yet, so nothing repeats or is skipped.

    URGENCY: next_due_at ascending (cases no longer open, with no deadline, last), then
    case_id. NEWEST / OLDEST: by opening time, then case_id. A malformed cursor, or one
    made for another sort order, raises InvalidCursorError (a ValueError).
    """
    sort = CaseSort(sort)
    first = max(first, 0)
    conditions = _conditions(where)
    query = select(case_queue).where(*conditions)
    if after:
        key, case_id = _after(after, sort)
        query = query.where(_keyset(sort, key, case_id))
    query = query.order_by(*_order(sort)).limit(first + 1)
    count = select(func.count()).select_from(case_queue).where(*conditions)
    async with engine.connect() as conn:
        rows = [_normalised(row) for row in await conn.execute(query)]
        total = int(await conn.scalar(count) or 0)
    return RowPage(rows[:first], len(rows) > first, total)


async def case_timeline(engine: AsyncEngine, case_id: str) -> list[Row]:
    """A case's history, one row per event, in the order it happened (by version)."""
    return await _rows(
        engine,
        select(tables.case_timeline).where(tables.case_timeline.c.case_id == case_id)
        .order_by(tables.case_timeline.c.version),
    )


async def latest_case_position(engine: AsyncEngine, case_id: str) -> int:
    """The event-store position the case's row reflects (0 if not projected yet)."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(case_queue.c.position).where(case_queue.c.case_id == case_id)
        )
    return int(value or 0)


# -- KPIs -----------------------------------------------------------------------------------


class KpiGrouping(StrEnum):
    NONE = "none"
    DAY = "day"  # the UTC day of opening
    TEAM = "team"  # the case's team now


@dataclass(frozen=True)
class Distribution:
    count: int
    average: float | None
    p50: float | None
    p90: float | None
    p99: float | None


@dataclass(frozen=True)
class CategorySatisfaction:
    category: str
    ratings: int
    average: float | None  # average over the three dimensions


@dataclass(frozen=True)
class KpiGroup:
    key: str | None  # ISO day "2026-11-22", or the team name, or None
    cases: int  # opened in the range
    resolved: int
    first_response_seconds: Distribution
    resolution_seconds: Distribution
    sla_breach_rate: float | None  # cases with any breach / cases
    first_review_breach_rate: float | None
    resolution_breach_rate: float | None
    ratings: int
    attitude: float | None
    ability: float | None
    efficiency: float | None  # averages
    by_category: list[CategorySatisfaction]  # every FeedbackCategory present, sorted by name


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it.

    Always one of the observed values (no interpolation), so "p90 first response" is a
    wait some member really had.
    """
    if not ordered:
        return None
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return float(ordered[rank - 1])


def distribution(values: Iterable[float | None]) -> Distribution:
    """Count, mean and nearest-rank percentiles of the values that are known (not None)."""
    ordered = sorted(float(v) for v in values if v is not None)
    if not ordered:
        return Distribution(0, None, None, None, None)
    return Distribution(
        count=len(ordered),
        average=sum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
    )


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def kpi_group(key: str | None, rows: list[Row]) -> KpiGroup:
    """The figures of one group of fact rows (one per case)."""
    rated = [r for r in rows if r["category"] is not None]
    categories: dict[str, list[Row]] = {}
    for row in rated:
        categories.setdefault(str(row["category"]), []).append(row)
    return KpiGroup(
        key=key,
        cases=len(rows),
        resolved=sum(1 for r in rows if r["resolved_at"] is not None),
        first_response_seconds=distribution(r["first_response_seconds"] for r in rows),
        resolution_seconds=distribution(r["resolution_seconds"] for r in rows),
        sla_breach_rate=_rate(sum(1 for r in rows if r["first_review_breached"]
                                  or r["resolution_breached"]), len(rows)),
        first_review_breach_rate=_rate(sum(1 for r in rows if r["first_review_breached"]),
                                       len(rows)),
        resolution_breach_rate=_rate(sum(1 for r in rows if r["resolution_breached"]),
                                     len(rows)),
        ratings=len(rated),
        attitude=_mean([r["attitude"] for r in rated]),
        ability=_mean([r["ability"] for r in rated]),
        efficiency=_mean([r["efficiency"] for r in rated]),
        by_category=[
            CategorySatisfaction(
                category=name,
                ratings=len(group),
                average=_mean([r[d] for r in group
                               for d in ("attitude", "ability", "efficiency")]),
            )
            for name, group in sorted(categories.items())
        ],
    )


def _group_key(row: Row, group_by: KpiGrouping) -> str | None:
    if group_by == KpiGrouping.DAY:
        day = row["opened_on"]
        return day.isoformat() if isinstance(day, date) else str(day)
    if group_by == KpiGrouping.TEAM:
        return str(row["team"])
    return None


async def service_kpis(
    engine: AsyncEngine, start: datetime, end: datetime, group_by: KpiGrouping
) -> list[KpiGroup]:
    """Service KPIs of the cases opened in [start, end), overall, per UTC day or per team.

    Computed in Python from the range's fact rows: averages are arithmetic means of the
    known values, and percentiles are nearest-rank (see `percentile`). Rates and averages
    are None when there is nothing to divide by. Groups come sorted by key; only groups
    with cases appear, except that NONE always answers one group (possibly of zero cases),
    so an empty range still has a row to show. `by_category` lists the feedback categories
    that occur among the group's ratings, sorted by name.
    """
    group_by = KpiGrouping(group_by)
    k = tables.service_kpis.c
    rows = await _rows(
        engine,
        select(tables.service_kpis)
        .where((k.opened_at >= _utc(start)) & (k.opened_at < _utc(end)))
        .order_by(k.opened_at, k.case_id),
    )
    if group_by == KpiGrouping.NONE:
        return [kpi_group(None, rows)]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(str(_group_key(row, group_by)), []).append(row)
    return [kpi_group(key, groups[key]) for key in sorted(groups)]
