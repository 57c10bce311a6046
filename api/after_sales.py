"""Commands for after-sales cases, and their consequences in the other aggregates.

A case claims delivered lines on its order when it opens and releases them when it is
rejected, withdrawn or resolved, all in the unit of work that changes the case, so two
open cases can never claim the same item. A resolution refunds the order (and claws back
its points) or sends a parcel in the same unit of work as it records the resolution: a
retried command finds the case resolved and does nothing twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from api.commerce import account_for, check_key, refund_and_claw_back, request_hash
from api.service import CommandResult, Session, UnitOfWork
from api.shipping import ShippingService
from domain.after_sales import (
    SHIPS_GOODS,
    AfterSalesCase,
    CaseOutcome,
    validate_claim_lines,
)
from domain.clock import Clock
from domain.errors import (
    ErasedError,
    ForbiddenError,
    IdempotencyConflictError,
    ValidationError,
)
from domain.loyalty_rules import LoyaltyRules
from domain.member import Member
from domain.metadata import EventMetadata, Role
from domain.order import Order

CASE_NAMESPACE = uuid.UUID("0f6b8e3a-7d21-4c59-9e84-5a1c2b3d4e6f")


class AfterSalesService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules,
                 shipping: ShippingService) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules
        self.shipping = shipping

    def case_id_for(self, order_id: UUID, key: str) -> UUID:
        return uuid.uuid5(CASE_NAMESPACE, f"{order_id}:{check_key(key)}")

    def get(self, case_id: UUID) -> AfterSalesCase:
        return self.uow.get(AfterSalesCase, case_id)

    def get_for(self, case_id: UUID, meta: EventMetadata) -> AfterSalesCase:
        """The case, if the asker may see it (its member, or staff)."""
        case = self.get(case_id)
        case.require_party(meta)
        return case

    # -- opening ----------------------------------------------------------------------------

    def open(
        self,
        order_id: UUID,
        case_type: str,
        reason: str,
        reason_detail: str | None,
        lines: Sequence[tuple[str, int]],
        evidence_notes: str | None,
        photo_urls: Sequence[str] | None,
        preferred_outcome: str | None,
        key: str,
        meta: EventMetadata,
    ) -> CommandResult:
        """A case for delivered lines of an order, by its member or an agent for them."""
        case_id = self.case_id_for(order_id, key)
        fingerprint = request_hash("open case", case_type, reason, reason_detail,
                                   [list(line) for line in lines], evidence_notes,
                                   list(photo_urls or []), preferred_outcome)

        def decide(session: Session) -> AfterSalesCase:
            existing = session.find(AfterSalesCase, case_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different case"
                    )
                return existing
            now = self.clock.now()
            order = session.get(Order, order_id)
            if meta.actor_role is Role.MEMBER and meta.actor_id != order.member_id:
                raise ForbiddenError("you may only open cases on your own orders", "order_id")
            if meta.actor_role not in (Role.MEMBER, Role.AGENT, Role.ADMIN):
                raise ForbiddenError("only members and service staff open cases")
            if meta.actor_role.is_staff:
                meta.require_reason()  # on the member's behalf: on record why
            member = session.get(Member, UUID(order.member_id))
            if member.erased:
                raise ErasedError("member has been erased")
            claimed = validate_claim_lines(lines)
            for index, (line_id, _) in enumerate(lines):
                # An unknown line is NOT_FOUND, before anything.
                order.line(line_id, f"lines.{index}.line_id")
            account = account_for(session, order.member_id, now, meta)
            tier_rule = self.rules.tier_rule(account.tier)
            case = AfterSalesCase.open(
                case_id, str(order.id), order.member_id, case_type, reason,
                self.rules.case_reasons, reason_detail, claimed, evidence_notes, photo_urls,
                preferred_outcome, account.tier, self.rules.service_team(account.tier),
                now + timedelta(hours=tier_rule.first_review_sla_hours),
                now + timedelta(days=self.rules.resolution_days(str(case_type))),
                fingerprint, now, meta,
            )
            order.claim_for_case(str(case.id), claimed, now, meta)
            return session.add(case)

        return self.uow.result_of(self.uow.run(decide))

    # -- working the case -------------------------------------------------------------------

    def _change(self, case_id: UUID, meta: EventMetadata,
                decide: Any) -> CommandResult:
        """Load the case (and check the asker may act on it), then let `decide` act."""

        def load_and_decide(session: Session) -> AfterSalesCase:
            case = session.get(AfterSalesCase, case_id)
            case.require_party(meta)
            decide(session, case, self.clock.now())
            return case

        return self.uow.result_of(self.uow.run(load_and_decide))

    @staticmethod
    def _release(session: Session, case: AfterSalesCase, now: datetime,
                 meta: EventMetadata) -> None:
        session.get(Order, UUID(case.order_id)).release_case_claim(str(case.id), now, meta)

    def assign(self, case_id: UUID, agent_id: str, team: str | None,
               meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.assign(
            agent_id, team, now, meta))

    def approve(self, case_id: UUID, note: str | None, meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.approve(note, now, meta))

    def reject(self, case_id: UUID, reason: str | None, meta: EventMetadata) -> CommandResult:
        def decide(session: Session, case: AfterSalesCase, now: datetime) -> None:
            case.reject(reason, now, meta)
            self._release(session, case, now, meta)

        return self._change(case_id, meta, decide)

    def withdraw(self, case_id: UUID, reason: str | None, meta: EventMetadata) -> CommandResult:
        def decide(session: Session, case: AfterSalesCase, now: datetime) -> None:
            case.withdraw(reason, now, meta)
            self._release(session, case, now, meta)

        return self._change(case_id, meta, decide)

    def close(self, case_id: UUID, meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.close(now, meta))

    def post_message(self, case_id: UUID, body: str | None, attachments: Sequence[str] | None,
                     key: str | None, meta: EventMetadata) -> CommandResult:
        message_id = check_key(key) if key is not None else uuid.uuid4().hex
        return self._change(case_id, meta, lambda _s, case, now: case.post_message(
            message_id, body, attachments, now, meta))

    def issue_return_label(self, case_id: UUID, carrier: str, tracking_number: str,
                           label_url: str | None, meta: EventMetadata) -> CommandResult:
        """The label the member sends the goods back with, and the parcel it will track."""

        def decide(session: Session, case: AfterSalesCase, now: datetime) -> None:
            parcel = self.shipping.expect_return(session, case, carrier, tracking_number, now,
                                                 meta)
            case.issue_return_label(str(parcel.id), parcel.carrier, parcel.tracking_number,
                                    label_url, now, meta)

        return self._change(case_id, meta, decide)

    def receive_return(self, case_id: UUID, meta: EventMetadata) -> CommandResult:
        """Staff confirm the goods arrived (the carrier's tracking may have said so)."""
        return self._change(case_id, meta, lambda _s, case, now: case.return_received(
            "staff", now, meta))

    def inspect(self, case_id: UUID, result: str, disposition: str, notes: str | None,
                meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.inspect(
            result, disposition, notes, now, meta))

    def resolve(
        self, case_id: UUID, outcome: str, carrier: str | None, tracking_number: str | None,
        note: str | None, meta: EventMetadata,
    ) -> CommandResult:
        """Refund or send goods, release the claim and record the resolution, at once.

        Resolving a resolved case again with the same outcome records nothing: the refund
        and the parcel exist already and are not repeated.
        """

        def decide(session: Session, case: AfterSalesCase, now: datetime) -> None:
            case.require_staff(meta, "resolve cases")
            if case.resolution is not None and case.resolution["outcome"] == outcome:
                return  # resolved already (and perhaps closed since): nothing to repeat
            value = case.check_resolution(outcome)
            order = session.get(Order, UUID(case.order_id))
            # The order's own rules want a reason from staff; the case is that reason.
            order_meta = meta if meta.reason else replace(
                meta, reason=f"after-sales case {case.case_number}: {value.value}"
            )
            refund = None
            shipment_id = None
            if value == CaseOutcome.REFUNDED:
                account = account_for(session, order.member_id, now, order_meta)
                record = refund_and_claw_back(
                    order, account, [(i["line_id"], i["quantity"]) for i in case.lines],
                    f"case:{case.id}", request_hash("case refund", str(case.id)), self.rules, now,
                    order_meta,
                )
                refund_id = f"case:{case.id}"
                amount = record["amount"] if record else order.refunds[refund_id]["amount"]
                refund = {"refund_id": refund_id, "amount": amount,
                          "currency": order.currency}
            elif value in SHIPS_GOODS:
                if not carrier or not tracking_number:
                    # The parcel as a whole when none is given, else its blank part.
                    missing = ("shipment" if not carrier and not tracking_number
                               else "shipment.carrier" if not carrier
                               else "shipment.tracking_number")
                    raise ValidationError(
                        f"an {value.value} case sends a parcel: give its carrier and "
                        "tracking number", missing,
                    )
                parcel = self.shipping.send_for_case(session, order, case, carrier,
                                                     tracking_number, now, order_meta)
                shipment_id = str(parcel.id)
            order.release_case_claim(str(case.id), now, order_meta)
            case.resolve(value, refund, shipment_id, note, now, meta)

        return self._change(case_id, meta, decide)

    # -- after resolution -------------------------------------------------------------------

    def schedule_follow_up(self, case_id: UUID, at: datetime,
                           meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.schedule_follow_up(
            at, now, meta))

    def record_follow_up(self, case_id: UUID, outcome: str, note: str | None,
                         meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.record_follow_up(
            outcome, note, now, meta))

    def rate(self, case_id: UUID, attitude: int, ability: int, efficiency: int, category: str,
             comment: str | None, meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.rate(
            attitude, ability, efficiency, category, comment, now, meta))

    def check_sla(self, case_id: UUID, meta: EventMetadata) -> CommandResult:
        return self._change(case_id, meta, lambda _s, case, now: case.check_sla(now, meta))
