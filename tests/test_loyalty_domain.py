"""The LoyaltyAccount aggregate as a specification: pure domain, no storage.

Points live in lots. Order points are pending until released, other credits are available at
once; available lots expire at the end of the 12th month after they became available, debits
take the soonest-expiring lots first, claw-backs take pending, then available, then record
debt, and later credits settle debt first. Time only moves when a test passes a new `now`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.application import Application

from domain.errors import (
    DomainError,
    ErrorCode,
    IdempotencyConflictError,
    InsufficientPointsError,
    LimitExceededError,
    ReasonRequiredError,
    ValidationError,
)
from domain.loyalty import (
    CreditSource,
    DebitKind,
    LotStatus,
    LoyaltyAccount,
    account_id_for,
    add_months,
    expiry_for,
)
from domain.loyalty_rules import LoyaltyRules, Tier
from domain.metadata import Channel, EventMetadata, Role

RULES = LoyaltyRules()
MAX_ADJUSTMENT = RULES.max_points_adjustment  # one credit or debit moves at most this
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def meta(role: Role = Role.SYSTEM, reason: str | None = None) -> EventMetadata:
    return EventMetadata(
        actor_id=f"{role.value}-1",
        actor_role=role,
        channel=Channel.ADMIN if role.is_staff else Channel.SYSTEM,
        correlation_id="corr-1",
        causation_id=None,
        request_id="req-1",
        reason=reason,
    )


SYSTEM = meta()
MEMBER = meta(Role.MEMBER)
ADMIN = meta(Role.ADMIN, "goodwill for a late delivery")
ADMIN_WITHOUT_REASON = meta(Role.ADMIN)


def at(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def account() -> LoyaltyAccount:
    opened = LoyaltyAccount.open("member-1", T0, SYSTEM)
    opened.collect_events()
    return opened


def earn(acc: LoyaltyAccount, order_id: str, paid: int, now: datetime = T0) -> None:
    acc.earn_for_payment(order_id, paid, RULES, now, SYSTEM)


def release(acc: LoyaltyAccount, order_id: str, now: datetime) -> None:
    assert acc.schedule_release(order_id, now, now, SYSTEM)
    assert acc.release_due(now, RULES, SYSTEM) >= 1


def give(
    acc: LoyaltyAccount,
    points: int,
    now: datetime = T0,
    source: CreditSource = CreditSource.CAMPAIGN,
    ref: str = "spring-campaign",
) -> str:
    """Credit available points; returns the new lot's id."""
    before = set(acc.lots)
    assert acc.credit(source, ref, points, RULES, now, SYSTEM)
    (lot_id,) = set(acc.lots) - before
    return lot_id


def redeem(acc: LoyaltyAccount, points: int, now: datetime = T0, ref: str = "reward-1") -> None:
    acc.debit(points, DebitKind.REWARD, ref, RULES, now, MEMBER)


def names(events: list[Any]) -> list[str]:
    return [type(event).__qualname__.removeprefix("LoyaltyAccount.") for event in events]


def rejected(
    acc: LoyaltyAccount,
    command: Callable[[], Any],
    error: type[DomainError],
    field: str | None = None,
) -> Any:
    """Run a command that must fail; it must record nothing and change nothing."""
    assert acc.collect_events() == []
    state_before = copy.deepcopy(vars(acc))
    with pytest.raises(error) as caught:
        command()
    if field is not None:
        assert caught.value.field == field
    assert acc.collect_events() == []
    assert vars(acc) == state_before
    return caught.value


def assert_consistent(acc: LoyaltyAccount) -> None:
    assert acc.available >= 0
    assert acc.pending >= 0
    assert acc.debt >= 0
    for lot in acc.lots.values():
        assert 0 <= lot["remaining"] <= lot["points"], lot


# -- opening --------------------------------------------------------------------------------


def test_an_account_is_opened_per_member_with_a_stable_id_and_nothing_in_it() -> None:
    acc = LoyaltyAccount.open("member-1", T0, SYSTEM)

    assert names(acc.collect_events()) == ["Opened"]
    assert acc.id == account_id_for("member-1") == account_id_for("member-1")
    assert acc.id != account_id_for("member-2")
    assert acc.member_id == "member-1"
    assert acc.tier == Tier.REGULAR
    assert (acc.available, acc.pending, acc.debt) == (0, 0, 0)
    assert acc.maintenance_due is None
    assert acc.tier_history == []


# -- earning and release --------------------------------------------------------------------


def test_a_payment_records_spend_and_pending_points_at_the_tier_rate() -> None:
    acc = account()

    earn(acc, "order-1", 12_345)

    events = acc.collect_events()
    assert names(events) == ["SpendRecorded", "PointsEarned"]
    assert events[0].amount == 12_345
    assert events[1].points == 123
    assert events[1].pending is True
    assert all(event.timestamp == T0 for event in events)
    assert acc.pending == 123
    assert acc.available == 0
    lot = acc.lots["order:order-1"]
    assert lot["status"] == LotStatus.PENDING
    assert lot["expires_at"] is None
    assert lot["release_at"] is None
    assert acc.qualifying_spend(T0, RULES) == 12_345


@pytest.mark.parametrize(
    ("tier", "spend_to_reach_it", "points"),
    [
        (Tier.REGULAR, 0, 100),
        (Tier.SILVER, 200_000, 120),
        (Tier.GOLD, 800_000, 150),
        (Tier.PLATINUM, 2_000_000, 200),
    ],
)
def test_order_points_apply_the_tier_multiplier(
    tier: Tier, spend_to_reach_it: int, points: int
) -> None:
    acc = account()
    if spend_to_reach_it:
        earn(acc, "big-order", spend_to_reach_it)
    assert acc.tier == tier

    earn(acc, "order-1", 10_000, T0 + DAY)

    assert acc.lots["order:order-1"]["points"] == points


def test_the_payment_that_crosses_a_threshold_earns_at_the_tier_held_when_paying() -> None:
    acc = account()
    earn(acc, "order-1", 200_000)
    assert names(acc.collect_events()) == ["SpendRecorded", "PointsEarned", "TierChanged"]
    assert acc.lots["order:order-1"]["points"] == 2_000  # 1.0x, not silver's 1.2x
    assert acc.tier == Tier.SILVER


def test_a_payment_too_small_to_earn_a_point_records_only_the_spend() -> None:
    acc = account()
    earn(acc, "order-1", 99)
    assert names(acc.collect_events()) == ["SpendRecorded"]
    assert acc.lots == {}


def test_pending_points_are_released_once_the_scheduled_moment_arrives() -> None:
    acc = account()
    earn(acc, "order-1", 12_345)
    acc.collect_events()
    release_at = T0 + 7 * DAY

    assert acc.schedule_release("order-1", release_at, T0 + 2 * DAY, SYSTEM) is True
    assert names(acc.collect_events()) == ["ReleaseScheduled"]
    assert acc.release_due(release_at - timedelta(microseconds=1), RULES, SYSTEM) == 0
    assert acc.collect_events() == []
    assert acc.pending == 123

    assert acc.release_due(release_at, RULES, SYSTEM) == 1

    events = acc.collect_events()
    assert names(events) == ["PointsReleased"]
    assert events[0].settled_debt == 0
    assert acc.pending == 0
    assert acc.available == 123
    lot = acc.lots["order:order-1"]
    assert lot["status"] == LotStatus.AVAILABLE
    assert lot["available_at"] == release_at.isoformat()
    assert lot["expires_at"] == "2027-02-01T00:00:00+00:00"
    assert acc.release_due(release_at + DAY, RULES, SYSTEM) == 0
    assert acc.collect_events() == []


def test_a_release_is_scheduled_once_and_only_for_a_pending_order_lot() -> None:
    acc = account()
    earn(acc, "order-1", 10_000)
    acc.collect_events()
    assert acc.schedule_release("order-1", T0 + 7 * DAY, T0, SYSTEM) is True
    acc.collect_events()

    assert acc.schedule_release("order-1", T0 + 9 * DAY, T0, SYSTEM) is False
    assert acc.schedule_release("order-unknown", T0 + 9 * DAY, T0, SYSTEM) is False
    assert acc.collect_events() == []
    assert acc.lots["order:order-1"]["release_at"] == (T0 + 7 * DAY).isoformat()


def test_pending_points_without_a_scheduled_release_stay_pending() -> None:
    acc = account()
    earn(acc, "order-1", 10_000)
    acc.collect_events()
    assert acc.release_due(T0 + 365 * DAY, RULES, SYSTEM) == 0
    assert acc.collect_events() == []
    assert acc.pending == 100


def test_other_credits_are_available_at_once_and_expire_like_released_points() -> None:
    acc = account()
    lot_id = give(acc, 50, at(2026, 3, 15, 10), CreditSource.PROFILE_COMPLETION, "profile")
    event = acc.collect_events()[0]
    assert event.pending is False
    assert acc.available == 50
    assert acc.lots[lot_id]["expires_at"] == "2027-04-01T00:00:00+00:00"


# -- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available_at", "expires_at"),
    [
        (datetime(2026, 3, 15, 10, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
        (datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
        (datetime(2026, 1, 31, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
        (datetime(2026, 11, 30, tzinfo=UTC), datetime(2027, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 12, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)),
        (datetime(2028, 2, 29, tzinfo=UTC), datetime(2029, 3, 1, tzinfo=UTC)),
        # Months are counted in UTC whatever the offset of the moment given.
        (
            datetime(2026, 3, 31, 20, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2027, 5, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 4, 1, 7, tzinfo=timezone(timedelta(hours=8))),
            datetime(2027, 4, 1, tzinfo=UTC),
        ),
    ],
)
def test_points_expire_at_the_first_instant_after_the_12th_month_after_availability(
    available_at: datetime, expires_at: datetime
) -> None:
    assert expiry_for(available_at, RULES.points_expiry_months) == expires_at


def test_released_order_points_expire_at_the_end_of_the_12th_month_after_release() -> None:
    acc = account()
    earn(acc, "order-1", 10_000, at(2026, 3, 8))
    release(acc, "order-1", datetime(2026, 3, 15, 10, tzinfo=UTC))
    assert acc.lots["order:order-1"]["expires_at"] == "2027-04-01T00:00:00+00:00"


def test_add_months_clamps_to_the_end_of_shorter_months() -> None:
    assert add_months(at(2026, 1, 31), 1) == at(2026, 2, 28)
    assert add_months(at(2028, 1, 31), 1) == at(2028, 2, 29)
    assert add_months(at(2026, 3, 31), -1) == at(2026, 2, 28)
    assert add_months(at(2026, 1, 15), -12) == at(2025, 1, 15)
    assert add_months(at(2026, 12, 15), 1) == at(2027, 1, 15)


def test_debits_take_the_soonest_expiring_lots_first_not_the_oldest() -> None:
    acc = account()
    earn(acc, "order-1", 10_000, at(2026, 1, 10))  # oldest lot, released last
    campaign = give(acc, 200, at(2026, 2, 1))  # expires 2027-03-01
    review = give(acc, 100, at(2026, 4, 20), CreditSource.REVIEW, "review:o:L1")  # 2027-05-01
    release(acc, "order-1", at(2026, 6, 10))  # expires 2027-07-01
    acc.collect_events()
    assert acc.available == 400

    redeem(acc, 250, at(2026, 7, 1))

    (event,) = acc.collect_events()
    assert event.allocations == [
        {"lot_id": campaign, "points": 200},
        {"lot_id": review, "points": 50},
    ]
    assert acc.lots[campaign]["status"] == LotStatus.CONSUMED
    assert acc.lots[campaign]["remaining"] == 0
    assert acc.lots[review]["remaining"] == 50
    assert acc.lots["order:order-1"]["remaining"] == 100
    assert acc.available == 150


def test_lots_expiring_together_are_consumed_oldest_first() -> None:
    acc = account()
    first = give(acc, 100, at(2026, 3, 2))
    second = give(acc, 100, at(2026, 3, 20))
    acc.collect_events()
    redeem(acc, 150, at(2026, 4, 1))
    assert acc.collect_events()[0].allocations == [
        {"lot_id": first, "points": 100},
        {"lot_id": second, "points": 50},
    ]


def test_expire_due_expires_each_due_lot_once_with_what_remains_of_it() -> None:
    acc = account()
    campaign = give(acc, 200, at(2026, 2, 1))  # expires 2027-03-01
    spent = give(acc, 100, at(2026, 2, 1))  # expires 2027-03-01 too
    earn(acc, "order-1", 10_000, at(2026, 2, 1))  # pending: never expires
    redeem(acc, 100, at(2026, 2, 2))  # from `campaign`, the older of the two
    redeem(acc, 200, at(2026, 2, 3))  # the rest of `campaign` and all of `spent`
    partly_used = give(acc, 80, at(2026, 2, 5))  # expires 2027-03-01
    acc.debit(50, DebitKind.ADJUSTMENT, "fix", RULES, at(2026, 2, 6), ADMIN)  # 30 left
    review = give(acc, 100, at(2026, 4, 20), CreditSource.REVIEW, "review:o:L1")  # 2027-05-01
    acc.collect_events()
    assert acc.lots[campaign]["status"] == acc.lots[spent]["status"] == LotStatus.CONSUMED
    assert acc.available == 130

    assert acc.expire_due(at(2027, 3, 1, 0) - timedelta(microseconds=1), SYSTEM) == 0
    assert acc.collect_events() == []

    assert acc.expire_due(at(2027, 3, 1, 0), SYSTEM) == 1
    (event,) = acc.collect_events()
    assert names([event]) == ["PointsExpired"]
    assert (event.lot_id, event.points) == (partly_used, 30)
    assert acc.lots[partly_used]["status"] == LotStatus.EXPIRED
    assert acc.available == 100

    assert acc.expire_due(at(2027, 3, 1, 0), SYSTEM) == 0
    assert acc.expire_due(at(2027, 4, 30), SYSTEM) == 0
    assert acc.collect_events() == []

    assert acc.expire_due(at(2027, 5, 1, 0), SYSTEM) == 1
    (event,) = acc.collect_events()
    assert (event.lot_id, event.points) == (review, 100)
    assert acc.lots[review]["status"] == LotStatus.EXPIRED
    assert acc.lots[review]["remaining"] == 0
    assert acc.available == 0
    assert acc.pending == 100
    assert acc.expire_due(at(2030, 1, 1), SYSTEM) == 0
    assert acc.collect_events() == []


def test_expire_due_emits_one_expiry_per_due_lot() -> None:
    acc = account()
    lots = [give(acc, 100 + n, at(2026, 2, 1 + n)) for n in range(3)]
    acc.collect_events()
    assert acc.expire_due(at(2027, 3, 1), SYSTEM) == 3
    events = acc.collect_events()
    assert [(e.lot_id, e.points) for e in events] == [
        (lots[0], 100), (lots[1], 101), (lots[2], 102),
    ]
    assert acc.expire_due(at(2027, 3, 1), SYSTEM) == 0
    assert acc.collect_events() == []


def test_a_lot_used_up_settling_debt_has_nothing_left_to_expire() -> None:
    acc = account()
    earn(acc, "order-1", 30_000, at(2026, 1, 10))  # 300 points
    release(acc, "order-1", at(2026, 1, 17))
    redeem(acc, 300, at(2026, 1, 18))
    acc.claw_back("order-1", 30_000, 30_000, at(2026, 1, 19), SYSTEM, refund_amount=30_000)
    assert acc.debt == 300
    settling = give(acc, 300, at(2026, 1, 20))  # expires 2027-02-01, all of it settles debt
    assert acc.debt == 0
    assert acc.lots[settling]["remaining"] == 0
    acc.collect_events()

    expired = acc.expire_due(at(2027, 2, 1, 0), SYSTEM)

    assert acc.collect_events() == []  # no "0 points expired" entry in the member's history
    assert expired == 0


def test_points_past_their_expiry_cannot_be_spent_even_before_the_expiry_job_runs() -> None:
    acc = account()
    give(acc, 500, at(2026, 2, 1))  # expires 2027-03-01T00:00Z
    acc.collect_events()
    redeem(acc, 100, at(2027, 2, 28, 23))  # still valid the hour before
    acc.collect_events()

    rejected(acc, lambda: redeem(acc, 400, at(2027, 3, 1, 0)), InsufficientPointsError)


# -- redemption rules -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [DebitKind.REWARD, DebitKind.ORDER_PAYMENT])
def test_fewer_than_the_minimum_points_cannot_be_redeemed(kind: DebitKind) -> None:
    acc = account()
    give(acc, 1_000)
    acc.collect_events()
    error = rejected(acc, lambda: acc.debit(99, kind, "ref", RULES, T0, MEMBER),
                     ValidationError, "points")
    assert "100" in error.message
    acc.debit(100, kind, "ref", RULES, T0, MEMBER)
    assert acc.available == 900


def test_redemptions_are_limited_per_rolling_period_and_the_period_rolls() -> None:
    acc = account()
    give(acc, 200_000)
    acc.collect_events()
    first = at(2026, 2, 1)
    redeem(acc, 30_000, first)
    acc.debit(20_000, DebitKind.ORDER_PAYMENT, "order-9", RULES, first + 10 * DAY, MEMBER)
    acc.collect_events()
    assert acc.redeemed_in_period(first + 10 * DAY, RULES) == 50_000

    error = rejected(acc, lambda: redeem(acc, 100, first + 20 * DAY), LimitExceededError,
                     "points")
    assert error.code == ErrorCode.LIMIT_EXCEEDED
    assert "50000" in error.message
    rejected(acc, lambda: redeem(acc, 100, first + 30 * DAY - timedelta(seconds=1)),
             LimitExceededError)

    # Thirty days after the first redemption it no longer counts; the second still does.
    rejected(acc, lambda: redeem(acc, 30_100, first + 30 * DAY), LimitExceededError)
    redeem(acc, 30_000, first + 30 * DAY)
    assert acc.available == 200_000 - 80_000


def test_admin_adjustments_are_not_redemptions() -> None:
    acc = account()
    give(acc, 200_000)
    acc.collect_events()
    assert acc.debit(60_000, DebitKind.ADJUSTMENT, "fix", RULES, T0, ADMIN)
    assert acc.debit(50, DebitKind.ADJUSTMENT, "fix-2", RULES, T0, ADMIN)
    assert acc.redemptions == []
    redeem(acc, 50_000, T0)
    assert acc.available == 200_000 - 60_000 - 50 - 50_000


def test_points_cannot_be_spent_beyond_what_is_available() -> None:
    acc = account()
    give(acc, 150)
    earn(acc, "order-1", 10_000)  # 100 pending points cannot be spent
    acc.collect_events()

    error = rejected(acc, lambda: redeem(acc, 200), InsufficientPointsError, "points")
    assert error.code == ErrorCode.INSUFFICIENT_POINTS
    assert "150" in error.message
    rejected(acc, lambda: acc.debit(151, DebitKind.ADJUSTMENT, "fix", RULES, T0, ADMIN),
             InsufficientPointsError)

    redeem(acc, 150)
    acc.collect_events()
    assert acc.available == 0
    rejected(acc, lambda: redeem(acc, 100), InsufficientPointsError)
    assert acc.available == 0
    assert acc.pending == 100


@pytest.mark.parametrize("points", [0, -100, True, 1.5, MAX_ADJUSTMENT + 1])
def test_debits_need_a_positive_whole_number_of_points(points: Any) -> None:
    acc = account()
    give(acc, 1_000)
    acc.collect_events()
    rejected(acc, lambda: acc.debit(points, DebitKind.ADJUSTMENT, "x", RULES, T0, ADMIN),
             ValidationError, "points")


@pytest.mark.parametrize("seed", range(10))
def test_no_sequence_of_debits_drives_the_balance_negative(seed: int) -> None:
    rng = random.Random(seed)
    acc = account()
    now = T0
    for step in range(80):
        now += rng.choice([DAY, DAY, DAY, 45 * DAY])
        if rng.random() < 0.3:
            give(acc, rng.randint(1, 3_000), now)
        else:
            points = rng.randint(1, 40) * 100
            before = acc.available
            try:
                redeem(acc, points, now, ref=f"r{step}")
            except (InsufficientPointsError, LimitExceededError):
                assert acc.available == before
            else:
                assert acc.available == before - points
        acc.expire_due(now, SYSTEM)
        assert_consistent(acc)


# -- claw-back and debt ---------------------------------------------------------------------


def test_a_claw_back_takes_the_orders_pending_points_first() -> None:
    acc = account()
    earn(acc, "order-A", 100_000)  # 1,000 pending
    earn(acc, "order-B", 50_000)  # 500 pending, another order
    give(acc, 500)
    acc.collect_events()

    acc.claw_back("order-A", 100_000, 100_000, T0 + DAY, SYSTEM, refund_amount=100_000)

    events = acc.collect_events()
    assert names(events) == ["SpendRecorded", "PointsClawedBack"]
    assert events[0].amount == -100_000
    assert events[1].points == 1_000
    assert events[1].allocations == [{"lot_id": "order:order-A", "points": 1_000}]
    assert events[1].debt_added == 0
    assert acc.lots["order:order-A"]["status"] == LotStatus.REVERSED
    assert acc.lots["order:order-B"]["remaining"] == 500
    assert acc.pending == 500
    assert acc.available == 500
    assert acc.debt == 0


def test_a_claw_back_of_released_points_takes_available_points_then_records_debt() -> None:
    acc = account()
    earn(acc, "order-A", 100_000, at(2026, 1, 10))
    release(acc, "order-A", at(2026, 1, 17))  # expires 2027-02-01
    campaign = give(acc, 300, at(2026, 3, 1))  # expires 2027-04-01
    redeem(acc, 800, at(2026, 3, 2))  # from order-A's lot, the soonest to expire
    acc.collect_events()
    assert acc.available == 500

    acc.claw_back("order-A", 100_000, 100_000, at(2026, 3, 3), SYSTEM, refund_amount=100_000)

    (_, clawed) = acc.collect_events()
    assert clawed.points == 1_000
    assert clawed.allocations == [
        {"lot_id": "order:order-A", "points": 200},
        {"lot_id": campaign, "points": 300},
    ]
    assert clawed.debt_added == 500
    assert acc.available == 0
    assert acc.debt == 500
    assert_consistent(acc)


def test_later_credits_and_releases_settle_debt_before_anything_else() -> None:
    acc = account()
    earn(acc, "order-A", 100_000, at(2026, 1, 10))
    release(acc, "order-A", at(2026, 1, 17))
    redeem(acc, 1_000, at(2026, 2, 1))
    acc.claw_back("order-A", 100_000, 100_000, at(2026, 2, 2), SYSTEM, refund_amount=100_000)
    earn(acc, "order-B", 50_000, at(2026, 2, 3))  # 500 pending: earning settles nothing yet
    acc.collect_events()
    assert acc.debt == 1_000
    assert acc.lots["order:order-B"]["remaining"] == 500

    review = give(acc, 20, at(2026, 2, 4), CreditSource.REVIEW, "review:o:L1")
    assert acc.collect_events()[0].settled_debt == 20
    assert acc.lots[review]["remaining"] == 0
    assert (acc.debt, acc.available) == (980, 0)

    campaign = give(acc, 1_500, at(2026, 2, 5))
    assert acc.lots[campaign]["remaining"] == 520
    assert (acc.debt, acc.available) == (0, 520)

    give(acc, 30, at(2026, 2, 6))
    assert acc.available == 550
    assert_consistent(acc)


def test_a_release_settles_outstanding_debt_first() -> None:
    acc = account()
    earn(acc, "order-A", 100_000, at(2026, 1, 10))
    release(acc, "order-A", at(2026, 1, 17))
    redeem(acc, 1_000, at(2026, 2, 1))
    acc.claw_back("order-A", 100_000, 100_000, at(2026, 2, 2), SYSTEM, refund_amount=100_000)
    earn(acc, "order-B", 120_000, at(2026, 2, 3))  # 1,200 pending
    acc.collect_events()
    assert acc.debt == 1_000

    release(acc, "order-B", at(2026, 2, 10))

    (_, released) = acc.collect_events()
    assert released.settled_debt == 1_000
    assert acc.debt == 0
    assert acc.lots["order:order-B"]["remaining"] == 200
    assert acc.available == 200


def test_a_release_smaller_than_the_debt_settles_part_of_it() -> None:
    acc = account()
    earn(acc, "order-A", 100_000, at(2026, 1, 10))
    release(acc, "order-A", at(2026, 1, 17))
    redeem(acc, 1_000, at(2026, 2, 1))
    acc.claw_back("order-A", 100_000, 100_000, at(2026, 2, 2), SYSTEM, refund_amount=100_000)
    earn(acc, "order-B", 30_000, at(2026, 2, 3))
    release(acc, "order-B", at(2026, 2, 10))
    assert acc.debt == 700
    assert acc.available == 0
    assert_consistent(acc)


@pytest.mark.parametrize(
    "refunds",
    [
        [3_333, 3_333, 3_335],
        [1, 1, 1, 9_998],
        [5_000, 5_001],
        [9_999, 1, 1],  # the last refund only settles what remains
        [101] * 99 + [2],
    ],
)
def test_partial_refunds_claw_back_in_total_exactly_the_full_claw_back(
    refunds: list[int],
) -> None:
    paid = 10_001  # 100 points at the regular rate
    acc = account()
    earn(acc, "order-1", paid)
    acc.collect_events()

    refunded = 0
    clawed = []
    for amount in refunds:
        refunded += amount
        acc.claw_back("order-1", refunded, paid, T0 + DAY, SYSTEM, refund_amount=amount)
        clawed += [e.points for e in acc.collect_events() if hasattr(e, "debt_added")]

    assert sum(clawed) == 100 == acc.lots["order:order-1"]["clawed_back"]
    assert acc.lots["order:order-1"]["status"] == LotStatus.REVERSED
    assert acc.pending == 0
    assert acc.debt == 0


def test_partial_claw_backs_follow_the_share_refunded_so_far() -> None:
    acc = account()
    earn(acc, "order-1", 10_001)
    acc.collect_events()
    owed = []
    for refunded in (3_333, 6_666, 10_001):
        acc.claw_back("order-1", refunded, 10_001, T0, SYSTEM, refund_amount=3_333)
        owed.append(acc.collect_events()[-1].points)
    # Rounding each refund alone would claw back 33 + 33 + 33 = 99 of 100.
    assert owed == [33, 33, 34]


def test_a_claw_back_then_release_makes_the_rest_of_the_lot_available() -> None:
    acc = account()
    earn(acc, "order-1", 100_000)
    acc.claw_back("order-1", 33_000, 100_000, T0 + DAY, SYSTEM, refund_amount=33_000)
    release(acc, "order-1", T0 + 7 * DAY)
    assert acc.available == 670
    assert acc.lots["order:order-1"]["clawed_back"] == 330


def test_a_claw_back_for_an_order_that_earned_nothing_only_reduces_spend() -> None:
    acc = account()
    earn(acc, "order-1", 50)
    acc.collect_events()
    acc.claw_back("order-1", 50, 50, T0 + DAY, SYSTEM, refund_amount=50)
    assert names(acc.collect_events()) == ["SpendRecorded"]
    assert acc.qualifying_spend(T0 + DAY, RULES) == 0


# -- once-only awards and idempotency keys --------------------------------------------------


def test_review_points_are_awarded_once_per_order_line() -> None:
    acc = account()

    def review(line_id: str) -> bool:
        return acc.credit(CreditSource.REVIEW, f"review-{line_id}", RULES.review_points, RULES,
                          T0, MEMBER, once_marker=f"review:order-1:{line_id}")

    assert review("L1") is True
    acc.collect_events()
    assert review("L1") is False
    assert acc.collect_events() == []
    assert review("L2") is True
    assert len(acc.collect_events()) == 1
    assert acc.available == 2 * RULES.review_points
    assert acc.has_marker("review:order-1:L1")
    assert acc.markers["review:order-1:L1"] == "review-L1"


def test_profile_completion_points_are_awarded_once() -> None:
    acc = account()
    for _ in range(3):
        acc.credit(CreditSource.PROFILE_COMPLETION, "profile", RULES.profile_completion_points,
                   RULES, T0, SYSTEM, once_marker="profile_completion")
    assert len(acc.collect_events()) == 1
    assert acc.available == 50


def test_birthday_points_are_awarded_once_per_year() -> None:
    acc = account()

    def birthday(year: int) -> bool:
        return acc.credit(CreditSource.BIRTHDAY, f"birthday-{year}", 300, RULES,
                          at(year, 4, 1), SYSTEM, once_marker=f"birthday:{year}")

    assert birthday(2026) is True
    assert birthday(2026) is False
    assert birthday(2027) is True
    assert names(acc.collect_events()) == ["PointsEarned", "PointsEarned"]


def test_a_repeated_idempotency_key_with_the_same_request_is_a_no_op() -> None:
    acc = account()
    assert acc.credit(CreditSource.ADJUSTMENT, "k1", 500, RULES, T0, ADMIN, key="k1",
                      request_hash="h1") is True
    assert acc.debit(200, DebitKind.ADJUSTMENT, "k2", RULES, T0, ADMIN, key="k2",
                     request_hash="h2") is True
    acc.collect_events()
    state_before = copy.deepcopy(vars(acc))

    assert acc.credit(CreditSource.ADJUSTMENT, "k1", 500, RULES, T0, ADMIN, key="k1",
                      request_hash="h1") is False
    assert acc.debit(200, DebitKind.ADJUSTMENT, "k2", RULES, T0, ADMIN, key="k2",
                     request_hash="h2") is False
    assert acc.collect_events() == []
    assert vars(acc) == state_before
    assert acc.available == 300


def test_a_repeated_idempotency_key_with_a_different_request_is_a_conflict() -> None:
    acc = account()
    acc.credit(CreditSource.ADJUSTMENT, "k1", 500, RULES, T0, ADMIN, key="k1",
               request_hash="h1")
    acc.debit(200, DebitKind.REWARD, "reward-1", RULES, T0, MEMBER, key="k2",
              request_hash="h2")
    acc.collect_events()

    error = rejected(
        acc,
        lambda: acc.credit(CreditSource.ADJUSTMENT, "k1", 600, RULES, T0, ADMIN, key="k1",
                           request_hash="other"),
        IdempotencyConflictError,
        "idempotency_key",
    )
    assert error.code == ErrorCode.IDEMPOTENCY_CONFLICT
    rejected(
        acc,
        lambda: acc.debit(200, DebitKind.REWARD, "reward-1", RULES, T0, MEMBER, key="k2",
                          request_hash="other"),
        IdempotencyConflictError,
    )
    rejected(
        acc,
        lambda: acc.debit(100, DebitKind.REWARD, "reward-2", RULES, T0, MEMBER, key="k1",
                          request_hash="h2"),
        IdempotencyConflictError,
    )


# -- admin adjustments ----------------------------------------------------------------------


def test_admin_adjustments_need_a_reason() -> None:
    acc = account()
    give(acc, 1_000)
    acc.collect_events()
    rejected(acc, lambda: acc.credit(CreditSource.ADJUSTMENT, "fix", 100, RULES, T0,
                                     ADMIN_WITHOUT_REASON), ReasonRequiredError, "meta.reason")
    rejected(acc, lambda: acc.debit(100, DebitKind.ADJUSTMENT, "fix", RULES, T0,
                                    ADMIN_WITHOUT_REASON), ReasonRequiredError, "meta.reason")

    assert acc.credit(CreditSource.ADJUSTMENT, "fix", 100, RULES, T0, ADMIN)
    assert acc.collect_events()[0].meta["reason"] == "goodwill for a late delivery"
    assert acc.available == 1_100


@pytest.mark.parametrize("points", [0, -1, True, 2.5, MAX_ADJUSTMENT + 1])
def test_credits_need_a_positive_whole_number_of_points(points: Any) -> None:
    acc = account()
    rejected(acc, lambda: acc.credit(CreditSource.CAMPAIGN, "c", points, RULES, T0, SYSTEM),
             ValidationError, "points")


def test_the_largest_single_credit_is_accepted() -> None:
    acc = account()
    give(acc, MAX_ADJUSTMENT)
    assert acc.available == MAX_ADJUSTMENT


# -- tiers: promotion -----------------------------------------------------------------------


def test_promotion_is_immediate_when_rolling_spend_crosses_a_threshold() -> None:
    acc = account()
    earn(acc, "order-1", 120_000, at(2026, 1, 10))
    assert acc.tier == Tier.REGULAR
    acc.collect_events()
    promoted_at = at(2026, 4, 10)

    earn(acc, "order-2", 80_000, promoted_at)

    events = acc.collect_events()
    assert names(events) == ["SpendRecorded", "PointsEarned", "TierChanged"]
    assert events[2].tier == "silver"
    assert events[2].reason == "promotion"
    assert acc.tier == Tier.SILVER
    assert acc.tier_since == promoted_at.isoformat()
    assert acc.maintenance_due == at(2027, 4, 10).isoformat()
    assert acc.tier_history == [
        {"from": "regular", "to": "silver", "reason": "promotion", "at": promoted_at.isoformat()},
    ]


def test_spend_older_than_the_qualifying_window_does_not_count() -> None:
    acc = account()
    earn(acc, "order-1", 150_000, at(2026, 1, 10))
    earn(acc, "order-2", 60_000, at(2027, 1, 11))
    assert acc.qualifying_spend(at(2027, 1, 11), RULES) == 60_000
    assert acc.tier == Tier.REGULAR


def test_a_large_enough_payment_promotes_straight_to_the_tier_it_qualifies_for() -> None:
    acc = account()
    earn(acc, "order-1", 2_000_000)
    changes = [e for e in acc.collect_events() if names([e]) == ["TierChanged"]]
    assert [e.tier for e in changes] == ["platinum"]
    assert acc.tier == Tier.PLATINUM


def test_promotions_step_up_through_the_tiers_as_spend_grows() -> None:
    acc = account()
    earn(acc, "o1", 200_000, at(2026, 1, 10))
    earn(acc, "o2", 600_000, at(2026, 3, 10))
    earn(acc, "o3", 1_200_000, at(2026, 5, 10))
    earn(acc, "o4", 100_000, at(2026, 6, 10))  # already platinum: nothing changes
    assert [(h["to"], h["reason"]) for h in acc.tier_history] == [
        ("silver", "promotion"), ("gold", "promotion"), ("platinum", "promotion"),
    ]
    assert acc.maintenance_due == at(2027, 5, 10).isoformat()


def test_refunds_reduce_qualifying_spend() -> None:
    acc = account()
    earn(acc, "order-1", 150_000, at(2026, 1, 10))
    earn(acc, "order-2", 80_000, at(2026, 2, 10))
    assert acc.tier == Tier.SILVER
    acc.claw_back("order-2", 60_000, 80_000, at(2026, 2, 20), SYSTEM, refund_amount=60_000)

    assert acc.qualifying_spend(at(2026, 3, 1), RULES) == 170_000
    assert acc.tier == Tier.SILVER  # refunds never demote at once; maintenance decides


def test_a_refund_stops_a_promotion_its_order_would_have_earned() -> None:
    acc = account()
    earn(acc, "order-1", 150_000, at(2026, 1, 10))
    acc.claw_back("order-1", 60_000, 150_000, at(2026, 1, 20), SYSTEM, refund_amount=60_000)
    earn(acc, "order-2", 100_000, at(2026, 2, 10))
    assert acc.qualifying_spend(at(2026, 2, 10), RULES) == 190_000
    assert acc.tier == Tier.REGULAR
    earn(acc, "order-3", 10_000, at(2026, 2, 11))
    assert acc.tier == Tier.SILVER


def test_a_refund_only_takes_back_the_spend_of_its_own_order() -> None:
    """An order leaving the window takes its refund with it; later spend counts in full."""
    acc = account()
    earn(acc, "old-order", 150_000, at(2026, 1, 10))
    acc.claw_back("old-order", 150_000, 150_000, at(2026, 12, 20), SYSTEM,
                  refund_amount=150_000)

    earn(acc, "new-order", 210_000, at(2027, 2, 1))

    # Only the new order was paid for and kept within the last 12 months.
    assert acc.qualifying_spend(at(2027, 2, 1), RULES) == 210_000
    assert acc.tier == Tier.SILVER


# -- tiers: yearly maintenance --------------------------------------------------------------


def promoted(spend: int, when: datetime = T0) -> LoyaltyAccount:
    acc = account()
    earn(acc, "promotion-order", spend, when)
    acc.collect_events()
    return acc


def test_maintenance_not_yet_due_does_nothing() -> None:
    acc = promoted(800_000)
    due = add_months(T0, 12)
    assert acc.maintenance_due == due.isoformat()
    assert acc.evaluate_tier(due - timedelta(seconds=1), RULES, SYSTEM) is False
    assert acc.collect_events() == []
    assert acc.tier == Tier.GOLD


def test_a_regular_member_has_no_maintenance() -> None:
    acc = account()
    earn(acc, "order-1", 100_000)
    acc.collect_events()
    assert acc.evaluate_tier(T0 + 800 * DAY, RULES, SYSTEM) is False
    assert acc.collect_events() == []


def test_maintenance_keeps_the_tier_when_the_years_spend_is_enough() -> None:
    acc = promoted(200_000)
    earn(acc, "order-2", 250_000, at(2026, 7, 10))
    acc.collect_events()
    due = add_months(T0, 12)

    assert acc.evaluate_tier(due, RULES, SYSTEM) is True

    (event,) = acc.collect_events()
    assert names([event]) == ["TierMaintained"]
    assert event.spend == 250_000
    assert acc.tier == Tier.SILVER
    assert acc.maintenance_due == add_months(due, 12).isoformat()
    assert acc.evaluate_tier(due, RULES, SYSTEM) is False


@pytest.mark.parametrize("spend_in_year", [0, 100, 900_000, 1_999_999])
def test_maintenance_drops_platinum_to_gold_whatever_the_shortfall(spend_in_year: int) -> None:
    acc = promoted(2_000_000)
    if spend_in_year:
        earn(acc, "order-2", spend_in_year, at(2026, 6, 1))
        acc.collect_events()
    due = add_months(T0, 12)

    assert acc.evaluate_tier(due, RULES, SYSTEM) is True

    (event,) = acc.collect_events()
    assert event.tier == "gold"
    assert event.reason == "maintenance"
    assert acc.tier == Tier.GOLD
    assert acc.maintenance_due == add_months(due, 12).isoformat()


def test_a_lapsed_platinum_member_drops_one_tier_per_year_down_to_regular() -> None:
    acc = promoted(2_000_000)
    years = [add_months(T0, 12 * n) for n in (1, 2, 3, 4)]

    assert acc.evaluate_tier(years[0], RULES, SYSTEM) is True
    assert acc.evaluate_tier(years[0], RULES, SYSTEM) is False  # once per year
    assert acc.tier == Tier.GOLD
    assert acc.evaluate_tier(years[1], RULES, SYSTEM) is True
    assert acc.tier == Tier.SILVER
    assert acc.evaluate_tier(years[2], RULES, SYSTEM) is True
    assert acc.tier == Tier.REGULAR
    assert acc.maintenance_due is None
    assert acc.evaluate_tier(years[3], RULES, SYSTEM) is False

    assert acc.tier_history == [
        {"from": "regular", "to": "platinum", "reason": "promotion", "at": T0.isoformat()},
        {"from": "platinum", "to": "gold", "reason": "maintenance", "at": years[0].isoformat()},
        {"from": "gold", "to": "silver", "reason": "maintenance", "at": years[1].isoformat()},
        {"from": "silver", "to": "regular", "reason": "maintenance", "at": years[2].isoformat()},
    ]


def test_maintenance_judges_a_gold_member_against_the_gold_threshold() -> None:
    acc = promoted(800_000)
    earn(acc, "order-2", 799_999, at(2026, 6, 1))
    acc.evaluate_tier(add_months(T0, 12), RULES, SYSTEM)
    assert acc.tier == Tier.SILVER


def test_refunds_count_against_the_maintenance_year() -> None:
    acc = promoted(200_000)
    earn(acc, "order-2", 250_000, at(2026, 7, 10))
    acc.claw_back("order-2", 100_000, 250_000, at(2026, 7, 20), SYSTEM, refund_amount=100_000)
    acc.evaluate_tier(add_months(T0, 12), RULES, SYSTEM)
    assert acc.tier == Tier.REGULAR


def test_a_promotion_restarts_the_maintenance_year() -> None:
    acc = promoted(200_000)
    earn(acc, "order-2", 600_000, at(2026, 7, 10))
    assert acc.tier == Tier.GOLD
    assert acc.maintenance_due == at(2027, 7, 10).isoformat()
    assert acc.evaluate_tier(add_months(T0, 12), RULES, SYSTEM) is False
    assert acc.tier == Tier.GOLD


# -- reconstruction -------------------------------------------------------------------------


def test_reconstructing_an_account_from_its_events_yields_the_same_state() -> None:
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    acc = LoyaltyAccount.open("member-1", T0, SYSTEM)
    earn(acc, "order-A", 250_000, at(2026, 1, 10))
    release(acc, "order-A", at(2026, 1, 17))
    give(acc, 300, at(2026, 2, 1), CreditSource.REVIEW, "review:o:L1")
    acc.credit(CreditSource.BIRTHDAY, "b", 100, RULES, at(2026, 4, 1), SYSTEM,
               once_marker="birthday:2026")
    acc.credit(CreditSource.ADJUSTMENT, "k", 50, RULES, at(2026, 4, 2), ADMIN, key="k",
               request_hash="h")
    redeem(acc, 2_000, at(2026, 5, 1))
    acc.claw_back("order-A", 250_000, 250_000, at(2026, 5, 2), SYSTEM, refund_amount=250_000)
    earn(acc, "order-B", 30_000, at(2026, 6, 1))
    assert acc.schedule_release("order-B", at(2026, 6, 8), at(2026, 6, 1), SYSTEM)
    acc.evaluate_tier(at(2027, 1, 10), RULES, SYSTEM)
    acc.expire_due(at(2027, 3, 1), SYSTEM)
    app.save(acc)

    copy_ = app.repository.get(acc.id)

    assert isinstance(copy_, LoyaltyAccount)
    assert copy_.version == acc.version
    assert vars(copy_) == vars(acc)
    assert (copy_.available, copy_.pending, copy_.debt) == (acc.available, acc.pending, acc.debt)
