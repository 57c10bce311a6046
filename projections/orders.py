"""`orders`: one row per order, with its pricing, payments, refunds, flags and history.

Every value comes from the event (its timestamp, never the wall clock) and from the row
the earlier events built, so a rebuild from position zero reproduces the table exactly.
Times inside JSON columns are ISO strings in UTC, as the aggregate records them.

Batched: the orders a batch touches are read in one SELECT and written back with one bulk
upsert (see projections/batch_work.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.order import Order, OrderState
from projections.batch_work import BatchWork
from projections.commerce_tables import iso, orders, utc
from projections.engine import Handler, ReadModel


class OrdersProjection(ReadModel):
    name = "orders"
    tables = (orders,)
    batched = True

    def handlers(self) -> dict[type, Handler]:
        return {
            Order.Placed: self.on_placed,
            Order.Paid: self.on_paid,
            Order.PaymentFailed: self.on_payment_failed,
            Order.FlaggedForReview: self.on_flagged,
            Order.Cancelled: self.on_cancelled,
            Order.Refunded: self.on_refunded,
            Order.ShipmentAllocated: self.on_shipment_allocated,
            Order.ShipmentDispatched: self.on_shipment_dispatched,
            Order.ShipmentReceived: self.on_shipment_received,
            Order.Delivered: self.on_delivered,
            Order.Completed: self.on_completed,
        }

    # -- the batch --------------------------------------------------------------------------

    def prepare(self, work: BatchWork, events: Sequence[tuple[Any, int]]) -> None:
        work.prefetch(orders, {str(event.originator_id) for event, _ in events})

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(work: BatchWork, event: Any) -> dict[str, Any]:
        row = work.get(orders, str(event.originator_id))
        if row is None:
            raise LookupError(f"order {event.originator_id} is not projected")
        return row

    @staticmethod
    def _save(work: BatchWork, event: Any, position: int, **values: Any) -> None:
        # As an UPDATE of a missing row, a missing order is left missing.
        work.update(
            orders, str(event.originator_id),
            updated_at=utc(event.timestamp),
            version=event.originator_version,
            position=position,
            **values,
        )

    def _enter(
        self,
        work: BatchWork,
        event: Any,
        position: int,
        state: OrderState,
        row: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        """A state change: the new state, and one more step in the order's history."""
        row = row if row is not None else self._load(work, event)
        history = [*row["history"], {"state": state.value, "at": iso(event.timestamp)}]
        self._save(work, event, position, state=state.value, history=history, **values)

    @staticmethod
    def _actor(event: Any) -> dict[str, Any]:
        return {"actor_id": event.meta.get("actor_id"), "actor_role": event.meta.get("actor_role")}

    # -- handlers ---------------------------------------------------------------------------

    def on_placed(self, work: BatchWork, event: Any, position: int) -> None:
        at = iso(event.timestamp)
        work.insert(orders, {
            "order_id": str(event.originator_id),
            "member_id": event.member_id,
            "state": OrderState.PLACED.value,
            "currency": event.currency,
            "tier": event.tier,
            "lines": [dict(line) for line in event.lines],
            "pricing": dict(event.pricing),
            "coupon_id": event.coupon_id,
            "payments": [],
            "failed_payments": 0,
            "flags": [],
            "refunds": [],
            "paid_amount": 0,
            "refunded_amount": 0,
            "cancellation": None,
            "history": [{"state": OrderState.PLACED.value, "at": at}],
            "placed_at": utc(event.timestamp),
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
        })

    def on_paid(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        payment = {
            "payment_id": event.payment_id,
            "method": event.method,
            "amount": event.amount,
            "provider_reference": event.provider_reference,
            "at": iso(event.timestamp),
        }
        self._enter(
            work, event, position, OrderState.PAID, row,
            payments=[*row["payments"], payment],
            paid_amount=row["paid_amount"] + event.amount,
            paid_at=utc(event.timestamp),
        )

    def on_payment_failed(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        self._save(work, event, position, failed_payments=row["failed_payments"] + 1)

    def on_flagged(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        # The aggregate keeps one detail per rule (a later flag replaces it): so do we.
        flag = {"rule": event.rule, "detail": event.detail, "at": iso(event.timestamp)}
        flags = [f for f in row["flags"] if f["rule"] != event.rule]
        self._save(work, event, position, flags=[*flags, flag])

    def on_cancelled(self, work: BatchWork, event: Any, position: int) -> None:
        cancellation = {
            "reason": event.reason,
            "note": event.note,
            "at": iso(event.timestamp),
            **self._actor(event),
        }
        self._enter(
            work, event, position, OrderState.CANCELLED,
            cancellation=cancellation, cancelled_at=utc(event.timestamp),
        )

    def on_refunded(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        refund = {
            "refund_id": event.refund_id,
            "lines": [dict(line) for line in event.lines],
            "amount": event.amount,
            "at": iso(event.timestamp),
            **self._actor(event),
            "reason": event.meta.get("reason"),
        }
        self._save(
            work, event, position,
            refunds=[*row["refunds"], refund],
            refunded_amount=row["refunded_amount"] + event.amount,
        )

    def on_shipment_allocated(self, work: BatchWork, event: Any, position: int) -> None:
        # Only events recorded before parcels shipped on pickup carry a state to enter.
        self._enter_if_changed(work, event, position, event.order_state)

    def on_shipment_dispatched(self, work: BatchWork, event: Any, position: int) -> None:
        self._enter_if_changed(work, event, position, event.order_state)

    def _enter_if_changed(
        self, work: BatchWork, event: Any, position: int, state: str | None
    ) -> None:
        if state is None or self._load(work, event)["state"] == state:
            self._save(work, event, position)
        else:
            self._enter(work, event, position, OrderState(state))

    def on_shipment_received(self, work: BatchWork, event: Any, position: int) -> None:
        self._save(work, event, position)

    def on_delivered(self, work: BatchWork, event: Any, position: int) -> None:
        self._enter(
            work, event, position, OrderState.DELIVERED, delivered_at=utc(event.timestamp)
        )

    def on_completed(self, work: BatchWork, event: Any, position: int) -> None:
        self._enter(
            work, event, position, OrderState.COMPLETED, completed_at=utc(event.timestamp)
        )
