"""Orders: placement with its pricing breakdown, payment, cancellation, refunds, delivery."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import strawberry
from strawberry import relay

from api.commerce_readmodels import OrderFilter, get_orders, list_orders, order_cursor
from api.context import RequestContext
from api.readmodels import InvalidCursorError, required_instant
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Long,
    Tier,
    UserError,
    context,
    decode_id,
    make_connection,
    page_size,
    readable,
    run_command,
    written_row,
)
from api.service import CommandResult
from domain import order as model
from domain.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from domain.metadata import EventMetadata, Role

if TYPE_CHECKING:
    from api.schema.shipments import ShipmentNode

OrderState = strawberry.enum(model.OrderState)
PaymentMethod = strawberry.enum(model.PaymentMethod)
CancellationReason = strawberry.enum(model.CancellationReason)
STAFF = (Role.AGENT, Role.ADMIN)


@strawberry.type(description="An amount of money: integer minor units of a currency.")
class Money:
    amount: Long  # type: ignore[valid-type]
    currency: str


def money(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


@strawberry.type(description="Staff charged a line another price than the catalogue's.")
class PriceOverride:
    catalogue_price: Money = strawberry.field(
        description="The catalogue's price when the order was placed.")
    reason: str
    actor_id: str = strawberry.field(description="The staff member who overrode it.")


@strawberry.type(description="A line as the catalogue described and priced it when the "
                             "order was placed; later catalogue changes do not move it.")
class OrderLine:
    line_id: str
    product_id: str
    sku: str
    name: str
    category: str | None
    brand: str | None
    quantity: int
    unit_price: Money
    amount: Money
    refunded_quantity: int
    price_override: PriceOverride | None


@strawberry.type(description="How the total was reached, in the documented order.")
class PriceBreakdown:
    subtotal: Money
    tier_discount: Money
    coupon_discount: Money
    points_used: Long  # type: ignore[valid-type]
    points_value: Money
    shipping_fee: Money
    total: Money


@strawberry.type
class Payment:
    payment_id: str
    method: PaymentMethod
    amount: Money
    provider_reference: str | None
    at: dt.datetime


@strawberry.type
class RefundedLine:
    line_id: str
    quantity: int


@strawberry.type
class Refund:
    refund_id: str
    amount: Money
    lines: list[RefundedLine]
    at: dt.datetime


@strawberry.type
class ReviewFlag:
    rule: str = strawberry.field(description="The rule that flagged the order.")
    detail: str
    at: dt.datetime


@strawberry.type
class Cancellation:
    reason: CancellationReason
    note: str | None
    at: dt.datetime


@strawberry.type
class StateChange:
    state: OrderState
    at: dt.datetime


def _at(value: Any) -> dt.datetime:
    return required_instant(value)


@strawberry.type(name="Order")
class OrderNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[OrderNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        rows = await get_orders(ctx.runtime.async_engine, ids)
        return [cls.from_row(row) if row else None for row in readable(ctx.principal, rows, ids)]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OrderNode:
        return cls(key=row["order_id"], row=row)

    def _money(self, amount: int) -> Money:
        return money(int(amount), self.row["currency"])

    @strawberry.field
    def order_id(self) -> str:
        return self.key

    @strawberry.field
    def member_id(self) -> strawberry.ID:
        return strawberry.ID(str(relay.GlobalID("Member", self.row["member_id"])))

    @strawberry.field
    def state(self) -> OrderState:
        return OrderState(self.row["state"])

    @strawberry.field(description="The member's tier when the order was placed.")
    def tier(self) -> Tier:
        return Tier(self.row["tier"])

    @strawberry.field
    def lines(self) -> list[OrderLine]:
        refunded: dict[str, int] = {}
        for refund in self.row["refunds"]:
            for line in refund["lines"]:
                refunded[line["line_id"]] = refunded.get(line["line_id"], 0) + line["quantity"]
        return [
            OrderLine(
                line_id=line["line_id"], product_id=line["product_id"], sku=line["sku"],
                name=line["name"], category=line.get("category"), brand=line.get("brand"),
                quantity=line["quantity"], unit_price=self._money(line["unit_price"]),
                amount=self._money(line["quantity"] * line["unit_price"]),
                refunded_quantity=refunded.get(line["line_id"], 0),
                price_override=self._override(line.get("price_override")),
            )
            for line in self.row["lines"]
        ]

    def _override(self, override: dict[str, Any] | None) -> PriceOverride | None:
        if not override:
            return None
        return PriceOverride(catalogue_price=self._money(override["catalogue_price"]),
                             reason=override["reason"], actor_id=override["actor_id"])

    @strawberry.field
    def pricing(self) -> PriceBreakdown:
        p = self.row["pricing"]
        return PriceBreakdown(
            subtotal=self._money(p["subtotal"]),
            tier_discount=self._money(p["tier_discount"]),
            coupon_discount=self._money(p["coupon_discount"]),
            points_used=int(p["points_used"]),
            points_value=self._money(p["points_value"]),
            shipping_fee=self._money(p["shipping_fee"]),
            total=self._money(p["total"]),
        )

    @strawberry.field
    def coupon_id(self) -> strawberry.ID | None:
        coupon = self.row.get("coupon_id")
        return strawberry.ID(str(relay.GlobalID("Coupon", coupon))) if coupon else None

    @strawberry.field
    def payments(self) -> list[Payment]:
        return [
            Payment(payment_id=p["payment_id"], method=PaymentMethod(p["method"]),
                    amount=self._money(p["amount"]),
                    provider_reference=p.get("provider_reference"), at=_at(p["at"]))
            for p in self.row["payments"]
        ]

    @strawberry.field
    def failed_payments(self) -> int:
        return int(self.row["failed_payments"])

    @strawberry.field(description="Rules that flagged this order for review.")
    def review_flags(self) -> list[ReviewFlag]:
        return [ReviewFlag(rule=f["rule"], detail=f["detail"], at=_at(f["at"]))
                for f in self.row["flags"]]

    @strawberry.field
    def refunds(self) -> list[Refund]:
        return [
            Refund(refund_id=r["refund_id"], amount=self._money(r["amount"]),
                   lines=[RefundedLine(line_id=x["line_id"], quantity=x["quantity"])
                          for x in r["lines"]], at=_at(r["at"]))
            for r in self.row["refunds"]
        ]

    @strawberry.field
    def paid(self) -> Money:
        return self._money(self.row["paid_amount"])

    @strawberry.field
    def refunded(self) -> Money:
        return self._money(self.row["refunded_amount"])

    @strawberry.field
    def cancellation(self) -> Cancellation | None:
        c = self.row.get("cancellation")
        if not c:
            return None
        return Cancellation(reason=CancellationReason(c["reason"]), note=c.get("note"),
                            at=_at(c["at"]))

    @strawberry.field
    def history(self) -> list[StateChange]:
        return [StateChange(state=OrderState(h["state"]), at=_at(h["at"]))
                for h in self.row["history"]]

    @strawberry.field
    def placed_at(self) -> dt.datetime:
        return _at(self.row["placed_at"])

    @strawberry.field
    def paid_at(self) -> dt.datetime | None:
        return self.row.get("paid_at")

    @strawberry.field
    def delivered_at(self) -> dt.datetime | None:
        return self.row.get("delivered_at")

    @strawberry.field(description="After this, the order completes and its points vest.")
    def return_window_closes_at(self, info: strawberry.Info) -> dt.datetime | None:
        delivered = self.row.get("delivered_at")
        if delivered is None:
            return None
        days = context(info).runtime.rules.return_window_days
        return delivered + dt.timedelta(days=days)

    @strawberry.field
    def version(self) -> int:
        return int(self.row["version"])

    @strawberry.field(description="The order's parcels, oldest first.")
    async def shipments(
        self, info: strawberry.Info
    ) -> list[Annotated[ShipmentNode, strawberry.lazy("api.schema.shipments")]]:
        from api.schema.shipments import order_shipments

        return await order_shipments(info, self.key)


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input(description="A product of the catalogue and how many: the catalogue "
                            "decides the price, name, category, brand and availability.")
class OrderLineInput:
    product_id: str = strawberry.field(description="The catalogue's product id.")
    quantity: int = strawberry.field(description="1 to the rules' maxLineQuantity.")


@strawberry.input(description="Staff only: charge a line another price than the catalogue's, "
                               "with why. The order keeps both prices, the reason and who.")
class PriceOverrideInput:
    line: int = strawberry.field(description="The index of the line in `lines` (from 0).")
    unit_price: Long = strawberry.field(  # type: ignore[valid-type]
        description="Minor units of the shop's currency."
    )
    reason: str


@strawberry.input
class PlaceOrderInput:
    member_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in member."
    )
    lines: list[OrderLineInput]
    price_overrides: list[PriceOverrideInput] | None = strawberry.field(
        default=None, description="Staff placing an order for a member only."
    )
    coupon_id: strawberry.ID | None = None
    points: Long = strawberry.field(  # type: ignore[valid-type]
        default=0, description="Points to pay with.")
    idempotency_key: str = strawberry.field(
        description="A retry with the same key and input returns the first order."
    )
    reason: str | None = None


@strawberry.input(description=(
    "Ask to pay an order online: opens a payment attempt with the payment provider for the "
    "amount due. The order is paid only when the provider confirms it with its signed "
    "callback (POST /webhooks/payments/{provider})."
))
class PayOrderInput:
    order_id: strawberry.ID
    method: PaymentMethod = strawberry.field(description="CARD, ALIPAY or WECHAT_PAY.")
    idempotency_key: str = strawberry.field(
        description="A retry with the same key returns the same attempt and reference."
    )


@strawberry.input(description="Staff: a payment taken in person, with the mandatory reason.")
class RecordInPersonPaymentInput:
    order_id: strawberry.ID
    method: PaymentMethod = strawberry.field(
        description="CASH_ON_DELIVERY, IN_STORE or STORE_CREDIT."
    )
    idempotency_key: str
    reason: str


@strawberry.input
class CancelOrderInput:
    # Staff's reason for cancelling is the note.
    domain_paths: ClassVar[dict[str, str]] = {"meta.reason": "note"}
    order_id: strawberry.ID
    reason: CancellationReason
    note: str | None = strawberry.field(
        default=None, description="Free text; required when staff cancel."
    )


@strawberry.input
class RefundLineInput:
    line_id: str
    quantity: int


@strawberry.input
class RefundOrderInput:
    order_id: strawberry.ID
    lines: list[RefundLineInput] | None = strawberry.field(
        default=None, description="Lines and quantities to refund; omit to refund everything."
    )
    idempotency_key: str
    reason: str


@strawberry.input
class OrderActionInput:
    order_id: strawberry.ID
    reason: str | None = None


@strawberry.input
class OrderFilterInput:
    member_id: strawberry.ID | None = None
    state: OrderState | None = None
    flagged: bool | None = None


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class OrderPayload:
    order: OrderNode | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class PlaceOrderPayload(OrderPayload):
    pass


@strawberry.type(description="An open request to the payment provider to collect an amount.")
class PaymentAttempt:
    reference: str = strawberry.field(
        description="The provider reference: the provider's callback names it."
    )
    provider: str
    method: PaymentMethod
    amount: Money
    requested_at: dt.datetime


@strawberry.type
class PayOrderPayload(OrderPayload):
    attempt: PaymentAttempt | None = None


@strawberry.type
class RecordInPersonPaymentPayload(OrderPayload):
    pass


@strawberry.type
class CancelOrderPayload(OrderPayload):
    pass


@strawberry.type
class RefundOrderPayload(OrderPayload):
    pass


@strawberry.type
class MarkOrderDeliveredPayload(OrderPayload):
    pass


@strawberry.type
class CompleteOrderPayload(OrderPayload):
    pass


# -- helpers --------------------------------------------------------------------------------

P = TypeVar("P", bound=OrderPayload)


def decode_uuid(global_id: strawberry.ID | str, type_name: str, field: str) -> uuid.UUID:
    raw = decode_id(global_id, type_name, field)
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError(f"malformed {type_name} id {global_id!r}", field) from None


def owned_order(ctx: RequestContext, order_id: strawberry.ID) -> uuid.UUID:
    """The order, if the caller may act on it: its member, or staff."""
    oid = decode_uuid(order_id, "Order", "order_id")
    order = ctx.runtime.orders.get(oid)
    ctx.principal.require_member_access(order.member_id)
    return oid


async def load_order(ctx: RequestContext, result: CommandResult) -> OrderNode | None:
    """The order as the read model shows it once it includes this write (or, for a retry,
    the first attempt's)."""
    order_id = str(result.aggregate_id)

    async def fetch() -> dict[str, Any] | None:
        return (await get_orders(ctx.runtime.async_engine, [order_id])).get(order_id)

    row = await written_row(ctx, result, fetch)
    return OrderNode.from_row(row) if row else None


async def order_mutation(
    info: strawberry.Info,
    payload: type[P],
    act: Callable[[RequestContext, EventMetadata], CommandResult],
    reason: str | None,
) -> P:
    result, errors = await run_command(info, act, reason)
    if result is None:
        return payload(order=None, position=None, user_errors=errors)
    order = await load_order(context(info), result)
    return payload(order=order, position=result.position, user_errors=[])


def _require_staff(ctx: RequestContext) -> None:
    ctx.principal.require_role(*STAFF)


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class OrderQueries:
    @strawberry.field(description="An order: its member, or staff and auditors.")
    async def order(self, info: strawberry.Info, id: strawberry.ID) -> OrderNode | None:
        ctx = context(info)
        try:
            order_id = str(decode_uuid(id, "Order", "id"))
            if ctx.principal.role is Role.ANONYMOUS:
                ctx.principal.require_role(Role.MEMBER)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        rows = await get_orders(ctx.runtime.async_engine, [order_id])
        row = rows.get(order_id)
        if row is None or not ctx.principal.can_read_member(row["member_id"]):
            return None
        return OrderNode.from_row(row)

    @strawberry.field(description="Orders, newest first: staff and auditors.")
    async def orders(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        filter: OrderFilterInput | None = None,
    ) -> Connection[OrderNode]:
        ctx = context(info)
        try:
            ctx.principal.require_role(Role.AGENT, Role.ADMIN, Role.AUDITOR)
            member = None
            if filter and filter.member_id:
                member = decode_id(filter.member_id, "Member", "member_id")
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        where = OrderFilter(
            member_id=member,
            state=filter.state.value if filter and filter.state else None,
            flagged=filter.flagged if filter else None,
        )
        return await orders_connection(info, where, first, after)


async def orders_connection(
    info: strawberry.Info, where: OrderFilter, first: int | None, after: str | None
) -> Connection[OrderNode]:
    size = page_size(info, first)
    try:
        page = await list_orders(context(info).runtime.async_engine, where, size, after)
    except (InvalidCursorError, ValueError, TypeError):
        raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None
    return make_connection(
        [OrderNode.from_row(r) for r in page.rows],
        [order_cursor(r) for r in page.rows],
        has_next=page.has_next,
        has_previous=after is not None,
        total=page.total,
    )


@strawberry.type
class OrderMutations:
    @strawberry.mutation(description="Place an order for catalogue products; the catalogue "
                                     "prices it and the order keeps that snapshot.")
    async def place_order(self, info: strawberry.Info, input: PlaceOrderInput) -> PlaceOrderPayload:
        lines = [{"product_id": line.product_id, "quantity": line.quantity}
                 for line in input.lines]
        overrides = [{"line": o.line, "unit_price": o.unit_price, "reason": o.reason}
                     for o in input.price_overrides or ()]

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            if input.member_id is None:
                ctx.principal.require_role(Role.MEMBER)
                member = ctx.principal.subject
            else:
                member = decode_id(input.member_id, "Member", "member_id")
            ctx.principal.require_member_access(member)
            if ctx.principal.is_staff:
                meta.require_reason()
            coupon = None
            if input.coupon_id:
                coupon = decode_uuid(input.coupon_id, "Coupon", "coupon_id")
            try:
                member_uuid = uuid.UUID(member)
            except ValueError:
                raise NotFoundError(f"member {member} not found", "member_id") from None
            return ctx.runtime.orders.place(
                member_uuid, lines, coupon, input.points, input.idempotency_key, meta,
                overrides,
            )

        return await order_mutation(info, PlaceOrderPayload, act, input.reason)

    @strawberry.mutation(description=(
        "Ask the payment provider to collect the amount due. Never marks the order paid: "
        "the provider's signed callback does."
    ))
    async def pay_order(self, info: strawberry.Info, input: PayOrderInput) -> PayOrderPayload:
        attempts: list[dict[str, Any]] = []

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            order_id = owned_order(ctx, input.order_id)
            provider = ctx.runtime.settings.default_payment_provider
            if provider is None:
                raise ValidationError("no payment provider is configured", "method")
            result, attempt = ctx.runtime.payments.request(
                order_id, input.method.value, provider, input.idempotency_key, meta)
            attempts.append(attempt)
            return result

        payload = await order_mutation(info, PayOrderPayload, act, None)
        if attempts and payload.order is not None:
            attempt = attempts[-1]
            payload.attempt = PaymentAttempt(
                reference=attempt["reference"], provider=attempt["provider"],
                method=PaymentMethod(attempt["method"]),
                amount=money(attempt["amount"], payload.order.row["currency"]),
                requested_at=_at(attempt["at"]),
            )
        return payload

    @strawberry.mutation(description=(
        "Staff: record a cash-on-delivery, in-store or store-credit payment of the amount "
        "due, with a reason. Members cannot."
    ))
    async def record_in_person_payment(
        self, info: strawberry.Info, input: RecordInPersonPaymentInput
    ) -> RecordInPersonPaymentPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            order_id = owned_order(ctx, input.order_id)
            return ctx.runtime.payments.record_in_person(
                order_id, input.method.value, input.idempotency_key, meta)

        return await order_mutation(info, RecordInPersonPaymentPayload, act, input.reason)

    @strawberry.mutation(description="Cancel before shipment; a paid order is refunded.")
    async def cancel_order(
        self, info: strawberry.Info, input: CancelOrderInput
    ) -> CancelOrderPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            order_id = owned_order(ctx, input.order_id)
            return ctx.runtime.orders.cancel(order_id, input.reason.value, input.note, meta)

        return await order_mutation(info, CancelOrderPayload, act, input.note)

    @strawberry.mutation(description="Staff: refund lines and quantities, or everything.")
    async def refund_order(
        self, info: strawberry.Info, input: RefundOrderInput
    ) -> RefundOrderPayload:
        items = [(line.line_id, line.quantity) for line in input.lines] if input.lines else None

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            order_id = owned_order(ctx, input.order_id)
            return ctx.runtime.orders.refund(order_id, items, input.idempotency_key, meta)

        return await order_mutation(info, RefundOrderPayload, act, input.reason)

    @strawberry.mutation(description="Staff: the order reached the member.")
    async def mark_order_delivered(
        self, info: strawberry.Info, input: OrderActionInput
    ) -> MarkOrderDeliveredPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.orders.mark_delivered(owned_order(ctx, input.order_id), meta)

        return await order_mutation(info, MarkOrderDeliveredPayload, act, input.reason)

    @strawberry.mutation(description="Staff: complete a delivered order after its return window.")
    async def complete_order(
        self, info: strawberry.Info, input: OrderActionInput
    ) -> CompleteOrderPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.orders.complete(owned_order(ctx, input.order_id), meta)

        return await order_mutation(info, CompleteOrderPayload, act, input.reason)
