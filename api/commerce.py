"""Commands for orders, payments, points, rewards and coupons.

Each command is one unit of work over every aggregate it affects (the order, the member's
loyalty account, a coupon, a reward), saved atomically: paying an order and earning its
points, or refunding and clawing them back, happen together or not at all.

Idempotency lives in the aggregates, so it is as durable as the events: an order placed
with an idempotency key gets an id derived from that key, and payments, refunds,
redemptions and adjustments record their key; a retry with the same input finds the
first result and records nothing, a reuse with different input is an error.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from api.service import CommandResult, Session, UnitOfWork
from domain.catalogue import CatalogueProduct, product_aggregate_id
from domain.clock import Clock
from domain.coupon import Coupon, CouponSource, Reward, validate_terms
from domain.errors import (
    ErasedError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from domain.loyalty import CreditSource, DebitKind, LoyaltyAccount, account_id_for
from domain.loyalty_rules import LoyaltyRules
from domain.member import Member, MemberStatus
from domain.metadata import EventMetadata
from domain.order import Order, OrderState, price_lines, price_overrides, requested_lines
from domain.pricing import price_order

ORDER_NAMESPACE = uuid.UUID("8b0e7c52-36f4-4b4a-9a61-2b7d1f0c9e11")
COUPON_NAMESPACE = uuid.UUID("c6f1d1a2-5a8e-4d0b-8f4c-3e2a7b9d6c55")
MAX_KEY_LENGTH = 100


def request_hash(*parts: Any) -> str:
    """A fingerprint of a request's input, to tell a retry from a reuse of its key."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            f"an idempotency key of 1-{MAX_KEY_LENGTH} characters is required",
            "idempotency_key",
        )
    return key.strip()


def account_for(session: Session, member_id: str, now: datetime,
                meta: EventMetadata) -> LoyaltyAccount:
    """The member's loyalty account, opened on first use."""
    account = session.find(LoyaltyAccount, account_id_for(member_id))
    if account is None:
        account = session.add(LoyaltyAccount.open(member_id, now, meta))
    return account


def refund_and_claw_back(
    order: Order,
    account: LoyaltyAccount,
    items: Sequence[tuple[str, int]] | None,
    refund_id: str,
    fingerprint: str,
    rules: LoyaltyRules,
    now: datetime,
    meta: EventMetadata,
) -> dict[str, Any] | None:
    """Refund the order, take back the points its refunded part earned and give back the
    points that paid for it, together.

    Returns the refund recorded, or None for a retry of one already recorded.
    """
    record = order.refund(refund_id, items, fingerprint, now, meta)
    if record is not None:
        account.claw_back(str(order.id), order.refunded_amount, order.paid_amount, now, meta,
                          refund_amount=record["amount"])
        account.return_points(str(order.id), order.points_to_return(), rules, now, meta)
    return record


def reviewable_line(
    session: Session, member_id: UUID, order_id: UUID, line_id: str
) -> tuple[Order, dict[str, Any]]:
    """The order and line a member may review: their own order (another member's is
    NOT_FOUND, revealing nothing), a line it has, delivered or completed."""
    order = session.get(Order, order_id)
    if order.member_id != str(member_id):
        raise NotFoundError(f"order {order_id} not found", "order_id")
    line = order.line(line_id)  # raises for a line the order does not have
    if order.state not in (OrderState.DELIVERED, OrderState.COMPLETED):
        raise InvalidTransitionError(
            f"only delivered purchases can be reviewed; the order is {order.state}",
            current_state=order.state, attempted="review",
        )
    return order, line


class OrderService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules

    def order_id_for(self, member_id: UUID, key: str) -> UUID:
        return uuid.uuid5(ORDER_NAMESPACE, f"{member_id}:{check_key(key)}")

    def get(self, order_id: UUID) -> Order:
        return self.uow.get(Order, order_id)

    def place(
        self,
        member_id: UUID,
        lines: Sequence[dict[str, Any]],
        coupon_id: UUID | None,
        points: int,
        key: str,
        meta: EventMetadata,
        overrides: Sequence[Mapping[str, Any]] = (),
    ) -> CommandResult:
        """Place an order for the `lines` asked for (`{product_id, quantity}` each), priced
        by the catalogue as it is in this unit of work; staff may override line prices
        (`{line, unit_price, reason}` each). A retry with the key returns the first order,
        whatever the catalogue says by then.
        """
        order_id = self.order_id_for(member_id, key)
        requested = requested_lines(lines, self.rules.max_line_quantity)
        chosen = price_overrides(overrides, len(requested), meta)
        fingerprint = request_hash(
            "place", requested, str(coupon_id) if coupon_id else None, points,
            *([sorted((i, o["unit_price"], o["reason"]) for i, o in chosen.items())]
              if chosen else []),
        )

        def decide(session: Session) -> Order:
            existing = session.find(Order, order_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different order"
                    )
                return existing
            now = self.clock.now()
            member = session.get(Member, member_id)
            if member.erased:
                raise ErasedError("member has been erased")
            if member.status != MemberStatus.ACTIVE:
                raise InvalidTransitionError(
                    f"a {member.status} member cannot place orders",
                    current_state=member.status, attempted="place an order",
                )
            account = account_for(session, str(member_id), now, meta)
            cleaned = self.priced(session, requested, chosen, meta)
            coupon = None
            if coupon_id is not None:
                coupon = session.find(Coupon, coupon_id)
                if coupon is None:
                    raise NotFoundError(f"coupon {coupon_id} not found", "coupon_id")
                coupon.reserve(str(member_id), str(order_id), now, meta)
            pricing = price_order(
                [line["quantity"] * line["unit_price"] for line in cleaned],
                account.tier,
                self.rules,
                coupon.coupon_terms if coupon else None,
                points,
            )
            if points:
                account.debit(points, DebitKind.ORDER_PAYMENT, str(order_id), self.rules, now,
                              meta)
            order = session.add(Order.place(
                order_id, str(member_id), self.rules.currency, cleaned, pricing, account.tier,
                str(coupon_id) if coupon_id else None, fingerprint, now, meta,
            ))
            usual = account.average_paid_order()
            if (
                usual is not None
                and pricing.total > self.rules.abnormal_order_floor
                and pricing.total > usual * self.rules.abnormal_order_multiple
            ):
                order.flag_for_review(
                    "value_far_above_usual",
                    f"total {pricing.total} is more than {self.rules.abnormal_order_multiple}x "
                    f"the member's average paid order ({usual})",
                    now, meta,
                )
            return order

        return self.uow.result_of(self.uow.run(decide))

    def priced(self, session: Session, requested: Sequence[dict[str, Any]],
               chosen: Mapping[int, Mapping[str, Any]], meta: EventMetadata
               ) -> list[dict[str, Any]]:
        """The requested lines priced by the catalogue's products, read from the event store
        in this unit of work (the read model may lag a price change or a product taken off
        sale)."""
        products = {
            product_id: session.find(CatalogueProduct, product_aggregate_id(product_id))
            for product_id in {line["product_id"] for line in requested}
        }
        return price_lines(requested, products, chosen, self.rules.currency,
                           self.rules.max_order_value, meta)

    def pay(
        self,
        order_id: UUID,
        method: str,
        amount: int,
        provider_reference: str | None,
        key: str,
        meta: EventMetadata,
    ) -> CommandResult:
        payment_id = check_key(key)
        fingerprint = request_hash("pay", method, amount, provider_reference)

        def decide(session: Session) -> Order:
            now = self.clock.now()
            order = session.get(Order, order_id)
            self.record_paid(session, order, payment_id, method, amount, provider_reference,
                             fingerprint, now, meta)
            return order

        return self.uow.result_of(self.uow.run(decide))

    def record_paid(
        self, session: Session, order: Order, payment_id: str, method: str, amount: int,
        provider_reference: str | None, fingerprint: str, now: datetime, meta: EventMetadata,
    ) -> bool:
        """Inside a unit of work: the order is paid, its points earned and its coupon used,
        together. Shared by every way a payment is confirmed (a provider's signed callback,
        staff recording cash or in-store payments). False for a retry already recorded."""
        if not order.pay(payment_id, method, amount, provider_reference, fingerprint, now,
                         meta):
            return False
        account = account_for(session, order.member_id, now, meta)
        account.earn_for_payment(str(order.id), amount, self.rules, now, meta)
        if order.coupon_id:
            session.get(Coupon, UUID(order.coupon_id)).use(str(order.id), now, meta)
        return True

    def record_failed(
        self, order: Order, method: str, amount: int, provider_reference: str | None,
        reason: str, attempt_id: str, fingerprint: str, now: datetime, meta: EventMetadata,
    ) -> bool:
        """Inside a unit of work: a failed attempt, and the review flag once failures
        repeat. False for a repeated report of the same attempt."""
        if not order.record_payment_failure(method, amount, provider_reference, reason, now,
                                            meta, attempt_id=attempt_id,
                                            request_hash=fingerprint):
            return False
        if order.failed_payments >= self.rules.max_failed_payments:
            order.flag_for_review(
                "repeated_payment_failures",
                f"{order.failed_payments} failed payment attempts",
                now, meta,
            )
        return True

    def record_payment_failure(
        self,
        order_id: UUID,
        method: str,
        amount: int,
        provider_reference: str | None,
        reason: str,
        meta: EventMetadata,
        key: str | None = None,
    ) -> CommandResult:
        """A failed attempt; with a key, a repeated report of it is recorded once."""
        attempt_id = check_key(key) if key is not None else ""
        fingerprint = request_hash("failed", method, amount, provider_reference, reason)

        def decide(session: Session) -> Order:
            now = self.clock.now()
            order = session.get(Order, order_id)
            self.record_failed(order, method, amount, provider_reference, reason, attempt_id,
                               fingerprint, now, meta)
            return order

        return self.uow.result_of(self.uow.run(decide))

    def cancel(
        self, order_id: UUID, reason: str, note: str | None, meta: EventMetadata
    ) -> CommandResult:
        """Cancel before shipment: release the coupon, return points used, refund payment."""

        def decide(session: Session) -> Order:
            now = self.clock.now()
            order = session.get(Order, order_id)
            order.cancel(reason, note, now, meta)
            if order.coupon_id:
                session.get(Coupon, UUID(order.coupon_id)).release(str(order.id), now, meta)
            account = account_for(session, order.member_id, now, meta)
            account.return_points(str(order.id), order.points_to_return(), self.rules, now,
                                  meta)
            if order.paid_amount:
                refund_and_claw_back(order, account, None, f"cancel:{order.id}", "cancel",
                                     self.rules, now, meta)
            return order

        return self.uow.result_of(self.uow.run(decide))

    def refund(
        self,
        order_id: UUID,
        items: Sequence[tuple[str, int]] | None,
        key: str,
        meta: EventMetadata,
    ) -> CommandResult:
        refund_id = check_key(key)
        fingerprint = request_hash("refund", [list(i) for i in items] if items else None)

        def decide(session: Session) -> Order:
            now = self.clock.now()
            order = session.get(Order, order_id)
            account = account_for(session, order.member_id, now, meta)
            refund_and_claw_back(order, account, items, refund_id, fingerprint, self.rules,
                                 now, meta)
            return order

        return self.uow.result_of(self.uow.run(decide))

    def mark_delivered(self, order_id: UUID, meta: EventMetadata) -> CommandResult:
        def decide(session: Session) -> Order:
            now = self.clock.now()
            order = session.get(Order, order_id)
            order.mark_delivered(now, meta)
            account = account_for(session, order.member_id, now, meta)
            account.schedule_release(
                str(order.id), now + timedelta(days=self.rules.return_window_days), now, meta
            )
            return order

        return self.uow.result_of(self.uow.run(decide))

    def complete(self, order_id: UUID, meta: EventMetadata) -> CommandResult:
        def decide(session: Session) -> Order:
            order = session.get(Order, order_id)
            order.complete(self.clock.now(), self.rules.return_window_days, meta)
            return order

        return self.uow.result_of(self.uow.run(decide))


class LoyaltyService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules

    def account(self, member_id: UUID) -> LoyaltyAccount:
        return self.uow.get(LoyaltyAccount, account_id_for(str(member_id)))

    def _on_account(
        self, member_id: UUID, meta: EventMetadata, act: Any
    ) -> CommandResult:
        def decide(session: Session) -> LoyaltyAccount:
            now = self.clock.now()
            member = session.get(Member, member_id)
            if member.erased:
                raise ErasedError("member has been erased")
            account = account_for(session, str(member_id), now, meta)
            act(session, account, now)
            return account

        return self.uow.result_of(self.uow.run(decide))

    def adjust(
        self, member_id: UUID, points: int, key: str, meta: EventMetadata
    ) -> CommandResult:
        """Admin credit (positive) or debit (negative), with the mandatory reason."""
        meta.require_reason()
        checked = check_key(key)
        if not isinstance(points, int) or points == 0:
            raise ValidationError("an adjustment moves a non-zero number of points", "points")
        fingerprint = request_hash("adjust", points, meta.reason)

        def act(_session: Session, account: LoyaltyAccount, now: datetime) -> None:
            if points > 0:
                account.credit(CreditSource.ADJUSTMENT, checked, points, self.rules, now, meta,
                               key=checked, request_hash=fingerprint)
            else:
                account.debit(-points, DebitKind.ADJUSTMENT, checked, self.rules, now, meta,
                              key=checked, request_hash=fingerprint)

        return self._on_account(member_id, meta, act)

    def award(
        self, member_id: UUID, source: CreditSource, ref: str, points: int, marker: str,
        meta: EventMetadata,
    ) -> CommandResult:
        """A once-only award (review, profile completion, birthday, campaign)."""

        def act(_session: Session, account: LoyaltyAccount, now: datetime) -> None:
            account.credit(source, ref, points, self.rules, now, meta, once_marker=marker)

        return self._on_account(member_id, meta, act)

    def award_review(
        self, member_id: UUID, order_id: UUID, line_id: str, text: str, meta: EventMetadata
    ) -> CommandResult:
        """Review points for a written review of a purchased line, once per line."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError("only reviews with text earn points", "text")

        def decide(session: Session) -> LoyaltyAccount:
            now = self.clock.now()
            self.award_review_points(session, member_id, order_id, line_id, now, meta)
            return account_for(session, str(member_id), now, meta)

        return self.uow.result_of(self.uow.run(decide))

    def award_review_points(
        self, session: Session, member_id: UUID, order_id: UUID, line_id: str, now: datetime,
        meta: EventMetadata,
    ) -> int:
        """Credit review points for a purchased line inside the caller's unit of work.

        Shared by `award_review` and the review command (api/behaviour.py), so both check
        the same purchase and mark the same once-per-line award: whichever path comes
        first earns the points, the other finds the marker. Returns the points credited
        now (0 when this line's review was rewarded before).
        """
        reviewable_line(session, member_id, order_id, line_id)
        account = account_for(session, str(member_id), now, meta)
        credited = account.credit(
            CreditSource.REVIEW, f"{order_id}:{line_id}", self.rules.review_points,
            self.rules, now, meta, once_marker=f"review:{order_id}:{line_id}",
        )
        return self.rules.review_points if credited else 0

    def redeem_reward(
        self, member_id: UUID, reward_id: UUID, key: str, meta: EventMetadata
    ) -> CommandResult:
        """Points for a coupon: stock, account and wallet change together."""
        checked = check_key(key)
        fingerprint = request_hash("redeem", str(reward_id))
        coupon_id = uuid.uuid5(COUPON_NAMESPACE, f"{member_id}:{checked}")

        def decide(session: Session) -> Coupon:
            existing = session.find(Coupon, coupon_id)
            now = self.clock.now()
            account = account_for(session, str(member_id), now, meta)
            if existing is not None:
                account.already_processed(checked, fingerprint)  # raises if different
                return existing
            member = session.get(Member, member_id)
            if member.erased or member.status != MemberStatus.ACTIVE:
                raise InvalidTransitionError(
                    f"a {'erased' if member.erased else member.status} member cannot redeem",
                    current_state=member.status, attempted="redeem a reward",
                )
            reward = session.find(Reward, reward_id)
            if reward is None:
                raise NotFoundError(f"reward {reward_id} not found", "reward_id")
            reward.take(str(member_id), checked, now, meta)
            account.debit(reward.cost_points, DebitKind.REWARD, str(reward_id), self.rules, now,
                          meta, key=checked, request_hash=fingerprint)
            terms = validate_terms(**reward.coupon)
            return session.add(Coupon.issue(
                coupon_id, str(member_id), CouponSource.REDEMPTION, terms, now,
                now + timedelta(days=reward.coupon_valid_days), str(reward_id), now, meta,
            ))

        return self.uow.result_of(self.uow.run(decide))

    def define_reward(self, details: dict[str, Any], meta: EventMetadata) -> CommandResult:
        terms = validate_terms(details["coupon_kind"], details["coupon_value"],
                               details.get("coupon_min_spend", 0))
        now = self.clock.now()
        return self.uow.create(lambda: Reward.define(
            details["name"], details.get("description"), details["cost_points"],
            details["stock"], details["per_member_limit"], details["valid_from"],
            details["valid_until"], terms, details["coupon_valid_days"], now, meta,
        ))

    def issue_coupon(
        self,
        member_id: UUID,
        source: CouponSource,
        kind: str,
        value: int,
        min_spend: int,
        valid_from: datetime,
        valid_until: datetime,
        key: str,
        meta: EventMetadata,
    ) -> CommandResult:
        checked = check_key(key)
        coupon_id = uuid.uuid5(COUPON_NAMESPACE, f"{member_id}:issue:{checked}")

        def decide(session: Session) -> Coupon:
            existing = session.find(Coupon, coupon_id)
            if existing is not None:
                same = (
                    existing.terms == {"kind": kind, "value": value, "min_spend": min_spend}
                    and existing.valid_from == valid_from.isoformat()
                    and existing.valid_until == valid_until.isoformat()
                )
                if not same:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different coupon"
                    )
                return existing
            member = session.get(Member, member_id)
            if member.erased:
                raise ErasedError("member has been erased")
            terms = validate_terms(kind, value, min_spend)
            return session.add(Coupon.issue(
                coupon_id, str(member_id), source, terms, valid_from, valid_until,
                f"issue:{checked}", self.clock.now(), meta,
            ))

        return self.uow.result_of(self.uow.run(decide))

    def settle_due(self, member_id: UUID, meta: EventMetadata) -> CommandResult:
        """Emit whatever is due on a member's account: releases, expiries, tier maintenance.

        Safe to run from several schedulers at once: the account decides from its own state,
        so a second run finds nothing left to do, and a concurrent one loses the version race
        and retries on the state the first one left.
        """

        def decide(session: Session) -> LoyaltyAccount:
            now = self.clock.now()
            account = session.get(LoyaltyAccount, account_id_for(str(member_id)))
            account.release_due(now, self.rules, meta)
            account.expire_due(now, meta)
            account.evaluate_tier(now, self.rules, meta)
            return account

        return self.uow.result_of(self.uow.run(decide))

    def celebrate_birthday(self, member_id: UUID, meta: EventMetadata) -> CommandResult:
        """The tier's birthday bonus and a birthday coupon, once per year."""

        def decide(session: Session) -> LoyaltyAccount:
            now = self.clock.now()
            member = session.get(Member, member_id)
            account = account_for(session, str(member_id), now, meta)
            marker = f"birthday:{now.year}"
            if member.erased or member.status != MemberStatus.ACTIVE:
                return account
            if account.has_marker(marker):
                return account
            bonus = self.rules.tier_rule(account.tier).birthday_bonus_points
            if bonus:
                account.credit(CreditSource.BIRTHDAY, str(now.year), bonus, self.rules, now,
                               meta, once_marker=marker)
            if self.rules.birthday_coupon_value:
                coupon_id = uuid.uuid5(COUPON_NAMESPACE, f"{member_id}:{marker}")
                if session.find(Coupon, coupon_id) is None:
                    session.add(Coupon.issue(
                        coupon_id, str(member_id), CouponSource.BIRTHDAY,
                        validate_terms("fixed", self.rules.birthday_coupon_value, 0), now,
                        now + timedelta(days=self.rules.birthday_coupon_valid_days), marker,
                        now, meta,
                    ))
            return account

        return self.uow.result_of(self.uow.run(decide))
