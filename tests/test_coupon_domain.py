"""Coupons and rewards as a specification: pure domain, no storage.

A coupon is single use: reserved by an order of its owner while it is valid, released only by
that order, used only after being reserved by it. A reward has stock and a per-member limit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application

from domain.coupon import (
    MAX_VALIDITY,
    Coupon,
    CouponKind,
    CouponSource,
    CouponStatus,
    Reward,
    validate_terms,
    validate_window,
)
from domain.errors import (
    DomainError,
    ErrorCode,
    InvalidTransitionError,
    LimitExceededError,
    ReasonRequiredError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role
from domain.pricing import CouponTerms

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
VALID_FROM = T0
VALID_UNTIL = T0 + 30 * DAY
TERMS = CouponTerms(kind="fixed", value=1_000, min_spend=5_000)


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
ADMIN = meta(Role.ADMIN, "campaign for loyal customers")


def issue(
    source: Any = CouponSource.WELCOME,
    valid_from: datetime = VALID_FROM,
    valid_until: datetime = VALID_UNTIL,
    who: EventMetadata = SYSTEM,
    terms: CouponTerms = TERMS,
) -> Coupon:
    return Coupon.issue(uuid4(), "member-1", source, terms, valid_from, valid_until, None, T0,
                        who)


def coupon() -> Coupon:
    issued = issue()
    issued.collect_events()
    return issued


def reserved(order_id: str = "order-1") -> Coupon:
    c = coupon()
    c.reserve("member-1", order_id, T0 + DAY, MEMBER)
    c.collect_events()
    return c


def define(
    stock: int = 10,
    per_member_limit: int = 1,
    who: EventMetadata = ADMIN,
    **overrides: Any,
) -> Reward:
    args: dict[str, Any] = {
        "name": "10 CNY off",
        "description": "  A coupon worth 10 CNY  ",
        "cost_points": 1_000,
        "stock": stock,
        "per_member_limit": per_member_limit,
        "valid_from": VALID_FROM,
        "valid_until": VALID_UNTIL,
        "terms": TERMS,
        "coupon_valid_days": 30,
        **overrides,
    }
    return Reward.define(**args, now=T0, meta=who)


def reward(**kwargs: Any) -> Reward:
    defined = define(**kwargs)
    defined.collect_events()
    return defined


def rejected(
    aggregate: Coupon | Reward,
    command: Callable[[], Any],
    error: type[DomainError],
    field: str | None = None,
) -> Any:
    """Run a command that must fail; it must record nothing and change nothing."""
    assert aggregate.collect_events() == []
    state_before = copy.deepcopy(vars(aggregate))
    with pytest.raises(error) as caught:
        command()
    if field is not None:
        assert caught.value.field == field
    assert aggregate.collect_events() == []
    assert vars(aggregate) == state_before
    return caught.value


def event_names(aggregate: Coupon | Reward) -> list[str]:
    return [type(e).__qualname__ for e in aggregate.collect_events()]


# -- coupon terms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "min_spend"),
    [("fixed", 1, 0), ("fixed", 1_000, 5_000), ("percent", 1, 0), ("percent", 10_000, 100)],
)
def test_valid_terms_become_coupon_terms(kind: str, value: int, min_spend: int) -> None:
    assert validate_terms(kind, value, min_spend) == CouponTerms(kind, value, min_spend)
    assert validate_terms(CouponKind(kind), value, min_spend).kind == kind


@pytest.mark.parametrize(
    ("kind", "value", "min_spend", "field"),
    [
        ("voucher", 1_000, 0, "kind"),
        ("FIXED", 1_000, 0, "kind"),
        (None, 1_000, 0, "kind"),
        ("fixed", 0, 0, "value"),
        ("fixed", -100, 0, "value"),
        ("fixed", True, 0, "value"),
        ("fixed", 9.5, 0, "value"),
        ("fixed", "1000", 0, "value"),
        ("percent", 10_001, 0, "value"),
        ("fixed", 1_000, -1, "min_spend"),
        ("fixed", 1_000, False, "min_spend"),
        ("fixed", 1_000, 50.0, "min_spend"),
        ("fixed", 1_000, None, "min_spend"),
    ],
)
def test_invalid_terms_are_rejected_naming_the_field(
    kind: Any, value: Any, min_spend: Any, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_terms(kind, value, min_spend)
    assert caught.value.field == field
    assert caught.value.code == ErrorCode.VALIDATION


def test_a_validity_window_needs_time_zones_a_positive_length_and_at_most_ten_years() -> None:
    validate_window(T0, T0 + timedelta(seconds=1))
    validate_window(T0, T0 + MAX_VALIDITY)
    naive = datetime(2026, 5, 1, 8, 0)
    for start, end in (
        (naive, VALID_UNTIL),
        (T0, naive + DAY),
        (T0, T0),
        (T0, T0 - DAY),
        (T0, T0 + MAX_VALIDITY + timedelta(seconds=1)),
    ):
        with pytest.raises(ValidationError) as caught:
            validate_window(start, end)
        assert caught.value.field == "valid_until"


# -- issuing --------------------------------------------------------------------------------


def test_an_issued_coupon_is_available_to_its_owner_with_its_terms() -> None:
    c = issue()
    (event,) = c.collect_events()
    assert type(event).__qualname__ == "Coupon.Issued"
    assert event.valid_from == VALID_FROM.isoformat()
    assert c.member_id == "member-1"
    assert c.status == CouponStatus.AVAILABLE
    assert c.order_id is None
    assert c.source == "welcome"
    assert c.coupon_terms == TERMS


@pytest.mark.parametrize("source", [s for s in CouponSource if s != CouponSource.ADMIN])
def test_coupons_from_the_system_need_no_reason(source: CouponSource) -> None:
    assert issue(source=source.value).source == source.value


def test_an_admin_coupon_needs_a_reason() -> None:
    with pytest.raises(ReasonRequiredError):
        issue(source="admin", who=meta(Role.ADMIN))
    assert issue(source="admin", who=ADMIN).source == "admin"


def test_an_unknown_coupon_source_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        issue(source="lottery")
    assert caught.value.field == "source"


def test_a_coupon_with_a_bad_window_is_not_issued() -> None:
    with pytest.raises(ValidationError):
        issue(valid_until=VALID_FROM)


# -- reserving ------------------------------------------------------------------------------


def test_the_owner_reserves_an_available_coupon_for_an_order_while_it_is_valid() -> None:
    c = coupon()
    c.reserve("member-1", "order-1", T0 + DAY, MEMBER)
    assert event_names(c) == ["Coupon.Reserved"]
    assert c.status == CouponStatus.RESERVED
    assert c.order_id == "order-1"


def test_another_member_cannot_reserve_the_coupon() -> None:
    c = coupon()
    error = rejected(c, lambda: c.reserve("member-2", "order-1", T0 + DAY, MEMBER),
                     ValidationError, "coupon_id")
    assert "another member" in error.message
    assert c.status == CouponStatus.AVAILABLE


def test_a_coupon_is_usable_from_its_start_until_just_before_its_end() -> None:
    c = coupon()
    assert c.usable_at(VALID_FROM)
    assert c.usable_at(VALID_UNTIL - timedelta(microseconds=1))
    assert not c.usable_at(VALID_FROM - timedelta(microseconds=1))
    assert not c.usable_at(VALID_UNTIL)


@pytest.mark.parametrize(
    "now", [VALID_FROM - timedelta(seconds=1), VALID_UNTIL, VALID_UNTIL + 365 * DAY]
)
def test_a_coupon_cannot_be_reserved_outside_its_validity_window(now: datetime) -> None:
    c = coupon()
    error = rejected(c, lambda: c.reserve("member-1", "order-1", now, MEMBER), ValidationError,
                     "coupon_id")
    assert VALID_UNTIL.isoformat() in error.message


@pytest.mark.parametrize("now", [VALID_FROM, VALID_UNTIL - timedelta(seconds=1)])
def test_a_coupon_can_be_reserved_at_the_edges_of_its_window(now: datetime) -> None:
    c = coupon()
    c.reserve("member-1", "order-1", now, MEMBER)
    assert c.status == CouponStatus.RESERVED


def test_a_reserved_coupon_cannot_be_reserved_again() -> None:
    c = reserved("order-1")
    for order_id in ("order-1", "order-2"):
        error = rejected(c, lambda o=order_id: c.reserve("member-1", o, T0 + DAY, MEMBER),
                         InvalidTransitionError, "coupon_id")
        assert error.current_state == "reserved"
        assert error.attempted == "reserve"
        assert "reserved" in error.message
    assert c.order_id == "order-1"


def test_a_used_coupon_cannot_be_reserved() -> None:
    c = reserved("order-1")
    c.use("order-1", T0 + DAY, MEMBER)
    c.collect_events()
    error = rejected(c, lambda: c.reserve("member-1", "order-2", T0 + DAY, MEMBER),
                     InvalidTransitionError)
    assert error.current_state == "used"


# -- releasing ------------------------------------------------------------------------------


def test_the_reserving_order_releases_the_coupon_for_reuse() -> None:
    c = reserved("order-1")
    c.release("order-1", T0 + 2 * DAY, MEMBER)
    assert event_names(c) == ["Coupon.Released"]
    assert c.status == CouponStatus.AVAILABLE
    assert c.order_id is None

    c.reserve("member-1", "order-2", T0 + 3 * DAY, MEMBER)
    assert c.order_id == "order-2"


def test_another_order_cannot_release_the_coupon() -> None:
    c = reserved("order-1")
    c.release("order-2", T0 + 2 * DAY, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.RESERVED
    assert c.order_id == "order-1"


def test_releasing_an_available_coupon_does_nothing() -> None:
    c = coupon()
    c.release("order-1", T0, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.AVAILABLE


def test_a_used_coupon_comes_back_only_when_its_own_order_is_cancelled() -> None:
    c = reserved("order-1")
    c.use("order-1", T0 + DAY, MEMBER)
    c.collect_events()
    c.release("order-2", T0 + 2 * DAY, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.USED
    c.release("order-1", T0 + 2 * DAY, MEMBER)
    assert len(c.collect_events()) == 1
    assert c.status == CouponStatus.AVAILABLE and c.order_id is None


# -- using ----------------------------------------------------------------------------------


def test_a_reserved_coupon_is_used_by_its_order() -> None:
    c = reserved("order-1")
    c.use("order-1", T0 + 2 * DAY, MEMBER)
    assert event_names(c) == ["Coupon.Used"]
    assert c.status == CouponStatus.USED
    assert c.order_id == "order-1"


def test_a_reserved_coupon_is_used_even_if_it_expired_since_the_order_was_placed() -> None:
    c = reserved("order-1")
    c.use("order-1", VALID_UNTIL + DAY, MEMBER)
    assert c.status == CouponStatus.USED


def test_a_coupon_that_was_not_reserved_cannot_be_used() -> None:
    c = coupon()
    c.use("order-1", T0 + DAY, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.AVAILABLE


def test_another_order_cannot_use_a_reserved_coupon() -> None:
    c = reserved("order-1")
    c.use("order-2", T0 + DAY, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.RESERVED


def test_a_coupon_is_used_only_once() -> None:
    c = reserved("order-1")
    c.use("order-1", T0 + DAY, MEMBER)
    c.collect_events()
    c.use("order-1", T0 + DAY, MEMBER)
    assert c.collect_events() == []


def test_a_released_coupon_cannot_be_used_by_the_order_that_released_it() -> None:
    c = reserved("order-1")
    c.release("order-1", T0 + DAY, MEMBER)
    c.collect_events()
    c.use("order-1", T0 + DAY, MEMBER)
    assert c.collect_events() == []
    assert c.status == CouponStatus.AVAILABLE


# -- rewards --------------------------------------------------------------------------------


def test_an_admin_defines_a_reward_with_a_reason() -> None:
    r = define(stock=5, per_member_limit=2)
    (event,) = r.collect_events()
    assert type(event).__qualname__ == "Reward.Defined"
    assert event.meta["reason"] == "campaign for loyal customers"
    assert r.name == "10 CNY off"
    assert r.description == "A coupon worth 10 CNY"
    assert r.stock == 5
    assert r.per_member_limit == 2
    assert r.coupon == {"kind": "fixed", "value": 1_000, "min_spend": 5_000}
    assert validate_terms(**r.coupon) == TERMS
    assert r.taken_by == {}


def test_defining_a_reward_needs_a_reason() -> None:
    with pytest.raises(ReasonRequiredError):
        define(who=meta(Role.ADMIN))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"cost_points": 0}, "cost_points"),
        ({"cost_points": True}, "cost_points"),
        ({"stock": -1}, "stock"),
        ({"per_member_limit": 0}, "per_member_limit"),
        ({"coupon_valid_days": 0}, "coupon_valid_days"),
        ({"coupon_valid_days": 1.5}, "coupon_valid_days"),
        ({"valid_until": VALID_FROM}, "valid_until"),
    ],
)
def test_invalid_reward_definitions_are_rejected(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        define(**overrides)
    assert caught.value.field == field


def test_taking_a_reward_decrements_stock_and_counts_per_member() -> None:
    r = reward(stock=3, per_member_limit=2)
    r.take("member-1", "redeem-1", T0 + DAY, MEMBER)
    assert event_names(r) == ["Reward.Taken"]
    r.take("member-2", "redeem-2", T0 + DAY, MEMBER)
    r.collect_events()
    assert r.stock == 1
    assert r.taken_by == {"member-1": 1, "member-2": 1}


def test_a_member_cannot_take_a_reward_more_often_than_its_limit() -> None:
    r = reward(stock=10, per_member_limit=2)
    r.take("member-1", "redeem-1", T0 + DAY, MEMBER)
    r.take("member-1", "redeem-2", T0 + DAY, MEMBER)
    r.collect_events()

    error = rejected(r, lambda: r.take("member-1", "redeem-3", T0 + DAY, MEMBER),
                     LimitExceededError, "reward_id")
    assert error.code == ErrorCode.LIMIT_EXCEEDED
    assert "2" in error.message

    r.take("member-2", "redeem-4", T0 + DAY, MEMBER)
    assert r.stock == 7


def test_nobody_can_take_a_reward_that_is_out_of_stock() -> None:
    r = reward(stock=1, per_member_limit=5)
    r.take("member-1", "redeem-1", T0 + DAY, MEMBER)
    r.collect_events()
    assert r.stock == 0
    for member in ("member-1", "member-2"):
        error = rejected(r, lambda m=member: r.take(m, "redeem-x", T0 + DAY, MEMBER),
                         LimitExceededError, "reward_id")
        assert "out of stock" in error.message


def test_a_reward_defined_without_stock_cannot_be_taken() -> None:
    r = reward(stock=0)
    rejected(r, lambda: r.take("member-1", "redeem-1", T0 + DAY, MEMBER), LimitExceededError)


@pytest.mark.parametrize(
    "now", [VALID_FROM - timedelta(seconds=1), VALID_UNTIL, VALID_UNTIL + DAY]
)
def test_a_reward_can_only_be_taken_within_its_window(now: datetime) -> None:
    r = reward()
    rejected(r, lambda: r.take("member-1", "redeem-1", now, MEMBER), ValidationError,
             "reward_id")


@pytest.mark.parametrize("now", [VALID_FROM, VALID_UNTIL - timedelta(seconds=1)])
def test_a_reward_can_be_taken_at_the_edges_of_its_window(now: datetime) -> None:
    r = reward()
    r.take("member-1", "redeem-1", now, MEMBER)
    assert r.stock == 9


# -- reconstruction -------------------------------------------------------------------------


def test_reconstructing_coupons_and_rewards_from_their_events_yields_the_same_state() -> None:
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    c = issue(terms=CouponTerms("percent", 1_500, 0))
    c.reserve("member-1", "order-1", T0 + DAY, MEMBER)
    c.release("order-1", T0 + DAY, MEMBER)
    c.reserve("member-1", "order-2", T0 + 2 * DAY, MEMBER)
    c.use("order-2", T0 + 2 * DAY, MEMBER)
    r = define(stock=3, per_member_limit=2)
    r.take("member-1", "redeem-1", T0 + DAY, MEMBER)
    r.take("member-2", "redeem-2", T0 + DAY, MEMBER)
    app.save(c, r)

    coupon_copy = app.repository.get(c.id)
    reward_copy = app.repository.get(r.id)

    assert isinstance(coupon_copy, Coupon)
    assert vars(coupon_copy) == vars(c)
    assert coupon_copy.status == CouponStatus.USED
    assert isinstance(reward_copy, Reward)
    assert vars(reward_copy) == vars(r)
    assert reward_copy.stock == 1
