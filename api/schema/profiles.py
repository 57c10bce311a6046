"""Member profiles (interests, RFM, lifecycle, shopper type, tags) and behaviour KPIs.

Profiles are computed at query time from the "member_behaviour" read model (see
api/profile_readmodels.py) for the business clock's present, so decay, recency and
lifecycle follow time without any write. Every conclusion (lifecycle, shopper type, each
tag) comes with the rule that produced it and the facts that satisfied the rule, so staff
and the member can see why. A profile holds no personal data beyond the member's own
behaviour, and only the member themself, staff and auditors may read it.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from api import profile_readmodels as readmodels
from api import segment_readmodels
from api.schema.common import ApiError, context
from api.schema.members import EventChannel
from api.schema.orders import Money, money
from api.schema.segments import SegmentNode, SegmentSizeDay, size_series
from domain.errors import DomainError, ErrorCode, ValidationError
from domain.metadata import Channel, Role

PriceBand = strawberry.enum(readmodels.PriceBand, name="PriceBand",
                            description="Budget, mid or premium by average price paid.")
LifecycleSegment = strawberry.enum(readmodels.Lifecycle, name="LifecycleSegment")
ShopperType = strawberry.enum(readmodels.ShopperType, name="ShopperType")

READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)


@strawberry.type(description="Interest in a category or brand, decayed to now.")
class Interest:
    key: str
    score: float = strawberry.field(description="Weighted, decayed score.")
    share: float = strawberry.field(
        description="Of the member's positive interest in this dimension (0-1).")
    events: int
    last_event_at: dt.datetime
    contributions: JSON = strawberry.field(
        description="The score's parts by kind of event (views, purchases, ...).")

    @classmethod
    def of(cls, item: readmodels.InterestScore) -> Interest:
        return cls(key=item.key, score=item.score, share=item.share, events=item.events,
                   last_event_at=item.last_event_at, contributions=item.contributions)


@strawberry.type(description="A conclusion about a member, the rule behind it and its facts.")
class ProfileRule:
    name: str
    rule: str = strawberry.field(description="The rule, with the thresholds in force.")
    facts: JSON = strawberry.field(description="The facts that satisfied the rule.")

    @classmethod
    def of(cls, item: readmodels.Explained) -> ProfileRule:
        return cls(name=str(item.name), rule=item.rule, facts=item.facts)


@strawberry.type
class Lifecycle:
    segment: LifecycleSegment  # type: ignore[valid-type]
    rule: str
    facts: JSON


@strawberry.type(name="ShopperTypeResult")
class ShopperTypeResult:
    type: ShopperType  # type: ignore[valid-type]
    rule: str
    facts: JSON


@strawberry.type(description="Quintile scores 1-5 among all members with a purchase, now.")
class RfmScores:
    recency: int
    frequency: int
    monetary: int
    buyers: int = strawberry.field(description="Members the quintiles are taken over.")


@strawberry.type
class BehaviourCounts:
    events: int
    views: int
    searches: int
    cart_adds: int
    cart_removes: int
    wish_lists: int
    shares: int
    average_dwell_seconds: float | None


@strawberry.type(description="Activity through one channel: behaviour, orders, reviews.")
class ProfileChannelActivity:
    channel: EventChannel  # type: ignore[valid-type]
    behaviour_events: int
    orders: int
    reviews: int
    total: int


@strawberry.type(name="MemberProfile",
                 description="What the member's behaviour and purchases say, as of now.")
class MemberProfileType:
    as_of: dt.datetime
    joined_at: dt.datetime | None
    personalised: bool = strawberry.field(
        description="Consent to personalisation: without it no behaviour is attached.")
    category_interests: list[Interest]
    brand_interests: list[Interest]
    behaviour: BehaviourCounts
    price_band: PriceBand | None  # type: ignore[valid-type]
    average_price: Money | None
    price_basis: str | None = strawberry.field(
        description="'bought' (lines paid for) or 'viewed' (before a first purchase).")
    orders_placed: int
    purchases: int
    total_spent: Money = strawberry.field(description="Paid less refunded.")
    refunded: Money
    average_order_value: Money | None
    purchases_per_30_days: float | None
    repurchase_rate: float | None = strawberry.field(
        description="Share of distinct products bought in two or more orders.")
    first_purchase_at: dt.datetime | None
    last_purchase_at: dt.datetime | None
    reviews: int
    average_stars: float | None
    rfm: RfmScores | None
    lifecycle: Lifecycle
    shopper_type: ShopperTypeResult
    tags: list[ProfileRule]
    channels: list[ProfileChannelActivity]
    last_activity_at: dt.datetime | None

    @classmethod
    def of(cls, p: readmodels.MemberProfile, currency: str) -> MemberProfileType:
        def cash(amount: int | None) -> Money | None:
            return money(amount, currency) if amount is not None else None

        return cls(
            as_of=p.as_of, joined_at=p.joined_at, personalised=p.personalised,
            category_interests=[Interest.of(i) for i in p.category_interests],
            brand_interests=[Interest.of(i) for i in p.brand_interests],
            behaviour=BehaviourCounts(
                events=p.behaviour.events, views=p.behaviour.views,
                searches=p.behaviour.searches, cart_adds=p.behaviour.cart_adds,
                cart_removes=p.behaviour.cart_removes, wish_lists=p.behaviour.wish_lists,
                shares=p.behaviour.shares,
                average_dwell_seconds=p.behaviour.average_dwell_seconds),
            price_band=readmodels.PriceBand(p.price_band) if p.price_band else None,
            average_price=cash(p.average_price), price_basis=p.price_basis,
            orders_placed=p.orders_placed, purchases=p.purchases,
            total_spent=money(p.purchase_total, currency),
            refunded=money(p.refunded_total, currency),
            average_order_value=cash(p.average_order_value),
            purchases_per_30_days=p.purchases_per_30_days, repurchase_rate=p.repurchase_rate,
            first_purchase_at=p.first_purchase_at, last_purchase_at=p.last_purchase_at,
            reviews=p.reviews, average_stars=p.average_stars,
            rfm=RfmScores(recency=p.rfm.recency, frequency=p.rfm.frequency,
                          monetary=p.rfm.monetary, buyers=p.rfm.buyers) if p.rfm else None,
            lifecycle=Lifecycle(segment=readmodels.Lifecycle(p.lifecycle.name),
                                rule=p.lifecycle.rule, facts=p.lifecycle.facts),
            shopper_type=ShopperTypeResult(type=readmodels.ShopperType(p.shopper_type.name),
                                           rule=p.shopper_type.rule,
                                           facts=p.shopper_type.facts),
            tags=[ProfileRule.of(t) for t in p.tags],
            channels=[ProfileChannelActivity(
                channel=Channel(c.channel), behaviour_events=c.behaviour_events,
                orders=c.orders, reviews=c.reviews, total=c.total) for c in p.channels],
            last_activity_at=p.last_activity_at,
        )


async def member_profile_view(info: strawberry.Info, member_id: str
                              ) -> MemberProfileType | None:
    """`Member.profile`: the member themself, staff and auditors."""
    ctx = context(info)
    if not ctx.principal.can_read_member(member_id):
        raise ApiError("you may only read your own profile", ErrorCode.FORBIDDEN.value)
    runtime = ctx.runtime
    profile = await readmodels.member_profile(runtime.async_engine, member_id,
                                              runtime.clock.now(), runtime.rules)
    return MemberProfileType.of(profile, runtime.rules.currency) if profile else None


@strawberry.type(description="Behaviour and purchases on one UTC day, everyone's.")
class BehaviourDay:
    day: dt.date
    views: int
    searches: int
    cart_adds: int
    cart_removes: int
    wish_lists: int
    shares: int
    purchases: int
    revenue: Money
    conversion: float | None = strawberry.field(
        description="Purchases per product view; null without views.")


@strawberry.type(description="Conversion (views → purchases) and repurchase rate.")
class BehaviourKpis:
    from_: dt.date = strawberry.field(name="from")
    to: dt.date
    days: list[BehaviourDay]
    views: int
    purchases: int
    revenue: Money
    conversion: float | None
    buyers: int = strawberry.field(description="Members with a purchase, now.")
    repeat_buyers: int = strawberry.field(description="Members with two or more, now.")
    repeat_buyer_rate: float | None = strawberry.field(
        description="Repeat buyers per buyer, now. (Not the profile's repurchaseRate, which "
        "is the share of a member's products bought more than once.)")
    segments: list[SegmentSizes] = strawberry.field(
        description="Every segment's size at the end of each day, by segment name.")


@strawberry.type(description="A segment's size over the KPI's days.")
class SegmentSizes:
    segment: SegmentNode
    days: list[SegmentSizeDay]


@strawberry.type
class ProfileQueries:
    @strawberry.field(description="Daily behaviour, purchases and conversion over the UTC "
                                  "days from..to (inclusive, at most 366), attributed or "
                                  "not: staff and auditors.")
    async def behaviour_kpis(
        self,
        info: strawberry.Info,
        from_: Annotated[dt.date, strawberry.argument(name="from")],
        to: dt.date,
    ) -> BehaviourKpis:
        ctx = context(info)
        try:
            ctx.principal.require_role(*READERS)
            if to < from_:
                raise ValidationError("to must not be before from", "to")
            if (to - from_).days + 1 > readmodels.MAX_KPI_DAYS:
                raise ValidationError(f"at most {readmodels.MAX_KPI_DAYS} days at a time",
                                      "to")
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        kpis = await readmodels.behaviour_kpis(ctx.runtime.async_engine, from_, to)
        segment_rows = await segment_readmodels.segments_by_name(ctx.runtime.async_engine)
        sizes = await size_series(info, [r["segment_id"] for r in segment_rows], from_, to)
        currency = ctx.runtime.rules.currency
        return BehaviourKpis(
            from_=kpis.start, to=kpis.end,
            days=[BehaviourDay(
                day=d.day, views=d.views, searches=d.searches, cart_adds=d.cart_adds,
                cart_removes=d.cart_removes, wish_lists=d.wish_lists, shares=d.shares,
                purchases=d.purchases, revenue=money(d.revenue, currency),
                conversion=d.conversion) for d in kpis.days],
            views=kpis.views, purchases=kpis.purchases,
            revenue=money(kpis.revenue, currency), conversion=kpis.conversion,
            buyers=kpis.buyers, repeat_buyers=kpis.repeat_buyers,
            repeat_buyer_rate=kpis.repeat_buyer_rate,
            segments=[SegmentSizes(segment=SegmentNode.of(r), days=sizes[r["segment_id"]])
                      for r in segment_rows],
        )

