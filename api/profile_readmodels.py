"""Member profiles and behaviour KPIs, read from the "member_behaviour" read model.

The rules that make a profile out of the stored facts live in domain/profile.py (pure, so
that live segment membership applies exactly the same ones); this module loads the rows
for one member as of `now` and computes the daily KPIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.behaviour import BehaviourKind
from domain.loyalty_rules import LoyaltyRules
from domain.profile import (
    BehaviourCounts,
    ChannelActivity,
    Explained,
    InterestScore,
    Lifecycle,
    MemberProfile,
    PriceBand,
    RfmScores,
    ShopperType,
    build_profile,
    quintile,
    rfm_from_counts,
)
from projections.behaviour_tables import (
    behaviour_consents,
    behaviour_daily,
    member_activity,
    member_interests,
)
from projections.member_behaviour import PURCHASE
from projections.segment_membership import rfm_counts_query

__all__ = ["BehaviourCounts", "BehaviourDay", "BehaviourKpis", "ChannelActivity", "Explained",
           "InterestScore", "Lifecycle", "MemberProfile", "PriceBand", "RfmScores",
           "ShopperType", "behaviour_kpis", "member_profile", "quintile"]

DAY = timedelta(days=1)
MAX_KPI_DAYS = 366


async def _rfm(conn: AsyncConnection, activity: dict[str, Any]) -> RfmScores | None:
    """Quintiles among buyers as they are now (one scan of the buyers' rows)."""
    if not activity["purchases"]:
        return None
    return rfm_from_counts(*(await conn.execute(rfm_counts_query(activity))).one())


async def member_profile(engine: AsyncEngine, member_id: str, now: datetime,
                         rules: LoyaltyRules) -> MemberProfile | None:
    """The member's profile as of `now`; None for an unknown or erased member."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    async with engine.connect() as conn:
        raw = (await conn.execute(select(member_activity).where(
            member_activity.c.member_id == member_id))).one_or_none()
        if raw is None:
            return None
        activity = dict(raw._mapping)
        consent = (await conn.execute(select(behaviour_consents).where(
            behaviour_consents.c.member_id == member_id))).one_or_none()
        interest_rows = [dict(r._mapping) for r in await conn.execute(
            select(member_interests).where(member_interests.c.member_id == member_id))]
        rfm = await _rfm(conn, activity)
    personalised = bool(consent and consent.personalisation and not consent.erased)
    return build_profile(member_id, activity, personalised, interest_rows, rfm,
                         now.astimezone(UTC), rules.profile)




@dataclass(frozen=True)
class BehaviourDay:
    day: date
    views: int
    searches: int
    cart_adds: int
    cart_removes: int
    wish_lists: int
    shares: int
    purchases: int
    # Paid on the day, minor units.
    revenue: int

    @property
    def conversion(self) -> float | None:
        """Purchases per product view (views → purchases); None without views."""
        return round(self.purchases / self.views, 6) if self.views else None


@dataclass(frozen=True)
class BehaviourKpis:
    start: date
    end: date
    days: tuple[BehaviourDay, ...]
    views: int
    purchases: int
    revenue: int
    # Members with a purchase, and with two or more: now, not over the range.
    buyers: int
    repeat_buyers: int

    @property
    def conversion(self) -> float | None:
        return round(self.purchases / self.views, 6) if self.views else None

    @property
    def repeat_buyer_rate(self) -> float | None:
        return round(self.repeat_buyers / self.buyers, 6) if self.buyers else None


_KIND_FIELDS = {
    BehaviourKind.PRODUCT_VIEWED.value: "views",
    BehaviourKind.SEARCHED.value: "searches",
    BehaviourKind.ADDED_TO_CART.value: "cart_adds",
    BehaviourKind.REMOVED_FROM_CART.value: "cart_removes",
    BehaviourKind.WISH_LISTED.value: "wish_lists",
    BehaviourKind.SHARED.value: "shares",
    PURCHASE: "purchases",
}


async def behaviour_kpis(engine: AsyncEngine, start: date, end: date) -> BehaviourKpis:
    """Every UTC day from `start` to `end` inclusive (all behaviour, attributed or not)."""
    if end < start:
        raise ValueError("end must not be before start")
    if (end - start).days + 1 > MAX_KPI_DAYS:
        raise ValueError(f"at most {MAX_KPI_DAYS} days at a time")
    d = behaviour_daily.c
    a = member_activity.c
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(d.day, d.kind, d.events, d.amount).where(d.day >= start, d.day <= end)
        )).all()
        buyers, repeat = (await conn.execute(select(
            func.count(), func.sum(case((a.purchases >= 2, 1), else_=0)),
        ).where(a.purchases > 0))).one()
    by_day: dict[date, dict[str, int]] = {}
    for row in rows:
        day = row.day if isinstance(row.day, date) else date.fromisoformat(str(row.day))
        values = by_day.setdefault(day, {})
        field = _KIND_FIELDS.get(row.kind)
        if field is not None:
            values[field] = values.get(field, 0) + int(row.events)
        if row.kind == PURCHASE:
            values["revenue"] = values.get("revenue", 0) + int(row.amount)
    days = []
    day = start
    while day <= end:
        values = by_day.get(day, {})
        days.append(BehaviourDay(day=day, **{f: values.get(f, 0) for f in (
            "views", "searches", "cart_adds", "cart_removes", "wish_lists", "shares",
            "purchases", "revenue")}))
        day += DAY
    return BehaviourKpis(
        start=start, end=end, days=tuple(days), views=sum(x.views for x in days),
        purchases=sum(x.purchases for x in days), revenue=sum(x.revenue for x in days),
        buyers=int(buyers), repeat_buyers=int(repeat or 0),
    )
