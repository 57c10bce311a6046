"""Shipments: parcels of an order, delivery options, tracking, exceptions, feedback, and the
notifications they send the member.

Everything read here comes from the "shipment_tracking" and "notifications" read models;
the subscriptions poll them, so they also see changes recorded by other processes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry import relay

from api.context import RequestContext
from api.readmodels import InvalidCursorError, instant, required_instant, rows_by_id
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    UserError,
    context,
    encode_id,
    followed_id,
    make_connection,
    page_size,
    readable,
    run_command,
    subscription_principal,
)
from api.schema.members import Address, AddressInput
from api.schema.orders import STAFF, decode_uuid
from api.service import CommandResult
from api.shipping import PickupPoint as PickupPointModel
from api.shipping_readmodels import (
    ShipmentFilter,
    get_shipments,
    latest_notification_position,
    list_shipments,
    notification_cursor,
    notifications_page,
    notifications_since,
    shipment_cursor,
)
from api.shipping_readmodels import order_shipments as order_shipment_rows
from domain import shipment as model
from domain.errors import (
    DomainError,
    ErrorCode,
    NotFoundError,
    ValidationError,
)
from domain.metadata import EventMetadata, Role
from projections.shipping_tables import notifications

DeliveryMethod = strawberry.enum(model.DeliveryMethod)
DeliverySpeed = strawberry.enum(model.DeliverySpeed)
ShipmentDirection = strawberry.enum(model.Direction, name="ShipmentDirection")
TrackingStatus = strawberry.enum(model.TrackingStatus)
ShipmentExceptionKind = strawberry.enum(model.ExceptionKind, name="ShipmentExceptionKind")
ExceptionResolution = strawberry.enum(model.Resolution, name="ExceptionResolution")
READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)
POLL_SECONDS = 0.25


@strawberry.enum
class ShipmentExceptionState(StrEnum):
    NONE = "none"
    OPEN = "open"
    RESOLVED = "resolved"


@strawberry.enum
class NotificationKind(StrEnum):
    MILESTONE = "milestone"
    EXCEPTION = "exception"


_at = instant
_required_at = required_instant


def _global(type_name: str, raw: str | None) -> strawberry.ID | None:
    return encode_id(type_name, raw) if raw else None


# -- output types ---------------------------------------------------------------------------


@strawberry.type
class PickupPoint:
    point_id: str
    name: str
    address: str
    city: str
    opening_hours: str

    @classmethod
    def of(cls, point: PickupPointModel) -> PickupPoint:
        return cls(point_id=point.point_id, name=point.name, address=point.address,
                   city=point.city, opening_hours=point.opening_hours)


@strawberry.type
class DeliveryWindow:
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def of(cls, window: dict[str, Any] | None) -> DeliveryWindow | None:
        if not window:
            return None
        return cls(start=_required_at(window["start"]), end=_required_at(window["end"]))


@strawberry.type
class ShipmentItem:
    line_id: str
    quantity: int


@strawberry.type(description="How the parcel is packed (the printed name and message are "
                             "personal data and not shown here).")
class ShipmentPackaging:
    gift_wrap: bool
    eco: bool


@strawberry.type(description=(
    "What the member asked for on this parcel that is their personal data: kept encrypted "
    "under their key, readable by them, staff, and auditors with the personal-data scope, "
    "and gone once they are erased."))
class ShipmentPersonalDetails:
    address: Address | None = strawberry.field(
        description="Where it goes (none for a pickup point).")
    printed_name: str | None
    gift_message: str | None


@strawberry.type(description="One carrier update, in the order things happened.")
class TrackingUpdate:
    update_id: str
    status: TrackingStatus
    occurred_at: dt.datetime
    location: str | None
    note: str | None


@strawberry.type
class ShipmentException:
    kind: ShipmentExceptionKind
    detail: str
    at: dt.datetime | None


@strawberry.type(description="How an exception was resolved.")
class ShipmentResolution:
    resolution: ExceptionResolution
    at: dt.datetime | None
    pickup_point_id: str | None
    window: DeliveryWindow | None
    promised_by: dt.datetime | None
    exceptions: list[ShipmentExceptionKind] = strawberry.field(  # type: ignore[valid-type]
        description="The exceptions it closed."
    )


@strawberry.type
class DeliveryRating:
    speed: int
    courier_attitude: int
    packaging_condition: int
    comment: str | None
    at: dt.datetime | None


@strawberry.type
class DeliveryComplaint:
    text: str | None = strawberry.field(
        description="What the member wrote: null once the member is erased."
    )
    filed_at: dt.datetime
    answer: str | None
    answered_at: dt.datetime | None
    answered_by: str | None = strawberry.field(
        description="The staff member who answered: shown to staff and auditors only."
    )
    response_time_seconds: int | None = strawberry.field(
        description="Seconds from filing the complaint to its answer."
    )


@strawberry.type(name="Shipment")
class ShipmentNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[ShipmentNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        rows = await get_shipments(ctx.runtime.async_engine, ids)
        return [cls.from_row(row) if row else None for row in readable(ctx.principal, rows, ids)]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ShipmentNode:
        return cls(key=row["shipment_id"], row=row)

    @strawberry.field
    def shipment_id(self) -> str:
        return self.key

    @strawberry.field
    def order_id(self) -> strawberry.ID:
        return encode_id("Order", self.row["order_id"])

    @strawberry.field
    def member_id(self) -> strawberry.ID:
        return encode_id("Member", self.row["member_id"])

    @strawberry.field
    def carrier(self) -> str:
        return str(self.row["carrier"])

    @strawberry.field
    def tracking_number(self) -> str:
        return str(self.row["tracking_number"])

    @strawberry.field
    def method(self) -> DeliveryMethod:
        return DeliveryMethod(self.row["method"])

    @strawberry.field
    def speed(self) -> DeliverySpeed:
        return DeliverySpeed(self.row["speed"])

    @strawberry.field(description="OUTBOUND to the member, or INBOUND: an after-sales "
                                  "return parcel on its way back to the shop.")
    def direction(self) -> ShipmentDirection:
        return ShipmentDirection(self.row["direction"])

    @strawberry.field(description="The after-sales case that sent this parcel, or whose "
                                  "return parcel it is (its global id).")
    def case_id(self) -> strawberry.ID | None:
        case = self.row["case_id"]
        return encode_id("AfterSalesCase", case) if case else None

    @strawberry.field(description="Dispatched first: a benefit of the member's tier.")
    def priority_dispatch(self) -> bool:
        return bool(self.row["priority_dispatch"])

    @strawberry.field
    def pickup_point_id(self) -> str | None:
        return self.row.get("pickup_point")

    @strawberry.field
    def pickup_point(self, info: strawberry.Info) -> PickupPoint | None:
        point = self.row.get("pickup_point")
        known = context(info).runtime.shipping.pickup_points.get(point) if point else None
        return PickupPoint.of(known) if known else None

    @strawberry.field
    def window(self) -> DeliveryWindow | None:
        return DeliveryWindow.of(self.row.get("window"))

    @strawberry.field
    def items(self) -> list[ShipmentItem]:
        return [ShipmentItem(line_id=i["line_id"], quantity=int(i["quantity"]))
                for i in self.row["items"] or []]

    @strawberry.field
    def packaging(self) -> ShipmentPackaging:
        packaging = self.row.get("packaging") or {}
        return ShipmentPackaging(gift_wrap=bool(packaging.get("gift_wrap")),
                                 eco=bool(packaging.get("eco")))

    @strawberry.field(description=(
        "The delivery address, printed name and gift message: null for callers who may not "
        "see the member's personal data, and once the member is erased."))
    async def personal_details(self, info: strawberry.Info) -> ShipmentPersonalDetails | None:
        ctx = context(info)
        if not ctx.principal.can_see_personal_data(str(self.row["member_id"])):
            return None
        # Personal data never reaches a read model: the parcel's own events hold it,
        # encrypted, so it is read from them (and only when asked for).
        shipment = await run_in_threadpool(ctx.runtime.shipping.get, uuid.UUID(self.key))
        personal = shipment.personal or {}
        if not personal:
            return None
        return ShipmentPersonalDetails(
            address=Address.from_dict(personal.get("address")),
            printed_name=personal.get("printed_name"),
            gift_message=personal.get("gift_message"),
        )

    @strawberry.field
    def status(self) -> TrackingStatus:
        return TrackingStatus(self.row["status"])

    @strawberry.field(description="When the current status happened (carrier time).")
    def status_at(self) -> dt.datetime | None:
        return _at(self.row.get("status_at"))

    @strawberry.field(description="The carrier's latest estimate, else the promise.")
    def eta(self) -> dt.datetime | None:
        return _at(self.row.get("eta"))

    @strawberry.field(description="Delivery promised by then; later is late.")
    def promised_by(self) -> dt.datetime | None:
        return _at(self.row.get("promised_by"))

    @strawberry.field
    def timeline(self) -> list[TrackingUpdate]:
        return [
            TrackingUpdate(update_id=t["update_id"], status=TrackingStatus(t["status"]),
                           occurred_at=_required_at(t["occurred_at"]),
                           location=t.get("location"), note=t.get("note"))
            for t in self.row.get("timeline") or []
        ]

    @strawberry.field
    def exception_state(self) -> ShipmentExceptionState:
        return ShipmentExceptionState(self.row.get("exception_state") or "none")

    @strawberry.field
    def open_exceptions(self) -> list[ShipmentException]:
        return [
            ShipmentException(kind=ShipmentExceptionKind(e["kind"]), detail=e.get("detail") or "",
                              at=_at(e.get("at")))
            for e in self.row.get("open_exceptions") or []
        ]

    @strawberry.field
    def resolutions(self) -> list[ShipmentResolution]:
        return [
            ShipmentResolution(
                resolution=ExceptionResolution(r["resolution"]), at=_at(r.get("at")),
                pickup_point_id=r.get("pickup_point"), window=DeliveryWindow.of(r.get("window")),
                promised_by=_at(r.get("promised_by")),
                exceptions=[ShipmentExceptionKind(k) for k in r.get("exceptions") or []],
            )
            for r in self.row.get("resolutions") or []
        ]

    @strawberry.field
    def rating(self) -> DeliveryRating | None:
        r = self.row.get("rating")
        if not r:
            return None
        return DeliveryRating(speed=int(r["speed"]), courier_attitude=int(r["courier_attitude"]),
                              packaging_condition=int(r["packaging_condition"]),
                              comment=r.get("comment"), at=_at(r.get("at")))

    @strawberry.field
    def rated(self) -> bool:
        return bool(self.row.get("rated"))

    @strawberry.field
    def complaint(self, info: strawberry.Info) -> DeliveryComplaint | None:
        c = self.row.get("complaint")
        if not c:
            return None
        seconds = c.get("response_seconds")
        staff_view = context(info).principal.role in READERS
        return DeliveryComplaint(
            text=c.get("text"), filed_at=_required_at(c["filed_at"]), answer=c.get("answer"),
            answered_at=_at(c.get("answered_at")),
            answered_by=c.get("answered_by") if staff_view else None,
            response_time_seconds=int(seconds) if seconds is not None else None,
        )

    @strawberry.field(description="The parcel this one replaces (a reshipment).")
    def replaces(self) -> strawberry.ID | None:
        return _global("Shipment", self.row.get("replaces"))

    @strawberry.field(description="The parcel sent to replace this one.")
    def reshipped_as(self) -> strawberry.ID | None:
        return _global("Shipment", self.row.get("reshipped_as"))

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return _required_at(self.row["created_at"])

    @strawberry.field
    def delivered_at(self) -> dt.datetime | None:
        return _at(self.row.get("delivered_at"))

    @strawberry.field
    def updated_at(self) -> dt.datetime | None:
        return _at(self.row.get("updated_at"))

    @strawberry.field
    def version(self) -> int:
        return int(self.row["version"])


@strawberry.type(name="Notification")
class NotificationNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[NotificationNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        rows = await rows_by_id(ctx.runtime.async_engine, notifications.c.notification_id, ids)
        return [cls.from_row(row) if row else None for row in readable(ctx.principal, rows, ids)]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NotificationNode:
        return cls(key=row["notification_id"], row=row)

    @strawberry.field
    def notification_id(self) -> str:
        return self.key

    @strawberry.field
    def kind(self) -> NotificationKind:
        return NotificationKind(self.row["kind"])

    @strawberry.field(description="What it is about, e.g. shipment.delivered or "
                                  "shipment.exception.")
    def topic(self) -> str:
        return str(self.row["topic"])

    @strawberry.field
    def shipment_id(self) -> strawberry.ID | None:
        return _global("Shipment", self.row.get("shipment_id"))

    @strawberry.field
    def order_id(self) -> strawberry.ID | None:
        return _global("Order", self.row.get("order_id"))

    @strawberry.field
    def title(self) -> str:
        return str(self.row["title"])

    @strawberry.field
    def body(self) -> str:
        return str(self.row["body"])

    @strawberry.field(description="Where it was sent, from the member's consents.")
    def channels(self) -> list[str]:
        return [str(c) for c in self.row.get("channels") or []]

    @strawberry.field
    def created_at(self) -> dt.datetime:
        return _required_at(self.row["created_at"])

    @strawberry.field
    def position(self) -> EventPosition:  # type: ignore[valid-type]
        return int(self.row["position"])


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input
class ShipmentItemInput:
    line_id: str
    quantity: int


@strawberry.input
class DeliveryWindowInput:
    start: dt.datetime
    end: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end}


@strawberry.input
class ShipmentPackagingInput:
    gift_wrap: bool = False
    eco: bool = False
    printed_name: str | None = None
    gift_message: str | None = None


@strawberry.input
class CreateShipmentInput:
    # The domain's pickup point is chosen by its id.
    domain_paths: ClassVar[dict[str, str]] = {"pickup_point": "pickup_point_id"}
    order_id: strawberry.ID
    items: list[ShipmentItemInput] | None = strawberry.field(
        default=None, description="Lines and quantities; omit to ship everything left."
    )
    method: DeliveryMethod
    speed: DeliverySpeed = DeliverySpeed.STANDARD  # type: ignore[attr-defined]
    pickup_point_id: str | None = None
    window: DeliveryWindowInput | None = None
    address: AddressInput | None = strawberry.field(
        default=None, description="Defaults to the member's default address."
    )
    packaging: ShipmentPackagingInput | None = strawberry.field(
        default=None, description="Defaults to the member's packaging preferences."
    )
    carrier: str
    tracking_number: str = strawberry.field(
        description="A retry with the same carrier and number finds the first shipment."
    )
    reason: str | None = None


@strawberry.input
class ChangeDeliveryOptionsInput:
    # The domain's pickup point is chosen by its id.
    domain_paths: ClassVar[dict[str, str]] = {"pickup_point": "pickup_point_id"}
    shipment_id: strawberry.ID
    method: DeliveryMethod
    pickup_point_id: str | None = None
    window: DeliveryWindowInput | None = None
    address: AddressInput | None = None
    speed: DeliverySpeed | None = strawberry.field(
        default=None, description="A speed the member's tier allows (expedited from Gold by "
        "default); staff may override the tier with their reason.")
    reason: str | None = strawberry.field(default=None, description="Required from staff.")


@strawberry.input
class RecordTrackingEventInput:
    shipment_id: strawberry.ID
    update_id: str = strawberry.field(description="The carrier's id: a repeat is ignored.")
    status: TrackingStatus
    occurred_at: dt.datetime
    location: str | None = None
    note: str | None = None
    eta: dt.datetime | None = None
    reason: str | None = None


@strawberry.input
class ResolveShipmentExceptionInput:
    # The domain's pickup point is chosen by its id.
    domain_paths: ClassVar[dict[str, str]] = {"pickup_point": "pickup_point_id"}
    shipment_id: strawberry.ID
    resolution: ExceptionResolution
    window: DeliveryWindowInput | None = strawberry.field(
        default=None, description="The new window, to RESCHEDULE."
    )
    pickup_point_id: str | None = strawberry.field(
        default=None, description="Where to collect it, to SWITCH_TO_PICKUP."
    )
    reason: str | None = strawberry.field(default=None, description="Required from staff.")


@strawberry.input
class RateDeliveryInput:
    shipment_id: strawberry.ID
    speed: int = strawberry.field(description="1 to 5.")
    courier_attitude: int = strawberry.field(description="1 to 5.")
    packaging_condition: int = strawberry.field(description="1 to 5.")
    comment: str | None = None


@strawberry.input
class FileDeliveryComplaintInput:
    shipment_id: strawberry.ID
    text: str


@strawberry.input
class AnswerDeliveryComplaintInput:
    shipment_id: strawberry.ID
    text: str
    reason: str | None = None


@strawberry.input
class ShipmentFilterInput:
    order_id: strawberry.ID | None = None
    member_id: strawberry.ID | None = None
    status: TrackingStatus | None = None
    exception: bool | None = strawberry.field(
        default=None, description="True: an exception is open; false: none is."
    )
    late: bool | None = strawberry.field(
        default=None, description="True: not delivered and past its promise (business time)."
    )
    unrated: bool | None = strawberry.field(
        default=None, description="True: delivered to the member and not rated yet "
        "(return parcels are never rateable)."
    )


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class ShipmentPayload:
    shipment: ShipmentNode | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class CreateShipmentPayload(ShipmentPayload):
    pass


@strawberry.type
class ChangeDeliveryOptionsPayload(ShipmentPayload):
    pass


@strawberry.type
class RecordTrackingEventPayload(ShipmentPayload):
    pass


@strawberry.type
class ResolveShipmentExceptionPayload(ShipmentPayload):
    replacement: ShipmentNode | None = strawberry.field(
        description="The new parcel, when the resolution is RESHIP."
    )


@strawberry.type
class RateDeliveryPayload(ShipmentPayload):
    pass


@strawberry.type
class FileDeliveryComplaintPayload(ShipmentPayload):
    pass


@strawberry.type
class AnswerDeliveryComplaintPayload(ShipmentPayload):
    pass


# -- helpers --------------------------------------------------------------------------------

P = TypeVar("P", bound=ShipmentPayload)


def _plain_address(address: AddressInput | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {k: v for k, v in vars(address).items() if v is not None}


def _window(window: DeliveryWindowInput | None) -> dict[str, Any] | None:
    return window.as_dict() if window is not None else None


def owned_shipment(ctx: RequestContext, shipment_id: strawberry.ID) -> uuid.UUID:
    """The shipment, if the caller may act on it: the member it goes to, or staff."""
    sid = decode_uuid(shipment_id, "Shipment", "shipment_id")
    try:
        shipment = ctx.runtime.shipping.get(sid)
    except NotFoundError:
        raise NotFoundError(f"shipment {shipment_id} not found", "shipment_id") from None
    ctx.principal.require_member_access(shipment.member_id)
    return sid


def _require_staff(ctx: RequestContext) -> None:
    ctx.principal.require_role(*STAFF)


async def load_shipment(ctx: RequestContext, shipment_id: str,
                        position: int | None) -> ShipmentNode | None:
    try:
        await ctx.runtime.wait_for_read_models(position)
    except Exception:
        return None
    rows = await get_shipments(ctx.runtime.async_engine, [shipment_id])
    row = rows.get(shipment_id)
    return ShipmentNode.from_row(row) if row else None


async def shipment_mutation(
    info: strawberry.Info,
    payload: type[P],
    act: Callable[[RequestContext, EventMetadata], CommandResult],
    reason: str | None,
) -> P:
    result, errors = await run_command(info, act, reason)
    if result is None:
        return payload(shipment=None, position=None, user_errors=errors)
    shipment = await load_shipment(context(info), str(result.aggregate_id), result.position)
    return payload(shipment=shipment, position=result.position, user_errors=[])


def _readable(ctx: RequestContext) -> None:
    if ctx.principal.role is Role.ANONYMOUS:
        ctx.principal.require_role(Role.MEMBER)


async def order_shipments(info: strawberry.Info, order_id: str) -> list[ShipmentNode]:
    """An order's parcels, oldest first (for `Order.shipments`; the order is already visible)."""
    ctx = context(info)
    rows = await ctx.loaders.order_shipments.load(order_id)
    return [ShipmentNode.from_row(r) for r in rows
            if ctx.principal.can_read_member(r["member_id"])]


async def member_notifications(
    info: strawberry.Info, member_id: str, first: int | None, after: str | None
) -> Connection[NotificationNode]:
    """A member's notifications, newest first (for `Member.notifications`)."""
    ctx = context(info)
    if not ctx.principal.can_read_member(member_id):
        raise ApiError("you may only read your own notifications", ErrorCode.FORBIDDEN.value)
    size = page_size(info, first)
    try:
        page = await notifications_page(ctx.runtime.async_engine, member_id, size, after)
    except (InvalidCursorError, ValueError, TypeError):
        raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None
    return make_connection(
        [NotificationNode.from_row(r) for r in page.rows],
        [notification_cursor(r) for r in page.rows],
        has_next=page.has_next, has_previous=after is not None, total=page.total,
    )


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class ShipmentQueries:
    @strawberry.field(description="A shipment: its member, or staff and auditors.")
    async def shipment(self, info: strawberry.Info, id: strawberry.ID) -> ShipmentNode | None:
        ctx = context(info)
        try:
            shipment_id = str(decode_uuid(id, "Shipment", "id"))
            _readable(ctx)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        rows = await get_shipments(ctx.runtime.async_engine, [shipment_id])
        row = rows.get(shipment_id)
        if row is None or not ctx.principal.can_read_member(row["member_id"]):
            return None
        return ShipmentNode.from_row(row)

    @strawberry.field(description="Shipments, newest first: staff and auditors.")
    async def shipments(
        self,
        info: strawberry.Info,
        filter: ShipmentFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ShipmentNode]:
        ctx = context(info)
        f = filter or ShipmentFilterInput()
        try:
            ctx.principal.require_role(*READERS)
            where = ShipmentFilter(
                order_id=str(decode_uuid(f.order_id, "Order", "order_id")) if f.order_id
                else None,
                member_id=str(decode_uuid(f.member_id, "Member", "member_id")) if f.member_id
                else None,
                status=f.status.value if f.status else None,
                exception=f.exception, late=f.late, unrated=f.unrated,
            )
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        size = page_size(info, first)
        try:
            page = await list_shipments(ctx.runtime.async_engine, where,
                                        ctx.runtime.clock.now(), size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None
        return make_connection(
            [ShipmentNode.from_row(r) for r in page.rows],
            [shipment_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=after is not None, total=page.total,
        )

    @strawberry.field(description="Where parcels can be collected.")
    def pickup_points(self, info: strawberry.Info) -> list[PickupPoint]:
        points = context(info).runtime.shipping.pickup_points.values()
        return [PickupPoint.of(p) for p in points]


@strawberry.type
class ShipmentMutations:
    @strawberry.mutation(description="Staff: a parcel for a paid order (by default, all "
                                      "that is left to ship).")
    async def create_shipment(
        self, info: strawberry.Info, input: CreateShipmentInput
    ) -> CreateShipmentPayload:
        items = ([(i.line_id, i.quantity) for i in input.items]
                 if input.items is not None else None)
        packaging = None
        if input.packaging is not None:
            packaging = {"gift_wrap": input.packaging.gift_wrap, "eco": input.packaging.eco,
                         "printed_name": input.packaging.printed_name,
                         "gift_message": input.packaging.gift_message}

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            order_id = decode_uuid(input.order_id, "Order", "order_id")
            if input.items is not None and not items:
                raise ValidationError("a shipment covers at least one line", "items")
            return ctx.runtime.shipping.create(
                order_id, items, input.method.value, input.speed.value, input.pickup_point_id,
                _window(input.window), _plain_address(input.address), packaging, input.carrier,
                input.tracking_number, meta,
            )

        return await shipment_mutation(info, CreateShipmentPayload, act, input.reason)

    @strawberry.mutation(description="Change how a parcel is delivered, before dispatch: its "
                                      "member, or staff with a reason.")
    async def change_delivery_options(
        self, info: strawberry.Info, input: ChangeDeliveryOptionsInput
    ) -> ChangeDeliveryOptionsPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            shipment_id = owned_shipment(ctx, input.shipment_id)
            if ctx.principal.is_staff:
                meta.require_reason()
            return ctx.runtime.shipping.change_delivery_options(
                shipment_id, input.method.value, input.pickup_point_id, _window(input.window),
                _plain_address(input.address), meta,
                speed=input.speed.value if input.speed else None,
            )

        return await shipment_mutation(info, ChangeDeliveryOptionsPayload, act, input.reason)

    @strawberry.mutation(description="Staff: record a carrier update; a repeat is ignored and "
                                      "a late one is placed in the timeline.")
    async def record_tracking_event(
        self, info: strawberry.Info, input: RecordTrackingEventInput
    ) -> RecordTrackingEventPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            shipment_id = owned_shipment(ctx, input.shipment_id)
            return ctx.runtime.shipping.record_tracking(
                shipment_id, input.update_id, input.status.value, input.occurred_at,
                input.location, input.note, input.eta, meta,
            )

        return await shipment_mutation(info, RecordTrackingEventPayload, act, input.reason)

    @strawberry.mutation(description="Choose how an exception is resolved: a new window, a "
                                      "pickup point, or a new parcel (its member, or staff "
                                      "with a reason).")
    async def resolve_shipment_exception(
        self, info: strawberry.Info, input: ResolveShipmentExceptionInput
    ) -> ResolveShipmentExceptionPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            shipment_id = owned_shipment(ctx, input.shipment_id)
            if ctx.principal.is_staff:
                meta.require_reason()
            return ctx.runtime.shipping.resolve_exception(
                shipment_id, input.resolution.value, input.pickup_point_id,
                _window(input.window), meta,
            )

        result, errors = await run_command(info, act, input.reason)
        if result is None:
            return ResolveShipmentExceptionPayload(shipment=None, replacement=None,
                                                   position=None, user_errors=errors)
        ctx = context(info)
        original = str(decode_uuid(input.shipment_id, "Shipment", "shipment_id"))
        shipment = await load_shipment(ctx, original, result.position)
        replacement = None
        if str(result.aggregate_id) != original:
            replacement = await load_shipment(ctx, str(result.aggregate_id), result.position)
        return ResolveShipmentExceptionPayload(shipment=shipment, replacement=replacement,
                                               position=result.position, user_errors=[])

    @strawberry.mutation(description="The member rates a received parcel, once.")
    async def rate_delivery(
        self, info: strawberry.Info, input: RateDeliveryInput
    ) -> RateDeliveryPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER)
            shipment_id = owned_shipment(ctx, input.shipment_id)
            return ctx.runtime.shipping.rate(shipment_id, input.speed, input.courier_attitude,
                                             input.packaging_condition, input.comment, meta)

        return await shipment_mutation(info, RateDeliveryPayload, act, None)

    @strawberry.mutation(description="The member complains about a parcel's delivery.")
    async def file_delivery_complaint(
        self, info: strawberry.Info, input: FileDeliveryComplaintInput
    ) -> FileDeliveryComplaintPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER)
            shipment_id = owned_shipment(ctx, input.shipment_id)
            return ctx.runtime.shipping.file_complaint(shipment_id, input.text, meta)

        return await shipment_mutation(info, FileDeliveryComplaintPayload, act, None)

    @strawberry.mutation(description="Staff: answer a delivery complaint.")
    async def answer_delivery_complaint(
        self, info: strawberry.Info, input: AnswerDeliveryComplaintInput
    ) -> AnswerDeliveryComplaintPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            shipment_id = owned_shipment(ctx, input.shipment_id)
            return ctx.runtime.shipping.answer_complaint(shipment_id, input.text, meta)

        return await shipment_mutation(info, AnswerDeliveryComplaintPayload, act, input.reason)


# -- subscriptions --------------------------------------------------------------------------


@strawberry.type
class ShipmentSubscriptions:
    @strawberry.subscription(
        description="The order's shipments as they are now, then each one whenever it changes: "
                    "the order's member, staff and auditors."
    )
    async def shipment_updated(
        self, info: strawberry.Info, order_id: strawberry.ID
    ) -> AsyncGenerator[ShipmentNode, None]:
        principal = subscription_principal(info)
        oid = await followed_id(info, principal,
                                lambda: decode_uuid(order_id, "Order", "order_id"),
                                context(info).runtime.orders.get, "orders", "order_id")
        engine = context(info).runtime.async_engine
        versions: dict[str, int] = {}
        while True:
            for row in await order_shipment_rows(engine, oid):
                if versions.get(row["shipment_id"]) != row["version"]:
                    versions[row["shipment_id"]] = row["version"]
                    yield ShipmentNode.from_row(row)
            await context(info).runtime.changes.wait(POLL_SECONDS)

    @strawberry.subscription(
        description="Each new notification of the signed-in member (those recorded after "
                    "`since`, by default after subscribing)."
    )
    async def notification_received(
        self,
        info: strawberry.Info,
        since: EventPosition | None = None,  # type: ignore[valid-type]
    ) -> AsyncGenerator[NotificationNode, None]:
        principal = subscription_principal(info)
        if principal.role is not Role.MEMBER:
            raise ApiError("subscribe with a member token", ErrorCode.FORBIDDEN.value)
        member_id = principal.subject
        engine = context(info).runtime.async_engine
        last = (int(since) if since is not None
                else await latest_notification_position(engine, member_id))
        while True:
            for row in await notifications_since(engine, member_id, last):
                last = max(last, int(row["position"]))
                yield NotificationNode.from_row(row)
            await context(info).runtime.changes.wait(POLL_SECONDS)


__all__ = [
    "NotificationNode",
    "ShipmentMutations",
    "ShipmentNode",
    "ShipmentQueries",
    "ShipmentSubscriptions",
    "member_notifications",
    "order_shipments",
]
