"""Orders through the GraphQL API: placing, paying, cancelling, refunding and delivering.

Every scenario is driven the way a shop frontend and the back office would drive it:
mutations and queries over HTTP, business time moved with the test clock, and the
scheduler's tick for whatever becomes due as time passes. "Nothing recorded" is checked
against the event store's head position, which a rejected command must leave unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from strawberry.relay import GlobalID

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, order_lines, register, token_for
from tests.payments import callback, pay_through_provider, post_callback, request_payment

T = TypeVar("T")

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-7")
AUDITOR = token_for(Role.AUDITOR, "auditor-3")

ORDER_FIELDS = """
  id orderId memberId state tier couponId failedPayments version
  lines { lineId productId sku name quantity unitPrice { amount } amount { amount }
          refundedQuantity }
  pricing {
    subtotal { amount currency } tierDiscount { amount } couponDiscount { amount }
    pointsUsed pointsValue { amount } shippingFee { amount } total { amount currency }
  }
  payments { paymentId method amount { amount } providerReference }
  reviewFlags { rule detail }
  refunds { refundId amount { amount } lines { lineId quantity } }
  paid { amount } refunded { amount }
  cancellation { reason note }
  history { state }
  paidAt deliveredAt returnWindowClosesAt
"""

USER_ERRORS = "userErrors { field message code }"


def _mutation(name: str, input_type: str) -> str:
    return (
        f"mutation M($input: {input_type}!) {{ {name}(input: $input) "
        f"{{ position order {{ {ORDER_FIELDS} }} {USER_ERRORS} }} }}"
    )


PLACE_ORDER = _mutation("placeOrder", "PlaceOrderInput")
PAY_ORDER = _mutation("payOrder", "PayOrderInput")
CANCEL_ORDER = _mutation("cancelOrder", "CancelOrderInput")
REFUND_ORDER = _mutation("refundOrder", "RefundOrderInput")
MARK_DELIVERED = _mutation("markOrderDelivered", "OrderActionInput")
COMPLETE_ORDER = _mutation("completeOrder", "OrderActionInput")
ORDER = f"query O($id: ID!) {{ order(id: $id) {{ {ORDER_FIELDS} }} }}"

ACCOUNT_FIELDS = """
  tier available pending debt lifetimeEarned
  lots { lotId source points remaining status releaseAt availableAt expiresAt }
"""

ADJUST_POINTS = f"""
mutation A($input: AdjustPointsInput!) {{
  adjustPoints(input: $input) {{ position account {{ {ACCOUNT_FIELDS} }} {USER_ERRORS} }}
}}
"""

WALLET = "{ me { coupons { id source kind value minSpend { amount } status usable orderId } } }"
LOYALTY = f"{{ me {{ loyalty {{ {ACCOUNT_FIELDS} }} }} }}"


# -- helpers ----------------------------------------------------------------------------------


class Shopper:
    """A registered member: their token and ids."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.token: str = payload["token"]
        self.id: str = payload["member"]["id"]
        self.member_id: str = payload["member"]["memberId"]


async def shopper(client: httpx.AsyncClient, name: str = "Ann Lee",
                  email: str | None = None) -> Shopper:
    email = email or f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
    return Shopper(await register(client, name=name, email=email))


def line(product: str = "tent-2p", quantity: int = 1, unit_price: int = 6_500,
         **extra: Any) -> dict[str, Any]:
    """A line as a test thinks of it: the product at its catalogue price (listed before the
    order is placed, see `tests.graphql.order_lines`)."""
    return {"productId": product, "name": product.replace("-", " "),
            "quantity": quantity, "unitPrice": unit_price, **extra}


async def mutate(client: httpx.AsyncClient, document: str, input: dict[str, Any],
                 token: str | None) -> dict[str, Any]:
    body = await gql(client, document, {"input": input}, token=token)
    (payload,) = data(body).values()
    result: dict[str, Any] = payload
    return result


def ok(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


def error_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The single user error of a rejected mutation, which returned no result."""
    assert len(payload["userErrors"]) == 1, payload["userErrors"]
    assert payload.get("order") is None and payload["position"] is None
    error: dict[str, Any] = payload["userErrors"][0]
    return error


async def place(client: httpx.AsyncClient, who: Shopper, lines: list[dict[str, Any]],
                key: str | None = None, **extra: Any) -> dict[str, Any]:
    payload = await mutate(client, PLACE_ORDER, {
        "lines": await order_lines(client, lines), "idempotencyKey": key or uuid.uuid4().hex,
        **extra,
    }, who.token)
    order: dict[str, Any] = ok(payload)["order"]
    return order


async def pay(client: httpx.AsyncClient, who: Shopper, order: dict[str, Any],
              **extra: Any) -> dict[str, Any]:
    """The member asks to pay and the provider's signed callback confirms it."""
    await pay_through_provider(client, order["id"], who.token, **extra)
    paid: dict[str, Any] = data(await gql(client, ORDER, {"id": order["id"]},
                                          token=who.token))["order"]
    return paid


async def paid_order(client: httpx.AsyncClient, who: Shopper, amount: int) -> dict[str, Any]:
    """An order of one line costing `amount`, placed and paid."""
    return await pay(client, who, await place(client, who, [line("gift-card", 1, amount)]))


async def deliver(client: httpx.AsyncClient, order: dict[str, Any]) -> dict[str, Any]:
    payload = await mutate(client, MARK_DELIVERED, {"orderId": order["id"]}, AGENT)
    delivered: dict[str, Any] = ok(payload)["order"]
    return delivered


async def adjust(client: httpx.AsyncClient, who: Shopper, points: int,
                 reason: str = "goodwill", key: str | None = None) -> dict[str, Any]:
    payload = await mutate(client, ADJUST_POINTS, {
        "memberId": who.id, "points": points, "reason": reason,
        "idempotencyKey": key or uuid.uuid4().hex,
    }, ADMIN)
    account: dict[str, Any] = ok(payload)["account"]
    return account


async def find_order(client: httpx.AsyncClient, order_id: str, token: str = AGENT,
                     headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    body = await gql(client, ORDER, {"id": order_id}, token=token, headers=headers)
    order: dict[str, Any] | None = data(body)["order"]
    return order


async def read_order(client: httpx.AsyncClient, order_id: str, token: str = AGENT,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    order = await find_order(client, order_id, token, headers)
    assert order is not None
    return order


async def wallet(client: httpx.AsyncClient, who: Shopper) -> list[dict[str, Any]]:
    coupons: list[dict[str, Any]] = data(await gql(client, WALLET, token=who.token))["me"][
        "coupons"
    ]
    return coupons


async def welcome_coupon(client: httpx.AsyncClient, who: Shopper) -> dict[str, Any]:
    (coupon,) = [c for c in await wallet(client, who) if c["source"] == "WELCOME"]
    return coupon


async def loyalty(client: httpx.AsyncClient, who: Shopper,
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = await gql(client, LOYALTY, token=who.token, headers=headers)
    account: dict[str, Any] = data(body)["me"]["loyalty"]
    return account


async def tick(runtime: Runtime) -> dict[str, str]:
    """Run the scheduler once, as the server does periodically.

    Returns the header that makes a later query wait until the read models include what
    the tick recorded (read-your-writes knows nothing of the scheduler's own writes).
    """
    report = await asyncio.to_thread(runtime.scheduler.tick)
    assert report.errors == []
    head = await asyncio.to_thread(runtime.runner.head)
    return {"X-Patron-Min-Position": str(head)}


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool],
                     timeout: float = 5.0) -> T:
    """Poll `probe` until `check` holds (for effects that arrive asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


def head(runtime: Runtime) -> int:
    return runtime.runner.head()


def amounts(pricing: dict[str, Any]) -> dict[str, int]:
    return {key: (value["amount"] if isinstance(value, dict) else value)
            for key, value in pricing.items()}


# -- placing ------------------------------------------------------------------------------------


async def test_an_order_shows_how_its_price_was_reached_and_a_retry_changes_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    # A first big order: free shipping above the threshold, and Silver from its spend.
    first = await place(client, ann, [line("sofa", 2, 100_000)])
    assert amounts(first["pricing"]) == {
        "subtotal": 200_000, "tierDiscount": 0, "couponDiscount": 0, "pointsUsed": 0,
        "pointsValue": 0, "shippingFee": 0, "total": 200_000,
    }
    assert first["tier"] == "REGULAR"
    await pay(client, ann, first)
    await adjust(client, ann, 1_000)
    coupon = await welcome_coupon(client, ann)
    assert (coupon["kind"], coupon["value"], coupon["minSpend"]["amount"]) == ("FIXED", 1_000,
                                                                               5_000)

    order_input = {
        "lines": await order_lines(client, [
            line("mug", 2, 3_000, category="Kitchen", brand="Clay"), line("tea", 1, 1_500)]),
        "couponId": coupon["id"], "points": 500, "idempotencyKey": "checkout-1",
    }
    payload = ok(await mutate(client, PLACE_ORDER, order_input, ann.token))
    order = payload["order"]
    assert order["state"] == "PLACED" and order["tier"] == "SILVER"
    assert order["history"] == [{"state": "PLACED"}]
    assert order["memberId"] == ann.id and order["couponId"] == coupon["id"]
    # subtotal 7500; Silver 2% = 150; coupon 1000 (7350 reaches 5000); 500 points = 5.00;
    # 6350 is under the free-shipping threshold, so the fee is charged.
    assert amounts(order["pricing"]) == {
        "subtotal": 7_500, "tierDiscount": 150, "couponDiscount": 1_000, "pointsUsed": 500,
        "pointsValue": 500, "shippingFee": 1_000, "total": 6_850,
    }
    assert order["pricing"]["total"]["currency"] == "CNY"
    assert [(x["lineId"], x["quantity"], x["unitPrice"]["amount"], x["amount"]["amount"])
            for x in order["lines"]] == [("L1", 2, 3_000, 6_000), ("L2", 1, 1_500, 1_500)]
    assert (await loyalty(client, ann))["available"] == 500
    assert (await welcome_coupon(client, ann))["status"] == "RESERVED"

    before = head(live_runtime)
    retry = ok(await mutate(client, PLACE_ORDER, order_input, ann.token))
    assert retry["order"] == order
    assert retry["position"] is None
    assert head(live_runtime) == before
    assert (await loyalty(client, ann))["available"] == 500  # not debited twice

    changed = {**order_input, "lines": [{"productId": "mug", "quantity": 3},
                                        {"productId": "tea", "quantity": 1}]}
    conflict = error_of(await mutate(client, PLACE_ORDER, changed, ann.token))
    assert (conflict["code"], conflict["field"]) == ("IDEMPOTENCY_CONFLICT", "idempotencyKey")
    assert head(live_runtime) == before
    orders = data(await gql(client, "{ me { orders { totalCount } } }", token=ann.token))
    assert orders["me"]["orders"]["totalCount"] == 2


# -- paying -------------------------------------------------------------------------------------


async def test_a_payment_is_confirmed_by_the_provider_and_a_retry_records_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    assert order["pricing"]["total"]["amount"] == 7_500  # 6500 + shipping 1000
    payment = {"orderId": order["id"], "method": "CARD", "idempotencyKey": "pay-1"}

    asked = ok(await mutate(client, PAY_ORDER, payment, ann.token))
    assert asked["order"]["state"] == "PLACED"  # asking to pay pays nothing
    attempt = (await request_payment(client, order["id"], ann.token, "CARD", "pay-1"))["attempt"]
    assert attempt["amount"] == {"amount": 7_500, "currency": "CNY"}
    confirmed = callback(attempt["reference"], 7_500, event_id="evt-1")
    assert (await post_callback(client, confirmed)).status_code == 202

    order = data(await gql(client, ORDER, {"id": order["id"]}, token=ann.token))["order"]
    assert order["state"] == "PAID" and order["paidAt"] is not None
    assert order["history"] == [{"state": "PLACED"}, {"state": "PAID"}]
    assert [(p["paymentId"], p["method"], p["amount"]["amount"], p["providerReference"])
            for p in order["payments"]] == [("testpay:evt-1", "CARD", 7_500,
                                             attempt["reference"])]
    assert order["paid"]["amount"] == 7_500
    assert (await loyalty(client, ann))["pending"] == 75

    after_payment = head(live_runtime)
    replay = await post_callback(client, confirmed)
    assert replay.status_code == 202 and replay.json()["duplicate"] is True
    assert head(live_runtime) == after_payment
    assert (await loyalty(client, ann))["pending"] == 75  # earned once

    reused = error_of(await mutate(client, PAY_ORDER, {**payment, "method": "WECHAT_PAY"},
                                   ann.token))
    assert reused["code"] == "IDEMPOTENCY_CONFLICT"
    again = error_of(await mutate(client, PAY_ORDER, {**payment, "idempotencyKey": "pay-2"},
                                  ann.token))
    assert again["code"] == "INVALID_TRANSITION"
    assert "paid" in again["message"] and "pay" in again["message"]
    assert head(live_runtime) == after_payment


async def test_failed_payments_are_recorded_and_three_flag_the_order_for_review(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])

    for attempt in (1, 2):
        answer = await pay_through_provider(client, order["id"], ann.token, method="CARD",
                                            outcome="failed", failure_reason="card declined")
        assert answer["recorded"] == "failed"
        order = data(await gql(client, ORDER, {"id": order["id"]}, token=ann.token))["order"]
        assert (order["state"], order["failedPayments"]) == ("PLACED", attempt)
        assert order["payments"] == [] and order["reviewFlags"] == []
    await pay_through_provider(client, order["id"], ann.token, outcome="failed")
    order = data(await gql(client, ORDER, {"id": order["id"]}, token=ann.token))["order"]
    assert order["failedPayments"] == 3
    assert [f["rule"] for f in order["reviewFlags"]] == ["repeated_payment_failures"]
    assert "3" in order["reviewFlags"][0]["detail"]

    # A flag asks staff to look; it does not stop a good payment.
    order = await pay(client, ann, order)
    assert order["state"] == "PAID"
    assert [f["rule"] for f in order["reviewFlags"]] == ["repeated_payment_failures"]


async def test_an_order_far_above_the_members_usual_value_is_flagged(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    for _ in range(2):
        usual = await paid_order(client, ann, 20_000)
        assert usual["reviewFlags"] == []
    # More than 5x the usual 200.00, but under the 1000.00 floor: not unusual enough.
    modest = await place(client, ann, [line("bike", 1, 99_000)])
    assert modest["reviewFlags"] == []
    big = await place(client, ann, [line("piano", 1, 150_000)])
    assert [f["rule"] for f in big["reviewFlags"]] == ["value_far_above_usual"]
    assert big["state"] == "PLACED"

    # A first order has no usual value to compare with.
    bea = await shopper(client, "Bea Wu")
    first = await place(client, bea, [line("piano", 1, 150_000)])
    assert first["reviewFlags"] == []


# -- transitions --------------------------------------------------------------------------------


async def test_impossible_transitions_name_the_state_and_record_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    cancelled = await place(client, ann, [line("lamp", 1, 6_500)])
    cancelled = ok(await mutate(client, CANCEL_ORDER, {
        "orderId": cancelled["id"], "reason": "MEMBER_REQUEST", "note": "changed my mind",
    }, ann.token))["order"]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["cancellation"] == {"reason": "MEMBER_REQUEST", "note": "changed my mind"}

    before = head(live_runtime)
    paying = error_of(await mutate(client, PAY_ORDER, {
        "orderId": cancelled["id"], "method": "CARD", "idempotencyKey": "p",
    }, ann.token))
    assert paying["code"] == "INVALID_TRANSITION"
    assert "cancelled" in paying["message"] and "pay" in paying["message"]
    again = error_of(await mutate(client, CANCEL_ORDER, {
        "orderId": cancelled["id"], "reason": "MEMBER_REQUEST"}, ann.token))
    assert again["code"] == "INVALID_TRANSITION" and "cancelled" in again["message"]
    assert head(live_runtime) == before

    delivered = await deliver(client, await paid_order(client, ann, 20_000))
    assert delivered["state"] == "DELIVERED"
    before = head(live_runtime)
    cancelling = error_of(await mutate(client, CANCEL_ORDER, {
        "orderId": delivered["id"], "reason": "MEMBER_REQUEST"}, ann.token))
    assert cancelling["code"] == "INVALID_TRANSITION"
    assert "delivered" in cancelling["message"] and "cancel" in cancelling["message"]
    redelivering = error_of(await mutate(client, MARK_DELIVERED, {"orderId": delivered["id"]},
                                         AGENT))
    assert redelivering["code"] == "INVALID_TRANSITION"
    placed = await place(client, ann, [line("lamp", 1, 6_500)])
    before = head(live_runtime)
    undelivered = error_of(await mutate(client, COMPLETE_ORDER, {"orderId": placed["id"]},
                                        AGENT))
    assert undelivered["code"] == "INVALID_TRANSITION"
    assert "placed" in undelivered["message"] and "complete" in undelivered["message"]
    assert head(live_runtime) == before
    assert (await read_order(client, delivered["id"]))["state"] == "DELIVERED"


async def test_completing_inside_the_return_window_names_the_state_and_the_attempt(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    delivered = await deliver(client, await paid_order(client, ann, 20_000))
    clock.advance(timedelta(days=3))
    before = head(live_runtime)
    early = error_of(await mutate(client, COMPLETE_ORDER, {"orderId": delivered["id"]}, AGENT))
    assert early["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before
    # The documented contract: the message names the current and the attempted state.
    assert "delivered" in early["message"] and "complete" in early["message"], early["message"]


# -- cancelling ---------------------------------------------------------------------------------


async def test_cancelling_before_payment_releases_the_coupon_and_returns_the_points(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await adjust(client, ann, 1_000)
    coupon = await welcome_coupon(client, ann)
    assert (coupon["status"], coupon["usable"]) == ("AVAILABLE", True)
    order = await place(client, ann, [line("boots", 1, 8_000)], couponId=coupon["id"],
                        points=300)
    assert amounts(order["pricing"])["total"] == 8_000 - 1_000 - 300 + 1_000
    reserved = await welcome_coupon(client, ann)
    assert (reserved["status"], reserved["usable"]) == ("RESERVED", False)
    assert (await loyalty(client, ann))["available"] == 700

    # Staff cancelling on a member's behalf must say why.
    refused = error_of(await mutate(client, CANCEL_ORDER, {
        "orderId": order["id"], "reason": "STAFF"}, AGENT))
    # The reason staff give for a cancellation is its note: the error names that field.
    assert (refused["code"], refused["field"]) == ("REASON_REQUIRED", "note")

    cancelled = ok(await mutate(client, CANCEL_ORDER, {
        "orderId": order["id"], "reason": "MEMBER_REQUEST"}, ann.token))["order"]
    assert cancelled["state"] == "CANCELLED" and cancelled["refunds"] == []
    released = await welcome_coupon(client, ann)
    assert (released["status"], released["usable"], released["orderId"]) == (
        "AVAILABLE", True, None)
    account = await loyalty(client, ann)
    assert (account["available"], account["pending"], account["debt"]) == (1_000, 0, 0)

    # The released coupon and the returned points pay for the next order.
    again = await place(client, ann, [line("boots", 1, 8_000)], couponId=coupon["id"],
                        points=300)
    assert amounts(again["pricing"])["couponDiscount"] == 1_000
    assert head(live_runtime) > 0


async def test_cancelling_a_paid_order_refunds_it_and_claws_back_its_pending_points(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    order = await paid_order(client, ann, 20_000)
    assert (await loyalty(client, ann))["pending"] == 200

    cancelled = ok(await mutate(client, CANCEL_ORDER, {
        "orderId": order["id"], "reason": "STOCK", "note": "warehouse out of stock"}, AGENT))
    order = cancelled["order"]
    assert order["state"] == "CANCELLED"
    assert [r["amount"]["amount"] for r in order["refunds"]] == [20_000]
    assert order["refunded"]["amount"] == order["paid"]["amount"] == 20_000
    account = await loyalty(client, ann)
    assert (account["available"], account["pending"], account["debt"]) == (0, 0, 0)
    assert [(lot["source"], lot["status"], lot["remaining"]) for lot in account["lots"]] == [
        ("order", "REVERSED", 0)]
    spend = data(await gql(client, "{ me { loyalty { tierProgress { qualifyingSpend { amount } } "
                                   "} } }", token=ann.token))
    assert spend["me"]["loyalty"]["tierProgress"]["qualifyingSpend"]["amount"] == 0


# -- refunding ----------------------------------------------------------------------------------


async def test_staff_refund_lines_and_quantities_never_more_than_was_paid(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    coupon = await welcome_coupon(client, ann)
    order = await place(client, ann, [line("socks", 3, 1_999), line("hat", 1, 2_001)],
                        couponId=coupon["id"])
    # 7998 - coupon 1000 = 6998, under the threshold: + shipping 1000.
    assert amounts(order["pricing"])["total"] == 7_998
    order = await pay(client, ann, order)
    assert (await loyalty(client, ann))["pending"] == 79
    assert (await welcome_coupon(client, ann))["status"] == "USED"
    refund = {"orderId": order["id"], "reason": "damaged in transit"}

    before = head(live_runtime)
    by_member = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "idempotencyKey": "r0"}, ann.token))
    assert by_member["code"] == "FORBIDDEN"
    without_reason = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "reason": "  ", "idempotencyKey": "r0"}, AGENT))
    assert without_reason["code"] == "REASON_REQUIRED"
    too_many = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L1", "quantity": 4}], "idempotencyKey": "r0"}, AGENT))
    assert (too_many["code"], too_many["field"]) == ("VALIDATION", "lines.0.quantity")
    unknown = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L9", "quantity": 1}], "idempotencyKey": "r0"}, AGENT))
    assert (unknown["code"], unknown["field"]) == ("NOT_FOUND", "lines.0.lineId")
    nothing = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L1", "quantity": 0}], "idempotencyKey": "r0"}, AGENT))
    assert nothing["code"] == "VALIDATION"
    assert head(live_runtime) == before

    # One sock of three: its share of what was paid for goods (the coupon spread evenly).
    first = ok(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L1", "quantity": 1}], "idempotencyKey": "r1"}, AGENT))
    order = first["order"]
    assert [r["amount"]["amount"] for r in order["refunds"]] == [1_749]
    assert [x["refundedQuantity"] for x in order["lines"]] == [1, 0]
    assert order["state"] == "PAID"
    retry = ok(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L1", "quantity": 1}], "idempotencyKey": "r1"}, AGENT))
    assert retry["order"] == order and retry["position"] is None
    assert (await loyalty(client, ann))["pending"] == 79 - 79 * 1_749 // 7_998

    over = error_of(await mutate(client, REFUND_ORDER, {
        **refund, "lines": [{"lineId": "L1", "quantity": 3}], "idempotencyKey": "r2"}, AGENT))
    assert over["code"] == "VALIDATION" and "2 left" in over["message"]

    # Everything else: the last refund settles rounding and the shipping fee.
    rest = ok(await mutate(client, REFUND_ORDER, {**refund, "idempotencyKey": "r3"}, AGENT))
    order = rest["order"]
    assert sum(r["amount"]["amount"] for r in order["refunds"]) == order["paid"]["amount"]
    assert order["refunded"]["amount"] == 7_998
    assert [x["refundedQuantity"] for x in order["lines"]] == [3, 1]
    assert (await loyalty(client, ann))["pending"] == 0

    before = head(live_runtime)
    beyond = error_of(await mutate(client, REFUND_ORDER, {**refund, "idempotencyKey": "r4"},
                                   AGENT))
    assert beyond["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before

    unpaid = await place(client, ann, [line("hat", 1, 2_001)])
    not_paid = error_of(await mutate(client, REFUND_ORDER, {
        "orderId": unpaid["id"], "reason": "oops", "idempotencyKey": "r5"}, ADMIN))
    assert not_paid["code"] == "INVALID_TRANSITION" and "placed" in not_paid["message"]


# -- delivery -----------------------------------------------------------------------------------


async def test_a_delivered_order_completes_when_its_return_window_closes(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid_order(client, ann, 100_000)
    member_cannot = error_of(await mutate(client, MARK_DELIVERED, {"orderId": order["id"]},
                                          ann.token))
    assert member_cannot["code"] == "FORBIDDEN"
    order = await deliver(client, order)
    assert order["state"] == "DELIVERED" and order["deliveredAt"] is not None
    assert order["returnWindowClosesAt"] is not None
    account = await loyalty(client, ann)
    assert (account["available"], account["pending"]) == (0, 1_000)
    (lot,) = account["lots"]
    assert lot["releaseAt"] == order["returnWindowClosesAt"]

    clock.advance(timedelta(days=6))
    headers = await tick(live_runtime)
    assert (await read_order(client, order["id"], headers=headers))["state"] == "DELIVERED"
    assert (await loyalty(client, ann, headers))["pending"] == 1_000

    clock.advance(timedelta(days=2))
    headers = await tick(live_runtime)
    completed = await read_order(client, order["id"], headers=headers)
    assert completed["state"] == "COMPLETED"
    assert [h["state"] for h in completed["history"]] == [
        "PLACED", "PAID", "DELIVERED", "COMPLETED"]
    account = await loyalty(client, ann, headers)
    assert (account["available"], account["pending"]) == (1_000, 0)
    (lot,) = account["lots"]
    assert lot["status"] == "AVAILABLE" and lot["expiresAt"] is not None

    # A second tick finds nothing left to do.
    before = head(live_runtime)
    await tick(live_runtime)
    assert head(live_runtime) == before


# -- bad input and access -----------------------------------------------------------------------


async def test_bad_order_input_is_a_typed_error_and_records_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    bobs_coupon = await welcome_coupon(client, bob)
    unknown_coupon = str(GlobalID("Coupon", str(uuid.uuid4())))
    good = await order_lines(client, [line("boots", 1, 8_000)])
    (free,) = await order_lines(client, [line("sample", 1, 0)])
    boots = {"productId": "boots", "quantity": 1}
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({"lines": [{**boots, "quantity": 0}]}, "VALIDATION", "lines.0.quantity"),
        ({"lines": [boots, {**boots, "quantity": -2}]}, "VALIDATION", "lines.1.quantity"),
        ({"lines": [{**boots, "quantity": 1_000}]}, "VALIDATION", "lines.0.quantity"),
        ({"lines": [{**boots, "productId": "   "}]}, "VALIDATION", "lines.0.productId"),
        ({"lines": [boots, {**boots, "productId": "no-such"}]}, "NOT_FOUND",
         "lines.1.productId"),
        ({"lines": []}, "VALIDATION", "lines"),
        ({"lines": [free]}, "VALIDATION", "lines"),
        ({"lines": good, "couponId": bobs_coupon["id"]}, "VALIDATION", "couponId"),
        ({"lines": good, "couponId": unknown_coupon}, "NOT_FOUND", "couponId"),
        ({"lines": good, "couponId": "not-an-id"}, "VALIDATION", "couponId"),
        ({"lines": good, "couponId": ann.id}, "VALIDATION", "couponId"),
        ({"lines": good, "idempotencyKey": "  "}, "VALIDATION", "idempotencyKey"),
    ]
    before = head(live_runtime)
    for fields, code, field in cases:
        payload = await mutate(client, PLACE_ORDER, {"idempotencyKey": "k1", **fields},
                               ann.token)
        error = error_of(payload)
        assert (error["code"], error["field"]) == (code, field), (fields, error)
    assert head(live_runtime) == before

    # The welcome coupon is valid for 30 days; after that it cannot be used.
    clock.advance(timedelta(days=31))
    coupon = await welcome_coupon(client, ann)
    assert (coupon["status"], coupon["usable"]) == ("EXPIRED", False)
    expired = error_of(await mutate(client, PLACE_ORDER, {
        "lines": good, "couponId": coupon["id"], "idempotencyKey": "k2"}, ann.token))
    assert (expired["code"], expired["field"]) == ("VALIDATION", "couponId")
    assert head(live_runtime) == before
    listed = data(await gql(client, "{ me { orders { totalCount } } }", token=ann.token))
    assert listed["me"]["orders"]["totalCount"] == 0
    # Nobody used it, so time alone expired it.
    assert (await welcome_coupon(client, bob))["status"] == "EXPIRED"


async def test_a_member_can_neither_read_nor_act_on_another_members_order(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    tent = await order_lines(client, [line()])

    assert await find_order(client, order["id"], token=bob.token) is None
    node = data(await gql(client, "query N($id: ID!) { node(id: $id) { id } }",
                          {"id": order["id"]}, token=bob.token))
    assert node["node"] is None
    assert (await read_order(client, order["id"], token=ann.token))["id"] == order["id"]
    assert (await read_order(client, order["id"], token=AUDITOR))["id"] == order["id"]
    anonymous = await gql(client, ORDER, {"id": order["id"]})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    before = head(live_runtime)
    paying = error_of(await mutate(client, PAY_ORDER, {
        "orderId": order["id"], "method": "CARD", "idempotencyKey": "p1",
    }, bob.token))
    assert paying["code"] == "FORBIDDEN"
    cancelling = error_of(await mutate(client, CANCEL_ORDER, {
        "orderId": order["id"], "reason": "OTHER"}, bob.token))
    assert cancelling["code"] == "FORBIDDEN"
    for_ann = error_of(await mutate(client, PLACE_ORDER, {
        "memberId": ann.id, "lines": tent, "idempotencyKey": "k"}, bob.token))
    assert for_ann["code"] == "FORBIDDEN"
    assert head(live_runtime) == before

    # Staff may place an order for a member, with a reason.
    no_reason = error_of(await mutate(client, PLACE_ORDER, {
        "memberId": ann.id, "lines": tent, "idempotencyKey": "k"}, AGENT))
    assert no_reason["code"] == "REASON_REQUIRED"
    by_phone = ok(await mutate(client, PLACE_ORDER, {
        "memberId": ann.id, "lines": tent, "idempotencyKey": "k",
        "reason": "ordered by phone"}, AGENT))
    assert by_phone["order"]["memberId"] == ann.id


ORDERS = """
query Orders($first: Int, $after: String, $filter: OrderFilterInput) {
  orders(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { id state memberId reviewFlags { rule } } }
  }
}
"""


async def test_staff_list_orders_newest_first_with_filters_and_pages(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    placed: list[dict[str, Any]] = []
    for who in (ann, ann, bob, ann):
        placed.append(await place(client, who, [line("lamp", 1, 6_500)]))
        clock.advance(timedelta(minutes=5))
    await pay(client, ann, placed[0])
    for _attempt in range(3):
        await pay_through_provider(client, placed[1]["id"], ann.token, method="CARD",
                                   outcome="failed", failure_reason="declined")

    async def listing(token: str = AGENT, **variables: Any) -> dict[str, Any]:
        body = await gql(client, ORDERS, variables, token=token)
        connection: dict[str, Any] = data(body)["orders"]
        return connection

    refused = await gql(client, ORDERS, {}, token=ann.token)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await gql(client, ORDERS, {})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    everything = await listing()
    assert everything["totalCount"] == 4
    assert [e["node"]["id"] for e in everything["edges"]] == [o["id"] for o in reversed(placed)]
    assert (await listing(token=AUDITOR))["totalCount"] == 4

    by_state = await listing(filter={"state": "PAID"})
    assert [e["node"]["id"] for e in by_state["edges"]] == [placed[0]["id"]]
    by_member = await listing(filter={"memberId": bob.id})
    assert [e["node"]["id"] for e in by_member["edges"]] == [placed[2]["id"]]
    flagged = await listing(filter={"flagged": True})
    assert [e["node"]["id"] for e in flagged["edges"]] == [placed[1]["id"]]
    assert flagged["edges"][0]["node"]["reviewFlags"] == [{"rule": "repeated_payment_failures"}]
    assert (await listing(filter={"flagged": False}))["totalCount"] == 3
    combined = await listing(filter={"memberId": ann.id, "state": "PLACED"})
    assert [e["node"]["id"] for e in combined["edges"]] == [placed[3]["id"], placed[1]["id"]]

    page1 = await listing(first=3)
    assert page1["pageInfo"]["hasNextPage"] is True and len(page1["edges"]) == 3
    page2 = await listing(first=3, after=page1["pageInfo"]["endCursor"])
    assert page2["pageInfo"]["hasNextPage"] is False
    assert page2["pageInfo"]["hasPreviousPage"] is True
    assert [e["node"]["id"] for e in page1["edges"] + page2["edges"]] == [
        o["id"] for o in reversed(placed)]
    bad_cursor = await gql(client, ORDERS, {"after": "garbage"}, token=AGENT)
    assert bad_cursor["errors"][0]["extensions"]["code"] == "VALIDATION"
    bad_member = await gql(client, ORDERS, {"filter": {"memberId": placed[0]["id"]}},
                           token=AGENT)
    assert bad_member["errors"][0]["extensions"]["code"] == "VALIDATION"

    mine = data(await gql(client, "{ me { orders(first: 2) { totalCount pageInfo "
                                  "{ hasNextPage } edges { node { id } } } } }",
                          token=ann.token))["me"]["orders"]
    assert mine["totalCount"] == 3 and mine["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in mine["edges"]] == [placed[3]["id"], placed[1]["id"]]


async def test_a_retried_failed_payment_report_is_recorded_once(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    attempt = (await request_payment(client, order["id"], ann.token, "CARD"))["attempt"]
    failure = callback(attempt["reference"], 7_500, "failed", failure_reason="card declined")
    assert (await post_callback(client, failure)).status_code == 202
    first = data(await gql(client, ORDER, {"id": order["id"]}, token=ann.token))["order"]
    assert first["failedPayments"] == 1
    before = head(live_runtime)
    # The payment provider's callback is delivered again: same event id, same body.
    retry = await post_callback(client, failure)
    assert retry.status_code == 202 and retry.json()["duplicate"] is True
    again = data(await gql(client, ORDER, {"id": order["id"]}, token=ann.token))["order"]
    assert again["failedPayments"] == 1
    assert head(live_runtime) == before
