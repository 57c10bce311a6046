"""Async queries over the campaign read models (projections/campaign_tables.py).

Rows come back with aware UTC datetimes on every backend. A campaign's state (scheduled,
running, ended, stopped) depends on the clock, so filters by state take the moment to
judge by; the tables only record whether it was stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import (
    RowPage,
    cursor_moment,
    decode_cursor,
    encode_cursor,
    fetch_page,
    fetch_rows,
)
from domain.campaigns import CampaignState, CampaignStatus
from projections.campaign_tables import campaign_rewards, campaigns

Row = dict[str, Any]








# -- campaigns ------------------------------------------------------------------------------


async def get_campaigns(engine: AsyncEngine, campaign_ids: list[str]) -> dict[str, Row]:
    if not campaign_ids:
        return {}
    rows = await fetch_rows(engine, select(campaigns).where(
        campaigns.c.campaign_id.in_(campaign_ids)))
    return {row["campaign_id"]: row for row in rows}


def state_condition(state: CampaignState, now: datetime) -> ColumnElement[bool]:
    """Campaigns in `state` at `now` (the same rule as domain.campaigns.state_at)."""
    c = campaigns.c
    moment = now.astimezone(UTC)  # SQLite compares times as text, without their offset
    launched = c.status == CampaignStatus.LAUNCHED.value
    if state is CampaignState.STOPPED:
        return c.status == CampaignStatus.STOPPED.value
    if state is CampaignState.SCHEDULED:
        return launched & (c.starts_at > moment)
    if state is CampaignState.RUNNING:
        return launched & (c.starts_at <= moment) & (c.ends_at > moment)
    return launched & (c.ends_at <= moment)


def campaign_cursor(row: Row) -> str:
    launched_at = row["launched_at"]
    assert launched_at is not None
    return encode_cursor(launched_at.isoformat(), row["campaign_id"])


async def list_campaigns(engine: AsyncEngine, state: CampaignState | None, now: datetime,
                         first: int, after: str | None) -> RowPage:
    """Newest launch first, keyset-paginated: launches while someone pages through do not
    shift the pages not read yet. A malformed cursor raises InvalidCursorError."""
    c = campaigns.c
    conditions = [state_condition(state, now)] if state is not None else []
    query = select(campaigns).where(*conditions)
    if after:
        launched_at, campaign_id = decode_cursor(after, 2)
        moment = cursor_moment(launched_at)
        query = query.where((c.launched_at < moment)
                            | ((c.launched_at == moment) & (c.campaign_id < str(campaign_id))))
    query = query.order_by(c.launched_at.desc(), c.campaign_id.desc())
    count = select(func.count()).select_from(campaigns).where(*conditions)
    page = await fetch_page(engine, query, count, max(first, 0))
    return RowPage(list(page.rows), page.has_next, page.total)


# -- rewarded members -----------------------------------------------------------------------


def reward_cursor(row: Row) -> str:
    issued_at = row["issued_at"]
    assert issued_at is not None
    return encode_cursor(issued_at.isoformat(), row["member_id"])


async def list_rewards(engine: AsyncEngine, campaign_id: str, redeemed: bool | None,
                       first: int, after: str | None) -> RowPage:
    """A campaign's rewarded members in the order they were rewarded."""
    r = campaign_rewards.c
    conditions: list[ColumnElement[bool]] = [r.campaign_id == campaign_id]
    if redeemed is not None:
        conditions.append(r.redeemed_at.is_not(None) if redeemed else r.redeemed_at.is_(None))
    query = select(campaign_rewards).where(*conditions)
    if after:
        issued_at, member_id = decode_cursor(after, 2)
        moment = cursor_moment(issued_at)
        query = query.where((r.issued_at > moment)
                            | ((r.issued_at == moment) & (r.member_id > str(member_id))))
    query = query.order_by(r.issued_at, r.member_id)
    count = select(func.count()).select_from(campaign_rewards).where(*conditions)
    page = await fetch_page(engine, query, count, max(first, 0))
    return RowPage(list(page.rows), page.has_next, page.total)
