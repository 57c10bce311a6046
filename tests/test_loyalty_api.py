"""Loyalty through the GraphQL API: earning, vesting, expiry, rewards, debt and tiers.

Points and tiers are driven as members and staff drive them (orders, payments, deliveries,
redemptions, admin adjustments) and as time drives them (the test clock and the
scheduler's tick). Amounts are minor units of CNY; the defaults of the rules apply.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import text

from api.cli import main
from api.commerce_readmodels import expiring_window
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.loyalty_rules import LoyaltyRules
from tests.conftest import TEST_SECRET
from tests.graphql import data, gql, order_lines
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    AUDITOR,
    CANCEL_ORDER,
    PLACE_ORDER,
    REFUND_ORDER,
    USER_ERRORS,
    Shopper,
    adjust,
    amounts,
    deliver,
    error_of,
    eventually,
    head,
    line,
    mutate,
    ok,
    paid_order,
    pay,
    place,
    shopper,
    tick,
)

ACCOUNT = """
  tier tierSince available pending debt lifetimeEarned
  expiringSoon { points withinDays earliest }
  tierProgress { tier qualifyingSpend { amount } nextTier spendToNextTier { amount }
                 maintenanceDue spendToKeepTier { amount } }
  tierHistory { fromTier toTier reason }
  benefits { tier memberDiscountPercent freeShipping earnMultiplier }
  lots { lotId source points remaining status releaseAt availableAt expiresAt }
"""
LEDGER = """
  ledger(first: 100) {
    totalCount
    edges { node { entry kind cause points bucket availableAfter pendingAfter debtAfter
                   actorId reason } }
  }
"""
ME = f"{{ me {{ tier loyalty {{ {ACCOUNT} {LEDGER} }} }} }}"

COUPON = "id source kind value minSpend { amount } status usable validFrom validUntil orderId"
REWARD = "id name costPoints stock perMemberLimit redeemedCount couponKind couponValue"

DEFINE_REWARD = f"""
mutation D($input: DefineRewardInput!) {{
  defineReward(input: $input) {{ position reward {{ {REWARD} }} {USER_ERRORS} }}
}}
"""
REDEEM = f"""
mutation R($input: RedeemRewardInput!) {{
  redeemReward(input: $input) {{
    position coupon {{ {COUPON} }} account {{ available pending debt }} {USER_ERRORS}
  }}
}}
"""
ISSUE_COUPON = f"""
mutation I($input: IssueCouponInput!) {{
  issueCoupon(input: $input) {{ position coupon {{ {COUPON} }} {USER_ERRORS} }}
}}
"""
ADJUST = f"""
mutation A($input: AdjustPointsInput!) {{
  adjustPoints(input: $input) {{ position account {{ available pending debt }} {USER_ERRORS} }}
}}
"""


async def me(client: httpx.AsyncClient, who: Shopper,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = await gql(client, ME, token=who.token, headers=headers)
    result: dict[str, Any] = data(body)["me"]
    return result


async def account(client: httpx.AsyncClient, who: Shopper,
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = (await me(client, who, headers))["loyalty"]
    return result


def ledger(account: dict[str, Any]) -> list[dict[str, Any]]:
    """The ledger entries, oldest first."""
    return [edge["node"] for edge in reversed(account["ledger"]["edges"])]


def assert_books_balance(account: dict[str, Any]) -> None:
    """Every bucket's entries add up to its balance, and no balance was ever negative."""
    entries = ledger(account)
    assert account["ledger"]["totalCount"] == len(entries)
    total = {"available": 0, "pending": 0, "debt": 0}
    for entry in entries:
        total[entry["bucket"]] += entry["points"]
        assert entry["availableAfter"] >= 0 and entry["pendingAfter"] >= 0
        assert entry["debtAfter"] >= 0
    assert total == {"available": account["available"], "pending": account["pending"],
                     "debt": -account["debt"]}


def iso(moment: datetime) -> str:
    return moment.isoformat()


def end_of_twelfth_month_after(moment: datetime) -> datetime:
    """The first instant after the end of the 12th month after `moment`'s month."""
    index = moment.year * 12 + moment.month - 1 + 13
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def define_reward(client: httpx.AsyncClient, clock: AdjustableClock,
                        **fields: Any) -> dict[str, Any]:
    now = clock.now()
    payload = await mutate(client, DEFINE_REWARD, {
        "name": "10 yuan voucher", "costPoints": 1_000, "stock": 100, "perMemberLimit": 1,
        "validFrom": iso(now - timedelta(days=1)), "validUntil": iso(now + timedelta(days=365)),
        "couponKind": "FIXED", "couponValue": 1_000, "reason": "winter campaign", **fields,
    }, ADMIN)
    reward: dict[str, Any] = ok(payload)["reward"]
    return reward


async def redeem(client: httpx.AsyncClient, who: Shopper, reward: dict[str, Any],
                 key: str | None = None) -> dict[str, Any]:
    return await mutate(client, REDEEM, {
        "rewardId": reward["id"], "idempotencyKey": key or uuid.uuid4().hex}, who.token)


# -- earning ------------------------------------------------------------------------------------


async def test_points_are_earned_by_tier_and_progress_shows_the_way_to_the_next(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    start = await me(client, ann)
    assert start["tier"] == "REGULAR"
    progress = start["loyalty"]["tierProgress"]
    assert (start["loyalty"]["tier"], progress["nextTier"]) == ("REGULAR", "SILVER")
    assert progress["spendToNextTier"]["amount"] == 200_000
    assert progress["maintenanceDue"] is None

    await paid_order(client, ann, 100_000)  # 1000.00 at 1.0x
    regular = await account(client, ann)
    assert (regular["available"], regular["pending"]) == (0, 1_000)
    assert regular["tierProgress"]["qualifyingSpend"]["amount"] == 100_000
    assert regular["tierProgress"]["spendToNextTier"]["amount"] == 100_000
    (lot,) = regular["lots"]
    assert (lot["source"], lot["status"], lot["points"], lot["releaseAt"]) == (
        "order", "PENDING", 1_000, None)

    # 800,000.00 of spend within 12 months: Gold at once (the paying order earns at 1.0x).
    await paid_order(client, ann, 700_000)
    gold = await me(client, ann)
    assert gold["tier"] == "GOLD"
    loyalty = gold["loyalty"]
    assert (loyalty["tier"], loyalty["pending"]) == ("GOLD", 8_000)
    assert loyalty["tierHistory"] == [
        {"fromTier": "REGULAR", "toTier": "GOLD", "reason": "promotion"}]
    assert loyalty["tierProgress"]["nextTier"] == "PLATINUM"
    assert loyalty["tierProgress"]["spendToNextTier"]["amount"] == 1_200_000
    assert loyalty["tierProgress"]["maintenanceDue"] is not None
    assert loyalty["tierProgress"]["spendToKeepTier"]["amount"] == 0
    assert loyalty["benefits"] == {"tier": "GOLD", "memberDiscountPercent": 5.0,
                                   "freeShipping": True, "earnMultiplier": 1.5}

    # Gold: 5% off, and 1.5 points per unit paid.
    order = await pay(client, ann, await place(client, ann, [line("coat", 1, 100_000)]))
    assert amounts(order["pricing"])["tierDiscount"] == 5_000
    assert order["tier"] == "GOLD"
    after = await account(client, ann)
    assert after["pending"] == 8_000 + 950 * 3 // 2
    assert after["lifetimeEarned"] == after["pending"]
    assert_books_balance(after)


async def test_pending_points_vest_when_the_window_closes_and_expire_a_year_later(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    await deliver(client, await paid_order(client, ann, 100_000))
    clock.advance(timedelta(days=8))
    headers = await tick(live_runtime)
    released_at = clock.now()
    vest = await account(client, ann, headers)
    assert (vest["available"], vest["pending"]) == (1_000, 0)
    (lot,) = vest["lots"]
    assert lot["status"] == "AVAILABLE"
    expires = end_of_twelfth_month_after(released_at)
    assert at(lot["expiresAt"]) == expires
    assert vest["expiringSoon"] == {"points": 0, "withinDays": 30, "earliest": None}

    clock.set(expires - timedelta(days=40))
    assert (await account(client, ann))["expiringSoon"]["points"] == 0
    # On the first day of the month they expire at the end of, even a 31-day one.
    clock.set((expires - timedelta(days=1)).replace(day=1, hour=9))
    assert (await account(client, ann))["expiringSoon"]["points"] == 1_000
    clock.set(expires - timedelta(days=10))
    soon = (await account(client, ann))["expiringSoon"]
    assert (soon["points"], soon["withinDays"]) == (1_000, 30)
    assert at(soon["earliest"]) == expires

    # Past the expiry, the points cannot be spent even before the expiry is recorded.
    clock.set(expires + timedelta(hours=1))
    before = head(live_runtime)
    spend = error_of(await mutate(client, ADJUST, {
        "memberId": ann.id, "points": -100, "reason": "test", "idempotencyKey": "x"}, ADMIN))
    assert spend["code"] == "INSUFFICIENT_POINTS"
    assert head(live_runtime) == before

    headers = await tick(live_runtime)
    expired = await account(client, ann, headers)
    assert (expired["available"], expired["pending"]) == (0, 0)
    assert [(x["status"], x["remaining"]) for x in expired["lots"]] == [("EXPIRED", 0)]
    last = ledger(expired)[-1]
    assert (last["kind"], last["cause"], last["points"], last["bucket"]) == (
        "expired", "expiry", -1_000, "available")
    assert last["availableAfter"] == 0
    assert_books_balance(expired)


# -- rewards ------------------------------------------------------------------------------------


async def test_points_buy_rewards_whose_coupons_land_in_the_wallet(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    now = clock.now()
    reward_input = {
        "name": "20 yuan voucher", "costPoints": 1_000, "stock": 2, "perMemberLimit": 1,
        "validFrom": iso(now - timedelta(days=1)), "validUntil": iso(now + timedelta(days=90)),
        "couponKind": "FIXED", "couponValue": 2_000, "couponValidDays": 30,
    }
    before = head(live_runtime)
    by_agent = error_of(await mutate(client, DEFINE_REWARD, {**reward_input, "reason": "x"},
                                     AGENT))
    assert by_agent["code"] == "FORBIDDEN"
    no_reason = error_of(await mutate(client, DEFINE_REWARD, {**reward_input, "reason": " "},
                                      ADMIN))
    assert no_reason["code"] == "REASON_REQUIRED"
    assert head(live_runtime) == before
    reward = ok(await mutate(client, DEFINE_REWARD, {**reward_input, "reason": "launch"},
                             ADMIN))["reward"]
    assert (reward["costPoints"], reward["stock"], reward["redeemedCount"]) == (1_000, 2, 0)
    catalogue = data(await gql(client, f"{{ rewards {{ {REWARD} }} }}", token=AGENT))
    assert [r["id"] for r in catalogue["rewards"]] == [reward["id"]]

    ann, bob, cai = [await shopper(client, n) for n in ("Ann Lee", "Bob Ma", "Cai Xu")]
    before = head(live_runtime)
    broke = error_of(await redeem(client, ann, reward, "r1"))
    assert broke["code"] == "INSUFFICIENT_POINTS"
    assert head(live_runtime) == before

    await adjust(client, ann, 2_500)
    before = head(live_runtime)
    redeemed = ok(await redeem(client, ann, reward, "r1"))
    coupon = redeemed["coupon"]
    assert (coupon["source"], coupon["kind"], coupon["value"], coupon["status"],
            coupon["usable"]) == ("REDEMPTION", "FIXED", 2_000, "AVAILABLE", True)
    assert at(coupon["validUntil"]) - at(coupon["validFrom"]) == timedelta(days=30)
    assert redeemed["account"]["available"] == 1_500
    wallet = data(await gql(client, f"{{ me {{ coupons {{ {COUPON} }} }} }}", token=ann.token))
    assert coupon in wallet["me"]["coupons"]
    last = ledger(await account(client, ann))[-1]
    assert (last["kind"], last["cause"], last["points"]) == ("debited", "reward", -1_000)

    after = head(live_runtime)
    assert after > before
    retry = ok(await redeem(client, ann, reward, "r1"))
    assert retry["coupon"] == coupon and retry["position"] is None
    assert retry["account"]["available"] == 1_500
    assert head(live_runtime) == after

    limit = error_of(await redeem(client, ann, reward, "r2"))
    assert limit["code"] == "LIMIT_EXCEEDED"
    await adjust(client, bob, 1_000)
    await adjust(client, cai, 1_000)
    ok(await redeem(client, bob, reward))
    after = head(live_runtime)
    out_of_stock = error_of(await redeem(client, cai, reward))
    assert out_of_stock["code"] == "LIMIT_EXCEEDED"
    assert head(live_runtime) == after
    assert (await account(client, cai))["available"] == 1_000
    catalogue = data(await gql(client, f"{{ all: rewards(activeOnly: false) {{ {REWARD} }} "
                                       f"active: rewards {{ id }} }}", token=ann.token))
    assert catalogue["active"] == []
    assert [(r["stock"], r["redeemedCount"]) for r in catalogue["all"]] == [(0, 2)]

    # A reward cheaper than the minimum redemption cannot be redeemed.
    cheap = await define_reward(client, clock, name="sticker", costPoints=50)
    too_few = error_of(await redeem(client, cai, cheap))
    assert too_few["code"] == "VALIDATION" and "100" in too_few["message"]

    # The redeemed coupon pays for part of an order, and is used when the order is paid.
    order = await place(client, ann, [line("boots", 1, 8_000)], couponId=coupon["id"])
    assert amounts(order["pricing"])["couponDiscount"] == 2_000
    await pay(client, ann, order)
    wallet = data(await gql(client, f"{{ me {{ coupons(status: USED) {{ {COUPON} }} }} }}",
                            token=ann.token))
    assert [(c["id"], c["orderId"]) for c in wallet["me"]["coupons"]] == [
        (coupon["id"], order["id"])]


async def test_an_admin_issues_a_coupon_into_a_members_wallet(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    now = clock.now()
    coupon_input = {
        "memberId": ann.id, "kind": "PERCENT", "value": 1_000, "minSpend": 3_000,
        "validFrom": iso(now - timedelta(hours=1)), "validUntil": iso(now + timedelta(days=30)),
        "reason": "apology for a late parcel", "idempotencyKey": "cpn-1",
    }
    before = head(live_runtime)
    for token, code in ((AGENT, "FORBIDDEN"), (ann.token, "FORBIDDEN")):
        assert error_of(await mutate(client, ISSUE_COUPON, coupon_input, token))["code"] == code
    blank = error_of(await mutate(client, ISSUE_COUPON, {**coupon_input, "reason": ""}, ADMIN))
    assert blank["code"] == "REASON_REQUIRED"
    backwards = error_of(await mutate(client, ISSUE_COUPON, {
        **coupon_input, "validUntil": iso(now - timedelta(days=1))}, ADMIN))
    assert backwards["code"] == "VALIDATION"
    too_big = error_of(await mutate(client, ISSUE_COUPON, {**coupon_input, "value": 10_001},
                                    ADMIN))
    assert too_big["code"] == "VALIDATION"
    assert head(live_runtime) == before

    issued = ok(await mutate(client, ISSUE_COUPON, coupon_input, ADMIN))
    coupon = issued["coupon"]
    assert (coupon["source"], coupon["kind"], coupon["value"], coupon["minSpend"]["amount"],
            coupon["status"], coupon["usable"]) == ("ADMIN", "PERCENT", 1_000, 3_000,
                                                    "AVAILABLE", True)
    wallet = data(await gql(client, "{ me { coupons { id source } } }", token=ann.token))
    assert {"id": coupon["id"], "source": "ADMIN"} in wallet["me"]["coupons"]
    after = head(live_runtime)
    retry = ok(await mutate(client, ISSUE_COUPON, coupon_input, ADMIN))
    assert retry["coupon"] == coupon and retry["position"] is None
    conflict = error_of(await mutate(client, ISSUE_COUPON, {**coupon_input, "value": 2_000},
                                     ADMIN))
    assert conflict["code"] == "IDEMPOTENCY_CONFLICT"
    assert head(live_runtime) == after

    order = await place(client, ann, [line("boots", 1, 8_000)], couponId=coupon["id"])
    assert amounts(order["pricing"])["couponDiscount"] == 800  # 10%


# -- points as payment ----------------------------------------------------------------------------


async def test_points_pay_for_at_most_half_an_order_in_whole_units(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await adjust(client, ann, 10_000)
    lines = [line("boots", 1, 8_000)]
    sent = await order_lines(client, lines)
    before = head(live_runtime)
    for points, code in ((4_100, "VALIDATION"), (150, "VALIDATION"), (50, "VALIDATION"),
                         (-100, "VALIDATION")):
        error = error_of(await mutate(client, PLACE_ORDER, {
            "lines": sent, "points": points, "idempotencyKey": "k"}, ann.token))
        assert (error["code"], error["field"]) == (code, "points"), points
    assert head(live_runtime) == before
    bob = await shopper(client, "Bob Ma")
    before = head(live_runtime)
    broke = error_of(await mutate(client, PLACE_ORDER, {
        "lines": sent, "points": 100, "idempotencyKey": "k"}, bob.token))
    assert broke["code"] == "INSUFFICIENT_POINTS"
    assert head(live_runtime) == before

    # Half of 80.00 is 40.00: 4000 points, debited when the order is placed.
    order = await place(client, ann, lines, points=4_000)
    assert amounts(order["pricing"]) == {
        "subtotal": 8_000, "tierDiscount": 0, "couponDiscount": 0, "pointsUsed": 4_000,
        "pointsValue": 4_000, "shippingFee": 1_000, "total": 5_000,
    }
    placed = await account(client, ann)
    assert placed["available"] == 6_000
    last = ledger(placed)[-1]
    assert (last["kind"], last["cause"], last["points"]) == ("debited", "order_payment", -4_000)

    cancelled = ok(await mutate(client, CANCEL_ORDER, {
        "orderId": order["id"], "reason": "MEMBER_REQUEST"}, ann.token))
    assert cancelled["order"]["state"] == "CANCELLED"
    returned = await account(client, ann)
    assert (returned["available"], returned["pending"]) == (10_000, 0)
    assert ledger(returned)[-1]["cause"] == "points_returned"
    assert_books_balance(returned)

    # Points earn nothing: only the money paid does.
    paid = await pay(client, ann, await place(client, ann, lines, points=4_000))
    assert paid["paid"]["amount"] == 5_000
    assert (await account(client, ann))["pending"] == 50


# -- adjustments --------------------------------------------------------------------------------


async def test_only_admins_adjust_points_with_a_reason_and_never_below_zero(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    credit = {"memberId": ann.id, "points": 500, "reason": "goodwill", "idempotencyKey": "a1"}
    before = head(live_runtime)
    cases = [
        (AGENT, credit, "FORBIDDEN"),
        (ann.token, credit, "FORBIDDEN"),
        (AUDITOR, credit, "FORBIDDEN"),
        (ADMIN, {**credit, "reason": ""}, "REASON_REQUIRED"),
        (ADMIN, {**credit, "reason": "   "}, "REASON_REQUIRED"),
        (ADMIN, {**credit, "points": 0}, "VALIDATION"),
        (ADMIN, {**credit, "idempotencyKey": ""}, "VALIDATION"),
        (ADMIN, {**credit, "memberId": "bm90LWFuLWlk"}, "VALIDATION"),
    ]
    for token, fields, code in cases:
        assert error_of(await mutate(client, ADJUST, fields, token))["code"] == code, fields
    unauthenticated = error_of(await mutate(client, ADJUST, credit, None))
    assert unauthenticated["code"] == "UNAUTHENTICATED"
    assert head(live_runtime) == before

    first = ok(await mutate(client, ADJUST, credit, ADMIN))
    assert first["account"] == {"available": 500, "pending": 0, "debt": 0}
    entry = ledger(await account(client, ann))[-1]
    assert (entry["kind"], entry["cause"], entry["points"], entry["actorId"],
            entry["reason"]) == ("earned", "adjustment", 500, "admin-1", "goodwill")

    after = head(live_runtime)
    retry = ok(await mutate(client, ADJUST, credit, ADMIN))
    assert retry["account"]["available"] == 500 and retry["position"] is None
    reused = error_of(await mutate(client, ADJUST, {**credit, "points": 600}, ADMIN))
    assert reused["code"] == "IDEMPOTENCY_CONFLICT"
    overdraw = error_of(await mutate(client, ADJUST, {
        **credit, "points": -600, "idempotencyKey": "a2"}, ADMIN))
    assert overdraw["code"] == "INSUFFICIENT_POINTS"
    assert head(live_runtime) == after

    debit = ok(await mutate(client, ADJUST, {
        **credit, "points": -200, "reason": "duplicate credit", "idempotencyKey": "a3"}, ADMIN))
    assert debit["account"]["available"] == 300
    assert_books_balance(await account(client, ann))


# -- reversal and debt ----------------------------------------------------------------------------


async def test_a_refund_after_the_points_were_spent_leaves_debt_that_credits_settle_first(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid_order(client, ann, 100_000)
    await deliver(client, order)
    clock.advance(timedelta(days=8))
    headers = await tick(live_runtime)
    assert (await account(client, ann, headers))["available"] == 1_000

    reward = await define_reward(client, clock, costPoints=1_000)
    spent = ok(await redeem(client, ann, reward))
    assert spent["account"] == {"available": 0, "pending": 0, "debt": 0}

    refunded = ok(await mutate(client, REFUND_ORDER, {
        "orderId": order["id"], "reason": "returned after the window, goodwill",
        "idempotencyKey": "refund-1"}, AGENT))
    assert refunded["order"]["refunded"]["amount"] == 100_000
    owing = await account(client, ann)
    assert (owing["available"], owing["pending"], owing["debt"]) == (0, 0, 1_000)
    last = ledger(owing)[-1]
    assert (last["kind"], last["cause"], last["bucket"], last["points"]) == (
        "clawed_back", "reversal", "debt", -1_000)
    assert_books_balance(owing)

    # A later credit pays the debt off before anything becomes available.
    await adjust(client, ann, 300)
    partly = await account(client, ann)
    assert (partly["available"], partly["debt"]) == (0, 700)
    await adjust(client, ann, 1_000)
    settled = await account(client, ann)
    assert (settled["available"], settled["debt"]) == (300, 0)
    assert_books_balance(settled)
    broke = error_of(await mutate(client, ADJUST, {
        "memberId": ann.id, "points": -301, "reason": "x", "idempotencyKey": "d"}, ADMIN))
    assert broke["code"] == "INSUFFICIENT_POINTS"


# -- tiers --------------------------------------------------------------------------------------


async def test_promotion_is_immediate_and_maintenance_drops_one_tier_a_year(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    member = f"query M($id: ID!) {{ member(id: $id) {{ tier loyalty {{ {ACCOUNT} }} }} }}"

    async def staff_view(headers: dict[str, str] | None = None) -> dict[str, Any]:
        body = await gql(client, member, {"id": ann.id}, token=AGENT, headers=headers)
        result: dict[str, Any] = data(body)["member"]
        return result

    await paid_order(client, ann, 2_000_000)
    platinum = await staff_view()
    assert platinum["tier"] == platinum["loyalty"]["tier"] == "PLATINUM"
    assert platinum["loyalty"]["tierHistory"] == [
        {"fromTier": "REGULAR", "toTier": "PLATINUM", "reason": "promotion"}]
    promoted_at = clock.now()
    due = at(platinum["loyalty"]["tierProgress"]["maintenanceDue"])
    assert timedelta(days=365) <= due - promoted_at <= timedelta(days=366)

    clock.set(due - timedelta(days=1))
    headers = await tick(live_runtime)
    assert (await staff_view(headers))["tier"] == "PLATINUM"

    clock.set(due + timedelta(hours=1))
    headers = await tick(live_runtime)
    gold = await staff_view(headers)
    assert gold["tier"] == gold["loyalty"]["tier"] == "GOLD"
    assert gold["loyalty"]["tierHistory"] == [
        {"fromTier": "REGULAR", "toTier": "PLATINUM", "reason": "promotion"},
        {"fromTier": "PLATINUM", "toTier": "GOLD", "reason": "maintenance"},
    ]
    assert gold["loyalty"]["tierProgress"]["qualifyingSpend"]["amount"] == 0
    assert gold["loyalty"]["tierProgress"]["spendToKeepTier"]["amount"] == 800_000

    before = head(live_runtime)
    await tick(live_runtime)
    assert head(live_runtime) == before
    assert (await staff_view())["tier"] == "GOLD"
    mine = data(await gql(client, "query L($id: ID!) { loyaltyAccount(memberId: $id) "
                                  "{ tier } }", {"id": ann.id}, token=ann.token))
    assert mine["loyaltyAccount"] == {"tier": "GOLD"}
    bob = await shopper(client, "Bob Ma")
    theirs = data(await gql(client, "query L($id: ID!) { loyaltyAccount(memberId: $id) "
                                    "{ tier } }", {"id": ann.id}, token=bob.token))
    assert theirs["loyaltyAccount"] is None


# -- concurrency --------------------------------------------------------------------------------


async def test_simultaneous_redemptions_never_spend_more_than_the_balance(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    reward = await define_reward(client, clock, costPoints=1_000, perMemberLimit=10)
    await adjust(client, ann, 3_000)

    results = await asyncio.gather(*(redeem(client, ann, reward, f"burst-{n}")
                                      for n in range(10)))
    succeeded = [r for r in results if not r["userErrors"]]
    failed = [error_of(r)["code"] for r in results if r["userErrors"]]
    assert len(succeeded) == 3, failed
    assert set(failed) <= {"INSUFFICIENT_POINTS", "CONFLICT"}, failed

    final = await account(client, ann)
    assert (final["available"], final["debt"]) == (0, 0)
    assert_books_balance(final)
    debits = [e for e in ledger(final) if e["kind"] == "debited"]
    assert len(debits) == 3 and sum(e["points"] for e in debits) == -3_000
    wallet = data(await gql(client, "{ me { coupons { id source } } }", token=ann.token))
    redeemed = [c for c in wallet["me"]["coupons"] if c["source"] == "REDEMPTION"]
    assert sorted(c["id"] for c in redeemed) == sorted(r["coupon"]["id"] for r in succeeded)
    await eventually(
        lambda: gql(client, "{ rewards { redeemedCount stock } }", token=AGENT),
        lambda body: body["data"]["rewards"] == [{"redeemedCount": 3, "stock": 97}],
    )


# -- rules --------------------------------------------------------------------------------------


async def test_the_rules_in_force_are_the_documented_defaults(client: httpx.AsyncClient) -> None:
    body = await gql(client, """{ loyaltyRules {
      currency qualifyingMonths maintenanceMonths pointsPerUnit returnWindowDays
      pointsExpiryMonths expiringSoonDays redemptionPointsPerUnit maxPointsSharePercent
      minRedemptionPoints maxFailedPayments abnormalOrderMultiple
      shippingFee { amount } freeShippingThreshold { amount } abnormalOrderFloor { amount }
      welcomeCouponValue { amount currency } profileCompletionPoints
      tiers { tier threshold { amount currency } earnMultiplier memberDiscountPercent
              freeShipping }
    } }""")
    rules = data(body)["loyaltyRules"]
    tiers = rules.pop("tiers")
    assert rules == {
        "currency": "CNY", "qualifyingMonths": 12, "maintenanceMonths": 12,
        "pointsPerUnit": 1, "returnWindowDays": 7, "pointsExpiryMonths": 12,
        "expiringSoonDays": 30, "redemptionPointsPerUnit": 100, "maxPointsSharePercent": 50.0,
        "minRedemptionPoints": 100, "maxFailedPayments": 3, "abnormalOrderMultiple": 5,
        "shippingFee": {"amount": 1_000}, "freeShippingThreshold": {"amount": 9_900},
        "abnormalOrderFloor": {"amount": 100_000},
        "welcomeCouponValue": {"amount": 1_000, "currency": "CNY"},
        "profileCompletionPoints": 50,
    }
    assert [(t["tier"], t["threshold"]["amount"], t["earnMultiplier"],
             t["memberDiscountPercent"], t["freeShipping"]) for t in tiers] == [
        ("REGULAR", 0, 1.0, 0.0, False),
        ("SILVER", 200_000, 1.2, 2.0, False),
        ("GOLD", 800_000, 1.5, 5.0, True),
        ("PLATINUM", 2_000_000, 2.0, 8.0, True),
    ]
    assert {t["threshold"]["currency"] for t in tiers} == {"CNY"}


async def test_points_returned_by_a_cancellation_do_not_count_towards_the_redemption_limit(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    await adjust(client, ann, 60_000)
    lines = [line("sofa", 1, 100_000)]
    # 40,000 points of the 50,000 a member may redeem in 30 days.
    order = await place(client, ann, lines, points=40_000)
    ok(await mutate(client, CANCEL_ORDER, {"orderId": order["id"], "reason": "MEMBER_REQUEST"},
                    ann.token))
    assert (await account(client, ann))["available"] == 60_000
    # The cancellation undid that redemption: the same points can pay for the next order.
    again = await mutate(client, PLACE_ORDER, {"lines": await order_lines(client, lines),
                                               "points": 40_000,
                                               "idempotencyKey": "second-try"}, ann.token)
    assert again["userErrors"] == []
    assert again["order"]["pricing"]["pointsUsed"] == 40_000


def test_expiring_soon_covers_month_end_expiries_from_the_first_of_a_31_day_month() -> None:
    rules = LoyaltyRules()
    assert rules.expiring_soon_days == 30
    first_of_january = datetime(2027, 1, 1, 8, 30, tzinfo=UTC)
    end_of_january = datetime(2027, 2, 1, tzinfo=UTC)  # the instant January's points expire
    assert expiring_window(first_of_january, rules) >= end_of_january  # lots with expires_at <= it
    assert expiring_window(datetime(2026, 12, 31, 23, 0, tzinfo=UTC), rules) < end_of_january


async def test_a_coupon_past_its_window_is_expired_not_available(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    now = clock.now()
    issued = ok(await mutate(client, ISSUE_COUPON, {
        "memberId": ann.id, "kind": "FIXED", "value": 500, "minSpend": 0,
        "validFrom": iso(now - timedelta(hours=1)), "validUntil": iso(now + timedelta(days=30)),
        "reason": "goodwill", "idempotencyKey": "cpn-exp"}, ADMIN))["coupon"]
    wallet = """query($status: CouponStatus) {
        me { coupons(status: $status) { id status usable } } }"""

    async def listed(status: str | None) -> list[tuple[str, str, bool]]:
        body = data(await gql(client, wallet, {"status": status}, token=ann.token))
        return [(c["id"], c["status"], c["usable"]) for c in body["me"]["coupons"]]

    mine = [c for c in await listed("AVAILABLE") if c[0] == issued["id"]]
    assert mine == [(issued["id"], "AVAILABLE", True)]
    clock.advance(timedelta(days=30, seconds=1))
    assert issued["id"] not in [c[0] for c in await listed("AVAILABLE")]
    assert (issued["id"], "EXPIRED", False) in await listed("EXPIRED")
    assert (issued["id"], "EXPIRED", False) in await listed(None)


async def test_refunds_give_back_the_points_that_paid_and_free_the_redemption_limit(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    await adjust(client, ann, 60_000)
    # 80,000 of goods, half paid with 40,000 points of the 50,000 redeemable in 30 days.
    order = await pay(client, ann, await place(
        client, ann, [line("sofa", 1, 60_000), line("lamp", 1, 20_000)], points=40_000))
    assert order["pricing"]["pointsUsed"] == 40_000
    assert (await account(client, ann))["available"] == 20_000
    sofa, lamp = (entry["lineId"] for entry in order["lines"])

    # The sofa is three quarters of the goods: three quarters of the points come back.
    ok(await mutate(client, REFUND_ORDER, {
        "orderId": order["id"], "lines": [{"lineId": sofa, "quantity": 1}],
        "reason": "returned", "idempotencyKey": "refund-sofa"}, AGENT))
    after_sofa = await account(client, ann)
    assert after_sofa["available"] == 50_000
    assert ledger(after_sofa)[-1]["cause"] == "points_returned"
    # A retry of the same refund gives nothing back twice.
    ok(await mutate(client, REFUND_ORDER, {
        "orderId": order["id"], "lines": [{"lineId": sofa, "quantity": 1}],
        "reason": "returned", "idempotencyKey": "refund-sofa"}, AGENT))
    assert (await account(client, ann))["available"] == 50_000

    ok(await mutate(client, REFUND_ORDER, {
        "orderId": order["id"], "lines": [{"lineId": lamp, "quantity": 1}],
        "reason": "returned", "idempotencyKey": "refund-lamp"}, AGENT))
    refunded = await account(client, ann)
    assert (refunded["available"], refunded["pending"]) == (60_000, 0)
    assert_books_balance(refunded)

    # Nothing of that order counts as redeemed any more: the whole limit is free again.
    again = await mutate(client, PLACE_ORDER, {
        "lines": await order_lines(client, [line("sofa", 1, 60_000), line("table", 1, 40_000)]),
        "points": 50_000, "idempotencyKey": "after-refund"}, ann.token)
    assert again["userErrors"] == []
    assert again["order"]["pricing"]["pointsUsed"] == 50_000


LIABILITY = """{ pointsLiability { position
    total { members available pending debt availableValue { amount currency }
            pendingValue { amount } }
    byTier { tier points { members available pending debt } }
    byExpiry { expiresAt month points value { amount } } } }"""


async def test_points_liability_reconciles_with_the_ledger_by_tier_and_expiry(
    client: httpx.AsyncClient, live_runtime: Runtime, database_url: str
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    await adjust(client, ann, 5_000)
    await adjust(client, bob, 300)
    await pay(client, ann, await place(client, ann, [line("sofa", 1, 80_000)]))  # pending
    await adjust(client, bob, -100, reason="duplicate credit")
    head_now = {"X-Patron-Min-Position": str(head(live_runtime))}

    for token in (ann.token, AGENT):
        body = await gql(client, LIABILITY, token=token, headers=head_now)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    book = data(await gql(client, LIABILITY, token=AUDITOR, headers=head_now))["pointsLiability"]
    assert book == data(await gql(client, LIABILITY, token=ADMIN,
                                  headers=head_now))["pointsLiability"]
    total = book["total"]

    # Every point in the book is a movement in some member's ledger, and the other way round.
    with live_runtime.sync_engine.connect() as conn:
        buckets = dict(conn.execute(text(
            "SELECT bucket, SUM(points) FROM loyalty_ledger GROUP BY bucket")).all())
    assert total["available"] == buckets["available"] == 5_000 + 300 - 100
    assert total["pending"] == buckets["pending"] > 0
    assert total["debt"] == -buckets.get("debt", 0) == 0
    assert total["availableValue"] == {"amount": 5_200, "currency": "CNY"}  # 100 points a yuan
    assert total["members"] == 2 and book["position"] >= head(live_runtime)
    assert [t["tier"] for t in book["byTier"]] == ["REGULAR"]
    assert book["byTier"][0]["points"] == {k: total[k] for k in (
        "members", "available", "pending", "debt")}
    # Available points by when they expire: the end of the twelfth month after today.
    assert sum(e["points"] for e in book["byExpiry"]) == total["available"]
    (expiry,) = book["byExpiry"]
    assert at(expiry["expiresAt"]) == end_of_twelfth_month_after(datetime.now(UTC))
    assert expiry["month"] == (at(expiry["expiresAt"]) - timedelta(days=1)).strftime("%Y-%m")

    # The command line gives the same figures.
    result = await asyncio.to_thread(CliRunner().invoke, main, ["loyalty", "liability",
                                                                "--json"], env={
        "PATRON_DATABASE_URL": database_url, "PATRON_SECRET_KEY": TEST_SECRET})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["total"]["available"], report["total"]["pending"],
            report["total"]["available_value"]) == (total["available"], total["pending"], 5_200)
    assert report["by_tier"]["regular"]["members"] == 2
