"""The Shipment aggregate: one parcel of an order, from label to doorstep (or back).

Carrier updates may arrive twice or out of order. Each has an id (recorded once) and the
time it happened; the timeline is kept in the order things happened, and the current
status is that of the latest update, except that a final status (delivered, collected,
returned to sender) is never replaced by an older update that arrives late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import (
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    ValidationError,
)
from domain.metadata import EventMetadata
from domain.validation import business_time, enum_value, rating_value


class DeliveryMethod(StrEnum):
    HOME_DELIVERY = "home_delivery"
    PICKUP_POINT = "pickup_point"
    SCHEDULED = "scheduled"
    # A return parcel: the member hands it to the carrier, who brings it to the warehouse.
    RETURN_DROP_OFF = "return_drop_off"


class Direction(StrEnum):
    OUTBOUND = "outbound"  # to the member
    INBOUND = "inbound"  # back to the shop (an after-sales return)


class DeliverySpeed(StrEnum):
    STANDARD = "standard"
    EXPEDITED = "expedited"


# An update may claim a time this much before the parcel was created here: carriers' clocks
# drift, and a parcel is sometimes registered with us after the carrier's first scan (labels
# printed in batches). Earlier than that is a wrong or forged time (e.g. the year 2000).
TRACKING_SKEW = timedelta(days=1)


class TrackingStatus(StrEnum):
    LABEL_CREATED = "label_created"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERY_ATTEMPT_FAILED = "delivery_attempt_failed"
    DELAYED = "delayed"
    READY_FOR_PICKUP = "ready_for_pickup"
    DELIVERED = "delivered"
    COLLECTED = "collected"
    RETURNED_TO_SENDER = "returned_to_sender"


class ExceptionKind(StrEnum):
    LATE = "late"
    FAILED_ATTEMPT = "failed_attempt"
    NO_MOVEMENT = "no_movement"
    CARRIER_REPORTED = "carrier_reported"


class Resolution(StrEnum):
    RESCHEDULE = "reschedule"
    SWITCH_TO_PICKUP = "switch_to_pickup"
    RESHIP = "reship"


FINAL = (TrackingStatus.DELIVERED, TrackingStatus.COLLECTED, TrackingStatus.RETURNED_TO_SENDER)
RECEIVED = (TrackingStatus.DELIVERED, TrackingStatus.COLLECTED)
# Once the carrier has the parcel, the member can no longer change how it is delivered.
DISPATCHED = tuple(s for s in TrackingStatus if s is not TrackingStatus.LABEL_CREATED)
_FINAL_VALUES = frozenset(str(s.value) for s in FINAL)


def status_rank(status: str, occurred_at: str, recorded_at: str) -> tuple[bool, str, str]:
    """How strongly a tracking update claims to be the parcel's status: higher wins.

    Carrier clocks drift (a real scan arrived stamped 30 s ahead of ours), so the time
    order of a final scan against non-final ones means nothing: any final status outranks
    every non-final one. Between two of the same kind, the one that happened later wins
    (then the one recorded later). The aggregate and every projection that follows a
    parcel's status rank with this one function, so they cannot disagree, and the result
    does not depend on the order in which updates arrive.
    """
    return (status in _FINAL_VALUES, occurred_at, recorded_at)


def status_entry(timeline: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The timeline entry that decides the parcel's status (None before any update)."""
    return max(
        timeline,
        key=lambda e: status_rank(e["status"], e["occurred_at"], e["recorded_at"]),
        default=None,
    )



def _text(value: Any, field: str, max_length: int = 200) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field)
    text = " ".join(value.split())
    if len(text) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters", field)
    return text or None


def validate_window(window: Mapping[str, Any] | None, now: datetime) -> dict[str, str] | None:
    if window is None:
        return None
    start, end = window.get("start"), window.get("end")
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise ValidationError("a delivery window needs a start and an end", "window")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("delivery window times need a time zone", "window")
    if end <= start or end - start > timedelta(days=1):
        raise ValidationError("a delivery window ends after it starts, within a day", "window")
    if start < now:
        raise ValidationError("a delivery window cannot start in the past", "window")
    return {"start": start.isoformat(), "end": end.isoformat()}


def validate_options(
    method: Any, pickup_point: str | None, window: Mapping[str, Any] | None,
    address: Mapping[str, Any] | None, now: datetime,
) -> tuple[str, str | None, dict[str, str] | None]:
    method_value = enum_value(DeliveryMethod, method, "method")
    if method_value == DeliveryMethod.RETURN_DROP_OFF:
        raise ValidationError("return drop-off is only for return parcels", "method")
    if method_value == DeliveryMethod.PICKUP_POINT and not pickup_point:
        raise ValidationError("choose a pickup point", "pickup_point")
    if method_value == DeliveryMethod.SCHEDULED and window is None:
        raise ValidationError("scheduled delivery needs a time window", "window")
    if method_value != DeliveryMethod.PICKUP_POINT and not address:
        raise ValidationError("home and scheduled delivery need an address", "address")
    return method_value, pickup_point if method_value == DeliveryMethod.PICKUP_POINT else None, (
        validate_window(window, now) if method_value == DeliveryMethod.SCHEDULED else None
    )


def validate_packaging(
    packaging: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Packaging preferences; the printed name and gift message are personal data."""
    packaging = dict(packaging or {})
    unknown = set(packaging) - {"gift_wrap", "eco", "printed_name", "gift_message"}
    if unknown:
        raise ValidationError(f"unknown packaging option(s): {', '.join(sorted(unknown))}",
                              "packaging")
    public = {"gift_wrap": bool(packaging.get("gift_wrap")), "eco": bool(packaging.get("eco"))}
    personal = {
        "printed_name": _text(packaging.get("printed_name"), "packaging.printed_name", 60),
        "gift_message": _text(packaging.get("gift_message"), "packaging.gift_message", 300),
    }
    return public, {k: v for k, v in personal.items() if v}



def check_speed(speed: Any, tier_allows_expedited: bool, meta: EventMetadata) -> str:
    """The delivery speed, if the member's tier allows it.

    Expedited delivery is a benefit of higher tiers. Staff may send a parcel expedited for
    a member whose tier does not include it, but only as an override with a reason, which
    the event keeps for auditors.
    """
    value = enum_value(DeliverySpeed, speed, "speed")
    if value == DeliverySpeed.EXPEDITED and not tier_allows_expedited:
        if not meta.actor_role.is_staff:
            raise ForbiddenError("expedited delivery is a benefit of higher tiers", "speed")
        meta.require_reason()
    return str(value)


class Shipment(RecordedAggregate):
    @classmethod
    def create(
        cls,
        shipment_id: Any,
        order_id: str,
        member_id: str,
        items: Sequence[Mapping[str, Any]],
        method: str,
        speed: Any,
        priority_dispatch: bool,
        pickup_point: str | None,
        window: dict[str, str] | None,
        promised_by: datetime,
        packaging: dict[str, Any],
        personal: dict[str, Any] | None,
        carrier: str,
        tracking_number: str,
        now: datetime,
        meta: EventMetadata,
        replaces: str | None = None,
        direction: Direction = Direction.OUTBOUND,
        case_id: str | None = None,
    ) -> Shipment:
        carrier_value = _text(carrier, "carrier", 40)
        tracking = _text(tracking_number, "tracking_number", 60)
        if not carrier_value or not tracking:
            raise ValidationError("a shipment needs a carrier and a tracking number", "carrier")
        return cls._create(
            cls.Created, id=shipment_id, timestamp=now, order_id=order_id, member_id=member_id,
            items=[{"line_id": i["line_id"], "quantity": i["quantity"]} for i in items],
            method=method, speed=enum_value(DeliverySpeed, speed, "speed"),
            priority_dispatch=priority_dispatch, pickup_point=pickup_point, window=window,
            promised_by=promised_by.isoformat(), packaging=packaging, personal=personal or None,
            carrier=carrier_value.lower(), tracking_number=tracking, replaces=replaces,
            meta=meta.as_dict(), direction=direction.value, case_id=case_id,
        )

    class Created(Aggregate.Created):
        order_id: str
        member_id: str
        items: list[dict[str, Any]]
        method: str
        speed: str
        priority_dispatch: bool
        pickup_point: str | None
        window: dict[str, str] | None
        promised_by: str
        packaging: dict[str, Any]
        personal: dict[str, Any] | None
        carrier: str
        tracking_number: str
        replaces: str | None
        direction: str = Direction.OUTBOUND.value
        # The after-sales case that sends this parcel, or that it is the return parcel of.
        case_id: str | None = None

    def __init__(
        self, order_id: str, member_id: str, items: list[dict[str, Any]], method: str,
        speed: str, priority_dispatch: bool, pickup_point: str | None,
        window: dict[str, str] | None, promised_by: str, packaging: dict[str, Any],
        personal: dict[str, Any] | None, carrier: str, tracking_number: str,
        replaces: str | None, meta: dict[str, Any],
        direction: str = Direction.OUTBOUND.value, case_id: str | None = None,
    ) -> None:
        self.order_id = order_id
        self.member_id = member_id
        self.items = items
        self.method = method
        self.speed = speed
        self.priority_dispatch = priority_dispatch
        self.pickup_point = pickup_point
        self.window = window
        self.promised_by = promised_by
        self.packaging = packaging
        self.personal = personal
        self.carrier = carrier
        self.tracking_number = tracking_number
        self.replaces = replaces
        self.direction = direction
        self.case_id = case_id
        self.status: str = TrackingStatus.LABEL_CREATED.value
        self.status_at: str | None = None
        self.eta: str | None = promised_by
        self.timeline: list[dict[str, Any]] = []
        self.update_ids: list[str] = []
        self.open_exceptions: dict[str, str] = {}
        self.rating: dict[str, Any] | None = None
        self.complaint: dict[str, Any] | None = None
        self.reshipped_as: str | None = None

    # -- derived ----------------------------------------------------------------------------

    @property
    def dispatched(self) -> bool:
        return TrackingStatus(self.status) in DISPATCHED

    @property
    def received(self) -> bool:
        return TrackingStatus(self.status) in RECEIVED

    @property
    def final(self) -> bool:
        return TrackingStatus(self.status) in FINAL

    def last_movement(self) -> datetime | None:
        if not self.timeline:
            return None
        return max(datetime.fromisoformat(t["occurred_at"]) for t in self.timeline)

    # -- commands ---------------------------------------------------------------------------

    def change_delivery_options(
        self, method: str, pickup_point: str | None, window: dict[str, str] | None,
        personal: dict[str, Any] | None, now: datetime, meta: EventMetadata,
        speed: str | None = None, promised_by: datetime | None = None,
    ) -> None:
        if self.dispatched:
            raise InvalidTransitionError(
                f"cannot change delivery options of a shipment that is {self.status}",
                current_state=self.status, attempted="change delivery options",
            )
        self._trigger(self.DeliveryOptionsChanged, now, meta, method=method,
                      pickup_point=pickup_point, window=window, personal=personal,
                      member_id=self.member_id, speed=speed,
                      promised_by=promised_by.isoformat() if promised_by else None)

    def record_tracking(
        self,
        update_id: str,
        status: Any,
        occurred_at: datetime,
        location: str | None,
        note: str | None,
        eta: datetime | None,
        now: datetime,
        meta: EventMetadata,
    ) -> bool:
        """Record a carrier update; False if this update was already recorded."""
        update = _text(update_id, "update_id", 100)
        if not update:
            raise ValidationError("a tracking update needs an id", "update_id")
        status_value = enum_value(TrackingStatus, status, "status")
        business_time(occurred_at, "occurred_at")
        if update in self.update_ids:
            # A repeat is recorded once; the same id saying something else is a conflict.
            recorded = next(e for e in self.timeline if e["update_id"] == update)
            again = (str(status_value), occurred_at.astimezone(UTC).isoformat(),
                     _text(location, "location"), _text(note, "note", 500))
            if again != (recorded["status"], recorded["occurred_at"], recorded["location"],
                         recorded["note"]):
                raise IdempotencyConflictError(
                    f"tracking update {update} was already recorded with other content",
                    "update_id")
            return False
        if occurred_at > now + timedelta(minutes=10):
            raise ValidationError("a tracking update cannot come from the future", "occurred_at")
        if occurred_at < self.created_on - TRACKING_SKEW:
            raise ValidationError(
                "a tracking update cannot come from before the parcel existed", "occurred_at"
            )
        if eta is not None:
            business_time(eta, "eta")
        self._trigger(
            self.TrackingRecorded, now, meta, update_id=update, status=status_value,
            # In UTC, so that the timeline sorts by time whatever zone each carrier uses.
            occurred_at=occurred_at.astimezone(UTC).isoformat(),
            location=_text(location, "location"),
            note=_text(note, "note", 500), eta=eta.isoformat() if eta else None,
        )
        if status_value == TrackingStatus.DELIVERY_ATTEMPT_FAILED:
            self.detect_exception(ExceptionKind.FAILED_ATTEMPT, note or "delivery attempt failed",
                                  now, meta)
        elif status_value == TrackingStatus.DELAYED:
            self.detect_exception(ExceptionKind.CARRIER_REPORTED, note or "carrier reports a delay",
                                  now, meta)
        return True

    def detect_exception(self, kind: Any, detail: str, now: datetime,
                         meta: EventMetadata) -> bool:
        kind_value = enum_value(ExceptionKind, kind, "kind")
        if self.final or kind_value in self.open_exceptions:
            return False
        self._trigger(self.ExceptionDetected, now, meta, kind=kind_value, detail=detail[:300])
        return True

    def check_for_exceptions(self, now: datetime, stall_after: timedelta,
                             meta: EventMetadata) -> int:
        """The scheduled check: late against the promise, or no movement for too long."""
        if self.final:
            return 0
        found = 0
        promised = datetime.fromisoformat(self.promised_by)
        if now > promised:
            found += self.detect_exception(
                ExceptionKind.LATE, f"promised by {self.promised_by}", now, meta
            )
        last = self.last_movement() or self.created_on
        if self.dispatched and now - last > stall_after:
            found += self.detect_exception(
                ExceptionKind.NO_MOVEMENT, f"no movement since {last.isoformat()}", now, meta
            )
        return found

    def resolve_exception(
        self, resolution: Any, pickup_point: str | None, window: dict[str, str] | None,
        new_promise: datetime, now: datetime, meta: EventMetadata,
    ) -> str:
        if not self.open_exceptions:
            raise InvalidTransitionError(
                "this shipment has no open exception to resolve", current_state=self.status,
                attempted="resolve an exception",
            )
        value = enum_value(Resolution, resolution, "resolution")
        if value == Resolution.SWITCH_TO_PICKUP and not pickup_point:
            raise ValidationError("choose a pickup point", "pickup_point")
        if value == Resolution.RESCHEDULE and window is None:
            raise ValidationError("rescheduling needs a new time window", "window")
        self._trigger(self.ExceptionResolved, now, meta, resolution=value,
                      pickup_point=pickup_point, window=window,
                      promised_by=new_promise.isoformat())
        return value

    def mark_reshipped(self, replacement_id: str, now: datetime, meta: EventMetadata) -> None:
        self._trigger(self.Reshipped, now, meta, replacement_id=replacement_id)

    def rate(self, speed: Any, courier_attitude: Any, packaging_condition: Any,
             comment: str | None, now: datetime, meta: EventMetadata) -> None:
        if self.direction == Direction.INBOUND:
            # A return parcel is the member's own sending: there is no delivery to rate.
            raise InvalidTransitionError(
                "a return parcel cannot be rated", current_state="inbound", attempted="rate"
            )
        if not self.received:
            raise InvalidTransitionError(
                f"only a received shipment can be rated; this one is {self.status}",
                current_state=self.status, attempted="rate",
            )
        if self.rating is not None:
            raise InvalidTransitionError("this shipment has already been rated",
                                         current_state="rated", attempted="rate")
        text = _text(comment, "comment", 1000)
        self._trigger(
            self.Rated, now, meta, speed=rating_value(speed, "speed"),
            courier_attitude=rating_value(courier_attitude, "courier_attitude"),
            packaging_condition=rating_value(packaging_condition, "packaging_condition"),
            member_id=self.member_id, personal={"comment": text} if text else None,
        )

    def file_complaint(self, text: str, now: datetime, meta: EventMetadata) -> None:
        body = _text(text, "text", 2000)
        if not body:
            raise ValidationError("describe the problem", "text")
        if self.complaint is not None:
            raise InvalidTransitionError("a complaint is already open for this shipment",
                                         current_state="complained", attempted="complain")
        self._trigger(self.ComplaintFiled, now, meta, member_id=self.member_id,
                      personal={"text": body})

    def answer_complaint(self, text: str, now: datetime, meta: EventMetadata) -> None:
        body = _text(text, "text", 2000)
        if not body:
            raise ValidationError("write an answer", "text")
        if self.complaint is None or self.complaint.get("answered_at"):
            state = "no complaint" if self.complaint is None else "answered"
            raise InvalidTransitionError(f"there is no open complaint ({state})",
                                         current_state=state, attempted="answer")
        self._trigger(self.ComplaintAnswered, now, meta, text=body)

    # -- events -----------------------------------------------------------------------------


    class DeliveryOptionsChanged(RecordedAggregate.Event):
        member_id: str
        method: str
        pickup_point: str | None
        window: dict[str, str] | None
        personal: dict[str, Any] | None
        # The speed chosen and the promise it makes (None: unchanged; older events).
        speed: str | None = None
        promised_by: str | None = None

        def apply(self, shipment: Any) -> None:
            shipment.method = self.method
            shipment.pickup_point = self.pickup_point
            shipment.window = self.window
            if self.speed:
                shipment.speed = self.speed
            if self.promised_by:
                shipment.promised_by = shipment.eta = self.promised_by
            if self.personal is not None:
                shipment.personal = {**(shipment.personal or {}), **self.personal}

    class TrackingRecorded(RecordedAggregate.Event):
        update_id: str
        status: str
        occurred_at: str
        location: str | None
        note: str | None
        eta: str | None

        def apply(self, shipment: Any) -> None:
            entry = {"update_id": self.update_id, "status": self.status,
                     "occurred_at": self.occurred_at, "location": self.location,
                     "note": self.note, "recorded_at": self.timestamp.isoformat()}
            shipment.timeline.append(entry)
            shipment.timeline.sort(key=lambda e: (e["occurred_at"], e["recorded_at"]))
            shipment.update_ids.append(self.update_id)
            if status_entry(shipment.timeline) is entry:
                shipment.status = self.status
                shipment.status_at = self.occurred_at
            if self.eta:
                shipment.eta = self.eta
            if self.status in FINAL:
                shipment.open_exceptions = {}

    class ExceptionDetected(RecordedAggregate.Event):
        kind: str
        detail: str

        def apply(self, shipment: Any) -> None:
            shipment.open_exceptions[self.kind] = self.detail

    class ExceptionResolved(RecordedAggregate.Event):
        resolution: str
        pickup_point: str | None
        window: dict[str, str] | None
        promised_by: str

        def apply(self, shipment: Any) -> None:
            shipment.open_exceptions = {}
            shipment.promised_by = self.promised_by
            shipment.eta = self.promised_by
            if self.resolution == Resolution.SWITCH_TO_PICKUP:
                shipment.method = DeliveryMethod.PICKUP_POINT.value
                shipment.pickup_point = self.pickup_point
                shipment.window = None
            elif self.resolution == Resolution.RESCHEDULE:
                shipment.method = DeliveryMethod.SCHEDULED.value
                shipment.window = self.window

    class Reshipped(RecordedAggregate.Event):
        replacement_id: str

        def apply(self, shipment: Any) -> None:
            shipment.reshipped_as = self.replacement_id

    class Rated(RecordedAggregate.Event):
        """The member's comment is their personal data: it travels in `personal`, under
        their key (`member_id`), and reads as None once they are erased. `comment` is only
        set on events recorded before that, which kept it in clear."""

        speed: int
        courier_attitude: int
        packaging_condition: int
        comment: str | None = None
        member_id: str | None = None
        personal: dict[str, Any] | None = None

        @property
        def comment_text(self) -> str | None:
            return (self.personal or {}).get("comment") or self.comment

        def apply(self, shipment: Any) -> None:
            # The aggregate keeps no text, so a snapshot never holds it outside the key.
            shipment.rating = {"speed": self.speed, "courier_attitude": self.courier_attitude,
                               "packaging_condition": self.packaging_condition,
                               "at": self.timestamp.isoformat()}

    class ComplaintFiled(RecordedAggregate.Event):
        """The complaint's text is the member's personal data, as a rating's comment is;
        `text` is only set on events recorded before it moved into `personal`."""

        text: str | None = None
        member_id: str | None = None
        personal: dict[str, Any] | None = None

        @property
        def complaint_text(self) -> str | None:
            return (self.personal or {}).get("text") or self.text

        def apply(self, shipment: Any) -> None:
            shipment.complaint = {"filed_at": self.timestamp.isoformat(),
                                  "answer": None, "answered_at": None}

    class ComplaintAnswered(RecordedAggregate.Event):
        text: str

        def apply(self, shipment: Any) -> None:
            shipment.complaint = {**shipment.complaint, "answer": self.text,
                                  "answered_at": self.timestamp.isoformat(),
                                  "answered_by": self.meta["actor_id"]}
