"""The "campaign_results" read model: issued, redeemed and the resulting spend, per campaign
and per rewarded member. Both backends.

Campaigns, orders, payments, cancellations and refunds go through the real services with
the business clock set before each step; a runner of our own projects only this
projection, in small batches, after every step. The rows are checked against what
happened, the campaign totals against the sum of their rows, and a rebuild from position
zero against the live tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from api.runtime import Runtime, alembic_config
from domain.campaigns import reward_coupon_id
from domain.clock import AdjustableClock
from domain.loyalty import account_id_for
from domain.metadata import Channel, EventMetadata, Role
from projections.campaign_results import CampaignResultsProjection
from projections.campaign_tables import CAMPAIGN_TABLES, campaign_rewards, campaigns
from projections.engine import ReadModelRunner
from projections.tables import metadata
from tests.segment_stand_in import admin_meta, define_segment, seed_segment
from tests.shop import stocked

T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
COUPON = {"coupon": {"kind": "fixed", "value": 1_000, "min_spend": 0, "valid_days": 14}}
POINTS = {"points": 400}
AGENT = EventMetadata("agent-1", Role.AGENT, Channel.ADMIN, "c", None, "r", "customer call")


def meta(member_id: str) -> EventMetadata:
    return EventMetadata(member_id, Role.MEMBER, Channel.APP, "c", None, uuid.uuid4().hex)


def line(price: int, quantity: int = 1, sku: str = "S1") -> dict[str, Any]:
    return {"product_id": sku.lower(), "sku": sku, "name": sku, "quantity": quantity,
            "unit_price": price}


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Shop:
    """Members, their orders and the campaigns, on a clock the test moves."""

    def __init__(self, runtime: Runtime, clock: AdjustableClock) -> None:
        self.rt = runtime
        self.clock = clock
        clock.set(T0)
        self.runner = ReadModelRunner(
            runtime.sync_engine, runtime.app.recorder,  # type: ignore[arg-type]
            runtime.app.mapper, [CampaignResultsProjection()], batch_size=4)

    def at(self, hours: float) -> None:
        self.clock.set(T0 + timedelta(hours=hours))

    def project(self) -> None:
        self.runner.catch_up("campaign_results")

    def member(self, name: str) -> str:
        member_id = str(self.rt.members.register(
            {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"},
            meta("anon")).aggregate_id)
        self.rt.members.set_consent(UUID(member_id), "marketing", "email", True,
                                    meta(member_id))
        return member_id

    def launch(self, reward: dict[str, Any], members: list[str], days: int = 7,
               budget: int = 10) -> UUID:
        segment = define_segment(self.rt)
        seed_segment(self.rt, segment, members, at=self.clock.now())
        return self.rt.campaigns.launch(
            "Campaign", segment, reward, budget, None,
            self.clock.now() + timedelta(days=days), uuid.uuid4().hex,
            admin_meta("spring")).aggregate_id

    def place(self, member_id: str, price: int, coupon: UUID | None = None) -> UUID:
        return self.rt.orders.place(UUID(member_id), stocked(self.rt, [line(price, 2)]), coupon, 0,
                                    uuid.uuid4().hex, meta(member_id)).aggregate_id

    def pay(self, member_id: str, order_id: UUID) -> int:
        total = self.rt.orders.get(order_id).total
        self.rt.orders.pay(order_id, "card", total, None, uuid.uuid4().hex, meta(member_id))
        return total

    def buy(self, member_id: str, price: int, coupon: UUID | None = None) -> tuple[UUID, int]:
        order_id = self.place(member_id, price, coupon)
        return order_id, self.pay(member_id, order_id)

    def reward(self, campaign_id: UUID, member_id: str) -> dict[str, Any]:
        with self.rt.sync_engine.connect() as conn:
            return dict(conn.execute(select(campaign_rewards).where(
                (campaign_rewards.c.campaign_id == str(campaign_id))
                & (campaign_rewards.c.member_id == member_id))).one()._mapping)

    def campaign(self, campaign_id: UUID) -> dict[str, Any]:
        with self.rt.sync_engine.connect() as conn:
            return dict(conn.execute(select(campaigns).where(
                campaigns.c.campaign_id == str(campaign_id))).one()._mapping)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.rt.sync_engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key))]
                    for t in CAMPAIGN_TABLES}


@dataclass
class History:
    coupons: UUID
    points: UUID
    members: dict[str, str]
    spend: dict[str, int]
    orders: dict[str, UUID]


def build_history(shop: Shop) -> History:
    """A coupon campaign and a points campaign, and what their members then did."""
    m = {name: shop.member(name) for name in ("Ann", "Bob", "Cai", "Dan", "Eve", "Fay")}
    spend: dict[str, int] = {}
    orders: dict[str, UUID] = {}
    shop.at(1)
    # Eve and Fay buy before the points campaign: that does not count for it.
    shop.buy(m["Eve"], 2_000)
    shop.project()
    shop.at(2)
    coupons = shop.launch(COUPON, [m["Ann"], m["Bob"], m["Cai"], m["Dan"]])
    points = shop.launch(POINTS, [m["Eve"], m["Fay"]], days=2)
    shop.project()
    coupon = {name: reward_coupon_id(coupons, m[name]) for name in ("Ann", "Bob", "Cai", "Dan")}

    shop.at(3)  # Ann uses her coupon on a paid order
    orders["Ann"], spend["Ann"] = shop.buy(m["Ann"], 5_000, coupon["Ann"])
    shop.project()
    shop.at(4)  # Bob reserves his on an order he cancels unpaid, then uses it on another
    first = shop.place(m["Bob"], 3_000, coupon["Bob"])
    shop.project()
    shop.rt.orders.cancel(first, "member_request", None, meta(m["Bob"]))
    shop.project()
    shop.at(5)
    orders["Bob"], spend["Bob"] = shop.buy(m["Bob"], 4_000, coupon["Bob"])
    shop.project()
    shop.at(6)  # Cai uses hers, then one item of the two is refunded
    orders["Cai"], spend["Cai"] = shop.buy(m["Cai"], 6_000, coupon["Cai"])
    shop.project()
    shop.rt.orders.refund(orders["Cai"], [("L1", 1)], "refund-cai", AGENT)
    shop.project()
    shop.at(7)  # Dan pays with his coupon, then cancels: the coupon comes back to him
    dan_order, _ = shop.buy(m["Dan"], 2_500, coupon["Dan"])
    shop.project()
    shop.rt.orders.cancel(dan_order, "member_request", None, meta(m["Dan"]))
    shop.buy(m["Dan"], 9_000)  # and buys without it: not a redemption
    shop.project()

    shop.at(8)  # Eve buys twice after her bonus: the first order redeems it
    orders["Eve"], spend["Eve"] = shop.buy(m["Eve"], 3_500)
    shop.project()
    shop.at(9)
    shop.buy(m["Eve"], 8_000)
    shop.project()
    shop.at(2 + 48 + 1)  # Fay buys only after the points campaign ended
    shop.buy(m["Fay"], 1_500)
    shop.project()
    shop.rt.campaigns.stop(coupons, admin_meta("budget moved"))
    shop.project()
    return History(coupons, points, m, spend, orders)


@pytest.fixture
def shop(runtime: Runtime, clock: AdjustableClock) -> Iterator[Shop]:
    made = Shop(runtime, clock)
    yield made
    made.runner.release_leases()


def test_coupon_redemptions_count_paid_orders_and_their_spend(shop: Shop) -> None:
    h = build_history(shop)
    m = h.members
    ann = shop.reward(h.coupons, m["Ann"])
    assert ann["reward_kind"] == "coupon" and ann["points"] is None
    assert ann["coupon_id"] == str(reward_coupon_id(h.coupons, m["Ann"]))
    assert ann["account_id"] == str(account_id_for(m["Ann"]))
    assert aware(ann["issued_at"]) == T0 + timedelta(hours=2)
    assert aware(ann["redeemable_until"]) == T0 + timedelta(hours=2, days=14)
    assert (ann["order_id"], aware(ann["redeemed_at"]), ann["spend"], ann["refunded"]) == (
        str(h.orders["Ann"]), T0 + timedelta(hours=3), h.spend["Ann"], 0)
    bob = shop.reward(h.coupons, m["Bob"])  # the cancelled reservation left no trace
    assert (bob["order_id"], aware(bob["redeemed_at"]), bob["spend"]) == (
        str(h.orders["Bob"]), T0 + timedelta(hours=5), h.spend["Bob"])
    cai = shop.reward(h.coupons, m["Cai"])
    refund = shop.rt.orders.get(h.orders["Cai"]).refunded_amount
    assert 0 < refund < h.spend["Cai"]
    assert (cai["spend"], cai["refunded"]) == (h.spend["Cai"], refund)
    dan = shop.reward(h.coupons, m["Dan"])  # paid, then cancelled: released, not redeemed
    assert (dan["order_id"], dan["redeemed_at"], dan["spend"], dan["refunded"]) == (
        None, None, 0, 0)

    row = shop.campaign(h.coupons)
    assert (row["issued"], row["redeemed"], row["points_issued"]) == (4, 3, 0)
    assert row["spend"] == h.spend["Ann"] + h.spend["Bob"] + h.spend["Cai"]
    assert row["refunded"] == refund
    assert (row["status"], row["stop_reason"], row["stopped_by"]) == (
        "stopped", "budget moved", "admin-1")
    assert aware(row["stopped_at"]) == T0 + timedelta(hours=51)
    assert (row["launch_reason"], row["launched_by"], row["budget"]) == ("spring", "admin-1",
                                                                         10)
    assert row["reward"] == {"kind": "coupon", "coupon_kind": "fixed", "value": 1_000,
                             "min_spend": 0, "valid_days": 14}


def test_points_redemption_is_the_first_order_paid_after_the_reward_before_the_end(
    shop: Shop,
) -> None:
    h = build_history(shop)
    eve = shop.reward(h.points, h.members["Eve"])
    assert (eve["reward_kind"], eve["points"], eve["coupon_id"]) == ("points", 400, None)
    assert aware(eve["redeemable_until"]) == T0 + timedelta(hours=2, days=2)
    assert (eve["order_id"], aware(eve["redeemed_at"]), eve["spend"]) == (
        str(h.orders["Eve"]), T0 + timedelta(hours=8), h.spend["Eve"])
    fay = shop.reward(h.points, h.members["Fay"])
    assert (fay["redeemed_at"], fay["order_id"], fay["spend"]) == (None, None, 0)
    row = shop.campaign(h.points)
    assert (row["issued"], row["points_issued"], row["redeemed"], row["spend"]) == (
        2, 800, 1, h.spend["Eve"])
    assert (row["status"], row["reward_kind"]) == ("launched", "points")
    assert aware(row["last_issued_at"]) == T0 + timedelta(hours=2)


def test_campaign_totals_are_the_sums_of_their_rows(shop: Shop) -> None:
    h = build_history(shop)
    for campaign_id in (h.coupons, h.points):
        with shop.rt.sync_engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(campaign_rewards).where(
                campaign_rewards.c.campaign_id == str(campaign_id)))]
        redeemed = [r for r in rows if r["redeemed_at"] is not None]
        row = shop.campaign(campaign_id)
        assert row["issued"] == len(rows)
        assert row["redeemed"] == len(redeemed)
        assert row["spend"] == sum(r["spend"] for r in redeemed)
        assert row["refunded"] == sum(r["refunded"] for r in redeemed)
        assert row["points_issued"] == sum(r["points"] or 0 for r in rows)


def test_a_rebuild_reproduces_the_tables_exactly(shop: Shop) -> None:
    build_history(shop)
    live = shop.snapshot()
    assert len(live["campaigns"]) == 2 and len(live["campaign_rewards"]) == 6
    shop.runner.batch_size = 3  # another batching must not matter
    assert shop.runner.rebuild("campaign_results") == shop.runner.head()
    assert shop.snapshot() == live


def test_the_runtime_runs_the_projection(shop: Shop) -> None:
    build_history(shop)
    live = shop.snapshot()
    runner = shop.rt.runner
    assert "campaign_results" in runner.projections
    assert runner.rebuild("campaign_results") == runner.head()
    assert shop.snapshot() == live


# -- the migration ----------------------------------------------------------------------------


def _differences(runtime: Runtime) -> list[Any]:
    names = {t.name for t in CAMPAIGN_TABLES}
    with runtime.sync_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff
        kind = item[0]
        if kind in ("add_table", "remove_table"):
            return str(item[1].name)
        if kind in ("add_column", "remove_column") or kind.startswith("modify_"):
            return str(item[2])
        table = getattr(item[1], "table", None)
        return str(table.name) if table is not None else None

    return [diff for diff in differences if table_of(diff) in names]


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime) == []


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0006")
    with runtime.sync_engine.connect() as conn:
        assert not {t.name for t in CAMPAIGN_TABLES} & set(inspect(conn).get_table_names())
    command.upgrade(config, "head")
    assert _differences(runtime) == []
