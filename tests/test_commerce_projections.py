"""Orders, loyalty and coupon projections mirror their aggregates and rebuild exactly.

Histories are built by driving the aggregates directly (explicit business times, no
services), saved to the event store, and projected by a runner of our own in small
batches. After every save the loyalty rows are compared with the aggregate they mirror,
so a handler that drifts from an `apply` method fails at the event that exposed it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.domain import Aggregate
from sqlalchemy import Connection, Table, func, select

from api.runtime import Runtime
from domain.coupon import Coupon, Reward
from domain.loyalty import LoyaltyAccount, add_months
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role
from domain.order import Order, validate_lines
from domain.pricing import CouponTerms, price_order
from projections.batch_work import BatchWork
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
from projections.coupons import CouponsProjection
from projections.engine import ReadModelRunner
from projections.loyalty import LoyaltyProjection
from projections.orders import OrdersProjection
from projections.tables import projection_tracking

RULES = LoyaltyRules()
T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
NAMES = ("orders", "loyalty", "coupons")


def meta(role: Role = Role.MEMBER, channel: Channel = Channel.WEB, reason: str | None = None,
         actor: str = "tester") -> EventMetadata:
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


MEMBER = meta(actor="member-1")
SYSTEM = meta(Role.SYSTEM, Channel.SYSTEM, actor="system")
STAFF = meta(Role.ADMIN, Channel.ADMIN, "customer goodwill", actor="admin-1")


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Rows on SQLite come back naive, the aggregate keeps ISO strings: compare instants."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def line(sku: str, quantity: int, unit_price: int) -> dict[str, Any]:
    return {"product_id": f"p-{sku}", "sku": sku, "name": f"Item {sku}",
            "quantity": quantity, "unit_price": unit_price}


def place(member_id: str, lines: list[dict[str, Any]], at: datetime, tier: str = "regular",
          coupon: Coupon | None = None, points: int = 0) -> Order:
    cleaned = validate_lines(lines)
    pricing = price_order(
        [item["quantity"] * item["unit_price"] for item in cleaned], tier, RULES,
        coupon=coupon.coupon_terms if coupon else None, points=points,
    )
    return Order.place(
        uuid.uuid4(), member_id, "CNY", cleaned, pricing, tier,
        str(coupon.id) if coupon else None, uuid.uuid4().hex, at, MEMBER,
    )


def _rows(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    key = [column for column in table.primary_key.columns]
    return [tuple(row) for row in conn.execute(select(table).order_by(*key))]


def _dicts(conn: Connection, table: Table, **where: Any) -> list[dict[str, Any]]:
    query = select(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    key = [column for column in table.primary_key.columns]
    return [dict(row._mapping) for row in conn.execute(query.order_by(*key))]


ALL_TABLES = (orders, loyalty_accounts, loyalty_lots, loyalty_ledger, loyalty_spend,
              tier_history, coupons, rewards)


@dataclass
class World:
    """Aggregates under test and a runner over the three commerce projections."""

    runtime: Runtime
    accounts: list[LoyaltyAccount] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    coupons: list[Coupon] = field(default_factory=list)
    rewards: list[Reward] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runner = ReadModelRunner(
            self.runtime.sync_engine, self.runtime.app.recorder,  # type: ignore[arg-type]
            self.runtime.app.mapper,
            [OrdersProjection(), LoyaltyProjection(), CouponsProjection()],
            batch_size=7,
        )

    def commit(self, *aggregates: Aggregate, check: bool = True) -> None:
        """Save, project, and check every projection is at the head with no error."""
        for aggregate in aggregates:
            kind = {LoyaltyAccount: self.accounts, Order: self.orders, Coupon: self.coupons,
                    Reward: self.rewards}[type(aggregate)]
            if aggregate not in kind:
                kind.append(aggregate)
        self.runtime.app.save(*aggregates)
        self.runner.run_once()
        if check:
            self.check_at_head()
            self.check_mirrors()

    def check_at_head(self) -> None:
        head = self.runner.head()
        with self.runtime.sync_engine.connect() as conn:
            for row in conn.execute(select(projection_tracking).where(
                    projection_tracking.c.name.in_(list(self.runner.projections)))):
                assert row.last_error is None, row.last_error
                assert row.position == head

    def check_mirrors(self) -> None:
        with self.runtime.sync_engine.connect() as conn:
            for account in self.accounts:
                check_account(conn, account)
            for order in self.orders:
                check_order(conn, order)
            for coupon in self.coupons:
                check_coupon(conn, coupon)
            for reward in self.rewards:
                check_reward(conn, reward)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.runtime.sync_engine.connect() as conn:
            return {table.name: _rows(conn, table) for table in ALL_TABLES}


# -- mirrors --------------------------------------------------------------------------------

LOT_TIMES = ("earned_at", "release_at", "available_at", "expires_at")
LOT_VALUES = ("source", "ref", "points", "remaining", "clawed_back", "status", "seq")


def check_account(conn: Connection, account: LoyaltyAccount) -> None:
    member_id = account.member_id
    (row,) = _dicts(conn, loyalty_accounts, member_id=member_id)
    assert row["account_id"] == str(account.id)
    assert (row["available"], row["pending"], row["debt"]) == (
        account.available, account.pending, account.debt
    )
    assert row["tier"] == account.tier
    assert as_utc(row["tier_since"]) == as_utc(account.tier_since)
    assert as_utc(row["maintenance_due"]) == as_utc(account.maintenance_due)
    assert row["version"] == account.version

    lots = {lot["lot_id"]: lot for lot in _dicts(conn, loyalty_lots, member_id=member_id)}
    assert set(lots) == set(account.lots)
    for lot_id, expected in account.lots.items():
        got = lots[lot_id]
        assert {k: got[k] for k in LOT_VALUES} == {k: expected[k] for k in LOT_VALUES}, lot_id
        assert [as_utc(got[k]) for k in LOT_TIMES] == [as_utc(expected[k]) for k in LOT_TIMES]

    spend = _dicts(conn, loyalty_spend, member_id=member_id)
    assert [(r["entry"], r["ref"], r["amount"], as_utc(r["at"])) for r in spend] == [
        (n, s["ref"], s["amount"], as_utc(s["at"])) for n, s in enumerate(account.spend, 1)
    ]
    tiers = _dicts(conn, tier_history, member_id=member_id)
    assert [(r["from_tier"], r["to_tier"], r["reason"], as_utc(r["at"])) for r in tiers] == [
        (t["from"], t["to"], t["reason"], as_utc(t["at"])) for t in account.tier_history
    ]
    check_ledger(_dicts(conn, loyalty_ledger, member_id=member_id), account)


def check_ledger(entries: list[dict[str, Any]], account: LoyaltyAccount) -> None:
    """Numbered from 1, running balances consistent, each bucket the sum of its entries."""
    balances = {"available": 0, "pending": 0, "debt": 0}
    for number, entry in enumerate(entries, start=1):
        assert entry["entry"] == number
        assert entry["points"] != 0
        bucket = entry["bucket"]
        if bucket == "debt":
            balances["debt"] -= entry["points"]
        else:
            balances[bucket] += entry["points"]
        assert (entry["available_after"], entry["pending_after"], entry["debt_after"]) == (
            balances["available"], balances["pending"], balances["debt"]
        ), entry
    assert balances == {
        "available": account.available, "pending": account.pending, "debt": account.debt
    }


def check_order(conn: Connection, order: Order) -> None:
    (row,) = _dicts(conn, orders, order_id=str(order.id))
    assert row["state"] == order.state
    assert row["history"][-1]["state"] == order.state
    assert row["member_id"] == order.member_id
    assert row["pricing"] == order.pricing
    assert row["lines"] == order.lines
    assert row["paid_amount"] == order.paid_amount
    assert row["refunded_amount"] == order.refunded_amount
    assert row["failed_payments"] == order.failed_payments
    assert {f["rule"]: f["detail"] for f in row["flags"]} == order.flags
    assert [(p["payment_id"], p["amount"], p["method"]) for p in row["payments"]] == [
        (p["payment_id"], p["amount"], p["method"]) for p in order.payments.values()
    ]
    assert [(r["refund_id"], r["amount"], r["lines"]) for r in row["refunds"]] == [
        (r["refund_id"], r["amount"], r["lines"]) for r in order.refunds.values()
    ]
    if order.cancellation is None:
        assert row["cancellation"] is None and row["cancelled_at"] is None
    else:
        assert {k: row["cancellation"][k] for k in ("reason", "note")} == {
            k: order.cancellation[k] for k in ("reason", "note")
        }
        assert as_utc(row["cancelled_at"]) == as_utc(order.cancellation["at"])
    assert as_utc(row["delivered_at"]) == as_utc(order.delivered_at)
    assert row["version"] == order.version


def check_coupon(conn: Connection, coupon: Coupon) -> None:
    (row,) = _dicts(conn, coupons, coupon_id=str(coupon.id))
    assert (row["status"], row["order_id"], row["member_id"], row["source"]) == (
        coupon.status, coupon.order_id, coupon.member_id, coupon.source
    )
    assert {"kind": row["kind"], "value": row["value"], "min_spend": row["min_spend"]} == (
        coupon.terms
    )
    assert as_utc(row["valid_from"]) == as_utc(coupon.valid_from)
    assert as_utc(row["valid_until"]) == as_utc(coupon.valid_until)


def check_reward(conn: Connection, reward: Reward) -> None:
    (row,) = _dicts(conn, rewards, reward_id=str(reward.id))
    assert row["stock"] == reward.stock
    assert row["redeemed_count"] == sum(reward.taken_by.values())
    assert (row["name"], row["cost_points"], row["per_member_limit"], row["coupon"]) == (
        reward.name, reward.cost_points, reward.per_member_limit, reward.coupon
    )


# -- the history ----------------------------------------------------------------------------


@dataclass
class History:
    alice: LoyaltyAccount
    bob: LoyaltyAccount
    order1: Order
    order2: Order
    order3: Order
    order4: Order
    welcome: Coupon
    campaign: Coupon
    reward: Reward


def build_history(world: World) -> History:
    """Two members; every loyalty, order, coupon and reward event at least once."""
    alice_id, bob_id = str(uuid.uuid4()), str(uuid.uuid4())
    alice = LoyaltyAccount.open(alice_id, T0, SYSTEM)
    bob = LoyaltyAccount.open(bob_id, T0, SYSTEM)
    welcome = Coupon.issue(uuid.uuid4(), alice_id, "welcome", CouponTerms("fixed", 1_000, 5_000),
                           T0, day(30), "welcome", T0, SYSTEM)
    reward = Reward.define("Tea voucher", "A pot of tea", 200, 2, 1, T0, day(365),
                           CouponTerms("fixed", 500, 0), 30, T0, STAFF)
    world.commit(alice, bob, welcome, reward)

    # Order 1: a coupon, a failed then a good payment, pending points, a partial refund
    # before the return window closed, then the release.
    order1 = place(alice_id, [line("A", 2, 5_000), line("B", 1, 2_000)], day(0.04),
                   coupon=welcome)
    welcome.reserve(alice_id, str(order1.id), day(0.04), MEMBER)
    world.commit(order1, welcome)
    order1.record_payment_failure("card", order1.total, "psp-0", "card declined", day(0.05),
                                  MEMBER)
    order1.pay("pay-1", "alipay", order1.total, "psp-1", "h-pay-1", day(0.08), MEMBER)
    welcome.use(str(order1.id), day(0.08), SYSTEM)
    alice.earn_for_payment(str(order1.id), order1.paid_amount, RULES, day(0.08), SYSTEM)
    world.commit(order1, welcome, alice)
    order1.mark_delivered(day(2), SYSTEM)
    alice.schedule_release(str(order1.id), day(9), day(2), SYSTEM)
    world.commit(order1, alice)
    refund = order1.refund("refund-1", [("L2", 1)], "h-r1", day(3), MEMBER)
    assert refund is not None
    alice.claw_back(str(order1.id), order1.refunded_amount, order1.paid_amount, day(3), SYSTEM,
                    refund_amount=refund["amount"])
    world.commit(order1, alice)
    assert alice.release_due(day(9), RULES, SYSTEM) == 1
    world.commit(alice)
    order1.complete(day(10), RULES.return_window_days, SYSTEM)
    alice.credit("review", "review-1", 20, RULES, day(10), MEMBER)
    alice.credit("adjustment", "ticket-7", 500, RULES, day(10), STAFF)
    world.commit(order1, alice)

    # A reward for points, taken by both members (stock 2).
    alice.debit(200, "reward", f"reward:{reward.id}", RULES, day(11), MEMBER)
    reward.take(alice_id, "redemption-a", day(11), MEMBER)
    reward.take(bob_id, "redemption-b", day(11), MEMBER)
    world.commit(alice, reward)

    # Order 2: a big order promotes Alice to silver; she spends most of its points, then
    # the order is refunded in full: what is left is clawed back, the rest becomes debt.
    order2 = place(alice_id, [line("C", 1, 250_000)], day(12))
    order2.pay("pay-2", "card", order2.total, "psp-2", "h-pay-2", day(12), MEMBER)
    alice.earn_for_payment(str(order2.id), order2.paid_amount, RULES, day(12), SYSTEM)
    world.commit(order2, alice)
    assert alice.tier == "silver"
    order2.mark_delivered(day(13), SYSTEM)
    alice.schedule_release(str(order2.id), day(20), day(13), SYSTEM)
    world.commit(order2, alice)
    alice.release_due(day(20), RULES, SYSTEM)
    alice.debit(2_400, "order_payment", "order:other", RULES, day(21), MEMBER)
    world.commit(alice)
    refund = order2.refund("refund-2", None, "h-r2", day(22), STAFF)
    assert refund is not None
    alice.claw_back(str(order2.id), order2.refunded_amount, order2.paid_amount, day(22), SYSTEM,
                    refund_amount=refund["amount"])
    world.commit(order2, alice)
    assert alice.debt == 1_988

    # Credits settle the debt: a campaign credit entirely, a release the rest.
    alice.credit("campaign", "spring", 1_000, RULES, day(25), SYSTEM)
    world.commit(alice)
    order3 = place(alice_id, [line("D", 1, 100_000)], day(26), tier="silver")
    order3.pay("pay-3", "wechat_pay", order3.total, None, "h-pay-3", day(26), MEMBER)
    alice.earn_for_payment(str(order3.id), order3.paid_amount, RULES, day(26), SYSTEM)
    order3.mark_delivered(day(27), SYSTEM)
    alice.schedule_release(str(order3.id), day(34), day(27), SYSTEM)
    world.commit(order3, alice)
    alice.release_due(day(34), RULES, SYSTEM)
    alice.credit("birthday", "birthday-2026", 300, RULES, day(40), SYSTEM)
    world.commit(alice)
    assert alice.debt == 0

    # Order 4: paid partly with points, flagged, cancelled; the coupon goes back to the
    # wallet and the points come back as a new lot.
    campaign = Coupon.issue(uuid.uuid4(), alice_id, "campaign",
                            CouponTerms("percent", 1_000, 0), day(40), day(70), "spring",
                            day(40), SYSTEM)
    order4 = place(alice_id, [line("E", 3, 40_000)], day(41), tier="silver", coupon=campaign,
                   points=400)
    campaign.reserve(alice_id, str(order4.id), day(41), MEMBER)
    alice.debit(400, "order_payment", f"order:{order4.id}", RULES, day(41), MEMBER)
    world.commit(campaign, order4, alice)
    assert order4.flag_for_review("abnormal_amount", "5x the average order", day(41), SYSTEM)
    assert not order4.flag_for_review("abnormal_amount", "again", day(41), SYSTEM)
    order4.cancel("member_request", "changed my mind", day(41.1), MEMBER)
    campaign.release(str(order4.id), day(41.1), SYSTEM)
    alice.credit("points_returned", str(order4.id), order4.pricing["points_used"], RULES,
                 day(41.1), MEMBER, once_marker=f"returned:{order4.id}")
    world.commit(order4, campaign, alice)

    # Bob: promoted on his first order, spends enough to keep silver a year later.
    first = place(bob_id, [line("F", 1, 300_000)], T0)
    first.pay("pay-b1", "card", first.total, "psp-b1", "h-b1", T0, MEMBER)
    bob.earn_for_payment(str(first.id), first.paid_amount, RULES, T0, SYSTEM)
    world.commit(first, bob)
    second = place(bob_id, [line("G", 1, 300_000)], add_months(T0, 11), tier="silver")
    second.pay("pay-b2", "card", second.total, "psp-b2", "h-b2", add_months(T0, 11), MEMBER)
    bob.earn_for_payment(str(second.id), second.paid_amount, RULES, add_months(T0, 11), SYSTEM)
    world.commit(second, bob)

    # Carol: her only points are spent, then clawed back into debt, which the whole of her
    # next order's points settle on release: that lot is used up the moment it is released.
    carol_id = str(uuid.uuid4())
    carol = LoyaltyAccount.open(carol_id, day(50), SYSTEM)
    spent = place(carol_id, [line("H", 1, 10_000)], day(50))
    spent.pay("pay-c1", "card", spent.total, None, "h-c1", day(50), MEMBER)
    carol.earn_for_payment(str(spent.id), spent.paid_amount, RULES, day(50), SYSTEM)
    carol.schedule_release(str(spent.id), day(50), day(50), SYSTEM)
    carol.release_due(day(50), RULES, SYSTEM)
    carol.debit(100, "reward", "reward:tea", RULES, day(51), MEMBER)
    world.commit(spent, carol)
    refund = spent.refund("refund-c1", None, "h-rc1", day(52), MEMBER)
    assert refund is not None
    carol.claw_back(str(spent.id), spent.refunded_amount, spent.paid_amount, day(52), SYSTEM,
                    refund_amount=refund["amount"])
    settling = place(carol_id, [line("I", 1, 5_000)], day(53))
    settling.pay("pay-c2", "card", settling.total, None, "h-c2", day(53), MEMBER)
    carol.earn_for_payment(str(settling.id), settling.paid_amount, RULES, day(53), SYSTEM)
    carol.schedule_release(str(settling.id), day(60), day(53), SYSTEM)
    world.commit(spent, settling, carol)
    carol.release_due(day(60), RULES, SYSTEM)
    world.commit(carol)
    assert carol.lots[f"order:{settling.id}"]["status"] == "consumed"
    # The second order paid 50.00 + 10.00 shipping: 60 points of the 100 owed.
    assert (carol.available, carol.pending, carol.debt) == (0, 0, 100 - 60)

    # A year on: Alice drops back to regular, Bob keeps silver; then old points expire.
    assert alice.evaluate_tier(add_months(day(12), 12), RULES, SYSTEM)
    assert bob.evaluate_tier(add_months(T0, 12), RULES, SYSTEM)
    world.commit(alice, bob)
    assert (alice.tier, bob.tier) == ("regular", "silver")
    assert alice.expire_due(datetime(2027, 3, 1, tzinfo=UTC), SYSTEM) == 2
    world.commit(alice)
    return History(alice, bob, order1, order2, order3, order4, welcome, campaign, reward)


# -- tests ----------------------------------------------------------------------------------


def test_the_ledger_books_every_movement_with_its_cause(runtime: Runtime) -> None:
    world = World(runtime)
    history = build_history(world)
    alice = history.alice
    o1, o2, o3 = (f"order:{o.id}" for o in (history.order1, history.order2, history.order3))
    review, adjustment, campaign, birthday, returned = (
        next(lot_id for lot_id in alice.lots if lot_id.startswith(prefix))
        for prefix in ("review:", "adjustment:", "campaign:", "birthday:", "points_returned:")
    )
    with runtime.sync_engine.connect() as conn:
        ledger = _dicts(conn, loyalty_ledger, member_id=alice.member_id)
        (account,) = _dicts(conn, loyalty_accounts, member_id=alice.member_id)
    assert [(e["kind"], e["bucket"], e["points"], e["cause"], e["lot_id"]) for e in ledger] == [
        ("earned", "pending", 110, "order", o1),
        ("clawed_back", "pending", -18, "reversal", o1),
        ("released", "pending", -92, "order", o1),
        ("released", "available", 92, "order", o1),
        ("earned", "available", 20, "review", review),
        ("earned", "available", 500, "adjustment", adjustment),
        # Soonest-expiring first; ties (same month) oldest first.
        ("debited", "available", -92, "reward", o1),
        ("debited", "available", -20, "reward", review),
        ("debited", "available", -88, "reward", adjustment),
        ("earned", "pending", 2_500, "order", o2),
        ("released", "pending", -2_500, "order", o2),
        ("released", "available", 2_500, "order", o2),
        ("debited", "available", -412, "order_payment", adjustment),
        ("debited", "available", -1_988, "order_payment", o2),
        ("clawed_back", "available", -512, "reversal", o2),
        ("clawed_back", "debt", -1_988, "reversal", o2),
        ("earned", "available", 1_000, "campaign", campaign),
        ("debt_settled", "available", -1_000, "campaign", campaign),
        ("debt_settled", "debt", 1_000, "campaign", campaign),
        ("earned", "pending", 1_176, "order", o3),  # silver earns 1.2x on 98,000 paid
        ("released", "pending", -1_176, "order", o3),
        ("released", "available", 1_176, "order", o3),
        ("debt_settled", "available", -988, "order", o3),
        ("debt_settled", "debt", 988, "order", o3),
        ("earned", "available", 300, "birthday", birthday),
        ("debited", "available", -188, "order_payment", o3),
        ("debited", "available", -212, "order_payment", birthday),
        ("earned", "available", 400, "points_returned", returned),
        ("expired", "available", -88, "expiry", birthday),
        ("expired", "available", -400, "expiry", returned),
    ]
    by_kind = {e["kind"]: e for e in ledger}
    assert by_kind["clawed_back"]["ref"] == str(history.order2.id)
    assert ledger[5]["actor_id"] == "admin-1" and ledger[5]["reason"] == "customer goodwill"
    assert ledger[0]["ref"] == str(history.order1.id)
    assert as_utc(ledger[-1]["at"]) == datetime(2027, 3, 1, tzinfo=UTC)
    assert (account["available"], account["pending"], account["debt"]) == (0, 0, 0)
    assert account["lifetime_earned"] == 110 - 18 + 20 + 500 + 2_500 - 2_500 + 1_000 + 1_176 + 300
    assert account["lifetime_redeemed"] == 200 + 2_400 + 400 - 400  # returned on cancel
    assert account["lifetime_expired"] == 88 + 400
    # A credit that went entirely to the debt leaves a used-up lot, not one that can expire.
    assert alice.lots[campaign]["status"] == "consumed"
    assert {lot["status"] for lot in alice.lots.values()} == {"consumed", "expired"}


def test_orders_coupons_rewards_and_tiers_are_projected(runtime: Runtime) -> None:
    world = World(runtime)
    history = build_history(world)
    with runtime.sync_engine.connect() as conn:
        (o1,) = _dicts(conn, orders, order_id=str(history.order1.id))
        (o2,) = _dicts(conn, orders, order_id=str(history.order2.id))
        (o4,) = _dicts(conn, orders, order_id=str(history.order4.id))
        (welcome,) = _dicts(conn, coupons, coupon_id=str(history.welcome.id))
        (campaign,) = _dicts(conn, coupons, coupon_id=str(history.campaign.id))
        (reward,) = _dicts(conn, rewards, reward_id=str(history.reward.id))
        alice_tiers = _dicts(conn, tier_history, member_id=history.alice.member_id)
        (bob,) = _dicts(conn, loyalty_accounts, member_id=history.bob.member_id)
        spend = _dicts(conn, loyalty_spend, member_id=history.alice.member_id)

    assert [(h["state"], as_utc(h["at"])) for h in o1["history"]] == [
        ("placed", day(0.04)), ("paid", day(0.08)), ("delivered", day(2)), ("completed", day(10))
    ]
    assert o1["failed_payments"] == 1 and o1["coupon_id"] == str(history.welcome.id)
    assert o1["pricing"]["coupon_discount"] == 1_000 and o1["paid_amount"] == 11_000
    assert o1["refunds"][0]["lines"] == [{"line_id": "L2", "quantity": 1}]
    assert o1["refunded_amount"] == 1_833  # line 2's share of what was paid after the coupon
    assert as_utc(o1["completed_at"]) == day(10) and as_utc(o1["paid_at"]) == day(0.08)
    assert o2["state"] == "delivered" and o2["refunded_amount"] == o2["paid_amount"] == 250_000
    assert o2["refunds"][0]["actor_id"] == "admin-1"
    assert o2["refunds"][0]["reason"] == "customer goodwill"
    assert o4["state"] == "cancelled" and o4["paid_amount"] == 0
    assert [(f["rule"], f["detail"]) for f in o4["flags"]] == [
        ("abnormal_amount", "5x the average order")
    ]
    assert o4["cancellation"]["reason"] == "member_request"
    assert o4["cancellation"]["actor_id"] == "member-1"
    assert [h["state"] for h in o4["history"]] == ["placed", "cancelled"]

    assert (welcome["status"], welcome["order_id"]) == ("used", str(history.order1.id))
    assert (campaign["status"], campaign["order_id"]) == ("available", None)
    assert (reward["stock"], reward["redeemed_count"]) == (0, 2)

    assert [(t["from_tier"], t["to_tier"], t["reason"]) for t in alice_tiers] == [
        ("regular", "silver", "promotion"), ("silver", "regular", "maintenance")
    ]
    assert [s["amount"] for s in spend] == [11_000, -1_833, 250_000, -250_000, 98_000]
    # A refund counts where its order's payment counted, not when it was made.
    assert [as_utc(s["at"]) for s in spend] == [day(0.08), day(0.08), day(12), day(12), day(26)]
    assert bob["tier"] == "silver"
    assert as_utc(bob["maintenance_due"]) == add_months(add_months(T0, 12), 12)


def test_a_rebuild_reproduces_every_commerce_table_exactly(runtime: Runtime) -> None:
    world = World(runtime)
    build_history(world)
    live = world.snapshot()
    assert all(live[table.name] for table in ALL_TABLES)
    world.runner.batch_size = 500
    for name in NAMES:
        assert world.runner.rebuild(name) == world.runner.head()
    assert world.snapshot() == live
    world.check_at_head()
    world.check_mirrors()


class CrashesOnce(LoyaltyProjection):
    """Fails in the middle of a batch the first time it meets the Nth debit."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at, self.seen, self.failed = fail_at, 0, False

    def on_points_debited(self, conn: Connection, event: Any, position: int) -> None:
        super().on_points_debited(conn, event, position)  # rows written, then the crash
        self.seen += 1
        if not self.failed and self.seen == self.fail_at:
            self.failed = True
            raise RuntimeError("simulated crash in the middle of a batch")


def test_a_crash_mid_batch_rolls_back_and_resumes_to_the_same_tables(runtime: Runtime) -> None:
    world = World(runtime)
    build_history(world)
    expected = world.snapshot()
    with runtime.sync_engine.begin() as conn:  # forget the loyalty read model
        conn.execute(projection_tracking.delete().where(projection_tracking.c.name == "loyalty"))
        for table in reversed(LoyaltyProjection.tables):
            conn.execute(table.delete())
    faulty = CrashesOnce(fail_at=2)
    runner = ReadModelRunner(runtime.sync_engine, runtime.app.recorder,  # type: ignore[arg-type]
                              runtime.app.mapper, [faulty], batch_size=9)
    runner.run_once()
    assert faulty.failed
    (status,) = runner.status()
    assert status.last_error and "RuntimeError at tests/test_commerce_projections.py:" in (
        status.last_error)
    assert 0 < status.position < status.head
    with runtime.sync_engine.connect() as conn:  # nothing of the failed batch leaked
        positions = conn.execute(select(loyalty_accounts.c.position)).scalars().all()
    assert max(positions) <= status.position
    runner.run_once()
    (status,) = runner.status()
    assert status.last_error is None and status.lag == 0
    assert world.snapshot() == expected


def test_a_crash_in_the_middle_of_a_flush_leaves_nothing_and_resumes_to_the_same_tables(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loyalty writes a batch with bulk statements at its end: the process dies after the
    accounts and lots are upserted and the ledger entries inserted, before the commit.
    Nothing of that batch may remain, and the redone batch must give the same tables."""
    world = World(runtime)
    build_history(world)
    expected = world.snapshot()
    with runtime.sync_engine.begin() as conn:  # forget the loyalty read model
        conn.execute(projection_tracking.delete().where(projection_tracking.c.name == "loyalty"))
        for table in reversed(LoyaltyProjection.tables):
            conn.execute(table.delete())
    real_insert_many = BatchWork._insert_many
    crash = {"flushes": 0, "failed": False}

    def insert_then_crash(work: BatchWork, table: Table, rows: list[dict[str, Any]]) -> None:
        real_insert_many(work, table, rows)  # the rows are in the transaction, then it dies
        if table is loyalty_ledger and not crash["failed"]:
            crash["flushes"] += 1
            if crash["flushes"] == 3:
                crash["failed"] = True
                raise RuntimeError("simulated crash in the middle of a flush")

    monkeypatch.setattr(BatchWork, "_insert_many", insert_then_crash)
    runner = ReadModelRunner(runtime.sync_engine, runtime.app.recorder,  # type: ignore[arg-type]
                              runtime.app.mapper, [LoyaltyProjection()], batch_size=9)
    runner.run_once()
    assert crash["failed"]
    (status,) = runner.status()
    assert status.last_error and "RuntimeError at tests/test_commerce_projections.py:" in (
        status.last_error)
    assert 0 < status.position < status.head  # earlier batches stayed committed
    with runtime.sync_engine.connect() as conn:  # nothing of the failed batch leaked
        positions = conn.execute(select(loyalty_accounts.c.position)).scalars().all()
        ledger = conn.execute(select(func.max(loyalty_ledger.c.entry))).scalar()
    assert positions and max(positions) <= status.position
    assert ledger is not None
    assert expected[loyalty_ledger.name] != world.snapshot()[loyalty_ledger.name]
    runner.run_once()  # "restart" from the committed position
    (status,) = runner.status()
    assert status.last_error is None and status.lag == 0
    assert world.snapshot() == expected
    world.check_mirrors()


def test_a_reused_lot_id_replaces_the_lot_as_in_the_aggregate(runtime: Runtime) -> None:
    """`PointsEarned.apply` overwrites a lot earned twice under one id; the books follow.

    The commands no longer emit that (a second earning for one order is ignored), so the
    event is triggered directly: the projection must still mirror whatever `apply` does.
    """
    world = World(runtime)
    dave = LoyaltyAccount.open(str(uuid.uuid4()), T0, SYSTEM)
    dave.earn_for_payment("order-x", 10_000, RULES, T0, SYSTEM)
    world.commit(dave)
    dave.trigger_event(
        LoyaltyAccount.PointsEarned, timestamp=day(1), meta=SYSTEM.as_dict(),
        lot_id="order:order-x", source="order", ref="order-x", points=200, pending=True,
        expires_at=None, settled_debt=0,
    )
    world.commit(dave)  # the mirror check: one lot of 200 pending, not 300
    assert dave.pending == 200
    with runtime.sync_engine.connect() as conn:
        ledger = _dicts(conn, loyalty_ledger, member_id=dave.member_id)
    assert [(e["kind"], e["points"], e["pending_after"]) for e in ledger] == [
        ("earned", 100, 100), ("superseded", -100, 0), ("earned", 200, 200)
    ]
