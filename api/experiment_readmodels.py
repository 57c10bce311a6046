"""Async queries over the experiment read models (projections/experiment_tables.py).

`running_assignment` is what the recommender asks on every request: which experiment runs
on this placement, and which variant this member is in. It is one query on the
(placement, status) index plus a hash (`assign_variant`), with nothing stored per member.

Results come with 95% intervals computed here from the counts (see domain.experiments):
Wilson score intervals for CTR and conversion rate, and for every variant but the first
(the control) the difference of its conversion rate from the control's.

Rows come back with aware UTC datetimes on every backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import (
    RowPage,
    cursor_moment,
    decode_cursor,
    encode_cursor,
    fetch_page,
    fetch_rows,
)
from domain.experiments import (
    ExperimentStatus,
    Interval,
    Variant,
    assign_variant,
    difference_interval,
    wilson_interval,
)
from domain.recommendation.placement import Placement, Strategy
from projections.experiment_tables import experiment_variant_results, experiments

Row = dict[str, Any]


@dataclass(frozen=True)
class Assignment:
    """The experiment a member's list on a placement belongs to, and how to make it."""

    experiment_id: str
    variant: str
    strategy: Strategy
    # Serve with this trained model version instead of the active one.
    model_version: int | None


async def running_assignment(engine: AsyncEngine, placement: str,
                             member_id: str) -> Assignment | None:
    """The running experiment on `placement` and the member's variant in it; None when no
    experiment runs there. An unknown placement raises ValueError."""
    e = experiments.c
    query = (select(e.experiment_id, e.variants)
             .where((e.placement == Placement(placement).value)
                    & (e.status == ExperimentStatus.RUNNING.value))
             .order_by(e.defined_at.desc()).limit(1))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    variant = assign_variant(row.experiment_id, str(member_id),
                             [Variant.from_dict(v) for v in row.variants])
    return Assignment(experiment_id=row.experiment_id, variant=variant.name,
                      strategy=variant.strategy, model_version=variant.model_version)


# -- experiments ------------------------------------------------------------------------------






async def get_experiments(engine: AsyncEngine, experiment_ids: list[str]) -> dict[str, Row]:
    if not experiment_ids:
        return {}
    rows = await fetch_rows(engine, select(experiments).where(
        experiments.c.experiment_id.in_(experiment_ids)))
    return {row["experiment_id"]: row for row in rows}


def experiment_cursor(row: Row) -> str:
    defined_at = row["defined_at"]
    assert defined_at is not None
    return encode_cursor(defined_at.isoformat(), row["experiment_id"])




async def list_experiments(engine: AsyncEngine, status: ExperimentStatus | None, first: int,
                           after: str | None) -> RowPage:
    """Newest definition first, keyset-paginated. A malformed cursor raises
    InvalidCursorError."""
    e = experiments.c
    conditions = [e.status == status.value] if status is not None else []
    query = select(experiments).where(*conditions)
    if after:
        defined_at, experiment_id = decode_cursor(after, 2)
        moment = cursor_moment(defined_at)
        query = query.where((e.defined_at < moment)
                            | ((e.defined_at == moment)
                               & (e.experiment_id < str(experiment_id))))
    query = query.order_by(e.defined_at.desc(), e.experiment_id.desc())
    count = select(func.count()).select_from(experiments).where(*conditions)
    page = await fetch_page(engine, query, count, max(first, 0))
    return RowPage(list(page.rows), page.has_next, page.total)


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    is_control: bool
    impressions: int
    clicks: int
    # clicks / impressions, with its Wilson interval; None before any impression.
    ctr: Interval | None
    exposed_members: int
    clicking_members: int
    converted_members: int
    conversions: int
    # converted / exposed members, with its Wilson interval; None before any exposure.
    conversion_rate: Interval | None
    revenue: int
    # This variant's conversion rate minus the control's, with its interval; None for the
    # control and while either has no exposed members.
    lift_vs_control: Interval | None
    updated_at: datetime


def variant_results(variants: Sequence[Mapping[str, Any]],
                    rows: Sequence[Mapping[str, Any]]) -> list[VariantResult]:
    """Each variant's counts (rows of experiment_variant_results) with their intervals,
    in the order the variants were defined; the first is the control."""
    by_name = {row["variant"]: row for row in rows}
    ordered = [(Variant.from_dict(v), by_name[v["name"]]) for v in variants
               if v["name"] in by_name]
    if not ordered:
        return []
    _, control = ordered[0]
    results = []
    for index, (variant, row) in enumerate(ordered):
        exposed = int(row["exposed_members"])
        converted = int(row["converted_members"])
        lift = None
        if index > 0:
            lift = difference_interval(int(control["converted_members"]),
                                       int(control["exposed_members"]), converted, exposed)
        updated_at = row["updated_at"]
        assert updated_at is not None
        results.append(VariantResult(
            variant=variant, is_control=index == 0,
            impressions=int(row["impressions"]), clicks=int(row["clicks"]),
            ctr=wilson_interval(int(row["clicks"]), int(row["impressions"])),
            exposed_members=exposed, clicking_members=int(row["clicking_members"]),
            converted_members=converted, conversions=int(row["conversions"]),
            conversion_rate=wilson_interval(converted, exposed),
            revenue=int(row["revenue"]), lift_vs_control=lift, updated_at=updated_at,
        ))
    return results


async def experiment_results(engine: AsyncEngine, experiment_id: str,
                             variants: Sequence[Mapping[str, Any]]) -> list[VariantResult]:
    """The results of an experiment whose `variants` (its row's) are given."""
    rows = await fetch_rows(engine, select(experiment_variant_results).where(
        experiment_variant_results.c.experiment_id == experiment_id))
    return variant_results(variants, rows)
