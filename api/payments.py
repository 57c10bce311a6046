"""Payments: requested by members, confirmed only by the provider, recorded by staff in person.

A member (or staff for them) asks to pay: that opens a payment *attempt* with a provider,
for the amount due as the server computed it, under a reference the server generates.
Nothing is paid yet. The provider tells us the outcome with a signed callback
(api/payment_webhooks.py), which is the only way an order becomes paid online:

- succeeded for exactly the amount due and currency: the order is paid, points earned and
  the coupon used, in one unit of work (OrderService.record_paid);
- succeeded for any other amount: recorded as a FAILED payment and the order flagged
  `payment_amount_mismatch` for review (money moved that the shop did not ask for);
- failed: a failed payment (the repeated-failures flag still applies).

Provider events are recorded once by their id: a replay records nothing, the same id with
a different body is a conflict. Under concurrent duplicate deliveries the order's version
decides: one records, the other retries on fresh state and finds the event already there.

Cash on delivery, in-store and store-credit payments have no provider: staff record them,
with a reason, for the amount due.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from api.commerce import OrderService, check_key, request_hash
from api.service import CommandResult, Session, UnitOfWork
from domain.clock import Clock
from domain.errors import NotFoundError, ValidationError
from domain.metadata import EventMetadata
from domain.order import STAFF_RECORDED_METHODS, Order, PaymentMethod

ATTEMPT_NAMESPACE = uuid.UUID("0f4c2b8e-7d51-4a3e-9c6b-5e1d2a8f7b34")
# pay_<order id, 32 hex>_<attempt, 16 hex>: the order is found from the reference alone,
# in the event store, so a callback never waits for a read model.
_REFERENCE = re.compile(r"^pay_([0-9a-f]{32})_([0-9a-f]{16})$")
MAX_AMOUNT = 2**63 - 1
# How far a provider's clock may be from ours.
PROVIDER_CLOCK_SKEW = timedelta(minutes=10)


class Outcome:
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class ProviderCallback:
    """What a provider tells us about an attempt, as checked at the edge."""

    provider: str
    event_id: str
    reference: str
    outcome: str
    amount: int
    currency: str
    occurred_at: datetime
    failure_reason: str | None = None

    def fingerprint(self) -> str:
        """Identifies the event's content: the same id with another content conflicts."""
        return request_hash("provider-callback", self.provider, self.event_id, self.reference,
                            self.outcome, self.amount, self.currency,
                            self.occurred_at.isoformat(), self.failure_reason)


@dataclass(frozen=True)
class Settlement:
    """What a callback did: `recorded` is paid, failed or amount_mismatch; or a duplicate."""

    result: CommandResult
    recorded: str | None
    member_id: str

    @property
    def duplicate(self) -> bool:
        return self.recorded is None


def reference_for(order_id: UUID, key: str) -> str:
    """The attempt's provider reference: unique per order and idempotency key."""
    attempt = uuid.uuid5(ATTEMPT_NAMESPACE, f"{order_id}:{key}").hex[:16]
    return f"pay_{order_id.hex}_{attempt}"


def order_of(reference: str) -> UUID | None:
    """The order a reference belongs to, or None if it is not one of ours."""
    match = _REFERENCE.match(reference)
    return UUID(match.group(1)) if match else None


def latest_attempt(order: Order, provider: str | None = None) -> dict[str, Any] | None:
    attempts = [a for a in order.attempts.values()
                if provider is None or a["provider"] == provider]
    return max(attempts, key=lambda a: a["at"]) if attempts else None


def check_provider_time(occurred_at: datetime, attempt: dict[str, Any], now: datetime) -> None:
    """A provider's event happens after the attempt was opened (less clock skew) and not
    in the future: anything else is a wrong or forged time, refused naming the field."""
    opened = datetime.fromisoformat(attempt["at"])
    if occurred_at < opened - PROVIDER_CLOCK_SKEW:
        raise ValidationError("occurred_at is before the payment was requested", "occurred_at")
    if occurred_at > now + PROVIDER_CLOCK_SKEW:
        raise ValidationError("occurred_at is in the future", "occurred_at")


class PaymentService:
    def __init__(self, uow: UnitOfWork, clock: Clock, orders: OrderService) -> None:
        self.uow = uow
        self.clock = clock
        self.orders = orders

    def request(
        self, order_id: UUID, method: str, provider: str, key: str, meta: EventMetadata
    ) -> tuple[CommandResult, dict[str, Any]]:
        """Open (or, for a retry, find) a payment attempt for the amount due."""
        reference = reference_for(order_id, check_key(key))
        fingerprint = request_hash("request-payment", method, provider)

        def decide(session: Session) -> Order:
            order = session.get(Order, order_id)
            order.request_payment(reference, provider, method, fingerprint, self.clock.now(),
                                  meta)
            return order

        outcome = self.uow.run(decide)
        return self.uow.result_of(outcome), dict(outcome.value.attempts[reference])

    def settle(self, callback: ProviderCallback, meta: EventMetadata) -> Settlement:
        """Record what the provider says about one of our attempts, once per event id."""
        order_id = order_of(callback.reference)
        if order_id is None:
            raise NotFoundError(f"no payment attempt {callback.reference!r}", "reference")
        event_key = f"{callback.provider}:{callback.event_id}"
        fingerprint = callback.fingerprint()
        recorded: list[str | None] = [None]
        member: list[str] = [""]

        def decide(session: Session) -> Order:
            recorded[0] = None  # a retry after a version clash decides afresh
            order = session.find(Order, order_id)
            attempt = order.attempts.get(callback.reference) if order else None
            if order is None or attempt is None or attempt["provider"] != callback.provider:
                raise NotFoundError(f"no payment attempt {callback.reference!r}", "reference")
            member[0] = order.member_id
            if order.provider_event_seen(event_key, fingerprint):
                return order
            now = self.clock.now()
            check_provider_time(callback.occurred_at, attempt, now)
            method = attempt["method"]
            right_amount = (callback.amount == order.total
                            and callback.currency == order.currency)
            if callback.outcome == Outcome.SUCCEEDED and right_amount:
                self.orders.record_paid(session, order, event_key, method, callback.amount,
                                        callback.reference, fingerprint, now, meta)
                recorded[0] = "paid"
            elif callback.outcome == Outcome.SUCCEEDED:
                detail = (f"provider reported {callback.amount} {callback.currency} for "
                          f"attempt {callback.reference}; due {order.total} {order.currency}")
                self.orders.record_failed(order, method, callback.amount, callback.reference,
                                          f"amount mismatch: {detail}"[:200], event_key,
                                          fingerprint, now, meta)
                order.flag_for_review("payment_amount_mismatch", detail, now, meta)
                recorded[0] = "amount_mismatch"
            else:
                self.orders.record_failed(order, method, callback.amount, callback.reference,
                                          callback.failure_reason or "declined by the provider",
                                          event_key, fingerprint, now, meta)
                recorded[0] = "failed"
            return order

        result = self.uow.result_of(self.uow.run(decide))
        return Settlement(result=result, recorded=recorded[0] if result.position else None,
                          member_id=member[0])

    def record_in_person(
        self, order_id: UUID, method: str, key: str, meta: EventMetadata
    ) -> CommandResult:
        """Staff: cash on delivery, in-store or store-credit payment of the amount due."""
        meta.require_reason()
        payment_id = check_key(key)
        try:
            method_value = PaymentMethod(method)
        except ValueError:
            method_value = None
        if method_value not in STAFF_RECORDED_METHODS:
            allowed = ", ".join(m.value for m in STAFF_RECORDED_METHODS)
            raise ValidationError(f"staff record only {allowed} payments", "method")
        fingerprint = request_hash("in-person", method, meta.reason)

        def decide(session: Session) -> Order:
            order = session.get(Order, order_id)
            self.orders.record_paid(session, order, f"staff:{payment_id}", method,
                                    order.total, None, fingerprint, self.clock.now(), meta)
            return order

        return self.uow.result_of(self.uow.run(decide))
