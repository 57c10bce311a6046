"""After-sales cases in the service layer: claims across cases, and consequences elsewhere.

A case claims delivered quantities on its order in the same unit of work that opens it,
so over-claiming is impossible even for two requests at the same instant. A resolution
refunds the order (clawing back points) or sends a parcel exactly once, however often the
command is retried. Both storage backends.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from api.runtime import Runtime
from api.shipping import shipment_id_for
from domain.after_sales import CaseState
from domain.clock import AdjustableClock
from domain.errors import (
    DomainError,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    ReasonRequiredError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role
from domain.order import OrderState
from domain.shipment import Direction
from tests.shop import stocked

ADDRESS = {"recipient": "Rita Ray", "line1": "1 Tea Road", "city": "Hangzhou",
           "postal_code": "310000", "country": "CN"}
LINES = [{"product_id": "p1", "sku": "S1", "name": "Mug", "quantity": 2, "unit_price": 3_000},
         {"product_id": "p2", "sku": "S2", "name": "Tea", "quantity": 1, "unit_price": 5_000}]


def meta(actor: str, role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "c", None, uuid.uuid4().hex, reason)


AGENT = meta("agent-1", Role.AGENT)
CARRIER = meta("carrier:sf", Role.SYSTEM)


class Shop:
    """A member with a paid order, and the verbs the tests need around it."""

    def __init__(self, runtime: Runtime, name: str = "Rita", spend_lines: Any = None) -> None:
        self.rt = runtime
        self.member = runtime.members.register(
            {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"},
            meta("anon", Role.ANONYMOUS),
        ).aggregate_id
        self.own = meta(str(self.member))
        self.order = runtime.orders.place(self.member, stocked(runtime, spend_lines or LINES),
                                          None, 0, uuid.uuid4().hex, self.own).aggregate_id
        runtime.orders.pay(self.order, "card", runtime.orders.get(self.order).total, None,
                           "pay", self.own)

    def ship(self, tracking: str, items: list[tuple[str, int]] | None = None) -> UUID:
        self.rt.shipping.create(self.order, items, "home_delivery", "standard", None, None,
                                ADDRESS, None, "sf", tracking, AGENT)
        return shipment_id_for("sf", tracking)

    def track(self, shipment: UUID, status: str) -> None:
        self.rt.shipping.record_tracking(shipment, f"{status}-{uuid.uuid4().hex[:4]}", status,
                                         self.rt.clock.now(), None, None, None, CARRIER)

    def deliver_all(self) -> None:
        self.track(self.ship(f"SF{uuid.uuid4().hex[:8]}"), "delivered")

    def open(self, case_type: str = "return", lines: Any = (("L1", 1),), key: str = "k1",
             who: EventMetadata | None = None, **extra: Any) -> UUID:
        args: dict[str, Any] = dict(reason="defective", reason_detail=None, evidence_notes=None,
                                    photo_urls=None, preferred_outcome=None)
        args.update(extra)
        return self.rt.after_sales.open(self.order, case_type, args["reason"],
                                        args["reason_detail"], list(lines),
                                        args["evidence_notes"], args["photo_urls"],
                                        args["preferred_outcome"], key,
                                        who or self.own).aggregate_id

    def to_inspected(self, case: UUID, tracking: str) -> None:
        cases = self.rt.after_sales
        cases.approve(case, None, AGENT)
        cases.issue_return_label(case, "sf", tracking, None, AGENT)
        cases.receive_return(case, AGENT)
        cases.inspect(case, "confirmed", "restock", None, AGENT)


def refused(action: Callable[[], Any], error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as raised:
        action()
    return raised.value


def test_cases_claim_delivered_quantities_and_no_two_open_cases_claim_the_same(
    runtime: Runtime,
) -> None:
    shop = Shop(runtime)
    parcel = shop.ship("SF1", [("L1", 1)])
    shop.ship("SF2", [("L1", 1), ("L2", 1)])
    # Nothing has arrived yet: nothing can be claimed.
    assert refused(lambda: shop.open(key="early"), ValidationError).field == "lines"
    shop.track(parcel, "delivered")
    first = shop.open(key="first")
    error = refused(lambda: shop.open("exchange", key="second"), ValidationError)
    assert "only 0 delivered" in error.message
    refused(lambda: shop.open(lines=[("L2", 1)], key="tea"), ValidationError)  # not arrived
    refused(lambda: shop.open(lines=[("L9", 1)], key="nine"), DomainError)
    # Withdrawing releases the claim, so the same mug can be claimed again.
    runtime.after_sales.withdraw(first, "Found the missing part", shop.own)
    second = shop.open("exchange", key="second")
    assert runtime.orders.get(shop.order).open_case_claims == {
        str(second): [{"line_id": "L1", "quantity": 1}]}


def test_two_cases_opened_at_the_same_instant_cannot_both_claim_the_last_item(
    runtime: Runtime,
) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def claim(key: str) -> None:
        barrier.wait()
        try:
            shop.open(lines=[("L2", 1)], key=key)
            outcomes.append("opened")
        except ValidationError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim, args=(f"k{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["opened", "refused", "refused", "refused"]
    claims = runtime.orders.get(shop.order).open_case_claims
    assert [lines for lines in claims.values()] == [[{"line_id": "L2", "quantity": 1}]]


def test_opening_is_idempotent_and_guarded_by_ownership(runtime: Runtime) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="same")
    assert shop.open(key="same") == case
    refused(lambda: shop.open("exchange", key="same"), IdempotencyConflictError)
    stranger = Shop(runtime, "Sam")
    refused(lambda: shop.open(key="x", who=stranger.own), ForbiddenError)
    refused(lambda: runtime.after_sales.withdraw(case, None, stranger.own), ForbiddenError)
    refused(lambda: runtime.after_sales.post_message(case, "hi", None, None, stranger.own),
            ForbiddenError)
    refused(lambda: runtime.after_sales.get_for(case, stranger.own), ForbiddenError)
    # An agent opens a case on the member's behalf; the event says who did.
    on_behalf = shop.open("repair", lines=[("L1", 1)], key="phone",
                          who=meta("agent-7", Role.AGENT, "member phoned"))
    assert runtime.after_sales.get(on_behalf).opened_by["actor_id"] == "agent-7"


def test_a_refund_resolution_refunds_the_order_and_claws_back_points_exactly_once(
    runtime: Runtime,
) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    points_before = runtime.loyalty.account(shop.member).pending
    case = shop.open(key="mug")
    shop.to_inspected(case, "RET1")
    first = runtime.after_sales.resolve(case, "refunded", None, None, None, AGENT)
    order = runtime.orders.get(shop.order)
    assert [r["lines"] for r in order.refunds.values()] == [[{"line_id": "L1", "quantity": 1}]]
    refunded = order.refunded_amount
    assert refunded == order.line_refund_amount("L1", 1) > 0
    assert runtime.loyalty.account(shop.member).pending < points_before
    # A retried command (a lost response, a double click) changes nothing.
    again = runtime.after_sales.resolve(case, "refunded", None, None, None, AGENT)
    assert again.position is None and again.version == first.version
    assert runtime.orders.get(shop.order).refunded_amount == refunded
    resolved = runtime.after_sales.get(case)
    assert resolved.state == CaseState.RESOLVED
    assert resolved.resolution is not None
    assert resolved.resolution["refund"]["amount"] == refunded
    # The claim is released, and the refunded mug cannot be claimed again.
    assert runtime.orders.get(shop.order).open_case_claims == {}
    shop.open(key="other-mug")  # the second mug still can
    refused(lambda: shop.open(key="third-mug"), ValidationError)


def test_a_case_refund_never_exceeds_what_is_left_to_refund(runtime: Runtime) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open("refund_only", lines=[("L2", 1)], key="tea")
    runtime.after_sales.approve(case, None, AGENT)
    # Meanwhile support refunds the tea directly.
    runtime.orders.refund(shop.order, [("L2", 1)], "goodwill",
                          meta("agent-2", Role.AGENT, "goodwill"))
    paid_back = runtime.orders.get(shop.order).refunded_amount
    refused(lambda: runtime.after_sales.resolve(case, "refunded", None, None, None, AGENT),
            ValidationError)
    assert runtime.orders.get(shop.order).refunded_amount == paid_back
    assert runtime.after_sales.get(case).state == CaseState.APPROVED


@pytest.mark.parametrize(("case_type", "outcome"), [
    ("exchange", "exchanged"), ("repair", "repaired"), ("reissue", "reissued"),
])
def test_goods_sent_by_a_case_travel_in_one_parcel_however_often_it_is_retried(
    runtime: Runtime, case_type: str, outcome: str,
) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(case_type, key="c", reason="wrong_item" if case_type == "reissue"
                     else "defective")
    if case_type == "reissue":
        runtime.after_sales.approve(case, None, AGENT)
    else:
        shop.to_inspected(case, f"RET-{case_type}")
    refused(lambda: runtime.after_sales.resolve(case, outcome, None, None, None, AGENT),
            ValidationError)
    runtime.after_sales.resolve(case, outcome, "sf", "NEW1", None, AGENT)
    runtime.after_sales.resolve(case, outcome, "sf", "NEW1", None, AGENT)
    parcel = runtime.shipping.get(shipment_id_for("sf", "NEW1"))
    assert (parcel.case_id, parcel.direction, parcel.items) == (
        str(case), Direction.OUTBOUND, [{"line_id": "L1", "quantity": 1}])
    assert parcel.personal == {"address": ADDRESS}  # where the original parcel went
    order = runtime.orders.get(shop.order)
    assert [sid for sid, s in order.shipments.items() if s["case_id"]] == [str(parcel.id)]
    assert order.state == OrderState.DELIVERED and order.refunded_amount == 0
    # The replacement arriving does not disturb the order.
    shop.track(parcel.id, "delivered")
    assert runtime.orders.get(shop.order).state == OrderState.DELIVERED


def test_the_return_parcels_tracking_moves_the_case(runtime: Runtime) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="r")
    runtime.after_sales.approve(case, None, AGENT)
    runtime.after_sales.issue_return_label(case, "sf", "RET9", "https://labels.example/9.pdf",
                                           AGENT)
    runtime.after_sales.issue_return_label(case, "sf", "RET9", None, AGENT)  # a retry
    parcel = runtime.shipping.get(shipment_id_for("sf", "RET9"))
    assert (parcel.direction, parcel.case_id, parcel.method) == (
        Direction.INBOUND, str(case), "return_drop_off")
    shop.track(parcel.id, "in_transit")
    assert runtime.after_sales.get(case).state == CaseState.AWAITING_RETURN
    shop.track(parcel.id, "delivered")
    received = runtime.after_sales.get(case)
    assert received.state == CaseState.RECEIVED
    assert received.return_parcel is not None
    assert received.return_parcel["received_via"] == "carrier"
    runtime.after_sales.receive_return(case, AGENT)  # staff confirm it too: no change
    assert runtime.after_sales.get(case).version == received.version
    # The order's own parcels are untouched by the return parcel.
    assert str(parcel.id) not in runtime.orders.get(shop.order).shipments


def test_a_withdrawn_cases_parcel_still_records_its_tracking(runtime: Runtime) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="w")
    runtime.after_sales.approve(case, None, AGENT)
    runtime.after_sales.issue_return_label(case, "sf", "RETW", None, AGENT)
    runtime.after_sales.withdraw(case, "Kept it after all", shop.own)
    shop.track(shipment_id_for("sf", "RETW"), "delivered")
    assert runtime.shipping.get(shipment_id_for("sf", "RETW")).status == "delivered"
    assert runtime.after_sales.get(case).state == CaseState.WITHDRAWN


def test_cases_of_tiers_with_the_dedicated_team_benefit_are_routed_to_it(
    runtime: Runtime,
) -> None:
    regular = Shop(runtime)
    regular.deliver_all()
    platinum = Shop(runtime, "Petra", spend_lines=[
        {"product_id": "p9", "sku": "S9", "name": "Sofa", "quantity": 1,
         "unit_price": 2_000_000}])
    platinum.deliver_all()
    assert runtime.loyalty.account(platinum.member).tier == "platinum"
    opened_at = runtime.clock.now()
    normal = runtime.after_sales.get(regular.open(key="a"))
    vip = runtime.after_sales.get(platinum.open(key="b"))
    assert (normal.tier, normal.team) == ("regular", "general")
    assert (vip.tier, vip.team) == ("platinum", "dedicated")
    assert vip.first_review_due == (opened_at + timedelta(hours=4)).isoformat()
    assert normal.first_review_due == (opened_at + timedelta(hours=24)).isoformat()
    assert vip.resolution_due == (opened_at + timedelta(days=7)).isoformat()


def test_staff_need_a_reason_to_reassign_and_members_cannot_work_cases(
    runtime: Runtime,
) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="s")
    refused(lambda: runtime.after_sales.approve(case, None, shop.own), ForbiddenError)
    runtime.after_sales.assign(case, "agent-1", None, AGENT)
    refused(lambda: runtime.after_sales.assign(case, "agent-2", None, AGENT),
            ReasonRequiredError)
    refused(lambda: runtime.after_sales.close(case, AGENT), InvalidTransitionError)
    assert runtime.after_sales.get(case).assignee == "agent-1"


def test_erasure_leaves_the_case_without_its_personal_text(runtime: Runtime) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="e", reason_detail="My neighbour Bob broke it",
                     photo_urls=["https://photos.example/bob.jpg"])
    runtime.after_sales.post_message(case, "Call me on 555-0100", None, None, shop.own)
    assert runtime.after_sales.get(case).personal is not None
    runtime.members.erase(shop.member, meta("admin", Role.ADMIN, "GDPR request"))
    erased = runtime.after_sales.get(case)
    assert erased.personal is None
    assert erased.messages[0]["body"] is None and erased.messages[0]["erased"] is True
    assert erased.state == CaseState.REQUESTED and erased.lines == [
        {"line_id": "L1", "quantity": 1}]


def test_the_scheduler_records_each_missed_deadline_once(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    shop = Shop(runtime)
    shop.deliver_all()
    case = shop.open(key="late")
    runtime.runner.run_once()
    assert runtime.scheduler.tick().cases_checked == 0
    clock.advance(timedelta(hours=25))
    runtime.runner.run_once()
    assert runtime.scheduler.tick().cases_checked == 1
    assert set(runtime.after_sales.get(case).breaches) == {"first_review"}
    runtime.runner.run_once()
    assert runtime.scheduler.tick().cases_checked == 0
    clock.advance(timedelta(days=7))
    runtime.runner.run_once()
    report = runtime.scheduler.tick()
    assert (report.cases_checked, report.errors) == (1, [])
    assert set(runtime.after_sales.get(case).breaches) == {"first_review", "resolution"}
