"""Member profiles from behaviour and purchases: the "member_behaviour" projection and the
profile computed from it at query time.

Members, consents and orders go through the real services; behaviour batches, session
links and reviews are recorded as their aggregates directly (the ingestion service is not
what is under test here). Business time moves with the test clock, so decay, RFM,
lifecycle and tags are checked at known moments. Both backends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from alembic import command
from sqlalchemy import Table, func, inspect, select

from api.profile_readmodels import MemberProfile, behaviour_kpis, member_profile, quintile
from api.runtime import Runtime, alembic_config
from domain.behaviour import BehaviourBatch, ProductReview, SessionLink, validate_batch
from domain.clock import AdjustableClock
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role
from domain.profile import decay
from projections.behaviour_tables import BEHAVIOUR_TABLES, behaviour_daily, member_interests
from tests.graphql import data, gql, token_for
from tests.shop import stocked
from tests.test_after_sales_projections import _differences
from tests.test_orders_api import Shopper, eventually, shopper

RULES = LoyaltyRules()
AGENT_REASON = "damaged on arrival"
DAY = timedelta(days=1)
NAME = "member_behaviour"
TABLE_NAMES = {t.name for t in BEHAVIOUR_TABLES}


def meta(actor: str, role: Role = Role.MEMBER, channel: Channel = Channel.WEB,
         reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


def agent() -> EventMetadata:
    return meta("agent-1", Role.AGENT, Channel.ADMIN, reason=AGENT_REASON)


def product(name: str, category: str, brand: str, price: int, quantity: int = 1
            ) -> dict[str, Any]:
    return {"product_id": name, "sku": name.upper(), "name": name, "quantity": quantity,
            "unit_price": price, "category": category, "brand": brand}


def view(name: str, category: str | None = "outdoor", brand: str | None = "acme",
         **extra: Any) -> dict[str, Any]:
    return {"kind": "product_viewed", "product_id": name, "category": category,
            "brand": brand, **extra}


def act(kind: str, name: str = "tent", category: str = "outdoor", brand: str = "acme",
        **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "product_id": name, "category": category, "brand": brand, **extra}


class Shop:
    """The shop under test: members, behaviour, orders and reviews at the clock's time."""

    def __init__(self, runtime: Runtime, clock: AdjustableClock) -> None:
        self.runtime = runtime
        self.clock = clock
        self.orders = 0

    def member(self, name: str, *, consent: bool = True) -> str:
        result = self.runtime.members.register(
            {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"},
            meta("anon", Role.ANONYMOUS))
        member_id = str(result.aggregate_id)
        if consent:
            self.consent(member_id, True)
        return member_id

    def consent(self, member_id: str, granted: bool) -> None:
        self.runtime.members.set_consent(UUID(member_id), "personalisation", "all", granted,
                                         meta(member_id))

    def behave(self, events: list[dict[str, Any]], *, member: str | None = None,
               session: str | None = None, channel: Channel = Channel.WEB) -> None:
        now = self.clock.now()
        items = [{"occurred_at": now, **e} for e in events]
        checked = validate_batch(items, now)
        actor = member or f"session:{session}"
        role = Role.MEMBER if member else Role.ANONYMOUS
        self.runtime.uow.run(lambda s: s.add(BehaviourBatch.record(
            uuid.uuid4(), member, session, checked, "hash", now, meta(actor, role, channel))))

    def link(self, session: str, member: str) -> None:
        now = self.clock.now()
        self.runtime.uow.run(lambda s: s.add(SessionLink.link(
            uuid.uuid4(), session, member, now, meta(member))))

    def place(self, member: str, lines: list[dict[str, Any]],
              channel: Channel = Channel.APP) -> UUID:
        self.orders += 1
        result = self.runtime.orders.place(UUID(member), stocked(self.runtime, lines), None, 0,
                                           f"order-{self.orders}", meta(member, channel=channel))
        return result.aggregate_id

    def buy(self, member: str, lines: list[dict[str, Any]],
            channel: Channel = Channel.APP) -> UUID:
        order = self.place(member, lines, channel)
        orders = self.runtime.orders
        orders.pay(order, "card", orders.get(order).total, None, f"pay-{order}",
                   meta(member, channel=channel))
        return order

    def review(self, member: str, order: UUID, line_id: str, stars: int,
               channel: Channel = Channel.APP) -> UUID:
        line = self.runtime.orders.get(order).line(line_id)
        review_id = uuid.uuid4()
        now = self.clock.now()
        self.runtime.uow.run(lambda s: s.add(ProductReview.write(
            review_id, member, str(order), line, stars, "nice", now,
            meta(member, channel=channel))))
        return review_id

    def revise(self, review_id: UUID, stars: int) -> None:
        now = self.clock.now()

        def decide(session: Any) -> ProductReview:
            review = session.get(ProductReview, review_id)
            review.revise(stars, "changed my mind", now, meta(review.member_id))
            return review

        self.runtime.uow.run(decide)

    def erase(self, member: str) -> None:
        self.runtime.members.erase(UUID(member), meta("admin-1", Role.ADMIN, Channel.ADMIN,
                                                      reason="GDPR request"))

    def project(self) -> None:
        self.runtime.runner.run_once()
        assert self.runtime.runner.position(NAME) == self.runtime.runner.head()

    async def profile(self, member: str, rules: LoyaltyRules = RULES) -> MemberProfile:
        self.project()
        found = await member_profile(self.runtime.async_engine, member, self.clock.now(),
                                     rules)
        assert found is not None
        return found

    def rows(self, table: Table) -> list[tuple[Any, ...]]:
        with self.runtime.sync_engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key))]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return {table.name: self.rows(table) for table in BEHAVIOUR_TABLES}

    def daily(self) -> dict[str, int]:
        with self.runtime.sync_engine.connect() as conn:
            rows = conn.execute(select(behaviour_daily.c.kind, func.sum(behaviour_daily.c.events))
                                .group_by(behaviour_daily.c.kind)).all()
        return {kind: int(total) for kind, total in rows}


@pytest.fixture
async def shop(runtime: Runtime, clock: AdjustableClock) -> AsyncIterator[Shop]:
    yield Shop(runtime, clock)
    if runtime._async_engine is not None:
        await runtime._async_engine.dispose()


def interests(items: Any) -> dict[str, float]:
    return {i.key: i.score for i in items}


def tag(profile: MemberProfile, name: str) -> Any:
    found = [t for t in profile.tags if t.name == name]
    return found[0] if found else None


# -- interests and decay ----------------------------------------------------------------------


async def test_interests_weigh_each_kind_and_halve_every_half_life(shop: Shop) -> None:
    ann = shop.member("Ann")
    shop.behave([view("tent", dwell_seconds=60), act("added_to_cart"),
                 view("pan", category="kitchen", brand="cookco", dwell_seconds=0)], member=ann)
    now = await shop.profile(ann)
    # A view is 1, plus 1 per minute of dwell; a cart add 3.
    assert interests(now.category_interests) == {"outdoor": 5.0, "kitchen": 1.0}
    assert interests(now.brand_interests) == {"acme": 5.0, "cookco": 1.0}
    outdoor = now.category_interests[0]
    assert (outdoor.key, outdoor.share, outdoor.events) == ("outdoor", pytest.approx(5 / 6), 2)
    assert outdoor.contributions == {"views": 1.0, "dwell_minutes": 1.0, "cart_adds": 3.0}

    shop.clock.advance(30 * DAY)  # one half-life
    later = await shop.profile(ann)
    assert interests(later.category_interests) == pytest.approx(
        {"outdoor": 2.5, "kitchen": 0.5})
    assert later.category_interests[0].share == pytest.approx(5 / 6)

    # A cart removal weighs -1; a view that arrives two days late counts as of then.
    shop.behave([act("removed_from_cart"),
                 view("pan", category="kitchen", brand="cookco",
                      occurred_at=shop.clock.now() - 2 * DAY)], member=ann)
    after = await shop.profile(ann)
    assert interests(after.category_interests) == pytest.approx(
        {"outdoor": 1.5, "kitchen": 0.5 + decay(2 * 86_400, 30)})

    # Weights apply when reading: a shop that ignores cart removals sees them vanish.
    lenient = LoyaltyRules.from_mapping({"profile": {"weight_cart_remove": 0}})
    assert interests((await shop.profile(ann, lenient)).category_interests)["outdoor"] == (
        pytest.approx(2.5))


async def test_purchases_and_reviews_add_interest_and_a_revision_replaces_stars(
        shop: Shop) -> None:
    bo = shop.member("Bo")
    order = shop.buy(bo, [product("stove", "outdoor", "acme", 20_000),
                          product("kettle", "kitchen", "cookco", 5_000)])
    review = shop.review(bo, order, "L1", 5)
    profile = await shop.profile(bo)
    # A purchase line weighs 5; a review (stars - 3).
    assert interests(profile.category_interests) == {"outdoor": 7.0, "kitchen": 5.0}
    shop.revise(review, 1)
    profile = await shop.profile(bo)
    assert interests(profile.category_interests) == {"outdoor": 3.0, "kitchen": 5.0}
    assert (profile.reviews, profile.average_stars) == (1, 1.0)


# -- purchases and RFM ------------------------------------------------------------------------


async def test_rfm_quintiles_follow_the_member_base_as_others_buy(shop: Shop) -> None:
    ann = shop.member("Ann")
    shop.buy(ann, [product("mug", "kitchen", "cookco", 5_000)])
    alone = await shop.profile(ann)
    assert alone.rfm is not None
    assert (alone.rfm.recency, alone.rfm.frequency, alone.rfm.monetary, alone.rfm.buyers) == (
        5, 5, 5, 1)

    shop.clock.advance(DAY)
    bo = shop.member("Bo")
    for _ in range(2):
        shop.buy(bo, [product("tent", "outdoor", "acme", 30_000)])
    ann_now, bo_now = await shop.profile(ann), await shop.profile(bo)
    assert ann_now.rfm is not None and bo_now.rfm is not None
    assert (ann_now.rfm.recency, ann_now.rfm.frequency, ann_now.rfm.monetary) == (3, 3, 3)
    assert (bo_now.rfm.recency, bo_now.rfm.frequency, bo_now.rfm.monetary) == (5, 5, 5)

    for name in ("Cy", "Di", "Ed"):
        shop.clock.advance(DAY)
        other = shop.member(name, consent=False)
        for _ in range(3):
            shop.buy(other, [product("stove", "outdoor", "acme", 40_000)])
    last = await shop.profile(ann)
    assert last.rfm is not None
    assert (last.rfm.recency, last.rfm.frequency, last.rfm.monetary, last.rfm.buyers) == (
        1, 1, 1, 5)
    assert quintile(3, 5) == 3 and quintile(5, 5) == 5 and quintile(1, 7) == 1


async def test_purchase_facts_frequency_order_value_repurchase_and_refunds(
        shop: Shop) -> None:
    cy = shop.member("Cy")
    first = shop.buy(cy, [product("coffee", "grocery", "bean", 8_000, quantity=2),
                          product("filter", "grocery", "bean", 2_000)])
    shop.clock.advance(30 * DAY)
    shop.buy(cy, [product("coffee", "grocery", "bean", 8_000)])
    orders = shop.runtime.orders
    first_total = orders.get(first).total
    shop.clock.advance(30 * DAY)
    profile = await shop.profile(cy)
    assert profile.purchases == 2 and profile.orders_placed == 2
    # Two purchases over 60 days since the first: one per 30 days.
    assert profile.purchases_per_30_days == pytest.approx(1.0)
    # Coffee was bought twice, the filter once.
    assert profile.repurchase_rate == 0.5
    assert profile.purchase_total > first_total
    assert profile.average_order_value == profile.purchase_total // 2
    # Lines at 8000, 2000 and 8000 average 6000, below price_band_mid_from: budget.
    assert (profile.price_band, profile.average_price, profile.price_basis) == (
        "budget", 6_000, "bought")
    before = profile.purchase_total
    orders.refund(first, [("L2", 1)], "refund-1", agent())
    refunded = await shop.profile(cy)
    assert refunded.refunded_total > 0
    assert refunded.purchase_total == before - refunded.refunded_total
    assert refunded.purchases == 2


# -- lifecycle --------------------------------------------------------------------------------


async def test_lifecycle_moves_with_the_clock_and_explains_itself(shop: Shop) -> None:
    di = shop.member("Di")
    assert (await shop.profile(di)).lifecycle.name == "new"
    shop.clock.advance(31 * DAY)
    idle = await shop.profile(di)
    assert idle.lifecycle.name == "churned"
    assert idle.lifecycle.facts["last_activity_at"] is None
    for _ in range(2):
        shop.buy(di, [product("tent", "outdoor", "acme", 30_000)])
    active = await shop.profile(di)
    assert active.lifecycle.name == "active"
    assert active.lifecycle.rule == "activity within 30 days"
    assert tag(active, "at_risk") is None

    shop.clock.advance(31 * DAY)
    dormant = await shop.profile(di)
    assert dormant.lifecycle.name == "dormant"
    assert dormant.lifecycle.facts["days_since_activity"] == pytest.approx(31.0)
    at_risk = tag(dormant, "at_risk")
    assert at_risk.facts == {"lifecycle": "dormant", "purchases": 2,
                             "last_activity_at": dormant.last_activity_at.isoformat()}
    assert "2 purchases" in at_risk.rule

    shop.clock.advance(150 * DAY)
    assert (await shop.profile(di)).lifecycle.name == "churned"
    # Browsing counts as activity too.
    shop.behave([view("tent")], member=di)
    assert (await shop.profile(di)).lifecycle.name == "active"


# -- shopper types and tags -------------------------------------------------------------------


async def test_shopper_types_follow_documented_rules_with_their_facts(shop: Shop) -> None:
    browser = shop.member("Browser")
    shop.behave([view(f"p{i}", price=3_000) for i in range(6)], member=browser)
    casual = (await shop.profile(browser)).shopper_type
    assert casual.name == "casual_browser"
    assert casual.facts["views"] == 6 and casual.facts["purchases"] == 0
    assert "at least 5 views" in casual.rule
    assert (await shop.profile(browser)).price_basis == "viewed"

    hopeful = shop.member("Hopeful")
    shop.behave([view("tent"), act("added_to_cart")], member=hopeful)
    potential = await shop.profile(hopeful)
    assert potential.shopper_type.name == "potential"
    abandoned = tag(potential, "cart_abandoner")
    assert abandoned.facts["last_purchase_at"] is None
    assert "7 days" in abandoned.rule
    shop.clock.advance(8 * DAY)
    assert tag(await shop.profile(hopeful), "cart_abandoner") is None

    picky = shop.member("Picky")
    shop.buy(picky, [product("watch", "jewellery", "lux", 60_000)])
    quality = await shop.profile(picky)
    assert (quality.shopper_type.name, quality.price_band) == ("quality_seeker", "premium")
    assert quality.shopper_type.facts["price_band"] == "premium"

    careful = shop.member("Careful")
    shop.behave([view(f"tent-{i}", price=20_000) for i in range(20)], member=careful)
    shop.buy(careful, [product("tent-3", "outdoor", "acme", 20_000)])
    comparer = (await shop.profile(careful)).shopper_type
    assert comparer.name == "rational_comparer"
    assert comparer.facts["views_per_purchase"] == 20.0

    quick = shop.member("Quick")
    shop.behave([view("beans", category="grocery", brand="bean")], member=quick)
    orders = [shop.buy(quick, [product("beans", "grocery", "bean", 15_000)]) for _ in range(3)]
    for order in orders:
        shop.review(quick, order, "L1", 4)
    shop.behave([act("shared", "beans", "grocery", "bean", share_channel="wechat")] * 5,
                member=quick)
    convenient = await shop.profile(quick)
    assert convenient.shopper_type.name == "convenience_buyer"
    assert convenient.shopper_type.facts["views_per_purchase"] == pytest.approx(0.33)
    names = [t.name for t in convenient.tags]
    assert {"repeat_buyer", "brand_loyal", "reviewer", "sharer"} <= set(names)
    assert tag(convenient, "repeat_buyer").facts == {
        "repurchase_rate": 1.0, "products": 1, "repeat_products": 1}
    loyal_brand = tag(convenient, "brand_loyal")
    assert loyal_brand.facts["brand"] == "bean" and loyal_brand.facts["share"] == 1.0
    assert tag(convenient, "reviewer").facts == {"reviews": 3, "average_stars": 4.0}
    assert tag(convenient, "sharer").facts == {"shares": 5}
    # The most frequent and recent buyer is loyal; the biggest spender, high value.
    assert tag(convenient, "loyal").facts == {"recency_score": 5, "frequency_score": 5,
                                              "buyers": 3}
    assert tag(convenient, "high_value") is None
    assert tag(await shop.profile(picky), "high_value").facts["monetary_score"] == 5


# -- channels, sessions and consent -----------------------------------------------------------


async def test_one_profile_counts_activity_per_channel(shop: Shop) -> None:
    eve = shop.member("Eve")
    shop.behave([view("a"), view("b"), view("c")], member=eve, channel=Channel.WEB)
    shop.behave([view("d"), act("wish_listed")], member=eve, channel=Channel.APP)
    order = shop.buy(eve, [product("tent", "outdoor", "acme", 30_000)],
                     channel=Channel.MINI_PROGRAM)
    shop.review(eve, order, "L1", 5, channel=Channel.APP)
    profile = await shop.profile(eve)
    channels = {c.channel: (c.behaviour_events, c.orders, c.reviews, c.total)
                for c in profile.channels}
    assert channels == {"app": (2, 0, 1, 3), "mini_program": (0, 1, 0, 1),
                        "web": (3, 0, 0, 3)}
    assert profile.behaviour.events == 5 and profile.behaviour.wish_lists == 1


async def test_an_anonymous_session_joins_a_member_only_with_consent(shop: Shop) -> None:
    fay = shop.member("Fay")  # consents
    gus = shop.member("Gus", consent=False)
    shop.behave([view("tent"), view("stove")], session="session-fay-1")
    shop.behave([view("pan", category="kitchen", brand="cookco")], session="session-gus-1")
    shop.project()
    assert shop.daily() == {"product_viewed": 3}
    assert (await shop.profile(fay)).behaviour.views == 0

    shop.link("session-fay-1", fay)
    shop.link("session-gus-1", gus)
    fay_profile, gus_profile = await shop.profile(fay), await shop.profile(gus)
    assert fay_profile.behaviour.views == 2
    assert interests(fay_profile.category_interests) == {"outdoor": 2.0}
    assert gus_profile.behaviour.views == 0 and gus_profile.category_interests == ()

    # Later anonymous batches of a linked session follow the link (or stay anonymous).
    shop.behave([view("lamp")], session="session-fay-1")
    shop.behave([view("pot", category="kitchen", brand="cookco")], session="session-gus-1")
    # A link before any behaviour works the same.
    shop.link("session-fay-2", fay)
    shop.behave([act("added_to_cart")], session="session-fay-2", channel=Channel.APP)
    # Gus's batches are not his without consent, and his session stays anonymous for good.
    shop.behave([view("pot", category="kitchen", brand="cookco")], member=gus)
    shop.consent(gus, True)
    shop.behave([view("pot", category="kitchen", brand="cookco")], session="session-gus-1")
    fay_profile, gus_profile = await shop.profile(fay), await shop.profile(gus)
    assert (fay_profile.behaviour.views, fay_profile.behaviour.cart_adds) == (3, 1)
    assert {c.channel: c.behaviour_events for c in fay_profile.channels} == {
        "web": 3, "app": 1}
    assert gus_profile.behaviour.events == 0
    assert gus_profile.personalised
    # Everything counts in the aggregate statistics.
    assert shop.daily() == {"product_viewed": 7, "added_to_cart": 1}


async def test_withdrawing_consent_forgets_behaviour_but_keeps_purchases(shop: Shop) -> None:
    hal = shop.member("Hal")
    shop.behave([view("tent"), act("wish_listed")], member=hal)
    shop.buy(hal, [product("tent", "outdoor", "acme", 30_000)])
    before = await shop.profile(hal)
    assert before.behaviour.events == 2 and before.category_interests
    shop.consent(hal, False)
    shop.behave([view("tent")], member=hal)  # a batch raced the withdrawal
    order = shop.buy(hal, [product("stove", "outdoor", "acme", 30_000)])
    shop.review(hal, order, "L1", 5)
    after = await shop.profile(hal)
    assert not after.personalised
    assert after.behaviour.events == 0 and after.category_interests == ()
    assert after.brand_interests == ()
    assert (after.purchases, after.reviews) == (2, 1)
    assert shop.daily()["product_viewed"] == 2


async def test_erasure_deletes_the_members_rows_and_keeps_daily_statistics(
        shop: Shop) -> None:
    ivy = shop.member("Ivy")
    shop.behave([view("tent")], session="session-ivy-1")
    shop.link("session-ivy-1", ivy)
    shop.behave([view("stove"), act("added_to_cart")], member=ivy)
    order = shop.buy(ivy, [product("tent", "outdoor", "acme", 30_000)])
    shop.review(ivy, order, "L1", 4)
    unpaid = shop.place(ivy, [product("lamp", "outdoor", "acme", 5_000)])
    other = shop.member("Other")
    shop.behave([view("tent")], member=other)
    await shop.profile(ivy)
    daily = shop.daily()

    shop.erase(ivy)
    shop.behave([view("tent")], session="session-ivy-1")  # the old session, still anonymous
    shop.runtime.orders.pay(unpaid, "card", shop.runtime.orders.get(unpaid).total, None,
                            "pay-late", meta(ivy))
    shop.project()
    assert await member_profile(shop.runtime.async_engine, ivy, shop.clock.now(), RULES) is None
    with shop.runtime.sync_engine.connect() as conn:
        for table in BEHAVIOUR_TABLES:
            if "member_id" in table.c:
                left = conn.execute(select(table).where(table.c.member_id == ivy)).all()
                if table.name == "behaviour_sessions":
                    assert [(r.attributed, r.behaviour_events) for r in left] == [(False, 0)]
                elif table.name == "behaviour_consents":
                    assert [(r.erased, r.personalisation) for r in left] == [(True, False)]
                else:
                    assert left == [], table.name
    assert shop.daily() == {**daily, "product_viewed": daily["product_viewed"] + 1,
                            "purchase": daily["purchase"] + 1}
    assert (await shop.profile(other)).behaviour.views == 1


# -- KPIs -------------------------------------------------------------------------------------


async def test_behaviour_kpis_count_every_view_and_purchase_per_day(shop: Shop) -> None:
    start = shop.clock.now()
    jo = shop.member("Jo")
    shop.behave([view("a"), view("b"), view("c"), view("d")], member=jo)
    shop.behave([view("a"), act("added_to_cart", "a")], session="session-anon-1")
    shop.buy(jo, [product("tent", "outdoor", "acme", 30_000)])
    shop.clock.advance(2 * DAY)
    shop.behave([view("a"), view("b")], session="session-anon-2")
    shop.buy(jo, [product("tent", "outdoor", "acme", 30_000)])
    shop.project()
    kpis = await behaviour_kpis(shop.runtime.async_engine, start.date(),
                                shop.clock.now().date())
    assert [(d.views, d.cart_adds, d.purchases) for d in kpis.days] == [
        (5, 1, 1), (0, 0, 0), (2, 0, 1)]
    assert [d.conversion for d in kpis.days] == [0.2, None, 0.5]
    assert (kpis.views, kpis.purchases, kpis.conversion) == (7, 2, pytest.approx(2 / 7))
    assert kpis.revenue == sum(d.revenue for d in kpis.days) > 0
    assert (kpis.buyers, kpis.repeat_buyers, kpis.repeat_buyer_rate) == (1, 1, 1.0)


# -- rebuild and schema -----------------------------------------------------------------------


def build_history(shop: Shop) -> list[str]:
    """Everything the projection handles, over two months of business time."""
    ann, bo, cy = shop.member("Ann"), shop.member("Bo"), shop.member("Cy", consent=False)
    shop.behave([view("tent", dwell_seconds=45, price=30_000), act("added_to_cart"),
                 {"kind": "searched", "keywords": "tent", "category": "outdoor"}], member=ann)
    shop.behave([view("pan", category="kitchen", brand="cookco")], session="session-bo-1",
                channel=Channel.APP)
    order = shop.buy(ann, [product("tent", "outdoor", "acme", 30_000),
                           product("pan", "kitchen", "cookco", 4_000)])
    review = shop.review(ann, order, "L1", 5)
    shop.clock.advance(10 * DAY)
    shop.link("session-bo-1", bo)
    shop.behave([view("pan", category="kitchen", brand="cookco",
                      occurred_at=shop.clock.now() - 3 * DAY)], session="session-bo-1")
    shop.revise(review, 2)
    shop.behave([act("shared", share_channel="weibo")], member=ann, channel=Channel.STORE)
    shop.buy(cy, [product("mug", "kitchen", "cookco", 2_000)])
    cancelled = shop.place(bo, [product("lamp", "outdoor", "acme", 5_000)])
    shop.runtime.orders.cancel(cancelled, "member_request", None, meta(bo))
    shop.clock.advance(20 * DAY)
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    shop.runtime.orders.refund(order, [("L2", 1)], "refund-1",
                               agent())
    shop.consent(bo, False)
    shop.behave([view("anything")], session="session-nobody")
    shop.erase(cy)
    return [ann, bo, cy]


async def test_a_rebuild_reproduces_every_row_exactly(shop: Shop) -> None:
    build_history(shop)
    shop.project()
    live = shop.snapshot()
    assert all(live[name] for name in ("member_activity", "member_interests",
                                       "behaviour_sessions", "behaviour_daily"))
    runner = shop.runtime.runner
    runner.batch_size = 3  # a different batching must not matter
    assert runner.rebuild(NAME) == runner.head()
    assert shop.snapshot() == live


async def test_interest_rows_keep_the_decayed_sum_as_of_their_latest_event(
        shop: Shop) -> None:
    kim = shop.member("Kim")
    start = shop.clock.now()
    shop.behave([view("tent")], member=kim)
    shop.clock.advance(60 * DAY)
    shop.behave([view("stove")], member=kim)
    shop.project()
    with shop.runtime.sync_engine.connect() as conn:
        row = conn.execute(select(member_interests).where(
            (member_interests.c.member_id == kim) & (member_interests.c.key == "outdoor"))
        ).one()
    as_of = row.as_of if row.as_of.tzinfo else row.as_of.replace(tzinfo=UTC)
    assert as_of == shop.clock.now()
    assert row.views == pytest.approx(1.25)  # 1 two half-lives old, plus 1 now
    assert row.events == 2
    assert shop.clock.now() - start == 60 * DAY


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime, TABLE_NAMES) == []


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0004")
    with runtime.sync_engine.connect() as conn:
        assert not TABLE_NAMES & set(inspect(conn).get_table_names())
    command.upgrade(config, "head")
    assert _differences(runtime, TABLE_NAMES) == []


def test_the_runtime_runs_the_projection_with_the_configured_half_life(
        runtime: Runtime) -> None:
    projection = runtime.runner.projections[NAME]
    assert projection.half_life_days == runtime.rules.profile.interest_half_life_days  # type: ignore[attr-defined]


# -- API --------------------------------------------------------------------------------------

PROFILE_FIELDS = """
  profile {
    personalised purchases priceBand averagePrice { amount currency }
    categoryInterests { key score share events contributions }
    brandInterests { key share }
    behaviour { views cartAdds }
    rfm { recency frequency monetary buyers }
    lifecycle { segment rule facts }
    shopperType { type rule facts }
    tags { name rule facts }
    channels { channel behaviourEvents orders reviews total }
  }
"""
KPIS = """
query K($from: Date!, $to: Date!) { behaviourKpis(from: $from, to: $to) {
  from to views purchases conversion buyers repeatBuyerRate
  revenue { amount } days { day views purchases conversion }
} }
"""


async def test_a_member_and_staff_read_the_profile_through_the_api(
        client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock) -> None:
    ann: Shopper = await shopper(client, "Ann Lee")
    other: Shopper = await shopper(client, "Bo Wu")
    shop = Shop(live_runtime, clock)
    shop.consent(ann.member_id, True)
    shop.behave([view("tent", dwell_seconds=30), act("added_to_cart")], member=ann.member_id,
                channel=Channel.APP)
    shop.buy(ann.member_id, [product("tent", "outdoor", "acme", 60_000)])

    async def mine() -> dict[str, Any]:
        body = await gql(client, f"{{ me {{ {PROFILE_FIELDS} }} }}", token=ann.token)
        result: dict[str, Any] = data(body)["me"]["profile"]
        return result

    profile = await eventually(mine, lambda p: p is not None and p["purchases"] == 1)
    assert profile["personalised"] is True
    assert profile["priceBand"] == "PREMIUM"
    assert profile["averagePrice"] == {"amount": 60_000, "currency": "CNY"}
    assert profile["categoryInterests"] == [{
        "key": "outdoor", "score": 9.5, "share": 1.0, "events": 3,
        "contributions": {"views": 1.0, "dwell_minutes": 0.5, "cart_adds": 3.0,
                          "purchases": 5.0}}]
    assert profile["rfm"] == {"recency": 5, "frequency": 5, "monetary": 5, "buyers": 1}
    assert profile["lifecycle"]["segment"] == "NEW"
    assert profile["shopperType"]["type"] == "QUALITY_SEEKER"
    assert profile["shopperType"]["facts"]["price_band"] == "premium"
    assert {t["name"] for t in profile["tags"]} >= {"loyal", "high_value"}
    assert {c["channel"]: c["total"] for c in profile["channels"]} == {"APP": 3}

    query = f"query M($id: ID!) {{ member(id: $id) {{ {PROFILE_FIELDS} }} }}"
    for token in (token_for(Role.AGENT, "agent-1"), token_for(Role.AUDITOR, "auditor-1")):
        body = await gql(client, query, {"id": ann.id}, token=token)
        assert data(body)["member"]["profile"]["purchases"] == 1
    body = await gql(client, query, {"id": ann.id}, token=other.token)
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    today = clock.now().date().isoformat()
    body = await gql(client, KPIS, {"from": today, "to": today},
                     token=token_for(Role.ADMIN, "admin-1"))
    kpis = data(body)["behaviourKpis"]
    assert (kpis["views"], kpis["purchases"], kpis["conversion"]) == (1, 1, 1.0)
    assert kpis["days"] == [{"day": today, "views": 1, "purchases": 1, "conversion": 1.0}]
    body = await gql(client, KPIS, {"from": today, "to": today}, token=ann.token)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(client, KPIS, {"from": today, "to": "2000-01-01"},
                     token=token_for(Role.ADMIN, "admin-1"))
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION"

