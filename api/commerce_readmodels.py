"""Async queries over the orders, loyalty and coupon read models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import RowPage, decode_cursor, encode_cursor, fetch_page, fetch_rows, instant
from domain.coupon import CouponStatus
from domain.loyalty import add_months
from domain.loyalty_rules import LoyaltyRules
from projections.commerce_tables import (
    coupons,
    loyalty_accounts,
    loyalty_ledger,
    loyalty_lots,
    loyalty_spend,
    orders,
    rewards,
    tier_history,
)
from projections.tables import projection_tracking

Row = dict[str, Any]



# -- orders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderFilter:
    member_id: str | None = None
    state: str | None = None
    flagged: bool | None = None


async def get_orders(engine: AsyncEngine, order_ids: list[str]) -> dict[str, Row]:
    if not order_ids:
        return {}
    rows = await fetch_rows(engine, select(orders).where(orders.c.order_id.in_(order_ids)))
    return {row["order_id"]: row for row in rows}


def order_cursor(row: Row) -> str:
    placed = row["placed_at"]
    assert placed is not None
    return encode_cursor(placed.isoformat(), row["order_id"])


async def list_orders(
    engine: AsyncEngine, where: OrderFilter, first: int, after: str | None
) -> RowPage:
    """Newest first: what support and members usually want to see."""
    conditions = []
    if where.member_id:
        conditions.append(orders.c.member_id == where.member_id)
    if where.state:
        conditions.append(orders.c.state == where.state)
    if where.flagged is not None:
        flagged = func.json_array_length(orders.c.flags) > 0
        if engine.dialect.name == "postgresql":
            flagged = func.jsonb_array_length(orders.c.flags) > 0
        conditions.append(flagged if where.flagged else ~flagged)
    query = select(orders).where(*conditions)
    if after:
        placed_at, order_id = decode_cursor(after, 2)
        moment = instant(str(placed_at))
        query = query.where(
            (orders.c.placed_at < moment)
            | ((orders.c.placed_at == moment) & (orders.c.order_id < str(order_id)))
        )
    query = query.order_by(orders.c.placed_at.desc(), orders.c.order_id.desc())
    count = select(func.count()).select_from(orders).where(*conditions)
    return await fetch_page(engine, query, count, first)


async def first_order_pages(
    engine: AsyncEngine, member_ids: list[str], first: int
) -> dict[str, RowPage]:
    """The first page of each member's orders, newest first, in two statements whatever
    the number of members (for `Member.orders` under a list of members)."""
    if not member_ids:
        return {}
    rank = func.row_number().over(
        partition_by=orders.c.member_id,
        order_by=(orders.c.placed_at.desc(), orders.c.order_id.desc()),
    ).label("_rank")
    ranked = select(orders, rank).where(orders.c.member_id.in_(member_ids)).subquery()
    query = (select(ranked).where(ranked.c._rank <= first + 1)
             .order_by(ranked.c.member_id, ranked.c._rank))
    counts = (select(orders.c.member_id, func.count()).where(orders.c.member_id.in_(member_ids))
              .group_by(orders.c.member_id))
    async with engine.connect() as conn:
        rows = [dict(row._mapping) for row in await conn.execute(query)]
        totals = {member: int(n) for member, n in (await conn.execute(counts)).all()}
    by_member: dict[str, list[Row]] = {member: [] for member in member_ids}
    for row in rows:
        row.pop("_rank")
        by_member[row["member_id"]].append(row)
    return {member: RowPage(found[:first], len(found) > first, totals.get(member, 0))
            for member, found in by_member.items()}


# -- loyalty --------------------------------------------------------------------------------


async def get_account(engine: AsyncEngine, member_id: str) -> Row | None:
    rows = await fetch_rows(
        engine, select(loyalty_accounts).where(loyalty_accounts.c.member_id == member_id)
    )
    return rows[0] if rows else None


async def get_lots(engine: AsyncEngine, member_id: str, status: str | None) -> list[Row]:
    query = select(loyalty_lots).where(loyalty_lots.c.member_id == member_id)
    if status:
        query = query.where(loyalty_lots.c.status == status)
    return await fetch_rows(engine, query.order_by(loyalty_lots.c.seq))


async def expiring_points(engine: AsyncEngine, member_id: str, before: datetime) -> tuple[int, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(func.coalesce(func.sum(loyalty_lots.c.remaining), 0),
                   func.min(loyalty_lots.c.expires_at)).where(
                (loyalty_lots.c.member_id == member_id)
                & (loyalty_lots.c.status == "available")
                & (loyalty_lots.c.remaining > 0)
                & (loyalty_lots.c.expires_at <= before)
            )
        )).one()
    return int(row[0]), row[1]


async def ledger_page(
    engine: AsyncEngine, member_id: str, first: int, after: str | None
) -> RowPage:
    """Newest movement first."""
    conditions = [loyalty_ledger.c.member_id == member_id]
    if after:
        (entry,) = decode_cursor(after, 1)
        conditions.append(loyalty_ledger.c.entry < int(entry))
    query = select(loyalty_ledger).where(*conditions).order_by(loyalty_ledger.c.entry.desc())
    count = select(func.count()).select_from(loyalty_ledger).where(
        loyalty_ledger.c.member_id == member_id
    )
    return await fetch_page(engine, query, count, first)


async def get_tier_history(engine: AsyncEngine, member_id: str) -> list[Row]:
    return await fetch_rows(
        engine,
        select(tier_history).where(tier_history.c.member_id == member_id)
        .order_by(tier_history.c.entry),
    )


@dataclass(frozen=True)
class TierProgress:
    tier: str
    qualifying_spend: int
    next_tier: str | None
    spend_to_next_tier: int | None
    reach_by: datetime | None
    maintenance_due: datetime | None
    spend_to_keep_tier: int | None


async def tier_progress(
    engine: AsyncEngine, account: Row, rules: LoyaltyRules, now: datetime
) -> TierProgress:
    """"Spend X more by DATE to reach Gold" and "spend Y by DATE to keep Gold".

    Spend counts over a rolling window, so the deadline to reach the next tier is when the
    oldest spend still counted drops out of it.
    """
    since = add_months(now, -rules.qualifying_months)
    entries = await fetch_rows(
        engine,
        select(loyalty_spend.c.at, loyalty_spend.c.amount).where(
            (loyalty_spend.c.member_id == account["member_id"]) & (loyalty_spend.c.at > since)
        ),
    )
    spend = sum(int(e["amount"]) for e in entries)
    tier = str(account["tier"])
    above = rules.tier_above(tier)
    oldest = min((e["at"] for e in entries if e["amount"] > 0), default=None)
    reach_by = add_months(oldest, rules.qualifying_months) if oldest else add_months(
        now, rules.qualifying_months
    )
    due = account["maintenance_due"]
    keep = None
    if due is not None:
        keep = max(rules.tier_rule(tier).threshold - spend, 0)
    return TierProgress(
        tier=tier,
        qualifying_spend=spend,
        next_tier=above.value if above else None,
        spend_to_next_tier=max(rules.tier_rule(above).threshold - spend, 0) if above else None,
        reach_by=reach_by if above else None,
        maintenance_due=due,
        spend_to_keep_tier=keep,
    )


def expiring_window(now: datetime, rules: LoyaltyRules) -> datetime:
    """Lots expiring before this instant are "expiring soon".

    Points expire at the first instant of a month, which is the end of the month's last
    day. Counting in whole days from the start of today, a lot is expiring within N days
    when its last usable day is at most N days from today: so on the 1st of a 31-day
    month, points that expire at its end (31 days later, to the instant) show.
    """
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=rules.expiring_soon_days + 1)


# -- coupons and rewards --------------------------------------------------------------------


async def member_coupons(
    engine: AsyncEngine, member_id: str, status: str | None, now: datetime
) -> list[Row]:
    """A member's coupons, newest first; `status` as `domain.coupon.status_at` derives it."""
    query = select(coupons).where(coupons.c.member_id == member_id)
    if status == CouponStatus.EXPIRED:
        query = query.where((coupons.c.status == CouponStatus.AVAILABLE.value)
                            & (coupons.c.valid_until <= now))
    elif status == CouponStatus.AVAILABLE:
        query = query.where((coupons.c.status == status) & (coupons.c.valid_until > now))
    elif status:
        query = query.where(coupons.c.status == status)
    return await fetch_rows(engine, query.order_by(coupons.c.issued_at.desc(), coupons.c.coupon_id))


async def list_rewards(engine: AsyncEngine, active_at: datetime | None) -> list[Row]:
    query = select(rewards)
    if active_at is not None:
        query = query.where(
            (rewards.c.valid_from <= active_at) & (rewards.c.valid_until > active_at)
            & (rewards.c.stock > 0)
        )
    return await fetch_rows(engine, query.order_by(rewards.c.cost_points, rewards.c.name))


# -- points liability ---------------------------------------------------------------------


@dataclass(frozen=True)
class LiabilityBucket:
    """Points in one slice of the book; `value` is at the redemption rate (minor units)."""

    available: int
    pending: int
    debt: int
    members: int


@dataclass(frozen=True)
class ExpiringPoints:
    expires_at: datetime | None  # None: lots that never expire
    points: int


@dataclass(frozen=True)
class PointsLiability:
    """What the shop owes its members in points, as of the loyalty read model's position.

    `total` is the sum of `by_tier`; `by_expiry` splits the available points by the instant
    their lots expire (pending points have no expiry until their return window closes).
    """

    position: int
    total: LiabilityBucket
    by_tier: dict[str, LiabilityBucket]
    by_expiry: list[ExpiringPoints]


async def points_liability(engine: AsyncEngine) -> PointsLiability:
    """Sums over the accounts (per tier) and the available lots (per expiry instant): two
    grouped queries, whatever the number of members."""
    accounts = select(
        loyalty_accounts.c.tier, func.count(),
        func.coalesce(func.sum(loyalty_accounts.c.available), 0),
        func.coalesce(func.sum(loyalty_accounts.c.pending), 0),
        func.coalesce(func.sum(loyalty_accounts.c.debt), 0),
    ).group_by(loyalty_accounts.c.tier)
    expiring = (
        select(loyalty_lots.c.expires_at, func.sum(loyalty_lots.c.remaining))
        .where((loyalty_lots.c.status == "available") & (loyalty_lots.c.remaining > 0))
        .group_by(loyalty_lots.c.expires_at)
        .order_by(loyalty_lots.c.expires_at)
    )
    async with engine.connect() as conn:
        tiers = (await conn.execute(accounts)).all()
        lots = (await conn.execute(expiring)).all()
        position = (await conn.execute(
            select(projection_tracking.c.position)
            .where(projection_tracking.c.name == "loyalty"))).scalar()
    by_tier = {
        str(tier): LiabilityBucket(available=int(available), pending=int(pending),
                                   debt=int(debt), members=int(count))
        for tier, count, available, pending, debt in tiers
    }
    total = LiabilityBucket(
        available=sum(b.available for b in by_tier.values()),
        pending=sum(b.pending for b in by_tier.values()),
        debt=sum(b.debt for b in by_tier.values()),
        members=sum(b.members for b in by_tier.values()),
    )
    return PointsLiability(
        position=int(position or 0), total=total, by_tier=by_tier,
        by_expiry=[ExpiringPoints(expires_at=at, points=int(points)) for at, points in lots],
    )
