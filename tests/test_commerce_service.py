"""Service-level rules that the API does not expose yet (reviews arrive with issue 6)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.errors import InvalidTransitionError, NotFoundError, ValidationError
from domain.loyalty import CreditSource, birthdays_celebrated_on
from domain.metadata import Channel, EventMetadata, Role
from tests.shop import stocked


def meta(actor: str, role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "c", None, uuid.uuid4().hex, reason)


LINES = [{"product_id": "p1", "sku": "S1", "name": "Mug", "quantity": 2, "unit_price": 3_000},
         {"product_id": "p2", "sku": "S2", "name": "Tea", "quantity": 1, "unit_price": 5_000}]


def delivered_order(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID]:
    member = runtime.members.register({"name": "Rita", "email": "rita@example.com"},
                                      meta("anon", Role.ANONYMOUS)).aggregate_id
    own = meta(str(member))
    order = runtime.orders.place(member, stocked(runtime, LINES), None, 0, "k1", own)
    total = runtime.orders.get(order.aggregate_id).total
    runtime.orders.pay(order.aggregate_id, "card", total, None, "pay-1", own)
    return member, order.aggregate_id


def test_a_written_review_of_a_delivered_line_earns_points_once(runtime: Runtime) -> None:
    member, order = delivered_order(runtime)
    own = meta(str(member))
    with pytest.raises(InvalidTransitionError):
        runtime.loyalty.award_review(member, order, "L1", "Lovely mug", own)
    runtime.orders.mark_delivered(order, meta("agent", Role.AGENT, "courier confirmed"))
    runtime.loyalty.award_review(member, order, "L1", "Lovely mug", own)
    runtime.loyalty.award_review(member, order, "L1", "Still lovely", own)  # once per line
    runtime.loyalty.award_review(member, order, "L2", "Good tea", own)
    account = runtime.loyalty.account(member)
    reviews = [lot for lot in account.lots.values() if lot["source"] == CreditSource.REVIEW]
    assert [lot["points"] for lot in reviews] == [runtime.rules.review_points] * 2

    with pytest.raises(ValidationError):
        runtime.loyalty.award_review(member, order, "L1", "   ", own)
    with pytest.raises(NotFoundError):
        runtime.loyalty.award_review(member, order, "L9", "Which line?", own)
    stranger = runtime.members.register({"name": "Sam", "email": "sam@example.com"},
                                        meta("anon", Role.ANONYMOUS)).aggregate_id
    with pytest.raises(NotFoundError):
        runtime.loyalty.award_review(stranger, order, "L1", "Not mine", meta(str(stranger)))


def test_two_schedulers_ticking_at_once_emit_each_due_event_once(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    member, order = delivered_order(runtime)
    runtime.orders.mark_delivered(order, meta("agent", Role.AGENT, "courier confirmed"))
    clock.advance(timedelta(days=runtime.rules.return_window_days, minutes=1))
    runtime.runner.run_once()  # the schedulers find their work in the read models
    head = runtime.runner.head()
    barrier = threading.Barrier(2)
    reports = []

    def tick() -> None:
        barrier.wait()
        reports.append(runtime.scheduler.tick())

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(report.errors == [] for report in reports)
    recorded = [
        type(n).__qualname__
        for n in (runtime.app.mapper.to_domain_event(x) for x in
                  runtime.app.recorder.select_notifications(start=head + 1, limit=100))
    ]
    assert sorted(recorded) == ["LoyaltyAccount.PointsReleased", "Order.Completed"]
    account = runtime.loyalty.account(member)
    assert account.pending == 0 and account.available > 0
    assert runtime.orders.get(order).state == "completed"


def test_a_member_born_on_29_february_celebrates_on_28_february_in_other_years(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    clock.set(datetime(2027, 2, 28, 9, 0, tzinfo=UTC))
    leapling = runtime.members.register(
        {"name": "Leap", "email": "leap@example.com", "birthday": "2000-02-29"},
        meta("anon", Role.ANONYMOUS),
    ).aggregate_id
    runtime.runner.run_once()  # the scheduler finds birthdays in the member profiles
    head = runtime.runner.head()
    report = runtime.scheduler.tick()
    assert report.errors == [] and report.birthdays == 1
    celebrated = [
        event for event in (runtime.app.mapper.to_domain_event(n) for n in
                            runtime.app.recorder.select_notifications(start=head + 1, limit=10))
        if type(event).__qualname__ == "Coupon.Issued"
    ]
    assert [(e.member_id, e.source) for e in celebrated] == [(str(leapling), "birthday")]
    clock.set(datetime(2027, 3, 1, 9, 0, tzinfo=UTC))
    assert runtime.scheduler.tick().birthdays == 0


def test_only_28_february_of_a_common_year_celebrates_29_february_birthdays() -> None:
    assert birthdays_celebrated_on(date(2027, 2, 28)) == ("02-28", "02-29")
    assert birthdays_celebrated_on(date(2028, 2, 28)) == ("02-28",)
    assert birthdays_celebrated_on(date(2028, 2, 29)) == ("02-29",)
    assert birthdays_celebrated_on(date(2027, 3, 1)) == ("03-01",)
