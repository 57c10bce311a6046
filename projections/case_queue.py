"""`case_queue` and `case_timeline`: after-sales cases as agents work them, and their history.

Each handler does to the queue row what the event's `apply` does to the AfterSalesCase
(the same state, the same "first review happens once" rule), and appends one timeline row
per event keyed by the event's version, so the row equals the aggregate after every event.
Everything comes from the event and the rows earlier events built, never the wall clock:
whether a deadline was missed is what the scheduled SLA check recorded, so a rebuild from
position zero reproduces both tables exactly.

Personal data never reaches these tables: the events' `personal` attribute (the reason's
detail, evidence, message bodies and attachments, inspection and follow-up notes, rating
comments, a withdrawal's reason) is never read, nor are the agents' free-text `note`s on
approvals and resolutions. The rejection reason is kept: it is the agent's decision,
not something about the member.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from domain.after_sales import OPEN_STATES, AfterSalesCase, CaseState, SlaKind
from projections.after_sales_tables import case_queue, case_timeline
from projections.commerce_tables import iso, utc
from projections.engine import Handler, ReadModel

OPEN_STATE_VALUES = frozenset(str(s.value) for s in OPEN_STATES)


def next_due(row: dict[str, Any]) -> Any:
    """The deadline an open case works towards now; None once it is no longer open."""
    if row["state"] not in OPEN_STATE_VALUES:
        return None
    if row["first_reviewed_at"] is None:
        return row["first_review_due"]
    return row["resolution_due"]


def iso_utc(value: datetime | str) -> str:
    """A domain time (datetime or ISO string) inside a JSON detail: ISO 8601 in UTC."""
    moment = utc(value)
    assert moment is not None
    return iso(moment)


def public_refund(refund: dict[str, Any] | None) -> dict[str, Any] | None:
    """The refund's identity and amount, whatever else the event may carry."""
    if not refund:
        return None
    return {"refund_id": refund.get("refund_id"), "amount": refund.get("amount"),
            "currency": refund.get("currency")}


class CaseQueueProjection(ReadModel):
    name = "case_queue"
    tables = (case_queue, case_timeline)

    def handlers(self) -> dict[type, Handler]:
        return {
            AfterSalesCase.Opened: self.on_opened,
            AfterSalesCase.Assigned: self.on_assigned,
            AfterSalesCase.Approved: self.on_approved,
            AfterSalesCase.Rejected: self.on_rejected,
            AfterSalesCase.ReturnLabelIssued: self.on_return_label_issued,
            AfterSalesCase.ReturnReceived: self.on_return_received,
            AfterSalesCase.Inspected: self.on_inspected,
            AfterSalesCase.Resolved: self.on_resolved,
            AfterSalesCase.Withdrawn: self.on_withdrawn,
            AfterSalesCase.Closed: self.on_closed,
            AfterSalesCase.MessagePosted: self.on_message_posted,
            AfterSalesCase.SlaBreached: self.on_sla_breached,
            AfterSalesCase.FollowUpScheduled: self.on_follow_up_scheduled,
            AfterSalesCase.FollowUpRecorded: self.on_follow_up_recorded,
            AfterSalesCase.Rated: self.on_rated,
        }

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(conn: Connection, event: Any) -> dict[str, Any]:
        row = conn.execute(
            select(case_queue).where(case_queue.c.case_id == str(event.originator_id))
        ).one()
        return dict(row._mapping)

    @staticmethod
    def _record(conn: Connection, event: Any, position: int, kind: str, state: str,
                detail: dict[str, Any]) -> None:
        conn.execute(
            insert(case_timeline).values(
                case_id=str(event.originator_id),
                version=event.originator_version,
                at=utc(event.timestamp),
                kind=kind,
                state=state,
                actor_id=event.meta["actor_id"],
                actor_role=event.meta["actor_role"],
                detail=detail,
                position=position,
            )
        )

    def _save(self, conn: Connection, event: Any, position: int, row: dict[str, Any],
              kind: str, detail: dict[str, Any], **values: Any) -> None:
        """Apply `values` to the row (and what follows from them), then log the event."""
        after = {**row, **values}
        values["breached"] = bool(after["first_review_breached"]
                                  or after["resolution_breached"])
        values["next_due_at"] = next_due(after)
        conn.execute(
            update(case_queue)
            .where(case_queue.c.case_id == str(event.originator_id))
            .values(
                updated_at=utc(event.timestamp),
                version=event.originator_version,
                position=position,
                **values,
            )
        )
        self._record(conn, event, position, kind, after["state"], detail)

    def _step(self, conn: Connection, event: Any, position: int, kind: str,
              detail: dict[str, Any], **values: Any) -> None:
        self._save(conn, event, position, self._load(conn, event), kind, detail, **values)

    # -- handlers ---------------------------------------------------------------------------

    def on_opened(self, conn: Connection, event: Any, position: int) -> None:
        # reason_detail, evidence_notes and photo_urls are in `personal`: never read.
        lines = [{"line_id": line["line_id"], "quantity": line["quantity"]}
                 for line in event.lines]
        row: dict[str, Any] = {
            "case_id": str(event.originator_id),
            "case_number": event.case_number,
            "order_id": event.order_id,
            "member_id": event.member_id,
            "case_type": event.case_type,
            "reason": event.reason,
            "lines": lines,
            "preferred_outcome": event.preferred_outcome,
            "state": CaseState.REQUESTED.value,
            "tier": event.tier,
            "team": event.team,
            "assignee": None,
            "opened_at": utc(event.timestamp),
            "opened_by_role": event.meta["actor_role"],
            "first_review_due": utc(event.first_review_due),
            "first_reviewed_at": None,
            "first_response_at": None,
            "resolution_due": utc(event.resolution_due),
            "resolved_at": None,
            "closed_at": None,
            "outcome": None,
            "refund": None,
            "replacement_shipment_id": None,
            "return_shipment_id": None,
            "return_carrier": None,
            "return_tracking_number": None,
            "label_url": None,
            "inspection_result": None,
            "disposition": None,
            "first_review_breached": False,
            "resolution_breached": False,
            "breached": False,
            "follow_up_scheduled_for": None,
            "follow_up_outcome": None,
            "rating": None,
            "message_count": 0,
            "last_message_at": None,
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
        }
        row["next_due_at"] = next_due(row)
        conn.execute(insert(case_queue).values(**row))
        self._record(conn, event, position, "opened", row["state"], {
            "case_number": event.case_number,
            "case_type": event.case_type,
            "reason": event.reason,
            "lines": lines,
            "preferred_outcome": event.preferred_outcome,
            "tier": event.tier,
            "team": event.team,
            "first_review_due": iso_utc(event.first_review_due),
            "resolution_due": iso_utc(event.resolution_due),
        })

    def on_assigned(self, conn: Connection, event: Any, position: int) -> None:
        row = self._load(conn, event)
        values: dict[str, Any] = {"assignee": event.agent_id, "team": event.team}
        if event.starts_review:
            values["state"] = CaseState.UNDER_REVIEW.value
            if row["first_reviewed_at"] is None:
                values["first_reviewed_at"] = utc(event.timestamp)
        self._save(conn, event, position, row, "assigned", {
            "agent_id": event.agent_id, "team": event.team,
            "previous_agent": event.previous_agent,
        }, **values)

    def _reviewed(self, conn: Connection, event: Any, position: int, kind: str,
                  state: CaseState, detail: dict[str, Any]) -> None:
        row = self._load(conn, event)
        values: dict[str, Any] = {"state": state.value}
        if row["first_reviewed_at"] is None:
            values["first_reviewed_at"] = utc(event.timestamp)
        self._save(conn, event, position, row, kind, detail, **values)

    def on_approved(self, conn: Connection, event: Any, position: int) -> None:
        # The agent's `note` is free text: not copied.
        self._reviewed(conn, event, position, "approved", CaseState.APPROVED,
                       {"first_review": bool(event.first_review)})

    def on_rejected(self, conn: Connection, event: Any, position: int) -> None:
        self._reviewed(conn, event, position, "rejected", CaseState.REJECTED,
                       {"reason": event.reason, "first_review": bool(event.first_review)})

    def on_return_label_issued(self, conn: Connection, event: Any, position: int) -> None:
        self._step(conn, event, position, "return_label_issued", {
            "carrier": event.carrier, "tracking_number": event.tracking_number,
            "shipment_id": event.shipment_id,
        }, state=CaseState.AWAITING_RETURN.value, return_shipment_id=event.shipment_id,
            return_carrier=event.carrier, return_tracking_number=event.tracking_number,
            label_url=event.label_url)

    def on_return_received(self, conn: Connection, event: Any, position: int) -> None:
        self._step(conn, event, position, "return_received", {"via": event.via},
                   state=CaseState.RECEIVED.value)

    def on_inspected(self, conn: Connection, event: Any, position: int) -> None:
        # The inspector's notes are in `personal`: never read.
        self._step(conn, event, position, "inspected",
                   {"result": event.result, "disposition": event.disposition},
                   state=CaseState.INSPECTED.value, inspection_result=event.result,
                   disposition=event.disposition)

    def on_resolved(self, conn: Connection, event: Any, position: int) -> None:
        # The agent's `note` is free text: not copied.
        refund = public_refund(event.refund)
        self._step(conn, event, position, "resolved", {
            "outcome": event.outcome, "refund": refund, "shipment_id": event.shipment_id,
        }, state=CaseState.RESOLVED.value, resolved_at=utc(event.timestamp),
            outcome=event.outcome, refund=refund, replacement_shipment_id=event.shipment_id)

    def on_withdrawn(self, conn: Connection, event: Any, position: int) -> None:
        # The member's reason for withdrawing is in `personal`: never read.
        self._step(conn, event, position, "withdrawn", {}, state=CaseState.WITHDRAWN.value)

    def on_closed(self, conn: Connection, event: Any, position: int) -> None:
        self._step(conn, event, position, "closed", {}, state=CaseState.CLOSED.value,
                   closed_at=utc(event.timestamp))

    def on_message_posted(self, conn: Connection, event: Any, position: int) -> None:
        # The body and attachments are in `personal`: never read.
        row = self._load(conn, event)
        values: dict[str, Any] = {"message_count": row["message_count"] + 1,
                                  "last_message_at": utc(event.timestamp)}
        if event.first_response:
            values["first_response_at"] = utc(event.timestamp)
        self._save(conn, event, position, row, "message_posted", {
            "message_id": event.message_id, "from_staff": bool(event.from_staff),
        }, **values)

    def on_sla_breached(self, conn: Connection, event: Any, position: int) -> None:
        flag = ("first_review_breached" if event.kind == SlaKind.FIRST_REVIEW
                else "resolution_breached")
        self._step(conn, event, position, "sla_breached",
                   {"kind": event.kind, "due": iso_utc(event.due)},
                   **{flag: True})

    def on_follow_up_scheduled(self, conn: Connection, event: Any, position: int) -> None:
        self._step(conn, event, position, "follow_up_scheduled",
                   {"scheduled_for": iso_utc(event.scheduled_for)},
                   follow_up_scheduled_for=utc(event.scheduled_for))

    def on_follow_up_recorded(self, conn: Connection, event: Any, position: int) -> None:
        # The agent's note is in `personal`: never read.
        self._step(conn, event, position, "follow_up_recorded", {"outcome": event.outcome},
                   follow_up_outcome=event.outcome)

    def on_rated(self, conn: Connection, event: Any, position: int) -> None:
        # The member's comment is in `personal`: never read.
        scores = {"attitude": event.attitude, "ability": event.ability,
                  "efficiency": event.efficiency, "category": event.category}
        self._step(conn, event, position, "rated", scores,
                   rating={**scores, "at": iso(event.timestamp)})
