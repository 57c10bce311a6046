"""Commands for shipments: creating parcels, tracking them, handling exceptions, feedback.

Delivery drives the order and the loyalty engine in the same unit of work: the update
that completes the last parcel marks the order delivered and starts the return window
after which the order's pending points become available.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from api.commerce import account_for
from api.service import CommandResult, Session, UnitOfWork
from domain.after_sales import AfterSalesCase, CaseState
from domain.clock import Clock
from domain.errors import ValidationError
from domain.loyalty_rules import LoyaltyRules
from domain.member import Member, validate_address
from domain.metadata import EventMetadata
from domain.order import Order
from domain.shipment import (
    DeliveryMethod,
    DeliverySpeed,
    Direction,
    Resolution,
    Shipment,
    check_speed,
    validate_options,
    validate_packaging,
    validate_window,
)

SHIPMENT_NAMESPACE = uuid.UUID("5d3e2c1b-9a8f-4e7d-b6c5-a4f3e2d1c0b9")
TRANSIT_DAYS = {DeliverySpeed.STANDARD.value: 3, DeliverySpeed.EXPEDITED.value: 1}
STALL_AFTER = timedelta(hours=48)


@dataclass(frozen=True)
class PickupPoint:
    point_id: str
    name: str
    address: str
    city: str
    opening_hours: str


DEFAULT_PICKUP_POINTS = (
    PickupPoint("PP-HZ-01", "West Lake Locker", "88 Nanshan Rd", "Hangzhou",
                "Mon-Sun 08:00-22:00"),
    PickupPoint("PP-SH-01", "Jing'an Station Kiosk", "1 Jiangning Rd", "Shanghai",
                "Mon-Sat 09:00-21:00"),
    PickupPoint("PP-BJ-01", "Chaoyang Community Store", "12 Guanghua Rd", "Beijing",
                "Mon-Sun 07:00-23:00"),
    PickupPoint("PP-SZ-01", "Futian Parcel Point", "3 Shennan Blvd", "Shenzhen",
                "Mon-Fri 10:00-20:00"),
)


def load_pickup_points() -> tuple[PickupPoint, ...]:
    """PATRON_PICKUP_POINTS may name a JSON list of points; otherwise a built-in list."""
    path = os.environ.get("PATRON_PICKUP_POINTS")
    if not path:
        return DEFAULT_PICKUP_POINTS
    try:
        entries = json.loads(Path(path).read_text())
        return tuple(PickupPoint(**entry) for entry in entries)
    except (OSError, ValueError, TypeError) as error:
        raise ValidationError(f"cannot read pickup points from {path}: {error}") from None


def shipment_id_for(carrier: str, tracking_number: str) -> UUID:
    """A carrier and a tracking number identify a parcel, and so its id."""
    return uuid.uuid5(SHIPMENT_NAMESPACE, f"{carrier.lower()}:{tracking_number}")


class ShippingService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules,
                 pickup_points: Sequence[PickupPoint] = DEFAULT_PICKUP_POINTS) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules
        self.pickup_points = {p.point_id: p for p in pickup_points}

    def get(self, shipment_id: UUID) -> Shipment:
        return self.uow.get(Shipment, shipment_id)

    def _pickup(self, point: str | None) -> str | None:
        if point is not None and point not in self.pickup_points:
            raise ValidationError(f"unknown pickup point {point!r}", "pickup_point")
        return point

    def _promise(self, speed: str, window: dict[str, str] | None, now: datetime) -> datetime:
        if window is not None:
            return datetime.fromisoformat(window["end"])
        return now + timedelta(days=TRANSIT_DAYS[speed])

    def create(
        self,
        order_id: UUID,
        items: Sequence[tuple[str, int]] | None,
        method: str,
        speed: str,
        pickup_point: str | None,
        window: dict[str, Any] | None,
        address: dict[str, Any] | None,
        packaging: dict[str, Any] | None,
        carrier: str,
        tracking_number: str,
        meta: EventMetadata,
    ) -> CommandResult:
        """A parcel for a paid order; a retry with the same tracking number finds it.

        The id derives from the carrier and tracking number, which identify a parcel: the
        same number cannot be given to a second parcel, of this order or another.
        """
        shipment_id = shipment_id_for(carrier, tracking_number)

        def decide(session: Session) -> Shipment:
            existing = session.find(Shipment, shipment_id)
            if existing is not None:
                if existing.order_id != str(order_id):
                    raise ValidationError(
                        f"{carrier} tracking number {tracking_number} belongs to another parcel",
                        "tracking_number",
                    )
                return existing
            now = self.clock.now()
            order = session.get(Order, order_id)
            member = session.get(Member, UUID(order.member_id))
            account = account_for(session, order.member_id, now, meta)
            benefits = self.rules.tier_rule(account.tier)
            speed_value = check_speed(speed, benefits.expedited_delivery, meta)
            delivery_prefs = (member.preferences or {}).get("delivery") or {}
            chosen_address = (validate_address(address) if address
                              else (member.personal or {}).get("default_address"))
            method_value, point, checked_window = validate_options(
                method, self._pickup(pickup_point), window, chosen_address, now
            )
            if packaging is None:
                wanted = delivery_prefs.get("packaging") or []
                packaging_input: dict[str, Any] = {"gift_wrap": "gift_wrap" in wanted,
                                                   "eco": "eco" in wanted}
            else:
                packaging_input = packaging
            public, personal = validate_packaging(packaging_input)
            if chosen_address and method_value != DeliveryMethod.PICKUP_POINT:
                personal["address"] = chosen_address
            wanted = _everything(order) if items is None else items
            covered = order.allocate_shipment(str(shipment_id), wanted, None, now, meta)
            return session.add(Shipment.create(
                shipment_id, str(order.id), order.member_id, covered, method_value, speed_value,
                benefits.priority_dispatch, point, checked_window,
                self._promise(speed_value, checked_window, now), public, personal, carrier,
                tracking_number, now, meta,
            ))

        return self.uow.result_of(self.uow.run(decide))

    def _new_parcel_id(self, session: Session, order_id: str, carrier: str,
                       tracking_number: str) -> UUID:
        shipment_id = shipment_id_for(carrier, tracking_number)
        existing = session.find(Shipment, shipment_id)
        if existing is not None and existing.order_id != order_id:
            raise ValidationError(
                f"{carrier} tracking number {tracking_number} belongs to another parcel",
                "tracking_number",
            )
        return shipment_id

    def send_for_case(
        self, session: Session, order: Order, case: AfterSalesCase, carrier: str,
        tracking_number: str, now: datetime, meta: EventMetadata,
    ) -> Shipment:
        """The parcel an exchange, repair or reissue sends: the case's lines, delivered the
        way the original parcel was (or to the member's default address)."""
        shipment_id = self._new_parcel_id(session, str(order.id), carrier, tracking_number)
        existing = session.find(Shipment, shipment_id)
        if existing is not None:
            return existing
        original = next(
            (session.get(Shipment, UUID(sid)) for sid, parcel in order.shipments.items()
             if not parcel.get("case_id") and not parcel["replaced"]
             and any(i["line_id"] == line["line_id"] for i in parcel["items"]
                     for line in case.lines)),
            None,
        )
        member = session.get(Member, UUID(order.member_id))
        address = ((original.personal or {}).get("address") if original else None) or (
            (member.personal or {}).get("default_address")
        )
        method = original.method if original else DeliveryMethod.HOME_DELIVERY.value
        pickup = original.pickup_point if original else None
        if method == DeliveryMethod.SCHEDULED:  # the old window has passed
            method = DeliveryMethod.HOME_DELIVERY.value
        method_value, point, _ = validate_options(method, pickup, None, address, now)
        speed = original.speed if original else DeliverySpeed.STANDARD.value
        account = account_for(session, order.member_id, now, meta)
        covered = order.allocate_case_shipment(str(shipment_id), str(case.id), case.lines,
                                               now, meta)
        return session.add(Shipment.create(
            shipment_id, str(order.id), order.member_id, covered, method_value, speed,
            self.rules.tier_rule(account.tier).priority_dispatch, point, None,
            self._promise(speed, None, now),
            original.packaging if original else {"gift_wrap": False, "eco": False},
            {"address": address} if address and point is None else None,
            carrier, tracking_number, now, meta, case_id=str(case.id),
        ))

    def expect_return(
        self, session: Session, case: AfterSalesCase, carrier: str, tracking_number: str,
        now: datetime, meta: EventMetadata,
    ) -> Shipment:
        """The inbound parcel of a return label; its tracking updates the case."""
        shipment_id = self._new_parcel_id(session, case.order_id, carrier, tracking_number)
        existing = session.find(Shipment, shipment_id)
        if existing is not None:
            if existing.case_id != str(case.id):
                raise ValidationError(
                    f"{carrier} tracking number {tracking_number} belongs to another parcel",
                    "tracking_number",
                )
            return existing
        return session.add(Shipment.create(
            shipment_id, case.order_id, case.member_id, case.lines,
            DeliveryMethod.RETURN_DROP_OFF.value, DeliverySpeed.STANDARD.value, False, None,
            None, now + timedelta(days=self.rules.return_parcel_days),
            {"gift_wrap": False, "eco": False}, None, carrier, tracking_number, now, meta,
            direction=Direction.INBOUND, case_id=str(case.id),
        ))

    def change_delivery_options(
        self, shipment_id: UUID, method: str, pickup_point: str | None,
        window: dict[str, Any] | None, address: dict[str, Any] | None, meta: EventMetadata,
        speed: str | None = None,
    ) -> CommandResult:
        """New delivery options before dispatch; a new speed or window makes a new promise."""

        def decide(session: Session) -> Shipment:
            now = self.clock.now()
            shipment = session.get(Shipment, shipment_id)
            current_address = (shipment.personal or {}).get("address")
            checked_address = validate_address(address) if address else None
            method_value, point, checked = validate_options(
                method, self._pickup(pickup_point), window, checked_address or current_address,
                now,
            )
            chosen = None
            if speed is not None:
                account = account_for(session, shipment.member_id, now, meta)
                chosen = check_speed(
                    speed, self.rules.tier_rule(account.tier).expedited_delivery, meta)
            promise = (self._promise(chosen or shipment.speed, checked, now)
                       if chosen is not None or checked is not None else None)
            personal = {"address": checked_address} if checked_address else None
            shipment.change_delivery_options(method_value, point, checked, personal, now, meta,
                                             speed=chosen, promised_by=promise)
            return shipment

        return self.uow.result_of(self.uow.run(decide))

    def record_tracking(
        self,
        shipment_id: UUID,
        update_id: str,
        status: str,
        occurred_at: datetime,
        location: str | None,
        note: str | None,
        eta: datetime | None,
        meta: EventMetadata,
    ) -> CommandResult:
        def decide(session: Session) -> Shipment:
            now = self.clock.now()
            shipment = session.get(Shipment, shipment_id)
            if not shipment.record_tracking(update_id, status, occurred_at, location, note, eta,
                                            now, meta):
                return shipment  # a repeated delivery of the same update
            if shipment.direction == Direction.INBOUND:
                case = (session.find(AfterSalesCase, UUID(shipment.case_id))
                        if shipment.received and shipment.case_id else None)
                # A parcel of a withdrawn case still arrives; only a waiting case moves on.
                if case is not None and case.state == CaseState.AWAITING_RETURN:
                    case.return_received("carrier", now, meta)
                return shipment
            if shipment.dispatched:
                # The first scan with the carrier ships it (whatever status it reports).
                session.get(Order, UUID(shipment.order_id)).shipment_dispatched(
                    str(shipment.id), now, meta)
            if shipment.received:
                order = session.get(Order, UUID(shipment.order_id))
                if order.shipment_received(str(shipment.id), now, meta):
                    account = account_for(session, order.member_id, now, meta)
                    account.schedule_release(
                        str(order.id), now + timedelta(days=self.rules.return_window_days),
                        now, meta,
                    )
            return shipment

        return self.uow.result_of(self.uow.run(decide))

    def check_exceptions(self, shipment_id: UUID, meta: EventMetadata) -> CommandResult:
        def decide(session: Session) -> Shipment:
            shipment = session.get(Shipment, shipment_id)
            shipment.check_for_exceptions(self.clock.now(), STALL_AFTER, meta)
            return shipment

        return self.uow.result_of(self.uow.run(decide))

    def resolve_exception(
        self, shipment_id: UUID, resolution: str, pickup_point: str | None,
        window: dict[str, Any] | None, meta: EventMetadata,
    ) -> CommandResult:
        """The member's choice: a new window, a pickup point, or a new parcel."""

        def decide(session: Session) -> Shipment:
            now = self.clock.now()
            shipment = session.get(Shipment, shipment_id)
            checked = validate_window(window, now) if window is not None else None
            point = self._pickup(pickup_point)
            promise = self._promise(shipment.speed, checked, now)
            chosen = shipment.resolve_exception(resolution, point, checked, promise, now, meta)
            if chosen != Resolution.RESHIP:
                return shipment
            # The new parcel's number derives from the old one, and so does its id.
            replacement_tracking = f"{shipment.tracking_number}-R"
            replacement_id = uuid.uuid5(SHIPMENT_NAMESPACE,
                                        f"{shipment.carrier}:{replacement_tracking}")
            order = session.get(Order, UUID(shipment.order_id))
            covered = order.allocate_shipment(str(replacement_id), [], str(shipment.id), now,
                                              meta)
            shipment.mark_reshipped(str(replacement_id), now, meta)
            return session.add(Shipment.create(
                replacement_id, shipment.order_id, shipment.member_id, covered, shipment.method,
                shipment.speed, shipment.priority_dispatch, shipment.pickup_point,
                shipment.window, self._promise(shipment.speed, None, now), shipment.packaging,
                shipment.personal, shipment.carrier, replacement_tracking, now, meta,
                replaces=str(shipment.id),
            ))

        return self.uow.result_of(self.uow.run(decide))

    def rate(self, shipment_id: UUID, speed: int, courier_attitude: int,
             packaging_condition: int, comment: str | None, meta: EventMetadata) -> CommandResult:
        return self.uow.change(Shipment, shipment_id, lambda s: s.rate(
            speed, courier_attitude, packaging_condition, comment, self.clock.now(), meta))

    def file_complaint(self, shipment_id: UUID, text: str, meta: EventMetadata) -> CommandResult:
        return self.uow.change(Shipment, shipment_id,
                               lambda s: s.file_complaint(text, self.clock.now(), meta))

    def answer_complaint(self, shipment_id: UUID, text: str,
                         meta: EventMetadata) -> CommandResult:
        return self.uow.change(Shipment, shipment_id,
                               lambda s: s.answer_complaint(text, self.clock.now(), meta))


def _everything(order: Order) -> list[tuple[str, int]]:
    items = [(line["line_id"], order.shippable(line["line_id"])) for line in order.lines]
    return [(line_id, quantity) for line_id, quantity in items if quantity > 0]
