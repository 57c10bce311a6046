"""The Order aggregate as a specification: pure domain, no storage.

Every rejected command raises a typed error and records nothing; time is whatever `now` the
caller passes, so the return window is tested by passing moments before and after it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application

from domain.catalogue import CatalogueProduct, validate_product
from domain.errors import (
    DomainError,
    ErrorCode,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
    ReasonRequiredError,
    ValidationError,
)
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role
from domain.order import (
    MAX_LINES,
    CancellationReason,
    Order,
    OrderState,
    PaymentMethod,
    price_lines,
    price_overrides,
    requested_lines,
    validate_lines,
)
from domain.pricing import CouponTerms, max_points_for, price_order

RULES = LoyaltyRules()
T0 = datetime(2026, 3, 15, 9, 30, tzinfo=UTC)
WINDOW = RULES.return_window_days


def meta(role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    return EventMetadata(
        actor_id=f"{role.value}-1",
        actor_role=role,
        channel=Channel.ADMIN if role.is_staff else Channel.WEB,
        correlation_id="corr-1",
        causation_id=None,
        request_id="req-1",
        reason=reason,
    )


MEMBER = meta()
SYSTEM = meta(Role.SYSTEM)


def agent(reason: str | None = "customer called the hotline") -> EventMetadata:
    return meta(Role.AGENT, reason)


def admin(reason: str | None = "goods arrived damaged") -> EventMetadata:
    return meta(Role.ADMIN, reason)


def line(quantity: int, unit_price: int, sku: str = "SKU-1", **extra: Any) -> dict[str, Any]:
    return {
        "product_id": f"P-{sku}",
        "sku": sku,
        "name": f"Item {sku}",
        "quantity": quantity,
        "unit_price": unit_price,
        **extra,
    }


# Two lines, 5,333 fen of goods: below the free-shipping threshold, so 10 CNY shipping,
# and 2,600 points so that refunds must spread a discount over the lines.
TWO_LINES = [line(3, 1_111, "A"), line(2, 1_000, "B")]


def place(
    lines: list[dict[str, Any]] | None = None,
    tier: str = "regular",
    coupon: CouponTerms | None = None,
    points: int = 0,
    now: datetime = T0,
    request_hash: str = "place-hash",
) -> Order:
    cleaned = validate_lines(lines if lines is not None else TWO_LINES)
    pricing = price_order(
        [item["quantity"] * item["unit_price"] for item in cleaned], tier, RULES, coupon, points
    )
    return Order.place(
        uuid4(), "member-1", "CNY", cleaned, pricing, tier,
        "coupon-1" if coupon else None, request_hash, now, MEMBER,
    )


def placed(**kwargs: Any) -> Order:
    order = place(**kwargs)
    order.collect_events()
    return order


def paid(**kwargs: Any) -> Order:
    order = placed(**kwargs)
    assert order.pay("pay-1", "card", order.total, "psp-1", "pay-hash", T0, MEMBER)
    order.collect_events()
    return order


def delivered(at: datetime = T0 + timedelta(days=2), **kwargs: Any) -> Order:
    order = paid(**kwargs)
    order.mark_delivered(at, SYSTEM)
    order.collect_events()
    return order


def completed(**kwargs: Any) -> Order:
    order = delivered(**kwargs)
    order.complete(T0 + timedelta(days=30), WINDOW, SYSTEM)
    order.collect_events()
    return order


def cancelled_unpaid() -> Order:
    order = placed()
    order.cancel("member_request", None, T0, MEMBER)
    order.collect_events()
    return order


def cancelled_after_payment() -> Order:
    order = paid()
    order.cancel("stock", None, T0, MEMBER)
    order.collect_events()
    return order


def only_event(order: Order) -> Any:
    events = order.collect_events()
    assert len(events) == 1, events
    return events[0]


def rejected(
    order: Order,
    command: Callable[[], Any],
    error: type[DomainError],
    field: str | None = None,
) -> Any:
    """Run a command that must fail; it must record nothing and change nothing."""
    assert order.collect_events() == []
    state_before = copy.deepcopy(vars(order))
    with pytest.raises(error) as caught:
        command()
    if field is not None:
        assert caught.value.field == field
    assert order.collect_events() == []
    assert vars(order) == state_before
    return caught.value


# -- placing --------------------------------------------------------------------------------


def test_placing_records_the_lines_pricing_and_request() -> None:
    order = place(points=2_600)

    event = only_event(order)

    assert type(event).__qualname__ == "Order.Placed"
    assert event.timestamp == T0
    assert event.meta["actor_role"] == "member"
    assert order.state == OrderState.PLACED
    assert order.member_id == "member-1"
    assert order.currency == "CNY"
    assert [item["line_id"] for item in order.lines] == ["L1", "L2"]
    assert order.pricing == {
        "subtotal": 5_333,
        "tier_discount": 0,
        "coupon_discount": 0,
        "points_used": 2_600,
        "points_value": 2_600,
        "shipping_fee": 1_000,
        "total": 3_733,
    }
    assert order.total == 3_733
    assert order.paid_amount == 0
    assert order.refunded_quantities == {"L1": 0, "L2": 0}
    assert order.request_hash == "place-hash"


def test_validate_lines_numbers_lines_and_normalises_text() -> None:
    cleaned = validate_lines([
        line(1, 500, "  A  ", category="  Books ", brand=" ACME"),
        line(2, 0, "B", category="   "),
    ])
    assert cleaned[0] == {
        "line_id": "L1", "quantity": 1, "unit_price": 500, "product_id": "P-  A", "sku": "A",
        "name": "Item   A", "category": "books", "brand": "acme",
    }
    assert cleaned[1]["line_id"] == "L2"
    assert cleaned[1]["category"] is None
    assert cleaned[1]["brand"] is None


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([], "lines"),
        ([line(1, 100)] * (MAX_LINES + 1), "lines"),
        ([line(0, 100)], "lines.0.quantity"),
        ([line(1_000, 100)], "lines.0.quantity"),
        ([line(1, 100), line(True, 100)], "lines.1.quantity"),
        ([line(1, 100), line(1.0, 100)], "lines.1.quantity"),  # type: ignore[arg-type]
        ([line(1, -1)], "lines.0.unit_price"),
        ([line(1, 9.99)], "lines.0.unit_price"),  # type: ignore[arg-type]
        ([{**line(1, 100), "sku": "  "}], "lines.0.sku"),
        ([{**line(1, 100), "name": None}], "lines.0.name"),
        ([{k: v for k, v in line(1, 100).items() if k != "product_id"}], "lines.0.product_id"),
    ],
)
def test_invalid_lines_are_rejected_with_the_offending_field(
    lines: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_lines(lines)
    assert caught.value.field == field


# -- valid transitions ----------------------------------------------------------------------


def test_paying_the_amount_due_moves_a_placed_order_to_paid() -> None:
    order = placed(points=2_600)

    assert order.pay("pay-1", "alipay", 3_733, "psp-1", "pay-hash", T0, MEMBER) is True

    event = only_event(order)
    assert type(event).__qualname__ == "Order.Paid"
    assert event.amount == 3_733
    assert event.method == "alipay"
    assert order.state == OrderState.PAID
    assert order.paid_amount == 3_733
    assert order.payments["pay-1"]["provider_reference"] == "psp-1"
    assert order.payments["pay-1"]["at"] == T0.isoformat()


@pytest.mark.parametrize("method", list(PaymentMethod))
def test_every_payment_method_is_accepted(method: PaymentMethod) -> None:
    order = placed()
    assert order.pay("pay-1", method.value, order.total, None, "h", T0, MEMBER)
    assert order.payments["pay-1"]["method"] == method.value


@pytest.mark.parametrize("make", [placed, paid], ids=["placed", "paid"])
def test_an_order_can_be_cancelled_before_shipment(make: Callable[[], Order]) -> None:
    order = make()
    order.cancel("member_request", "  changed my mind  ", T0, MEMBER)
    event = only_event(order)
    assert type(event).__qualname__ == "Order.Cancelled"
    assert order.state == OrderState.CANCELLED
    assert order.cancellation == {
        "reason": "member_request", "note": "changed my mind", "at": T0.isoformat(),
    }


def test_a_paid_order_can_be_delivered() -> None:
    order = paid()
    at = T0 + timedelta(days=3)
    order.mark_delivered(at, SYSTEM)
    assert type(only_event(order)).__qualname__ == "Order.Delivered"
    assert order.state == OrderState.DELIVERED
    assert order.delivered_at == at.isoformat()
    assert order.return_window_closes(WINDOW) == at + timedelta(days=WINDOW)


def test_a_delivered_order_completes_once_the_return_window_has_closed() -> None:
    at = T0 + timedelta(days=3)
    order = delivered(at=at)
    order.complete(at + timedelta(days=WINDOW), WINDOW, SYSTEM)
    assert type(only_event(order)).__qualname__ == "Order.Completed"
    assert order.state == OrderState.COMPLETED


@pytest.mark.parametrize(
    "make",
    [paid, delivered, completed, cancelled_after_payment],
    ids=["paid", "delivered", "completed", "cancelled-after-payment"],
)
def test_a_refund_is_possible_after_payment_and_keeps_the_state(
    make: Callable[[], Order],
) -> None:
    order = make()
    state = order.state
    record = order.refund("refund-1", None, "refund-hash", T0 + timedelta(days=40), MEMBER)
    assert record is not None
    assert record["amount"] == order.paid_amount
    assert type(only_event(order)).__qualname__ == "Order.Refunded"
    assert order.state == state
    assert order.refunded_amount == order.paid_amount


# -- invalid transitions --------------------------------------------------------------------

NOW = T0 + timedelta(days=60)


def _pay(order: Order) -> None:
    order.pay("pay-new", "card", order.total, None, "new-hash", NOW, MEMBER)


def _fail(order: Order) -> None:
    order.record_payment_failure("card", order.total, None, "declined", NOW, MEMBER)


def _cancel(order: Order) -> None:
    order.cancel("member_request", None, NOW, MEMBER)


def _deliver(order: Order) -> None:
    order.mark_delivered(NOW, SYSTEM)


def _complete(order: Order) -> None:
    order.complete(NOW, WINDOW, SYSTEM)


def _refund(order: Order) -> None:
    order.refund("refund-new", None, "refund-hash", NOW, MEMBER)


COMMANDS: dict[str, tuple[Callable[[Order], None], str]] = {
    "pay": (_pay, "pay"),
    "fail": (_fail, "record a failed payment for"),
    "cancel": (_cancel, "cancel"),
    "deliver": (_deliver, "deliver"),
    "complete": (_complete, "complete"),
    "refund": (_refund, "refund"),
}
STATES: dict[str, tuple[Callable[[], Order], str]] = {
    "placed": (placed, "placed"),
    "paid": (paid, "paid"),
    "delivered": (delivered, "delivered"),
    "completed": (completed, "completed"),
    "cancelled-unpaid": (cancelled_unpaid, "cancelled"),
    "cancelled-paid": (cancelled_after_payment, "cancelled"),
}
ALLOWED = {
    "placed": {"pay", "fail", "cancel"},
    "paid": {"cancel", "deliver", "refund"},
    "delivered": {"complete", "refund"},
    "completed": {"refund"},
    "cancelled-unpaid": set(),
    "cancelled-paid": {"refund"},
}
INVALID = [
    (state, command)
    for state in STATES
    for command in COMMANDS
    if command not in ALLOWED[state]
]


@pytest.mark.parametrize(("state", "command"), INVALID, ids=[f"{s}-{c}" for s, c in INVALID])
def test_invalid_transitions_name_the_current_state_and_the_attempt_and_record_nothing(
    state: str, command: str
) -> None:
    make, state_value = STATES[state]
    run, attempted = COMMANDS[command]
    order = make()

    error = rejected(order, lambda: run(order), InvalidTransitionError)

    assert error.code == ErrorCode.INVALID_TRANSITION
    assert error.current_state == state_value
    assert error.attempted == attempted
    assert state_value in error.message
    assert attempted in error.message
    assert order.state == state_value


@pytest.mark.parametrize(("state", "command"), [
    (state, command) for state in STATES for command in sorted(ALLOWED[state])
])
def test_allowed_transitions_are_accepted(state: str, command: str) -> None:
    make, _ = STATES[state]
    run, _ = COMMANDS[command]
    order = make()
    run(order)
    assert len(order.collect_events()) == 1


# -- payments -------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [-1, 1, -3_733])
def test_a_payment_must_equal_the_amount_due(delta: int) -> None:
    order = placed(points=2_600)
    error = rejected(
        order,
        lambda: order.pay("pay-1", "card", 3_733 + delta, None, "h", T0, MEMBER),
        ValidationError,
        "amount",
    )
    assert "3733" in error.message
    assert order.state == OrderState.PLACED


def test_an_unknown_payment_method_is_rejected() -> None:
    order = placed()
    rejected(
        order,
        lambda: order.pay("pay-1", "bitcoin", order.total, None, "h", T0, MEMBER),
        ValidationError,
        "method",
    )


def test_retrying_a_payment_with_the_same_id_and_request_is_a_no_op() -> None:
    order = paid()
    state_before = copy.deepcopy(vars(order))

    again = order.pay("pay-1", "card", order.total, "psp-1", "pay-hash", T0, MEMBER)

    assert again is False
    assert order.collect_events() == []
    assert vars(order) == state_before
    assert order.paid_amount == order.total


def test_reusing_a_payment_id_for_a_different_request_is_an_idempotency_conflict() -> None:
    order = paid()
    error = rejected(
        order,
        lambda: order.pay("pay-1", "card", order.total, "psp-2", "other-hash", T0, MEMBER),
        IdempotencyConflictError,
        "idempotency_key",
    )
    assert error.code == ErrorCode.IDEMPOTENCY_CONFLICT


def test_a_second_payment_with_a_new_id_is_an_invalid_transition() -> None:
    order = paid()
    error = rejected(
        order,
        lambda: order.pay("pay-2", "card", order.total, None, "pay-hash", T0, MEMBER),
        InvalidTransitionError,
    )
    assert error.current_state == "paid"
    assert order.paid_amount == order.total


def test_failed_payments_are_counted_and_the_order_can_still_be_paid() -> None:
    order = placed()
    for attempt in range(3):
        order.record_payment_failure(
            "card", order.total, f"psp-{attempt}", "  card declined  ", T0, MEMBER
        )
        event = only_event(order)
        assert event.reason == "card declined"
        assert order.failed_payments == attempt + 1
    assert order.state == OrderState.PLACED
    assert order.pay("pay-1", "card", order.total, None, "h", T0, MEMBER)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_failed_payment_needs_a_reason(reason: Any) -> None:
    order = placed()
    rejected(
        order,
        lambda: order.record_payment_failure("card", order.total, None, reason, T0, MEMBER),
        ValidationError,
        "reason",
    )
    assert order.failed_payments == 0


def test_a_failed_payment_with_an_unknown_method_is_rejected() -> None:
    order = placed()
    rejected(
        order,
        lambda: order.record_payment_failure("cheque", 1, None, "bounced", T0, MEMBER),
        ValidationError,
        "method",
    )


# -- review flags ---------------------------------------------------------------------------


def test_an_order_is_flagged_once_per_rule() -> None:
    order = placed()

    assert order.flag_for_review("value_far_above_usual", "10x usual", T0, SYSTEM) is True
    assert type(only_event(order)).__qualname__ == "Order.FlaggedForReview"
    assert order.flag_for_review("value_far_above_usual", "11x usual", T0, SYSTEM) is False
    assert order.collect_events() == []
    assert order.flags == {"value_far_above_usual": "10x usual"}

    assert order.flag_for_review("repeated_payment_failures", "3 failures", T0, SYSTEM) is True
    assert len(order.collect_events()) == 1
    assert set(order.flags) == {"value_far_above_usual", "repeated_payment_failures"}


# -- cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(CancellationReason))
def test_every_documented_cancellation_reason_is_accepted(reason: CancellationReason) -> None:
    order = placed()
    order.cancel(reason.value, None, T0, MEMBER)
    assert order.cancellation is not None
    assert order.cancellation["reason"] == reason.value
    assert order.cancellation["note"] is None


@pytest.mark.parametrize("reason", ["", "bored", "MEMBER_REQUEST", None])
def test_an_unknown_cancellation_reason_is_rejected(reason: Any) -> None:
    order = placed()
    error = rejected(order, lambda: order.cancel(reason, None, T0, MEMBER), ValidationError)
    assert error.field == "reason"
    assert "member_request" in error.message


@pytest.mark.parametrize("staff", [agent, admin], ids=["agent", "admin"])
def test_staff_cancellations_need_a_reason(staff: Callable[..., EventMetadata]) -> None:
    order = paid()
    rejected(order, lambda: order.cancel("staff", None, T0, staff(None)), ReasonRequiredError)
    rejected(order, lambda: order.cancel("staff", None, T0, staff("   ")), ReasonRequiredError)

    order.cancel("staff", None, T0, staff("out of stock at the warehouse"))
    event = only_event(order)
    assert event.meta["reason"] == "out of stock at the warehouse"
    assert event.meta["actor_role"] in ("agent", "admin")


def test_members_and_the_system_cancel_without_a_reason() -> None:
    for who in (MEMBER, SYSTEM):
        order = placed()
        order.cancel("payment_timeout", None, T0, who)
        assert order.state == OrderState.CANCELLED


def test_a_long_cancellation_note_is_truncated() -> None:
    order = placed()
    order.cancel("other", "x" * 600, T0, MEMBER)
    assert order.cancellation is not None
    assert len(order.cancellation["note"]) == 500


# -- completion and the return window -------------------------------------------------------


def test_an_order_cannot_complete_while_the_return_window_is_open() -> None:
    at = T0 + timedelta(days=3)
    order = delivered(at=at)
    closes = at + timedelta(days=WINDOW)

    for now in (at, closes - timedelta(days=1), closes - timedelta(microseconds=1)):
        error = rejected(order, lambda now=now: order.complete(now, WINDOW, SYSTEM),
                         InvalidTransitionError)
        assert error.current_state == "delivered"
        assert error.attempted == "complete"
        assert closes.isoformat() in error.message

    order.complete(closes, WINDOW, SYSTEM)
    assert order.state == OrderState.COMPLETED


def test_the_return_window_length_comes_from_the_caller() -> None:
    at = T0 + timedelta(days=3)
    order = delivered(at=at)
    rejected(order, lambda: order.complete(at + timedelta(days=13), 14, SYSTEM),
             InvalidTransitionError)
    order.complete(at + timedelta(days=14), 14, SYSTEM)
    assert order.state == OrderState.COMPLETED


def test_the_return_window_is_unknown_before_delivery() -> None:
    assert paid().return_window_closes(WINDOW) is None


# -- refunds --------------------------------------------------------------------------------


def test_a_line_refund_is_its_share_of_what_was_paid_for_goods() -> None:
    # Paid 3,733 = 5,333 goods - 2,600 points + 1,000 shipping: 2,733 paid for goods.
    # Line 1 is 3,333 of 5,333: 1,708 of it, so 569 per unit (of 3).
    order = paid(points=2_600)
    assert order.paid_amount == 3_733

    record = order.refund("refund-1", [("L1", 1)], "h1", T0, MEMBER)

    assert record == {
        "refund_id": "refund-1",
        "lines": [{"line_id": "L1", "quantity": 1}],
        "amount": 569,
        "request_hash": "h1",
    }
    event = only_event(order)
    assert event.amount == 569
    assert order.refunded_amount == 569
    assert order.refunded_quantities == {"L1": 1, "L2": 0}
    assert order.refundable_amount() == 3_733 - 569


def test_the_last_refund_settles_rounding_and_shipping_so_everything_paid_is_refunded() -> None:
    order = paid(points=2_600)

    amounts = [
        order.refund("r1", [("L1", 1)], "h1", T0, MEMBER)["amount"],  # type: ignore[index]
        order.refund("r2", [("L1", 1)], "h2", T0, MEMBER)["amount"],  # type: ignore[index]
        order.refund("r3", [("L2", 1)], "h3", T0, MEMBER)["amount"],  # type: ignore[index]
        order.refund("r4", [("L1", 1), ("L2", 1)], "h4", T0, MEMBER)["amount"],  # type: ignore[index]
    ]

    # Line 2 is 2,000 of 5,333: 1,024 of the goods paid, 512 per unit.
    assert amounts[:3] == [569, 569, 512]
    assert amounts[3] == 3_733 - 569 - 569 - 512  # includes the shipping fee and rounding
    assert sum(amounts) == order.paid_amount == order.refunded_amount
    assert order.refundable_amount() == 0
    assert order.refunded_quantities == {"L1": 3, "L2": 2}


def test_a_refund_of_everything_refunds_exactly_what_was_paid() -> None:
    order = paid(points=2_400, coupon=CouponTerms("fixed", 333, 0))
    record = order.refund("r1", None, "h", T0, MEMBER)
    assert record is not None
    assert record["amount"] == order.paid_amount
    assert record["lines"] == [{"line_id": "L1", "quantity": 3}, {"line_id": "L2", "quantity": 2}]


def test_a_refund_of_everything_after_a_partial_one_refunds_the_rest() -> None:
    order = paid(points=2_600)
    order.refund("r1", [("L2", 2)], "h1", T0, MEMBER)
    record = order.refund("r2", None, "h2", T0, MEMBER)
    assert record is not None
    assert record["lines"] == [{"line_id": "L1", "quantity": 3}]
    assert order.refunded_amount == order.paid_amount


def test_naming_every_remaining_unit_settles_the_rest_even_in_one_request() -> None:
    order = paid(points=2_600)
    record = order.refund("r1", [("L2", 2), ("L1", 3)], "h", T0, MEMBER)
    assert record is not None
    assert record["amount"] == 3_733


def test_quantities_for_the_same_line_in_one_request_add_up() -> None:
    order = paid(points=2_600)
    record = order.refund("r1", [("L1", 1), ("L1", 1)], "h", T0, MEMBER)
    assert record is not None
    assert record["lines"] == [{"line_id": "L1", "quantity": 2}]
    assert record["amount"] == 1_708 * 2 // 3
    assert order.refunded_quantities["L1"] == 2


@pytest.mark.parametrize("seed", range(25))
def test_partial_refunds_never_exceed_and_always_end_at_what_was_paid(seed: int) -> None:
    rng = random.Random(seed)
    lines = [line(rng.randint(1, 7), rng.randint(1, 9_999), f"S{i}")
             for i in range(rng.randint(1, 5))]
    subtotal = sum(item["quantity"] * item["unit_price"] for item in lines)
    tier = rng.choice(["regular", "silver", "gold", "platinum"])
    coupon = CouponTerms("percent", rng.randint(1, 3_000), 0) if rng.random() < 0.5 else None
    pricing = placed(lines=lines, tier=tier, coupon=coupon).pricing
    cap = max_points_for(
        subtotal - pricing["tier_discount"] - pricing["coupon_discount"], RULES
    )
    points = rng.randrange(0, cap + 1, 100) if cap >= 100 else 0
    order = placed(lines=lines, tier=tier, coupon=coupon, points=points)
    order.pay("p", "card", order.total, None, "h", T0, MEMBER)
    order.collect_events()
    units = [item["line_id"] for item in order.lines for _ in range(item["quantity"])]
    rng.shuffle(units)

    refunded = 0
    number = 0
    while units:
        take = units[: rng.randint(1, len(units))]
        units = units[len(take):]
        number += 1
        record = order.refund(f"r{number}", [(line_id, 1) for line_id in take], f"h{number}",
                              T0, MEMBER)
        assert record is not None
        assert 0 <= record["amount"] <= order.paid_amount
        refunded += record["amount"]
        if units:
            # Before the last refund, the goods paid for are never over-refunded.
            goods_paid = order.paid_amount - order.pricing["shipping_fee"]
            assert refunded <= goods_paid
    assert refunded == order.paid_amount == order.refunded_amount
    assert subtotal == order.pricing["subtotal"]


def test_refunding_more_than_was_bought_is_rejected() -> None:
    order = paid()
    error = rejected(order, lambda: order.refund("r1", [("L1", 4)], "h", T0, MEMBER),
                     ValidationError, "lines.0.quantity")
    assert "L1" in error.message
    assert "3" in error.message


def test_refunding_more_than_is_left_is_rejected() -> None:
    order = paid()
    order.refund("r1", [("L1", 2)], "h1", T0, MEMBER)
    order.collect_events()
    rejected(order, lambda: order.refund("r2", [("L1", 2)], "h2", T0, MEMBER),
             ValidationError, "lines.0.quantity")
    rejected(order, lambda: order.refund("r3", [("L1", 1), ("L1", 1)], "h3", T0, MEMBER),
             ValidationError, "lines.1.quantity")
    assert order.refunded_quantities["L1"] == 2


def test_refunding_an_unknown_line_is_rejected() -> None:
    order = paid()
    error = rejected(order, lambda: order.refund("r1", [("L9", 1)], "h", T0, MEMBER),
                     NotFoundError, "lines.0.line_id")
    assert error.code == ErrorCode.NOT_FOUND
    rejected(order, lambda: order.refund("r1", [("L1", 1), ("L9", 1)], "h", T0, MEMBER),
             NotFoundError, "lines.1.line_id")


@pytest.mark.parametrize("quantity", [0, -1, 1.5, "1"])
def test_refund_quantities_must_be_positive_whole_numbers(quantity: Any) -> None:
    order = paid()
    rejected(order, lambda: order.refund("r1", [("L1", quantity)], "h", T0, MEMBER),
             ValidationError, "lines.0.quantity")


def test_a_refund_must_name_at_least_one_line() -> None:
    order = paid()
    rejected(order, lambda: order.refund("r1", [], "h", T0, MEMBER), ValidationError, "lines")


def test_nothing_is_left_to_refund_after_a_full_refund() -> None:
    order = paid()
    order.refund("r1", None, "h1", T0, MEMBER)
    order.collect_events()
    error = rejected(order, lambda: order.refund("r2", None, "h2", T0, MEMBER),
                     InvalidTransitionError)
    assert "nothing is left to refund" in error.message
    assert error.current_state == "paid"
    rejected(order, lambda: order.refund("r3", [("L1", 1)], "h3", T0, MEMBER), ValidationError)


def test_retrying_a_refund_with_the_same_id_and_request_is_a_no_op() -> None:
    order = paid()
    order.refund("r1", [("L1", 1)], "h1", T0, MEMBER)
    order.collect_events()
    state_before = copy.deepcopy(vars(order))

    assert order.refund("r1", [("L1", 1)], "h1", T0, MEMBER) is None
    assert order.collect_events() == []
    assert vars(order) == state_before


def test_a_retried_refund_is_a_no_op_even_once_everything_is_refunded() -> None:
    order = paid()
    order.refund("r1", None, "h1", T0, MEMBER)
    order.collect_events()
    assert order.refund("r1", None, "h1", T0, MEMBER) is None
    assert order.collect_events() == []


def test_reusing_a_refund_id_for_a_different_request_is_an_idempotency_conflict() -> None:
    order = paid()
    order.refund("r1", [("L1", 1)], "h1", T0, MEMBER)
    order.collect_events()
    rejected(order, lambda: order.refund("r1", [("L2", 1)], "h2", T0, MEMBER),
             IdempotencyConflictError, "idempotency_key")


@pytest.mark.parametrize("staff", [agent, admin], ids=["agent", "admin"])
def test_staff_refunds_need_a_reason(staff: Callable[..., EventMetadata]) -> None:
    order = delivered()
    rejected(order, lambda: order.refund("r1", [("L1", 1)], "h", T0, staff(None)),
             ReasonRequiredError, "meta.reason")
    order.refund("r1", [("L1", 1)], "h", T0, staff("parcel lost"))
    assert only_event(order).meta["reason"] == "parcel lost"


def test_a_member_refund_needs_no_reason() -> None:
    order = delivered()
    assert order.refund("r1", [("L1", 1)], "h", T0, MEMBER) is not None


def test_a_refund_event_carries_business_time() -> None:
    order = delivered()
    at = T0 + timedelta(days=4)
    order.refund("r1", [("L2", 1)], "h", at, MEMBER)
    assert only_event(order).timestamp == at
    assert order.refunds["r1"]["at"] == at.isoformat()


# -- reconstruction -------------------------------------------------------------------------


def test_reconstructing_an_order_from_its_events_yields_the_same_state() -> None:
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    order = place(points=2_600)
    order.record_payment_failure("card", order.total, None, "declined", T0, MEMBER)
    order.flag_for_review("repeated_payment_failures", "1 failure", T0, SYSTEM)
    order.pay("pay-1", "wechat_pay", order.total, "wx-1", "h", T0, MEMBER)
    order.mark_delivered(T0 + timedelta(days=2), SYSTEM)
    order.refund("r1", [("L1", 1)], "h1", T0 + timedelta(days=3), MEMBER)
    order.complete(T0 + timedelta(days=9), WINDOW, SYSTEM)
    app.save(order)

    copy_ = app.repository.get(order.id)

    assert isinstance(copy_, Order)
    assert copy_.version == order.version == 7
    assert vars(copy_) == vars(order)


# -- payment attempts ---------------------------------------------------------------------


def test_a_payment_attempt_is_for_the_amount_due_and_pays_nothing() -> None:
    order = placed()
    assert order.request_payment("pay_a", "alipay", "alipay", "h", T0, MEMBER) is True
    assert order.attempts["pay_a"]["amount"] == order.total
    assert (order.state, order.paid_amount) == ("placed", 0)
    assert order.request_payment("pay_a", "alipay", "alipay", "h", T0, MEMBER) is False
    with pytest.raises(IdempotencyConflictError):
        order.request_payment("pay_a", "alipay", "card", "other", T0, MEMBER)


@pytest.mark.parametrize("method", ["cash_on_delivery", "in_store", "store_credit"])
def test_cash_in_store_and_store_credit_never_go_to_a_provider(method: str) -> None:
    with pytest.raises(ValidationError) as refused:
        placed().request_payment("pay_a", "alipay", method, "h", T0, MEMBER)
    assert refused.value.field == "method"


def test_payment_attempts_are_bounded_and_only_for_unpaid_orders() -> None:
    order = placed()
    for index in range(20):
        order.request_payment(f"pay_{index}", "p", "card", "h", T0, MEMBER)
    with pytest.raises(DomainError) as limited:
        order.request_payment("pay_20", "p", "card", "h", T0, MEMBER)
    assert limited.value.code is ErrorCode.LIMIT_EXCEEDED
    with pytest.raises(InvalidTransitionError):
        paid().request_payment("pay_x", "p", "card", "h", T0, MEMBER)


def test_a_provider_event_is_seen_once_whether_it_paid_or_failed() -> None:
    order = placed()
    assert order.provider_event_seen("p:evt-1", "h1") is False
    order.record_payment_failure("card", order.total, "pay_a", "declined", T0, MEMBER,
                                 attempt_id="p:evt-1", request_hash="h1")
    assert order.provider_event_seen("p:evt-1", "h1") is True
    with pytest.raises(IdempotencyConflictError):
        order.provider_event_seen("p:evt-1", "h2")
    order.pay("p:evt-2", "card", order.total, "pay_a", "h3", T0, MEMBER)
    assert order.provider_event_seen("p:evt-2", "h3") is True
    with pytest.raises(IdempotencyConflictError):
        order.provider_event_seen("p:evt-2", "h1")


# -- pricing requested lines from the catalogue ---------------------------------------------


def listed(product_id: str, price: int, currency: str = "CNY",
           available: bool = True) -> CatalogueProduct:
    product = validate_product({"product_id": product_id, "name": product_id.title(),
                                "price": price, "currency": currency, "category": "Outdoor",
                                "available": available}, today=T0.date())
    return CatalogueProduct.list_product(product, T0, meta(Role.ADMIN, "range"))


def test_a_requested_line_names_only_a_product_and_a_quantity() -> None:
    assert requested_lines([{"product_id": " tent ", "quantity": 2}], 5) == [
        {"product_id": "tent", "quantity": 2}]
    for line, field in (
        ({"product_id": "tent", "quantity": 1, "unit_price": 1}, "lines.0.unit_price"),
        ({"product_id": "tent", "quantity": 1, "name": "x"}, "lines.0.name"),
        ({"product_id": "tent", "quantity": 6}, "lines.0.quantity"),
        ({"product_id": "tent", "quantity": True}, "lines.0.quantity"),
        ({"product_id": "", "quantity": 1}, "lines.0.product_id"),
    ):
        with pytest.raises(ValidationError) as error:
            requested_lines([line], 5)
        assert error.value.field == field, line


def test_lines_are_priced_and_described_by_the_catalogue_within_the_order_limit() -> None:
    products = {"tent": listed("tent", 30_000), "mug": listed("mug", 1_000)}
    requested = [{"product_id": "tent", "quantity": 2}, {"product_id": "mug", "quantity": 1}]
    lines = price_lines(requested, products, {}, "CNY", 61_000, MEMBER)
    assert [(x["line_id"], x["sku"], x["name"], x["category"], x["unit_price"])
            for x in lines] == [("L1", "tent", "Tent", "outdoor", 30_000),
                                ("L2", "mug", "Mug", "outdoor", 1_000)]
    with pytest.raises(ValidationError) as over:
        price_lines(requested, products, {}, "CNY", 60_999, MEMBER)
    assert over.value.field == "lines"
    with pytest.raises(ValidationError) as line_over:
        price_lines(requested, products, {}, "CNY", 59_999, MEMBER)
    assert line_over.value.field == "lines.0.quantity"
    for catalogue, field, error_type in (
        ({"tent": None, "mug": products["mug"]}, "lines.0.product_id", NotFoundError),
        ({**products, "mug": listed("mug", 1_000, available=False)}, "lines.1.product_id",
         ValidationError),
        ({**products, "mug": listed("mug", 1_000, currency="EUR")}, "lines.1.product_id",
         ValidationError),
    ):
        with pytest.raises(error_type) as refused:
            price_lines(requested, catalogue, {}, "CNY", 10**9, MEMBER)
        assert refused.value.field == field


def test_only_staff_override_a_price_each_with_a_reason_kept_beside_the_catalogue_price(
) -> None:
    agent = meta(Role.AGENT, "phone order")
    with pytest.raises(ForbiddenError):
        price_overrides([{"line": 0, "unit_price": 1, "reason": "please"}], 1, MEMBER)
    chosen = price_overrides([{"line": 0, "unit_price": 25_000, "reason": " scratched "}], 1,
                             agent)
    (line,) = price_lines([{"product_id": "tent", "quantity": 1}],
                          {"tent": listed("tent", 30_000)}, chosen, "CNY", 10**9, agent)
    assert line["unit_price"] == 25_000
    assert line["price_override"] == {"catalogue_price": 30_000, "reason": "scratched",
                                      "actor_id": "agent-1", "actor_role": "agent"}
    with pytest.raises(ValidationError) as over:
        price_lines([{"product_id": "tent", "quantity": 1}], {"tent": listed("tent", 1)},
                    price_overrides([{"line": 0, "unit_price": 10**17, "reason": "typo"}], 1,
                                    agent), "CNY", 10**9, agent)
    assert over.value.field == "price_overrides.0.unit_price"
