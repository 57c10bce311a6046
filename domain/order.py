"""The Order aggregate: what a member bought, what it cost, and what happened to it since.

States: placed -> paid -> (partially_shipped ->) shipped -> delivered -> completed, with
cancellation before shipment and refunds (whole or by line and quantity) after payment.
Amounts are integer minor units of the order's currency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.aggregate import RecordedAggregate
from domain.catalogue import CatalogueProduct, product_id_value
from domain.errors import (
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    LimitExceededError,
    NotFoundError,
    ValidationError,
)
from domain.metadata import MAX_REASON_LENGTH, EventMetadata
from domain.pricing import PriceBreakdown

MAX_LINES = 100
MAX_QUANTITY = 999
# A member retrying checkout opens a new attempt each time; beyond this, something is wrong.
MAX_PAYMENT_ATTEMPTS = 20


class OrderState(StrEnum):
    PLACED = "placed"
    PAID = "paid"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PaymentMethod(StrEnum):
    CARD = "card"
    ALIPAY = "alipay"
    WECHAT_PAY = "wechat_pay"
    CASH_ON_DELIVERY = "cash_on_delivery"
    STORE_CREDIT = "store_credit"
    IN_STORE = "in_store"


# Paid through a payment provider, confirmed only by its signed callback.
PROVIDER_METHODS = (PaymentMethod.CARD, PaymentMethod.ALIPAY, PaymentMethod.WECHAT_PAY)
# Paid in person or from the shop's own ledger: recorded by staff, with a reason.
STAFF_RECORDED_METHODS = (
    PaymentMethod.CASH_ON_DELIVERY, PaymentMethod.IN_STORE, PaymentMethod.STORE_CREDIT,
)


class CancellationReason(StrEnum):
    MEMBER_REQUEST = "member_request"
    PAYMENT_TIMEOUT = "payment_timeout"
    STOCK = "stock"
    FRAUD = "fraud"
    STAFF = "staff"
    OTHER = "other"


AFTER_PAYMENT = (
    OrderState.PAID,
    OrderState.PARTIALLY_SHIPPED,
    OrderState.SHIPPED,
    OrderState.DELIVERED,
    OrderState.COMPLETED,
)
BEFORE_SHIPMENT = (OrderState.PLACED, OrderState.PAID)


def validate_lines(lines: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not lines:
        raise ValidationError("an order needs at least one line", "lines")
    if len(lines) > MAX_LINES:
        raise ValidationError(f"an order has at most {MAX_LINES} lines", "lines")
    cleaned = []
    for index, line in enumerate(lines, start=1):
        prefix = f"lines.{index - 1}"
        quantity = line.get("quantity")
        price = line.get("unit_price")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not (
            1 <= quantity <= MAX_QUANTITY
        ):
            raise ValidationError(
                f"quantity must be a whole number from 1 to {MAX_QUANTITY}", f"{prefix}.quantity"
            )
        if not isinstance(price, int) or isinstance(price, bool) or price < 0:
            raise ValidationError(
                "unit price must be a non-negative amount in minor units", f"{prefix}.unit_price"
            )
        item: dict[str, Any] = {"line_id": f"L{index}", "quantity": quantity, "unit_price": price}
        for key in ("product_id", "sku", "name"):
            value = line.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"{key} must not be blank", f"{prefix}.{key}")
            item[key] = value.strip()[:200]
        for key in ("category", "brand"):
            value = line.get(key)
            text = value.strip() if isinstance(value, str) else ""
            item[key] = text.lower()[:64] or None
        cleaned.append(item)
    return cleaned


def requested_lines(
    lines: Sequence[Mapping[str, Any]], max_quantity: int
) -> list[dict[str, Any]]:
    """What a client may ask for: a product of the catalogue and a quantity per line.

    Nothing else about a line comes from the client; `price_lines` takes the rest from the
    catalogue. Fields are named as the client wrote them (`lines.2.product_id`).
    """
    if not lines:
        raise ValidationError("an order needs at least one line", "lines")
    if len(lines) > MAX_LINES:
        raise ValidationError(f"an order has at most {MAX_LINES} lines", "lines")
    requested = []
    for index, line in enumerate(lines):
        prefix = f"lines.{index}"
        unknown = sorted(set(line) - {"product_id", "quantity"})
        if unknown:
            raise ValidationError(f"an order line names only a product and a quantity, not "
                                  f"{unknown[0]}", f"{prefix}.{unknown[0]}")
        product_id = product_id_value(line.get("product_id"), f"{prefix}.product_id")
        quantity = line.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or not (
            1 <= quantity <= max_quantity
        ):
            raise ValidationError(
                f"quantity must be a whole number from 1 to {max_quantity}", f"{prefix}.quantity"
            )
        requested.append({"product_id": product_id, "quantity": quantity})
    return requested


def price_overrides(
    overrides: Sequence[Mapping[str, Any]], line_count: int, meta: EventMetadata
) -> dict[int, dict[str, Any]]:
    """Staff's price overrides by line index: each with its own reason, and only by staff.

    A member never sets a price; staff placing an order for a member may, line by line,
    with a reason an auditor reads on the order's event next to who gave it.
    """
    if not overrides:
        return {}
    if not meta.actor_role.is_staff:
        raise ForbiddenError("only staff may override a catalogue price", "price_overrides")
    chosen: dict[int, dict[str, Any]] = {}
    for index, override in enumerate(overrides):
        prefix = f"price_overrides.{index}"
        line = override.get("line")
        if not isinstance(line, int) or isinstance(line, bool) or not 0 <= line < line_count:
            raise ValidationError(f"line must be the index of an order line (0 to "
                                  f"{line_count - 1})", f"{prefix}.line")
        if line in chosen:
            raise ValidationError(f"line {line} already has a price override", f"{prefix}.line")
        price = override.get("unit_price")
        if not isinstance(price, int) or isinstance(price, bool) or price < 0:
            raise ValidationError("unit price must be a non-negative amount in minor units",
                                  f"{prefix}.unit_price")
        reason = override.get("reason")
        reason = reason.strip() if isinstance(reason, str) else ""
        if not reason:
            raise ValidationError("a price override needs a reason", f"{prefix}.reason")
        if len(reason) > MAX_REASON_LENGTH:
            raise ValidationError(f"reason must be at most {MAX_REASON_LENGTH} characters",
                                  f"{prefix}.reason")
        chosen[line] = {"unit_price": price, "reason": reason, "field": f"{prefix}.unit_price"}
    return chosen


def price_lines(
    requested: Sequence[Mapping[str, Any]],
    products: Mapping[str, CatalogueProduct | None],
    overrides: Mapping[int, Mapping[str, Any]],
    currency: str,
    max_order_value: int,
    meta: EventMetadata,
) -> list[dict[str, Any]]:
    """The order's lines as the catalogue prices them now: the snapshot the order keeps.

    `requested` is from `requested_lines`, `products` the catalogue's product for each
    requested product id (None when the shop does not list it), `overrides` from
    `price_overrides`. Name, category, brand and price are copied, so a later change to the
    catalogue never moves a placed order. The catalogue has no variants: a line's SKU is
    its product id. An overridden line keeps the catalogue price beside the one charged,
    with the reason and who overrode it.
    """
    lines: list[dict[str, Any]] = []
    subtotal = 0
    for index, request in enumerate(requested):
        prefix = f"lines.{index}"
        product = products.get(request["product_id"])
        if product is None:
            raise NotFoundError(f"product {request['product_id']!r} is not in the catalogue",
                                f"{prefix}.product_id")
        if not product.available:
            raise ValidationError(f"product {product.product_id!r} is not available",
                                  f"{prefix}.product_id")
        if product.currency != currency:
            raise ValidationError(
                f"product {product.product_id!r} is priced in {product.currency}, the shop "
                f"sells in {currency}", f"{prefix}.product_id")
        line: dict[str, Any] = {
            "line_id": f"L{index + 1}", "quantity": request["quantity"],
            "unit_price": product.price, "product_id": product.product_id,
            "sku": product.product_id, "name": product.name,
            "category": product.category, "brand": product.brand,
        }
        price_field = f"{prefix}.quantity"
        override = overrides.get(index)
        if override is not None:
            line["unit_price"] = override["unit_price"]
            line["price_override"] = {
                "catalogue_price": product.price, "reason": override["reason"],
                "actor_id": meta.actor_id, "actor_role": meta.actor_role.value,
            }
            price_field = override["field"]
        amount = line["quantity"] * line["unit_price"]
        if amount > max_order_value:
            raise ValidationError(
                f"this line is worth {amount}, more than an order may be ({max_order_value})",
                price_field)
        subtotal += amount
        lines.append(line)
    if subtotal > max_order_value:
        raise ValidationError(
            f"the order is worth {subtotal}, more than an order may be ({max_order_value})",
            "lines")
    return lines


class Order(RecordedAggregate):
    @classmethod
    def place(
        cls,
        order_id: Any,
        member_id: str,
        currency: str,
        lines: list[dict[str, Any]],
        pricing: PriceBreakdown,
        tier: str,
        coupon_id: str | None,
        request_hash: str,
        now: datetime,
        meta: EventMetadata,
    ) -> Order:
        return cls._create(
            cls.Placed,
            id=order_id,
            timestamp=now,
            member_id=member_id,
            currency=currency,
            lines=lines,
            pricing=pricing.as_dict(),
            tier=tier,
            coupon_id=coupon_id,
            request_hash=request_hash,
            meta=meta.as_dict(),
        )

    class Placed(Aggregate.Created):
        member_id: str
        currency: str
        lines: list[dict[str, Any]]
        pricing: dict[str, int]
        tier: str
        coupon_id: str | None
        request_hash: str

    @event(Placed)
    def __init__(
        self,
        member_id: str,
        currency: str,
        lines: list[dict[str, Any]],
        pricing: dict[str, int],
        tier: str,
        coupon_id: str | None,
        request_hash: str,
        meta: dict[str, Any],
    ) -> None:
        self.member_id = member_id
        self.currency = currency
        self.lines = [dict(line) for line in lines]
        self.pricing = dict(pricing)
        self.tier = tier
        self.coupon_id = coupon_id
        self.request_hash = request_hash
        self.state: str = OrderState.PLACED.value
        self.payments: dict[str, dict[str, Any]] = {}
        self.failed_payments = 0
        self.failed_attempts: dict[str, str] = {}
        self.payment_attempts: dict[str, dict[str, Any]] = {}
        self.flags: dict[str, str] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.refunded_quantities: dict[str, int] = {line["line_id"]: 0 for line in lines}
        self.refunded_amount = 0
        self.paid_amount = 0
        self.cancellation: dict[str, Any] | None = None
        self.delivered_at: str | None = None
        self.shipments: dict[str, dict[str, Any]] = {}
        # After-sales claims on delivered lines, by case id.
        self.case_claims: dict[str, list[dict[str, Any]]] = {}

    # -- rules ------------------------------------------------------------------------------

    def _require(self, attempted: str, *allowed: OrderState) -> None:
        if OrderState(self.state) not in allowed:
            raise InvalidTransitionError(
                f"cannot {attempted} an order that is {self.state}",
                current_state=self.state,
                attempted=attempted,
            )

    @property
    def total(self) -> int:
        return int(self.pricing["total"])

    def line(self, line_id: str, field: str = "line_id") -> dict[str, Any]:
        """The order's line; `field` is the command's path to the id asked for."""
        for line in self.lines:
            if line["line_id"] == line_id:
                return line
        raise NotFoundError(f"order has no line {line_id!r}", field)

    def refundable_amount(self) -> int:
        return self.paid_amount - self.refunded_amount

    def points_to_return(self) -> int:
        """How many of the points that paid for this order belong back with the member.

        All of them once the order is cancelled or every line is refunded; before that, the
        refunded goods' share of the subtotal. It is a running target rather than a delta, so
        partial refunds never drift by rounding and a retry returns nothing twice.
        """
        used = int(self.pricing["points_used"])
        if not used:
            return 0
        if self.state == OrderState.CANCELLED.value or all(
            self.refunded_quantities[line["line_id"]] == line["quantity"] for line in self.lines
        ):
            return used
        refunded_value = sum(
            self.refunded_quantities[line["line_id"]] * line["unit_price"] for line in self.lines
        )
        return used * refunded_value // max(self.pricing["subtotal"], 1)

    def line_refund_amount(self, line_id: str, quantity: int) -> int:
        """A line's share of what was paid for goods (discounts and points spread evenly)."""
        line = self.line(line_id)
        goods_paid = self.paid_amount - self.pricing["shipping_fee"]
        line_amount = line["quantity"] * line["unit_price"]
        line_paid = goods_paid * line_amount // max(self.pricing["subtotal"], 1)
        return line_paid * quantity // line["quantity"]

    # -- commands ---------------------------------------------------------------------------

    def pay(
        self,
        payment_id: str,
        method: Any,
        amount: int,
        provider_reference: str | None,
        request_hash: str,
        now: datetime,
        meta: EventMetadata,
    ) -> bool:
        """Record a payment; returns False for a retry of an already-recorded payment."""
        existing = self.payments.get(payment_id)
        if existing is not None:
            if existing["request_hash"] != request_hash:
                raise IdempotencyConflictError(
                    "this idempotency key was already used for a different payment"
                )
            return False
        self._require("pay", OrderState.PLACED)
        method_value = _payment_method(method)
        if amount != self.total:
            raise ValidationError(
                f"payment must equal the amount due ({self.total} {self.currency})", "amount"
            )
        self._trigger(
            self.Paid, now, meta, payment_id=payment_id, method=method_value, amount=amount,
            provider_reference=provider_reference, request_hash=request_hash,
        )
        return True

    @property
    def attempts(self) -> dict[str, dict[str, Any]]:
        # Orders restored from snapshots taken before payment attempts existed lack them.
        attempts: dict[str, dict[str, Any]] = getattr(self, "payment_attempts", {})
        return attempts

    def request_payment(
        self, reference: str, provider: str, method: Any, request_hash: str, now: datetime,
        meta: EventMetadata,
    ) -> bool:
        """Open a payment attempt with a provider for the amount due; it pays nothing.

        The amount is the order's total, never the caller's. Returns False for a retry of an
        attempt already opened with the same request.
        """
        existing = self.attempts.get(reference)
        if existing is not None:
            if existing["request_hash"] != request_hash:
                raise IdempotencyConflictError(
                    "this idempotency key was already used for a different payment attempt"
                )
            return False
        self._require("request payment for", OrderState.PLACED)
        if len(self.attempts) >= MAX_PAYMENT_ATTEMPTS:
            raise LimitExceededError(
                f"an order takes at most {MAX_PAYMENT_ATTEMPTS} payment attempts"
            )
        method_value = _payment_method(method)
        if PaymentMethod(method_value) not in PROVIDER_METHODS:
            allowed = ", ".join(m.value for m in PROVIDER_METHODS)
            raise ValidationError(
                f"a payment provider takes {allowed}; cash and in-store payments are "
                "recorded by staff", "method",
            )
        self._trigger(
            self.PaymentRequested, now, meta, reference=reference, provider=provider,
            method=method_value, amount=self.total, request_hash=request_hash,
        )
        return True

    def provider_event_seen(self, event_key: str, request_hash: str) -> bool:
        """Whether a provider's event was recorded already (as a payment or a failure).

        The same event id with a different body is a conflict, never a second record.
        """
        seen = self.payments.get(event_key)
        recorded = seen["request_hash"] if seen is not None else self.failed_attempts.get(
            event_key)
        if recorded is None:
            return False
        if recorded != request_hash:
            raise IdempotencyConflictError(
                "this provider event id was already recorded with a different body"
            )
        return True

    def record_payment_failure(
        self, method: Any, amount: int, provider_reference: str | None, reason: str,
        now: datetime, meta: EventMetadata, *, attempt_id: str = "", request_hash: str = "",
    ) -> bool:
        """Record a failed attempt; returns False for a repeated report of the same attempt."""
        seen = self.failed_attempts.get(attempt_id) if attempt_id else None
        if seen is not None:
            if seen != request_hash:
                raise IdempotencyConflictError(
                    "this idempotency key was already used for a different payment attempt"
                )
            return False
        self._require("record a failed payment for", OrderState.PLACED)
        method_value = _payment_method(method)
        reason = reason.strip()[:200] if isinstance(reason, str) else ""
        if not reason:
            raise ValidationError("a failed payment needs a reason", "reason")
        self._trigger(
            self.PaymentFailed, now, meta, method=method_value, amount=amount,
            provider_reference=provider_reference, reason=reason, attempt_id=attempt_id,
            request_hash=request_hash,
        )
        return True

    def flag_for_review(self, rule: str, detail: str, now: datetime, meta: EventMetadata) -> bool:
        if rule in self.flags:
            return False
        self._trigger(self.FlaggedForReview, now, meta, rule=rule, detail=detail)
        return True

    def cancel(self, reason: Any, note: str | None, now: datetime, meta: EventMetadata) -> None:
        self._require("cancel", *BEFORE_SHIPMENT)
        if any(not s["replaced"] for s in self.shipments.values()):
            # The order has not shipped, but a parcel is labelled for it: the parcel would
            # go out for a cancelled order.
            raise InvalidTransitionError(
                "cannot cancel an order whose parcel is already labelled; refund it instead",
                current_state="labelled", attempted="cancel",
            )
        try:
            reason_value = CancellationReason(reason).value
        except ValueError:
            allowed = ", ".join(r.value for r in CancellationReason)
            raise ValidationError(f"cancellation reason must be one of: {allowed}",
                                  "reason") from None
        if meta.actor_role.is_staff:
            meta.require_reason()
        self._trigger(
            self.Cancelled, now, meta, reason=reason_value, note=(note or "").strip()[:500] or None,
        )

    def refund(
        self,
        refund_id: str,
        items: Sequence[tuple[str, int]] | None,
        request_hash: str,
        now: datetime,
        meta: EventMetadata,
    ) -> dict[str, Any] | None:
        """Refund whole lines or quantities of them (None: everything still refundable).

        Returns the refund recorded, or None for a retry of one already recorded.
        """
        existing = self.refunds.get(refund_id)
        if existing is not None:
            if existing["request_hash"] != request_hash:
                raise IdempotencyConflictError(
                    "this idempotency key was already used for a different refund"
                )
            return None
        allowed: tuple[OrderState, ...]
        if self.state == OrderState.CANCELLED.value and self.paid_amount:
            allowed = (OrderState.CANCELLED,)
        else:
            allowed = AFTER_PAYMENT
        self._require("refund", *allowed)
        if meta.actor_role.is_staff:
            meta.require_reason()
        refunded_lines: list[dict[str, Any]] = []
        if items is None:
            for line in self.lines:
                left = line["quantity"] - self.refunded_quantities[line["line_id"]]
                if left:
                    refunded_lines.append({"line_id": line["line_id"], "quantity": left})
            amount = self.refundable_amount()
        else:
            if not items:
                raise ValidationError("name at least one line to refund", "lines")
            wanted: dict[str, int] = {}
            for index, (line_id, quantity) in enumerate(items):
                line = self.line(line_id, f"lines.{index}.line_id")
                if not isinstance(quantity, int) or quantity < 1:
                    raise ValidationError("refund quantities must be at least 1",
                                          f"lines.{index}.quantity")
                wanted[line_id] = wanted.get(line_id, 0) + quantity
                left = line["quantity"] - self.refunded_quantities[line_id]
                if wanted[line_id] > left:
                    raise ValidationError(
                        f"line {line_id} has only {left} left to refund",
                        f"lines.{index}.quantity",
                    )
            amount = 0
            for line_id, quantity in wanted.items():
                refunded_lines.append({"line_id": line_id, "quantity": quantity})
                amount += self.line_refund_amount(line_id, quantity)
            everything = all(
                self.refunded_quantities[line["line_id"]] + wanted.get(line["line_id"], 0)
                == line["quantity"]
                for line in self.lines
            )
            if everything:  # the last refund settles rounding and the shipping fee
                amount = self.refundable_amount()
        amount = min(amount, self.refundable_amount())
        if amount <= 0 and not refunded_lines:
            raise InvalidTransitionError(
                "nothing is left to refund", current_state=self.state, attempted="refund"
            )
        record = {
            "refund_id": refund_id,
            "lines": refunded_lines,
            "amount": amount,
            "request_hash": request_hash,
        }
        self._trigger(self.Refunded, now, meta, **record)
        return record

    # -- shipping ---------------------------------------------------------------------------

    def _order_parcels(self) -> list[dict[str, Any]]:
        """Parcels of the order itself, not replacements sent by after-sales cases."""
        return [s for s in self.shipments.values() if not s.get("case_id")]

    def shippable(self, line_id: str) -> int:
        """Ordered, minus refunded, minus what shipments already cover."""
        line = self.line(line_id)
        allocated = sum(
            item["quantity"]
            for shipment in self._order_parcels() if not shipment["replaced"]
            for item in shipment["items"] if item["line_id"] == line_id
        )
        return line["quantity"] - self.refunded_quantities[line_id] - allocated

    def allocate_shipment(
        self, shipment_id: str, items: Sequence[tuple[str, int]], replaces: str | None,
        now: datetime, meta: EventMetadata,
    ) -> list[dict[str, Any]]:
        """Lines and quantities a new parcel covers; a replacement takes over its original's."""
        if replaces is not None:
            original = self.shipments.get(replaces)
            if original is None:
                raise NotFoundError(f"order has no shipment {replaces}", "shipment_id")
            covered = [{"line_id": i["line_id"], "quantity": i["quantity"]}
                       for i in original["items"]]
            self._trigger(
                self.ShipmentAllocated, now, meta, shipment_id=shipment_id, items=covered,
                replaces=replaces, order_state=None,
            )
            return covered
        self._require("ship", OrderState.PAID, OrderState.PARTIALLY_SHIPPED)
        if not items:
            raise ValidationError("a shipment covers at least one line", "items")
        wanted: dict[str, int] = {}
        last: dict[str, int] = {}  # the item that brings each line to its total
        for index, (line_id, quantity) in enumerate(items):
            if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
                raise ValidationError("shipment quantities must be at least 1",
                                      f"items.{index}.quantity")
            wanted[line_id] = wanted.get(line_id, 0) + quantity
            last[line_id] = index
        for line_id, quantity in wanted.items():
            left = self.shippable(line_id)
            if quantity > left:
                raise ValidationError(
                    f"line {line_id} has only {left} left to ship "
                    "(ordered, minus refunded, minus already shipped)",
                    f"items.{last[line_id]}.quantity",
                )
        covered = [{"line_id": k, "quantity": v} for k, v in wanted.items()]
        # A label is not a shipment: the order ships when a carrier picks a parcel up
        # (shipment_dispatched), so the state stays as it is here.
        self._trigger(
            self.ShipmentAllocated, now, meta, shipment_id=shipment_id, items=covered,
            replaces=None, order_state=None,
        )
        return covered

    def shipment_dispatched(self, shipment_id: str, now: datetime, meta: EventMetadata) -> bool:
        """A carrier has a parcel: the order is shipped once every line is in a parcel a
        carrier has, partially shipped before that. False if already known."""
        shipment = self.shipments.get(shipment_id)
        if shipment is None or shipment.get("dispatched", True):
            # Parcels labelled before dispatch was tracked counted as shipped at once.
            return False
        self._trigger(
            self.ShipmentDispatched, now, meta, shipment_id=shipment_id,
            order_state=self._state_after_dispatch(shipment_id).value,
        )
        return True

    def _state_after_dispatch(self, shipment_id: str) -> OrderState:
        if self.state not in (OrderState.PAID, OrderState.PARTIALLY_SHIPPED):
            return OrderState(self.state)
        everything_allocated = all(self.shippable(line["line_id"]) == 0 for line in self.lines)
        waiting = [sid for sid, s in self.shipments.items()
                   if sid != shipment_id and not s["replaced"] and not s.get("dispatched", True)
                   and s.get("case_id") is None]
        if everything_allocated and not waiting:
            return OrderState.SHIPPED
        return OrderState.PARTIALLY_SHIPPED

    def shipment_received(self, shipment_id: str, now: datetime, meta: EventMetadata) -> bool:
        """A parcel reached the member; the order is delivered when every parcel has."""
        shipment = self.shipments.get(shipment_id)
        if shipment is None or shipment["received"]:
            return False
        self._trigger(self.ShipmentReceived, now, meta, shipment_id=shipment_id)
        everything_left = all(self.shippable(line["line_id"]) == 0 for line in self.lines)
        outstanding = [s for s in self._order_parcels()
                       if not s["replaced"] and not s["received"]]
        if everything_left and not outstanding and self.state == OrderState.SHIPPED:
            self._trigger(self.Delivered, now, meta)
            return True
        return False

    # -- after-sales ------------------------------------------------------------------------

    @property
    def open_case_claims(self) -> dict[str, list[dict[str, Any]]]:
        # Orders restored from snapshots taken before after-sales cases existed lack it.
        claims: dict[str, list[dict[str, Any]]] = getattr(self, "case_claims", {})
        return claims

    def delivered_quantity(self, line_id: str) -> int:
        """How many of a line reached the member: all of it once the order is delivered,
        before that what the received parcels held."""
        line = self.line(line_id)
        if self.state in (OrderState.DELIVERED, OrderState.COMPLETED):
            return int(line["quantity"])
        received = sum(
            item["quantity"]
            for shipment in self._order_parcels() if shipment["received"]
            for item in shipment["items"] if item["line_id"] == line_id
        )
        return min(received, int(line["quantity"]))

    def claimable(self, line_id: str) -> int:
        """Delivered, minus refunded, minus what open after-sales cases already claim."""
        claimed = sum(
            item["quantity"] for lines in self.case_claims.values()
            for item in lines if item["line_id"] == line_id
        )
        refunded = self.refunded_quantities[line_id]
        return max(self.delivered_quantity(line_id) - refunded - claimed, 0)

    def claim_for_case(self, case_id: str, lines: Sequence[Mapping[str, Any]], now: datetime,
                       meta: EventMetadata) -> None:
        """Reserve delivered quantities for a case, so that no two open cases claim them."""
        if case_id in self.open_case_claims:
            return
        for item in lines:
            left = self.claimable(item["line_id"])
            if item["quantity"] > left:
                raise ValidationError(
                    f"line {item['line_id']} has only {left} delivered and not already "
                    "refunded or claimed by another open case",
                    "lines",
                )
        self._trigger(
            self.CaseClaimed, now, meta, case_id=case_id,
            lines=[{"line_id": i["line_id"], "quantity": i["quantity"]}
                             for i in lines],
        )

    def release_case_claim(self, case_id: str, now: datetime, meta: EventMetadata) -> bool:
        if case_id not in self.open_case_claims:
            return False
        self._trigger(self.CaseClaimReleased, now, meta, case_id=case_id)
        return True

    def allocate_case_shipment(self, shipment_id: str, case_id: str,
                               items: Sequence[Mapping[str, Any]], now: datetime,
                               meta: EventMetadata) -> list[dict[str, Any]]:
        """A parcel an after-sales case sends (exchange, repair, reissue): recorded on the
        order without changing what is left to ship or the order's state."""
        known = self.shipments.get(shipment_id)
        if known is not None:
            return list(known["items"])
        covered = [{"line_id": i["line_id"], "quantity": i["quantity"]} for i in items]
        self._trigger(
            self.ShipmentAllocated, now, meta, shipment_id=shipment_id, items=covered,
            replaces=None, order_state=None, case_id=case_id,
        )
        return covered

    class CaseClaimed(RecordedAggregate.Event):
        case_id: str
        lines: list[dict[str, Any]]

        def apply(self, order: Any) -> None:
            order.case_claims = {**order.open_case_claims, self.case_id: self.lines}

    class CaseClaimReleased(RecordedAggregate.Event):
        case_id: str

        def apply(self, order: Any) -> None:
            order.case_claims = {k: v for k, v in order.open_case_claims.items()
                                 if k != self.case_id}

    class ShipmentAllocated(RecordedAggregate.Event):
        shipment_id: str
        items: list[dict[str, Any]]
        replaces: str | None
        # The order's state after this parcel (None for a reship: the state stays), carried
        # on the event so read models need not recount every allocation.
        order_state: str | None = None
        # The after-sales case that sends this parcel, if any.
        case_id: str | None = None

        def apply(self, order: Any) -> None:
            if self.replaces:
                order.shipments[self.replaces]["replaced"] = True
            order.shipments[self.shipment_id] = {
                "items": self.items, "replaced": False, "received": False,
                "case_id": self.case_id,
                # Parcels allocated by older events (order_state set) shipped at once.
                "dispatched": self.order_state is not None,
            }
            if self.order_state is not None:
                order._enter(OrderState(self.order_state), self.timestamp)

    class ShipmentDispatched(RecordedAggregate.Event):
        shipment_id: str
        # The order's state after it: SHIPPED, or PARTIALLY_SHIPPED while lines wait.
        order_state: str

        def apply(self, order: Any) -> None:
            order.shipments[self.shipment_id]["dispatched"] = True
            if self.order_state != order.state:
                order._enter(OrderState(self.order_state), self.timestamp)

    class ShipmentReceived(RecordedAggregate.Event):
        shipment_id: str

        def apply(self, order: Any) -> None:
            order.shipments[self.shipment_id]["received"] = True

    def mark_delivered(self, now: datetime, meta: EventMetadata) -> None:
        self._require("deliver", OrderState.PAID, OrderState.PARTIALLY_SHIPPED,
                      OrderState.SHIPPED)
        self._trigger(self.Delivered, now, meta)

    def return_window_closes(self, days: int) -> datetime | None:
        if self.delivered_at is None:
            return None
        return datetime.fromisoformat(self.delivered_at) + timedelta(days=days)

    def complete(self, now: datetime, return_window_days: int, meta: EventMetadata) -> None:
        self._require("complete", OrderState.DELIVERED)
        closes = self.return_window_closes(return_window_days)
        assert closes is not None
        if now < closes:
            raise InvalidTransitionError(
                f"cannot complete an order that is {self.state}: the return window is open "
                f"until {closes.isoformat()}",
                current_state=self.state,
                attempted="complete",
            )
        self._trigger(self.Completed, now, meta)

    # -- events -----------------------------------------------------------------------------


    def _enter(self, state: OrderState, at: datetime) -> None:
        self.state = state.value

    class Paid(RecordedAggregate.Event):
        payment_id: str
        method: str
        amount: int
        provider_reference: str | None
        request_hash: str

        def apply(self, order: Any) -> None:
            order.payments[self.payment_id] = {
                "payment_id": self.payment_id, "method": self.method, "amount": self.amount,
                "provider_reference": self.provider_reference,
                "request_hash": self.request_hash, "at": self.timestamp.isoformat(),
            }
            order.paid_amount += self.amount
            order._enter(OrderState.PAID, self.timestamp)

    class PaymentRequested(RecordedAggregate.Event):
        reference: str
        provider: str
        method: str
        amount: int
        request_hash: str

        def apply(self, order: Any) -> None:
            order.payment_attempts = {**order.attempts, self.reference: {
                "reference": self.reference, "provider": self.provider,
                "method": self.method, "amount": self.amount,
                "request_hash": self.request_hash, "at": self.timestamp.isoformat(),
            }}

    class PaymentFailed(RecordedAggregate.Event):
        method: str
        amount: int
        provider_reference: str | None
        reason: str
        attempt_id: str = ""
        request_hash: str = ""

        def apply(self, order: Any) -> None:
            order.failed_payments += 1
            if self.attempt_id:
                order.failed_attempts[self.attempt_id] = self.request_hash

    class FlaggedForReview(RecordedAggregate.Event):
        rule: str
        detail: str

        def apply(self, order: Any) -> None:
            order.flags[self.rule] = self.detail

    class Cancelled(RecordedAggregate.Event):
        reason: str
        note: str | None

        def apply(self, order: Any) -> None:
            order.cancellation = {"reason": self.reason, "note": self.note,
                                  "at": self.timestamp.isoformat()}
            order._enter(OrderState.CANCELLED, self.timestamp)


    class Refunded(RecordedAggregate.Event):
        refund_id: str
        lines: list[dict[str, Any]]
        amount: int
        request_hash: str

        def apply(self, order: Any) -> None:
            order.refunds[self.refund_id] = {
                "refund_id": self.refund_id, "lines": self.lines, "amount": self.amount,
                "request_hash": self.request_hash, "at": self.timestamp.isoformat(),
            }
            for line in self.lines:
                order.refunded_quantities[line["line_id"]] += line["quantity"]
            order.refunded_amount += self.amount


    class Delivered(RecordedAggregate.Event):

        def apply(self, order: Any) -> None:
            order.delivered_at = self.timestamp.isoformat()
            order._enter(OrderState.DELIVERED, self.timestamp)


    class Completed(RecordedAggregate.Event):

        def apply(self, order: Any) -> None:
            order._enter(OrderState.COMPLETED, self.timestamp)



def _payment_method(method: Any) -> str:
    try:
        return PaymentMethod(method).value
    except ValueError:
        allowed = ", ".join(m.value for m in PaymentMethod)
        raise ValidationError(f"payment method must be one of: {allowed}", "method") from None
