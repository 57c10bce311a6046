"""`notifications`: the notices a member gets about their parcels, and what to send outside.

For each shipment event worth a notice (a label created, a milestone the parcel really
reached, an exception, its resolution) the projection records one inbox row, and one
outbox row for each external channel (sms, email, app push) the member had consented to
for marketing *at that event's position*. Consents come from `Member.ConsentChanged` into
the projection's own table, so it never depends on another projection's progress, and a
rebuild sees every consent as it was when the notice was recorded.

The outbox is deliberately not one of this projection's `tables`: a rebuild empties and
replays the inbox, but must never send anything again. Outbox rows are therefore inserted
only when their key is new; replaying the same events yields the same keys
(`{shipment_id}:{version}` and the channel) and the same channels, so a rebuild inserts
nothing.

Erasure (`Member.Erased`) deletes the member's notices and consents, empties the payloads
of their outbox rows (pending ones are cancelled, never sent), and suppresses notices for
parcels that still move afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from domain.member import MARKETING_CHANNELS, ConsentPurpose, Member
from domain.shipment import (
    Direction,
    ExceptionKind,
    Resolution,
    Shipment,
    TrackingStatus,
    status_rank,
)
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel
from projections.shipping_tables import (
    OUTBOX_CANCELLED,
    OUTBOX_PENDING,
    notification_consents,
    notification_erasures,
    notification_outbox,
    notification_shipments,
    notifications,
)

INBOX = "inbox"
EXTERNAL_CHANNELS = tuple(str(c.value) for c in MARKETING_CHANNELS)  # sms, email, app_push

MILESTONE = "milestone"
EXCEPTION = "exception"

# Carrier statuses that deserve a notice (in_transit does not: it would be noise).
TRACKING_NOTICES: dict[str, tuple[str, str]] = {
    TrackingStatus.PICKED_UP.value: (
        "Your parcel is on its way", "The carrier has picked up your parcel"),
    TrackingStatus.OUT_FOR_DELIVERY.value: (
        "Your parcel is out for delivery", "Your parcel will be delivered today"),
    TrackingStatus.READY_FOR_PICKUP.value: (
        "Your parcel is ready for pickup", "Your parcel is waiting at your pickup point"),
    TrackingStatus.DELIVERED.value: (
        "Your parcel was delivered", "Your parcel has been delivered"),
    TrackingStatus.COLLECTED.value: (
        "Your parcel was collected", "You collected your parcel"),
    TrackingStatus.DELIVERY_ATTEMPT_FAILED.value: (
        "We missed you", "The carrier could not deliver your parcel"),
    TrackingStatus.DELAYED.value: (
        "Your parcel is delayed", "The carrier reports a delay"),
    TrackingStatus.RETURNED_TO_SENDER.value: (
        "Your parcel is coming back to us", "The carrier is returning your parcel to us"),
}

EXCEPTION_TITLES: dict[str, str] = {
    ExceptionKind.LATE.value: "Your parcel is running late",
    ExceptionKind.FAILED_ATTEMPT.value: "Your parcel could not be delivered",
    ExceptionKind.NO_MOVEMENT.value: "Your parcel has not moved for a while",
    ExceptionKind.CARRIER_REPORTED.value: "The carrier reports a problem with your parcel",
}

RESOLUTION_NOTICES: dict[str, tuple[str, str]] = {
    Resolution.RESCHEDULE.value: ("shipment.rescheduled", "Your delivery was rescheduled"),
    Resolution.SWITCH_TO_PICKUP.value: (
        "shipment.switched_to_pickup", "Your parcel goes to a pickup point"),
    Resolution.RESHIP.value: ("shipment.reshipped", "We are sending a new parcel"),
}


def _day(value: str) -> str:
    """A promise or ETA as members read it: the calendar day, in the time it was given."""
    return datetime.fromisoformat(value).date().isoformat()


class NotificationsProjection(ReadModel):
    name = "notifications"
    tables = (
        notifications,
        notification_consents,
        notification_shipments,
        notification_erasures,
    )

    def handlers(self) -> dict[type, Handler]:
        return {
            Member.ConsentChanged: self.on_consent_changed,
            Member.Erased: self.on_member_erased,
            Shipment.Created: self.on_shipment_created,
            Shipment.TrackingRecorded: self.on_tracking_recorded,
            Shipment.ExceptionDetected: self.on_exception_detected,
            Shipment.ExceptionResolved: self.on_exception_resolved,
        }

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _shipment(conn: Connection, event: Any) -> dict[str, Any] | None:
        """The parcel's owner and tracking state; None if unknown or its member was erased."""
        row = conn.execute(
            select(notification_shipments).where(
                notification_shipments.c.shipment_id == str(event.originator_id)
            )
        ).one_or_none()
        return dict(row._mapping) if row is not None else None

    @staticmethod
    def _consented(conn: Connection, member_id: str) -> list[str]:
        granted = set(conn.scalars(
            select(notification_consents.c.channel).where(
                (notification_consents.c.member_id == member_id)
                & notification_consents.c.granted.is_(True)
            )
        ))
        return [channel for channel in EXTERNAL_CHANNELS if channel in granted]

    def _notify(
        self,
        conn: Connection,
        event: Any,
        position: int,
        shipment: dict[str, Any],
        kind: str,
        topic: str,
        title: str,
        body: str,
    ) -> None:
        """One inbox row, and one outbox row per consented external channel (if new)."""
        notification_id = f"{event.originator_id}:{event.originator_version}"
        member_id = shipment["member_id"]
        external = self._consented(conn, member_id)
        created_at = utc(event.timestamp)
        conn.execute(
            insert(notifications).values(
                notification_id=notification_id,
                member_id=member_id,
                kind=kind,
                topic=topic,
                shipment_id=shipment["shipment_id"],
                order_id=shipment["order_id"],
                title=title,
                body=body,
                channels=[INBOX, *external],
                created_at=created_at,
                position=position,
            )
        )
        if not external:
            return
        existing = set(conn.scalars(
            select(notification_outbox.c.channel).where(
                notification_outbox.c.notification_id == notification_id
            )
        ))
        for channel in external:
            if channel in existing:  # a rebuild replaying this event: already queued/sent
                continue
            conn.execute(
                insert(notification_outbox).values(
                    notification_id=notification_id,
                    channel=channel,
                    member_id=member_id,
                    payload={
                        "notification_id": notification_id,
                        "channel": channel,
                        "member_id": member_id,
                        "kind": kind,
                        "topic": topic,
                        "title": title,
                        "body": body,
                        "shipment_id": shipment["shipment_id"],
                        "order_id": shipment["order_id"],
                        "created_at": event.timestamp.isoformat(),
                    },
                    status=OUTBOX_PENDING,
                    attempts=0,
                    next_attempt_at=created_at,
                    claimed_by=None,
                    last_error=None,
                    created_at=created_at,
                    sent_at=None,
                )
            )

    @staticmethod
    def _parcel(shipment: dict[str, Any]) -> str:
        return f"{shipment['carrier'].upper()} parcel {shipment['tracking_number']}"

    # -- member events ----------------------------------------------------------------------

    def on_consent_changed(self, conn: Connection, event: Any, position: int) -> None:
        if event.purpose != ConsentPurpose.MARKETING.value or event.channel not in (
            EXTERNAL_CHANNELS
        ):
            return
        member_id = str(event.originator_id)
        key = (notification_consents.c.member_id == member_id) & (
            notification_consents.c.channel == event.channel
        )
        values = {"granted": bool(event.granted), "changed_at": utc(event.timestamp),
                  "position": position}
        if conn.execute(update(notification_consents).where(key).values(**values)).rowcount:
            return
        conn.execute(insert(notification_consents).values(
            member_id=member_id, channel=event.channel, **values))

    def on_member_erased(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.originator_id)
        conn.execute(delete(notifications).where(notifications.c.member_id == member_id))
        conn.execute(delete(notification_consents).where(
            notification_consents.c.member_id == member_id))
        conn.execute(delete(notification_shipments).where(
            notification_shipments.c.member_id == member_id))
        if conn.scalar(select(notification_erasures.c.member_id).where(
                notification_erasures.c.member_id == member_id)) is None:
            conn.execute(insert(notification_erasures).values(
                member_id=member_id, erased_at=utc(event.timestamp)))
        # The outbox is kept (deleting rows would let a rebuild queue them again), but
        # nothing more goes out and nothing readable stays behind.
        conn.execute(
            update(notification_outbox)
            .where((notification_outbox.c.member_id == member_id)
                   & (notification_outbox.c.status == OUTBOX_PENDING))
            .values(status=OUTBOX_CANCELLED, claimed_by=None)
        )
        conn.execute(
            update(notification_outbox)
            .where(notification_outbox.c.member_id == member_id)
            .values(payload={})
        )

    # -- shipment events --------------------------------------------------------------------

    def on_shipment_created(self, conn: Connection, event: Any, position: int) -> None:
        erased = conn.scalar(select(notification_erasures.c.member_id).where(
            notification_erasures.c.member_id == event.member_id))
        if erased is not None:
            return
        shipment = {
            "shipment_id": str(event.originator_id),
            "member_id": event.member_id,
            "order_id": event.order_id,
            "carrier": event.carrier,
            "tracking_number": event.tracking_number,
            "status": TrackingStatus.LABEL_CREATED.value,
            "latest_occurred_at": None,
            "latest_recorded_at": None,
        }
        if getattr(event, "direction", Direction.OUTBOUND.value) == Direction.INBOUND.value:
            # A return parcel: one notice with the label; the member sends it, so its
            # tracking is the shop's business (the case shows its progress).
            self._notify(
                conn, event, position, shipment, MILESTONE, "return.label_created",
                "Your return label is ready",
                f"Send your return with {event.carrier}, tracking number "
                f"{event.tracking_number}, by {_day(event.promised_by)}.",
            )
            return
        conn.execute(insert(notification_shipments).values(**shipment))
        replacing = " It replaces your earlier parcel." if event.replaces else ""
        self._notify(
            conn, event, position, shipment, MILESTONE, "shipment.label_created",
            "Your parcel is being prepared",
            f"{self._parcel(shipment)} has a shipping label and is expected by "
            f"{_day(event.promised_by)}.{replacing}",
        )

    def on_tracking_recorded(self, conn: Connection, event: Any, position: int) -> None:
        shipment = self._shipment(conn, event)
        if shipment is None:
            return
        # The aggregate's status rule: the update that ranks highest sets the status. The
        # stored key is that of the update that set the current status.
        key = (event.occurred_at, event.timestamp.isoformat())
        previous = shipment["status"]
        applies = shipment["latest_occurred_at"] is None or status_rank(
            event.status, *key
        ) >= status_rank(previous, shipment["latest_occurred_at"], shipment["latest_recorded_at"])
        if applies:
            conn.execute(
                update(notification_shipments)
                .where(notification_shipments.c.shipment_id == shipment["shipment_id"])
                .values(status=event.status, latest_occurred_at=key[0], latest_recorded_at=key[1])
            )
        # Only a status the parcel really reached, and only when it changes: a late,
        # older update or a repeated status tells the member nothing new.
        if not applies or event.status == previous or event.status not in TRACKING_NOTICES:
            return
        title, text = TRACKING_NOTICES[event.status]
        where = f" at {event.location}" if event.location else ""
        eta = f" Expected by {_day(event.eta)}." if event.eta else ""
        self._notify(
            conn, event, position, shipment, MILESTONE, f"shipment.{event.status}", title,
            f"{text}{where} ({self._parcel(shipment)}).{eta}",
        )

    def on_exception_detected(self, conn: Connection, event: Any, position: int) -> None:
        shipment = self._shipment(conn, event)
        if shipment is None:
            return
        title = EXCEPTION_TITLES.get(event.kind, "There is a problem with your parcel")
        self._notify(
            conn, event, position, shipment, EXCEPTION, "shipment.exception", title,
            f"{event.detail} ({self._parcel(shipment)}). Choose what happens next: a new "
            "delivery window, a pickup point, or a new parcel.",
        )

    def on_exception_resolved(self, conn: Connection, event: Any, position: int) -> None:
        shipment = self._shipment(conn, event)
        if shipment is None:
            return
        topic, title = RESOLUTION_NOTICES.get(
            event.resolution, ("shipment.exception_resolved", "Your parcel is back on track"))
        where = f" Pickup point: {event.pickup_point}." if event.pickup_point else ""
        self._notify(
            conn, event, position, shipment, EXCEPTION, topic, title,
            f"{self._parcel(shipment)} is now expected by {_day(event.promised_by)}.{where}",
        )
