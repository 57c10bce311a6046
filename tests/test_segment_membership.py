"""Live segment membership: members join and leave as events arrive, at those events' times.

Each test drives the real services and the "member_behaviour" projection on SQLite and
PostgreSQL, then reads the membership tables the projection keeps.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from alembic import command
from sqlalchemy import inspect, select

from api.runtime import Runtime, alembic_config
from domain.clock import AdjustableClock
from domain.errors import (
    ForbiddenError,
    IdempotencyConflictError,
    ReasonRequiredError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role
from domain.segment_rules import SegmentRuleError
from domain.segments import SegmentReview, review_slot
from projections.segment_tables import (
    SEGMENT_TABLES,
    segment_daily,
    segment_members,
    segment_membership_changes,
    segments,
)
from tests.test_after_sales_projections import _differences
from tests.test_member_behaviour import BEHAVIOUR_TABLES, Shop, act, meta, product, view

DAY = timedelta(days=1)
SEGMENT_TABLE_NAMES = {t.name for t in SEGMENT_TABLES}


def admin(reason: str | None = "spring campaign targeting") -> EventMetadata:
    return meta("admin-1", Role.ADMIN, Channel.ADMIN, reason=reason)


class Segments:
    """Segments over a Shop: define, change, and read what the projection decided."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.runtime = shop.runtime
        self.keys = 0

    def define(self, rule: str, name: str = "target") -> str:
        self.keys += 1
        result = self.runtime.segments.define(name, None, rule, f"key-{self.keys}", admin())
        return str(result.aggregate_id)

    def members(self, segment_id: str) -> set[str]:
        self.shop.project()
        with self.runtime.sync_engine.connect() as conn:
            return set(conn.scalars(select(segment_members.c.member_id).where(
                segment_members.c.segment_id == segment_id)))

    def why(self, segment_id: str, member_id: str) -> list[dict[str, Any]]:
        self.shop.project()
        with self.runtime.sync_engine.connect() as conn:
            return list(conn.scalar(select(segment_members.c.why).where(
                (segment_members.c.segment_id == segment_id)
                & (segment_members.c.member_id == member_id))))

    def changes(self, segment_id: str, member_id: str | None = None
                ) -> list[tuple[str, str, datetime]]:
        self.shop.project()
        c = segment_membership_changes.c
        query = select(c.member_id, c.change, c.at).where(c.segment_id == segment_id)
        if member_id:
            query = query.where(c.member_id == member_id)
        with self.runtime.sync_engine.connect() as conn:
            return [(r.member_id, r.change, _aware(r.at))
                    for r in conn.execute(query.order_by(c.position, c.member_id))]

    def row(self, segment_id: str) -> Any:
        self.shop.project()
        with self.runtime.sync_engine.connect() as conn:
            return conn.execute(select(segments).where(
                segments.c.segment_id == segment_id)).one()

    def review(self) -> bool:
        return self.runtime.segments.hold_review(admin())


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.fixture
async def shop(runtime: Runtime, clock: AdjustableClock) -> AsyncIterator[Shop]:
    yield Shop(runtime, clock)
    if runtime._async_engine is not None:
        await runtime._async_engine.dispose()


@pytest.fixture
def seg(shop: Shop) -> Segments:
    return Segments(shop)


# -- joining and leaving as events arrive -------------------------------------------------------


async def test_a_new_segment_takes_in_every_member_its_rule_holds_for_at_once(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo")
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    defined_at = shop.clock.now()
    segment = seg.define("purchases >= 1")
    assert seg.members(segment) == {ann}
    assert seg.changes(segment) == [(ann, "joined", defined_at)]
    assert seg.row(segment).size == 1
    assert bo not in seg.members(segment)


async def test_membership_changes_as_events_arrive_at_the_time_of_each_event(
        shop: Shop, seg: Segments) -> None:
    ann = shop.member("Ann")
    segment = seg.define("purchases >= 1 and total_spent >= 20000")
    assert seg.members(segment) == set()

    shop.clock.advance(DAY)
    order = shop.buy(ann, [product("tent", "outdoor", "acme", 15_000),
                           product("pan", "kitchen", "cookco", 10_000)])
    bought_at = shop.clock.now()
    assert seg.members(segment) == {ann}
    why = {r["condition"]: r for r in seg.why(segment, ann)}
    assert why["total_spent >= 20000"]["value"] == 25_000
    assert why["purchases >= 1"]["held"] is True

    shop.clock.advance(DAY)
    shop.runtime.orders.refund(order, [("L2", 1)], "refund-1",
                               meta("agent-1", Role.AGENT, Channel.ADMIN, reason="broken"))
    refunded_at = shop.clock.now()
    assert seg.members(segment) == set()
    assert seg.changes(segment, ann) == [(ann, "joined", bought_at),
                                         (ann, "left", refunded_at)]
    with shop.runtime.sync_engine.connect() as conn:
        days = conn.execute(select(segment_daily.c.day, segment_daily.c.joins,
                                   segment_daily.c.leaves, segment_daily.c.size)
                            .where(segment_daily.c.segment_id == segment)
                            .order_by(segment_daily.c.day)).all()
    assert [tuple(d)[1:] for d in days] == [(1, 0, 1), (0, 1, 0)]


async def test_a_tier_change_brings_a_member_into_a_tier_segment(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo")
    segment = seg.define("tier in [Gold, Platinum]")
    regulars = seg.define("tier = regular", name="regulars")
    assert seg.members(regulars) == {ann, bo}
    shop.buy(ann, [product("sofa", "home", "comfy", 900_000)])
    assert shop.runtime.loyalty.account(UUID(ann)).tier == "gold"
    assert seg.members(segment) == {ann}
    assert seg.members(regulars) == {bo}
    assert seg.why(segment, ann)[0]["value"] == "gold"


async def test_interest_rules_follow_behaviour_and_consent(
        shop: Shop, seg: Segments) -> None:
    ann = shop.member("Ann")
    cy = shop.member("Cy", consent=False)
    segment = seg.define('interest(category "outdoor") >= 0.5')
    shop.behave([view("tent"), act("added_to_cart")], member=ann)
    assert seg.members(segment) == {ann}
    shop.behave([view("pan", category="kitchen", brand="cookco")] * 6, member=ann)
    assert seg.members(segment) == set()  # outdoor is now under half her interest
    shop.behave([view("tent")] * 10, member=ann)
    assert seg.members(segment) == {ann}
    shop.consent(ann, False)
    assert seg.members(segment) == set()  # without consent interests are unknown
    shop.behave([view("tent")], session="cy-session")
    shop.link("cy-session", cy)
    assert seg.members(segment) == set()


async def test_time_alone_moves_members_at_the_next_segment_review(
        shop: Shop, seg: Segments) -> None:
    ann = shop.member("Ann")
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    segment = seg.define("last purchase within 30 days")
    assert seg.members(segment) == {ann}

    shop.clock.advance(31 * DAY)
    assert seg.members(segment) == {ann}  # no event yet says otherwise
    assert seg.review() is True
    reviewed_at = shop.clock.now()
    assert seg.members(segment) == set()
    assert seg.changes(segment, ann)[-1] == (ann, "left", reviewed_at)
    assert seg.row(segment).evaluated_at is not None


async def test_one_review_per_interval_however_many_schedulers_ask(
        shop: Shop, seg: Segments) -> None:
    seg.define("purchases = 0")
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        results.append(seg.review())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    interval = shop.runtime.rules.profile.segment_review_minutes
    slot = review_slot(shop.clock.now(), interval)
    assert shop.runtime.uow.get(SegmentReview, SegmentReview.id_for(slot)).slot == \
        slot.isoformat()
    shop.clock.advance(timedelta(minutes=interval))
    assert seg.review() is True


async def test_the_scheduler_reviews_only_while_a_segment_is_active(
        shop: Shop, seg: Segments) -> None:
    assert shop.runtime.scheduler.tick().segment_reviews == 0
    segment = seg.define("purchases = 0")
    shop.project()
    assert shop.runtime.scheduler.tick().segment_reviews == 1
    assert shop.runtime.scheduler.tick().segment_reviews == 0  # same interval
    shop.runtime.segments.archive(UUID(segment), admin())
    shop.project()
    shop.clock.advance(2 * timedelta(minutes=shop.runtime.rules.profile.segment_review_minutes))
    assert shop.runtime.scheduler.tick().segment_reviews == 0


async def test_rfm_and_tag_rules_see_the_base_as_it_was_at_each_event(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo")
    segment = seg.define("rfm_monetary = 5 and has tag \"high_value\"")
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    assert seg.members(segment) == {ann}
    shop.buy(bo, [product("sofa", "home", "comfy", 90_000)])
    # Bo's purchase makes Bo the top spender; Ann's own facts did not change, so she stays
    # until the next review applies the new base to everyone.
    assert seg.members(segment) == {ann, bo}
    seg.review()
    assert seg.members(segment) == {bo}


# -- changing segments --------------------------------------------------------------------------


async def test_changing_the_rule_redecides_everyone_and_archiving_empties_the_segment(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo")
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    segment = seg.define("purchases >= 1")
    assert seg.members(segment) == {ann}
    shop.clock.advance(DAY)
    shop.runtime.segments.update(UUID(segment), None, None, "purchases = 0", admin())
    assert seg.members(segment) == {bo}
    assert seg.row(segment).rule == "purchases = 0"
    # Renaming alone re-decides nothing.
    shop.runtime.segments.update(UUID(segment), "Never bought", None, None, admin())
    assert len(seg.changes(segment)) == 3
    shop.clock.advance(DAY)
    shop.runtime.segments.archive(UUID(segment), admin())
    row = seg.row(segment)
    assert (row.state, row.size, row.name) == ("archived", 0, "Never bought")
    assert seg.members(segment) == set()
    shop.member("Di")
    assert seg.members(segment) == set()  # an archived segment takes no one in


async def test_bad_definitions_are_typed_errors_and_record_nothing(
        shop: Shop, seg: Segments) -> None:
    head = shop.runtime.runner.head()
    with pytest.raises(SegmentRuleError) as error:
        shop.runtime.segments.define("x", None, "tier in [Gold,\n  Bronze]", "k1", admin())
    assert (error.value.line, error.value.column) == (2, 3)
    with pytest.raises(ForbiddenError):
        shop.runtime.segments.define("x", None, "purchases = 0", "k2",
                                     meta("agent-1", Role.AGENT, Channel.ADMIN, reason="r"))
    with pytest.raises(ReasonRequiredError):
        shop.runtime.segments.define("x", None, "purchases = 0", "k3", admin(reason=None))
    with pytest.raises(ValidationError):
        shop.runtime.segments.define(" ", None, "purchases = 0", "k4", admin())
    assert shop.runtime.runner.head() == head

    first = shop.runtime.segments.define("x", None, "purchases = 0", "k5", admin())
    again = shop.runtime.segments.define("x", None, "PURCHASES == 0", "k5", admin())
    assert (again.aggregate_id, again.position) == (first.aggregate_id, None)
    with pytest.raises(IdempotencyConflictError):
        shop.runtime.segments.define("x", None, "purchases = 1", "k5", admin())


# -- erasure, rebuild, migration ------------------------------------------------------------------


async def test_erasure_takes_a_member_out_of_every_segment_and_forgets_their_history(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo")
    segment = seg.define("purchases = 0")
    assert seg.members(segment) == {ann, bo}
    shop.erase(ann)
    assert seg.members(segment) == {bo}
    assert seg.changes(segment, ann) == []
    assert seg.row(segment).size == 1
    seg.review()
    assert seg.members(segment) == {bo}


async def test_a_rebuild_reproduces_membership_and_its_history_exactly(
        shop: Shop, seg: Segments) -> None:
    ann, bo = shop.member("Ann"), shop.member("Bo", consent=False)
    first = seg.define("purchases >= 1 and last purchase within 10 days")
    second = seg.define('interest(brand "acme") >= 0.4 or tier = gold', name="acme")
    shop.behave([view("tent"), act("wish_listed")], member=ann)
    shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    shop.buy(bo, [product("sofa", "home", "comfy", 900_000)])
    shop.clock.advance(12 * DAY)
    seg.review()
    shop.runtime.segments.update(UUID(second), None, None, "tier = gold", admin())
    shop.clock.advance(DAY)
    shop.erase(bo)
    shop.project()
    tables = (*BEHAVIOUR_TABLES, *SEGMENT_TABLES)

    def snapshot() -> dict[str, list[tuple[Any, ...]]]:
        return {table.name: shop.rows(table) for table in tables}

    live = snapshot()
    assert live["segment_membership_changes"] and live["segment_daily"]
    assert seg.members(first) == set()
    runner = shop.runtime.runner
    runner.batch_size = 2
    assert runner.rebuild("member_behaviour") == runner.head()
    assert snapshot() == live


def test_the_migration_creates_the_segment_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime, SEGMENT_TABLE_NAMES | {"member_activity"}) == []


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0005")
    with runtime.sync_engine.connect() as conn:
        assert not SEGMENT_TABLE_NAMES & set(inspect(conn).get_table_names())
    command.upgrade(config, "head")
    assert _differences(runtime, SEGMENT_TABLE_NAMES | {"member_activity"}) == []


# -- campaigns on live membership ------------------------------------------------------------------


async def test_a_campaign_rewards_members_as_they_join_live_and_never_twice(
        shop: Shop, seg: Segments) -> None:
    """End to end: the real projection decides membership, the campaign follows it."""
    ann, bo = shop.member("Ann"), shop.member("Bo")
    for member_id in (ann, bo):
        shop.runtime.members.set_consent(UUID(member_id), "marketing", "email", True,
                                         meta(member_id))
    segment = seg.define("purchases >= 1 and total_spent >= 20000")
    order = shop.buy(ann, [product("tent", "outdoor", "acme", 30_000)])
    shop.project()
    now = shop.clock.now()
    campaign = shop.runtime.campaigns.launch(
        "Thank you", UUID(segment), {"points": 300}, 10, None, now + 7 * DAY, "thanks",
        admin()).aggregate_id
    assert set(shop.runtime.campaigns.get(campaign).rewarded) == {ann}

    # Bo joins through a purchase; Ann leaves through a refund and comes back.
    shop.clock.advance(DAY)
    shop.buy(bo, [product("sofa", "home", "comfy", 25_000)])
    shop.runtime.orders.refund(order, [("L1", 1)], "refund-1",
                               meta("agent-1", Role.AGENT, Channel.ADMIN, reason="broken"))
    assert seg.members(segment) == {bo}
    shop.runtime.runner.run_once()
    assert shop.runtime.scheduler.tick().campaign_rewards == 1
    shop.buy(ann, [product("stove", "outdoor", "acme", 40_000)])
    assert seg.members(segment) == {ann, bo}
    shop.runtime.runner.run_once()
    assert shop.runtime.scheduler.tick().campaign_rewards == 0
    assert set(shop.runtime.campaigns.get(campaign).rewarded) == {ann, bo}
    assert [c for _, c, _ in seg.changes(segment, ann)] == ["joined", "left", "joined"]
