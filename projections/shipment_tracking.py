"""`shipment_tracking`: one row per parcel, mirroring the Shipment aggregate event by event.

Each handler does to the row what the event's `apply` does to the aggregate (the timeline
sorted the same way, the same rule for late updates that never override a final status),
so the row's status, timeline, ETA and open exceptions equal the aggregate's after every
event. Everything comes from the event and the row earlier events built, never the wall
clock, so a rebuild from position zero reproduces the table exactly.

Personal data (address, printed name, gift message: the events' `personal`) is never read
here; packaging keeps only its public part (gift wrap, eco). The two texts a member writes
about a parcel, a rating's comment and a complaint, are kept because staff read them in
lists; they come from the events' decrypted `personal` (None once the member is erased, so
a rebuild after erasure never brings them back), and `Member.Erased` blanks them in the
member's rows.

Batched: the parcels a batch touches are read in one SELECT and written back with one bulk
upsert (see projections/batch_work.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.member import Member
from domain.shipment import (
    FINAL,
    RECEIVED,
    DeliveryMethod,
    Resolution,
    Shipment,
    TrackingStatus,
    status_entry,
)
from projections.batch_work import BatchWork
from projections.commerce_tables import iso, utc
from projections.engine import Handler, ReadModel
from projections.shipping_tables import shipment_tracking

FINAL_STATUSES = frozenset(str(s.value) for s in FINAL)
RECEIVED_STATUSES = frozenset(str(s.value) for s in RECEIVED)

NO_EXCEPTION = "none"
EXCEPTION_OPEN = "open"
EXCEPTION_RESOLVED = "resolved"


def public_packaging(packaging: dict[str, Any] | None) -> dict[str, bool]:
    """Only the packaging options that are not personal data, whatever the event holds."""
    packaging = packaging or {}
    return {"gift_wrap": bool(packaging.get("gift_wrap")), "eco": bool(packaging.get("eco"))}


class ShipmentTrackingProjection(ReadModel):
    name = "shipment_tracking"
    tables = (shipment_tracking,)
    batched = True

    def handlers(self) -> dict[type, Handler]:
        return {
            Shipment.Created: self.on_created,
            Shipment.DeliveryOptionsChanged: self.on_delivery_options_changed,
            Shipment.TrackingRecorded: self.on_tracking_recorded,
            Shipment.ExceptionDetected: self.on_exception_detected,
            Shipment.ExceptionResolved: self.on_exception_resolved,
            Shipment.Reshipped: self.on_reshipped,
            Shipment.Rated: self.on_rated,
            Shipment.ComplaintFiled: self.on_complaint_filed,
            Shipment.ComplaintAnswered: self.on_complaint_answered,
            Member.Erased: self.on_member_erased,
        }

    # -- the batch --------------------------------------------------------------------------

    def prepare(self, work: BatchWork, events: Sequence[tuple[Any, int]]) -> None:
        erased = {str(e.originator_id) for e, _ in events if isinstance(e, Member.Erased)}
        work.prefetch(shipment_tracking, {str(event.originator_id) for event, _ in events
                                          if not isinstance(event, Member.Erased)})
        if erased:
            work.prefetch_where(shipment_tracking, "member_id", erased)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(work: BatchWork, event: Any) -> dict[str, Any]:
        row = work.get(shipment_tracking, str(event.originator_id))
        if row is None:
            raise LookupError(f"shipment {event.originator_id} is not projected")
        return row

    @staticmethod
    def _save(work: BatchWork, event: Any, position: int, **values: Any) -> None:
        # As an UPDATE of a missing row, a missing parcel is left missing.
        work.update(
            shipment_tracking, str(event.originator_id),
            updated_at=utc(event.timestamp),
            version=event.originator_version,
            position=position,
            **values,
        )

    # -- handlers ---------------------------------------------------------------------------

    def on_created(self, work: BatchWork, event: Any, position: int) -> None:
        work.insert(shipment_tracking, {
            "shipment_id": str(event.originator_id),
            "order_id": event.order_id,
            "member_id": event.member_id,
            "carrier": event.carrier,
            "tracking_number": event.tracking_number,
            "method": event.method,
            "direction": getattr(event, "direction", "outbound"),
            "case_id": getattr(event, "case_id", None),
            "speed": event.speed,
            "priority_dispatch": bool(event.priority_dispatch),
            "pickup_point": event.pickup_point,
            "window": dict(event.window) if event.window else None,
            "items": [dict(item) for item in event.items],
            "packaging": public_packaging(event.packaging),
            "status": TrackingStatus.LABEL_CREATED.value,
            "status_at": None,
            # The aggregate starts with the promise as its ETA.
            "eta": utc(event.promised_by),
            "promised_by": utc(event.promised_by),
            "timeline": [],
            "exception_state": NO_EXCEPTION,
            "open_exceptions": [],
            "resolutions": [],
            "rating": None,
            "rated": False,
            "complaint": None,
            "replaces": event.replaces,
            "reshipped_as": None,
            "created_at": utc(event.timestamp),
            "delivered_at": None,
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
        })

    def on_delivery_options_changed(self, work: BatchWork, event: Any, position: int) -> None:
        # `personal` (a new address) is deliberately ignored: it is personal data.
        values: dict[str, Any] = {"method": event.method, "pickup_point": event.pickup_point,
                                  "window": dict(event.window) if event.window else None}
        if event.speed:
            values["speed"] = event.speed
        if event.promised_by:
            values["promised_by"] = values["eta"] = utc(event.promised_by)
        self._save(work, event, position, **values)

    def on_tracking_recorded(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        entry = {
            "update_id": event.update_id,
            "status": event.status,
            "occurred_at": event.occurred_at,
            "location": event.location,
            "note": event.note,
            # The aggregate's tie-breaker, in its own format: the same sort needs the same key.
            "recorded_at": event.timestamp.isoformat(),
        }
        timeline = [*row["timeline"], entry]
        timeline.sort(key=lambda e: (e["occurred_at"], e["recorded_at"]))
        values: dict[str, Any] = {"timeline": timeline}
        if status_entry(timeline) is entry:
            values["status"] = event.status
            values["status_at"] = utc(event.occurred_at)
            if event.status in RECEIVED_STATUSES and row["delivered_at"] is None:
                values["delivered_at"] = utc(event.occurred_at)
        if event.eta:
            values["eta"] = utc(event.eta)
        if event.status in FINAL_STATUSES:
            # A parcel that reached its end has no open exception any more.
            values["open_exceptions"] = []
            if row["exception_state"] == EXCEPTION_OPEN:
                values["exception_state"] = EXCEPTION_RESOLVED
        self._save(work, event, position, **values)

    def on_exception_detected(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        found = {"kind": event.kind, "detail": event.detail, "at": iso(event.timestamp)}
        # The aggregate keeps one detail per kind (a dict): a repeated kind keeps its place.
        kinds = [e["kind"] for e in row["open_exceptions"]]
        if event.kind in kinds:
            open_exceptions = [found if e["kind"] == event.kind else e
                               for e in row["open_exceptions"]]
        else:
            open_exceptions = [*row["open_exceptions"], found]
        self._save(work, event, position, open_exceptions=open_exceptions,
                   exception_state=EXCEPTION_OPEN)

    def on_exception_resolved(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        resolution = {
            "resolution": event.resolution,
            "pickup_point": event.pickup_point,
            "window": dict(event.window) if event.window else None,
            "promised_by": event.promised_by,
            "exceptions": [e["kind"] for e in row["open_exceptions"]],
            "at": iso(event.timestamp),
        }
        values: dict[str, Any] = {
            "open_exceptions": [],
            "exception_state": EXCEPTION_RESOLVED,
            "resolutions": [*row["resolutions"], resolution],
            "promised_by": utc(event.promised_by),
            "eta": utc(event.promised_by),
        }
        if event.resolution == Resolution.SWITCH_TO_PICKUP:
            values.update(method=DeliveryMethod.PICKUP_POINT.value,
                          pickup_point=event.pickup_point, window=None)
        elif event.resolution == Resolution.RESCHEDULE:
            values.update(method=DeliveryMethod.SCHEDULED.value,
                          window=dict(event.window) if event.window else None)
        self._save(work, event, position, **values)

    def on_reshipped(self, work: BatchWork, event: Any, position: int) -> None:
        self._save(work, event, position, reshipped_as=event.replacement_id)

    def on_rated(self, work: BatchWork, event: Any, position: int) -> None:
        rating = {
            "speed": event.speed,
            "courier_attitude": event.courier_attitude,
            "packaging_condition": event.packaging_condition,
            "comment": event.comment_text,
            "at": iso(event.timestamp),
        }
        self._save(work, event, position, rating=rating, rated=True)

    def on_complaint_filed(self, work: BatchWork, event: Any, position: int) -> None:
        complaint = {
            "text": event.complaint_text,
            "filed_at": iso(event.timestamp),
            "answer": None,
            "answered_at": None,
            "answered_by": None,
            "response_seconds": None,
        }
        self._save(work, event, position, complaint=complaint)

    def on_complaint_answered(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, event)
        filed = row["complaint"]
        # How long the member waited for an answer: the service-level figure support tracks.
        waited = event.timestamp - datetime.fromisoformat(filed["filed_at"])
        complaint = {
            **filed,
            "answer": event.text,
            "answered_at": iso(event.timestamp),
            "answered_by": event.meta["actor_id"],
            "response_seconds": waited.total_seconds(),
        }
        self._save(work, event, position, complaint=complaint)

    def on_member_erased(self, work: BatchWork, event: Any, position: int) -> None:
        """Blank what the member wrote about their parcels; the rest of each row (times,
        statuses, stars) is not personal and stays for the service figures."""
        for row in work.find(shipment_tracking, "member_id", str(event.originator_id)):
            rating, complaint = row["rating"], row["complaint"]
            if not (rating or {}).get("comment") and not (complaint or {}).get("text"):
                continue
            work.update(shipment_tracking, row["shipment_id"],
                        rating={**rating, "comment": None} if rating else None,
                        complaint={**complaint, "text": None} if complaint else None)
