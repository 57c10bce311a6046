"""The AfterSalesCase aggregate: a member's claim on delivered goods, from request to close.

A case covers delivered lines of one order. It is reviewed (approved or rejected), the
goods may travel back in a return parcel, are received and inspected, and the case is
resolved by a refund, an exchange, a repair or a reissue, then closed. The member may
withdraw it before resolution. Every transition is a command that checks the state and
the actor and records one event, or raises a typed error and records nothing.

Free text the member or an agent writes about the member (the reason's detail, evidence,
messages, comments, follow-up notes) is personal data: it travels in the events'
`personal` attribute under the member's key, and is gone when the member is erased.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import ForbiddenError, InvalidTransitionError, ValidationError
from domain.metadata import EventMetadata, Role
from domain.validation import enum_value, rating_value


class CaseType(StrEnum):
    RETURN = "return"
    EXCHANGE = "exchange"
    REPAIR = "repair"
    REFUND_ONLY = "refund_only"
    REISSUE = "reissue"


class CaseState(StrEnum):
    REQUESTED = "requested"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    AWAITING_RETURN = "awaiting_return"
    RECEIVED = "received"
    INSPECTED = "inspected"
    RESOLVED = "resolved"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"


class CaseOutcome(StrEnum):
    REFUNDED = "refunded"
    EXCHANGED = "exchanged"
    REPAIRED = "repaired"
    REISSUED = "reissued"


class InspectionResult(StrEnum):
    CONFIRMED = "confirmed"  # the goods are as the member described
    NOT_CONFIRMED = "not_confirmed"


class Disposition(StrEnum):
    RESTOCK = "restock"
    REFURBISH = "refurbish"
    SCRAP = "scrap"


class SlaKind(StrEnum):
    FIRST_REVIEW = "first_review"
    RESOLUTION = "resolution"


class FollowUpOutcome(StrEnum):
    SATISFIED = "satisfied"
    NOT_SATISFIED = "not_satisfied"
    UNREACHABLE = "unreachable"


class FeedbackCategory(StrEnum):
    PRODUCT = "product"
    LOGISTICS = "logistics"
    AFTER_SALES = "after_sales"
    SYSTEM = "system"


# Types whose goods travel back to the shop before the case can be resolved.
NEEDS_RETURN_PARCEL = frozenset({CaseType.RETURN, CaseType.EXCHANGE, CaseType.REPAIR})

# How each type may end. An exchange may become a refund when no replacement is in stock,
# a repair an exchange or a refund when the item cannot be repaired.
OUTCOMES: dict[CaseType, tuple[CaseOutcome, ...]] = {
    CaseType.RETURN: (CaseOutcome.REFUNDED,),
    CaseType.EXCHANGE: (CaseOutcome.EXCHANGED, CaseOutcome.REFUNDED),
    CaseType.REPAIR: (CaseOutcome.REPAIRED, CaseOutcome.EXCHANGED, CaseOutcome.REFUNDED),
    CaseType.REFUND_ONLY: (CaseOutcome.REFUNDED,),
    CaseType.REISSUE: (CaseOutcome.REISSUED, CaseOutcome.REFUNDED),
}

# Outcomes that send goods to the member in a new parcel.
SHIPS_GOODS = frozenset({CaseOutcome.EXCHANGED, CaseOutcome.REPAIRED, CaseOutcome.REISSUED})

# States in which the case is still being worked on (the queue's open cases).
OPEN_STATES = frozenset({
    CaseState.REQUESTED, CaseState.UNDER_REVIEW, CaseState.APPROVED,
    CaseState.AWAITING_RETURN, CaseState.RECEIVED, CaseState.INSPECTED,
})
# States in which the member's claim on the order's lines is held.
CLAIMING_STATES = OPEN_STATES

MAX_TEXT = 2000
MAX_URLS = 10



def _text(value: Any, field: str, max_length: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field)
    text = value.strip()
    if len(text) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters", field)
    return text or None


def validate_urls(urls: Sequence[Any] | None, field: str) -> list[str]:
    """Photos and attachments are links to files stored elsewhere: http(s) URLs only."""
    urls = list(urls or [])
    if len(urls) > MAX_URLS:
        raise ValidationError(f"at most {MAX_URLS} links in {field}", field)
    checked = []
    for url in urls:
        if not isinstance(url, str) or len(url) > 500:
            raise ValidationError(f"{field} must be URLs of at most 500 characters", field)
        parsed = urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError(f"{url!r} is not an http(s) URL", field)
        checked.append(url.strip())
    return checked



def case_number_for(case_id: UUID, opened_at: datetime) -> str:
    """A number people can read out on the phone: the day, then 10 characters of the id.

    Derived from the id (random or idempotency-key based), so no counter aggregate has to
    serialise every case opened in the shop. 50 bits per day: even at 100,000 cases a day
    the chance that two share a number is about one in 200,000.
    """
    code = base64.b32encode(case_id.bytes[:10]).decode()[:10]
    return f"AS-{opened_at:%y%m%d}-{code}"


def validate_claim_lines(lines: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    if not lines:
        raise ValidationError("a case covers at least one order line", "lines")
    wanted: dict[str, int] = {}
    for index, (line_id, quantity) in enumerate(lines):
        if not isinstance(line_id, str) or not line_id:
            raise ValidationError("name the order line", f"lines.{index}.line_id")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise ValidationError("case quantities must be at least 1",
                                  f"lines.{index}.quantity")
        wanted[line_id] = wanted.get(line_id, 0) + quantity
    return [{"line_id": k, "quantity": v} for k, v in wanted.items()]


class AfterSalesCase(RecordedAggregate):
    @classmethod
    def open(
        cls,
        case_id: UUID,
        order_id: str,
        member_id: str,
        case_type: Any,
        reason: Any,
        allowed_reasons: Sequence[str],
        reason_detail: str | None,
        lines: list[dict[str, Any]],
        evidence_notes: str | None,
        photo_urls: Sequence[str] | None,
        preferred_outcome: Any,
        tier: str,
        team: str,
        first_review_due: datetime,
        resolution_due: datetime,
        request_hash: str,
        now: datetime,
        meta: EventMetadata,
    ) -> AfterSalesCase:
        type_value = CaseType(enum_value(CaseType, case_type, "type"))
        if reason not in allowed_reasons:
            raise ValidationError(f"reason must be one of: {', '.join(allowed_reasons)}",
                                  "reason")
        preferred = None
        if preferred_outcome is not None:
            preferred = enum_value(CaseOutcome, preferred_outcome, "preferred_outcome")
            if CaseOutcome(preferred) not in OUTCOMES[type_value]:
                allowed = ", ".join(o.value for o in OUTCOMES[type_value])
                raise ValidationError(
                    f"a {type_value.value} case can end as: {allowed}", "preferred_outcome"
                )
        personal = {
            "reason_detail": _text(reason_detail, "reason_detail"),
            "evidence_notes": _text(evidence_notes, "evidence_notes"),
            "photo_urls": validate_urls(photo_urls, "photo_urls"),
        }
        return cls._create(
            cls.Opened, id=case_id, timestamp=now, order_id=order_id, member_id=member_id,
            case_number=case_number_for(case_id, now), case_type=type_value.value,
            reason=reason, lines=lines, preferred_outcome=preferred, tier=tier, team=team,
            first_review_due=first_review_due.isoformat(),
            resolution_due=resolution_due.isoformat(), request_hash=request_hash,
            personal={k: v for k, v in personal.items() if v} or None, meta=meta.as_dict(),
        )

    class Opened(Aggregate.Created):
        order_id: str
        member_id: str
        case_number: str
        case_type: str
        reason: str
        lines: list[dict[str, Any]]
        preferred_outcome: str | None
        tier: str
        team: str
        first_review_due: str
        resolution_due: str
        request_hash: str
        personal: dict[str, Any] | None

    def __init__(
        self, order_id: str, member_id: str, case_number: str, case_type: str, reason: str,
        lines: list[dict[str, Any]], preferred_outcome: str | None, tier: str, team: str,
        first_review_due: str, resolution_due: str, request_hash: str,
        personal: dict[str, Any] | None, meta: dict[str, Any],
    ) -> None:
        self.order_id = order_id
        self.member_id = member_id
        self.case_number = case_number
        self.case_type = case_type
        self.reason = reason
        self.lines = lines
        self.preferred_outcome = preferred_outcome
        self.tier = tier
        self.team = team
        self.first_review_due = first_review_due
        self.resolution_due = resolution_due
        self.request_hash = request_hash
        # Decrypted personal data, or None once the member is erased.
        self.personal = personal
        self.opened_by = meta
        self.state: str = CaseState.REQUESTED.value
        self.assignee: str | None = None
        self.first_reviewed_at: str | None = None
        self.first_response_at: str | None = None
        self.rejection_reason: str | None = None
        self.return_parcel: dict[str, Any] | None = None
        self.inspection: dict[str, Any] | None = None
        self.resolution: dict[str, Any] | None = None
        self.resolved_at: str | None = None
        self.breaches: dict[str, str] = {}
        self.messages: list[dict[str, Any]] = []
        self.follow_up: dict[str, Any] | None = None
        self.rating: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = [{"state": self.state, "at": None}]

    # -- rules ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return CaseState(self.state) in OPEN_STATES

    @property
    def type(self) -> CaseType:
        return CaseType(self.case_type)

    def _require(self, attempted: str, *allowed: CaseState) -> None:
        if CaseState(self.state) not in allowed:
            raise InvalidTransitionError(
                f"cannot {attempted} a case that is {self.state}",
                current_state=self.state, attempted=attempted,
            )

    def require_party(self, meta: EventMetadata) -> None:
        """Only the member whose case it is, and staff, may see or act on it."""
        if meta.actor_role.is_staff or meta.actor_role is Role.SYSTEM:
            return
        if meta.actor_role is Role.MEMBER and meta.actor_id == self.member_id:
            return
        raise ForbiddenError("this is not your after-sales case", "case_id")

    @staticmethod
    def require_staff(meta: EventMetadata, attempted: str) -> None:
        if not (meta.actor_role.is_staff or meta.actor_role is Role.SYSTEM):
            raise ForbiddenError(f"only service staff may {attempted}")

    # -- commands ---------------------------------------------------------------------------

    def assign(self, agent_id: str, team: str | None, now: datetime,
               meta: EventMetadata) -> bool:
        """Give the case to an agent; the first assignment starts the review.

        Reassigning a case someone else holds needs a reason. Assigning it to the agent who
        already holds it (a retried request) records nothing.
        """
        self.require_staff(meta, "assign cases")
        self._require("assign", *OPEN_STATES)
        agent = _text(agent_id, "agent_id", 100)
        if not agent:
            raise ValidationError("name the agent", "agent_id")
        team_value = _text(team, "team", 60) or self.team
        if agent == self.assignee and team_value == self.team:
            return False
        if self.assignee is not None:
            meta.require_reason()
        starts_review = self.state == CaseState.REQUESTED
        self._trigger(self.Assigned, now, meta, agent_id=agent, team=team_value,
                      previous_agent=self.assignee, starts_review=starts_review)
        return True

    def approve(self, note: str | None, now: datetime, meta: EventMetadata) -> None:
        self.require_staff(meta, "review cases")
        self._require("approve", CaseState.REQUESTED, CaseState.UNDER_REVIEW)
        self._trigger(self.Approved, now, meta, note=_text(note, "note", 500),
                      first_review=self.first_reviewed_at is None)

    def reject(self, reason: str | None, now: datetime, meta: EventMetadata) -> None:
        """Reject at review, or after an inspection that did not confirm the claim."""
        self.require_staff(meta, "review cases")
        if not (self.state == CaseState.INSPECTED and self.inspection
                and self.inspection["result"] == InspectionResult.NOT_CONFIRMED):
            self._require("reject", CaseState.REQUESTED, CaseState.UNDER_REVIEW)
        text = _text(reason, "reason", 500)
        if not text:
            raise ValidationError("say why the case is rejected", "reason")
        self._trigger(self.Rejected, now, meta, reason=text,
                      first_review=self.first_reviewed_at is None)

    def issue_return_label(
        self, shipment_id: str, carrier: str, tracking_number: str, label_url: str | None,
        now: datetime, meta: EventMetadata,
    ) -> bool:
        """False when this very label was already issued (a retried request)."""
        self.require_staff(meta, "issue return labels")
        if self.return_parcel is not None and self.return_parcel["shipment_id"] == shipment_id:
            return False
        if self.type not in NEEDS_RETURN_PARCEL:
            raise InvalidTransitionError(
                f"a {self.case_type} case has no return parcel", current_state=self.state,
                attempted="issue a return label",
            )
        self._require("issue a return label", CaseState.APPROVED)
        urls = validate_urls([label_url] if label_url else [], "label_url")
        self._trigger(self.ReturnLabelIssued, now, meta, shipment_id=shipment_id,
                      carrier=carrier, tracking_number=tracking_number,
                      label_url=urls[0] if urls else None)
        return True

    def return_received(self, via: str, now: datetime, meta: EventMetadata) -> bool:
        """The parcel reached the warehouse: reported by its carrier or by staff.

        False if it was already recorded (the carrier and a person may both report it).
        """
        self.require_staff(meta, "receive returns")
        if self.state in (CaseState.RECEIVED, CaseState.INSPECTED, CaseState.RESOLVED,
                          CaseState.CLOSED) and self.return_parcel is not None:
            return False
        self._require("receive the return of", CaseState.AWAITING_RETURN)
        self._trigger(self.ReturnReceived, now, meta, via=via)
        return True

    def inspect(self, result: Any, disposition: Any, notes: str | None, now: datetime,
                meta: EventMetadata) -> None:
        self.require_staff(meta, "inspect returns")
        self._require("inspect", CaseState.RECEIVED)
        personal = {"notes": _text(notes, "notes")}
        self._trigger(
            self.Inspected, now, meta, result=enum_value(InspectionResult, result, "result"),
            disposition=enum_value(Disposition, disposition, "disposition"),
            member_id=self.member_id,
            personal=personal if personal["notes"] else None,
        )

    def check_resolution(self, outcome: Any) -> CaseOutcome:
        """The outcome, if this case may be resolved with it now (raises otherwise)."""
        value = CaseOutcome(enum_value(CaseOutcome, outcome, "outcome"))
        if value not in OUTCOMES[self.type]:
            allowed = ", ".join(o.value for o in OUTCOMES[self.type])
            raise ValidationError(f"a {self.case_type} case can end as: {allowed}", "outcome")
        if self.type in NEEDS_RETURN_PARCEL:
            self._require("resolve", CaseState.INSPECTED)
            assert self.inspection is not None
            if self.inspection["result"] != InspectionResult.CONFIRMED:
                raise InvalidTransitionError(
                    "the inspection did not confirm the claim; reject the case instead",
                    current_state=self.state, attempted="resolve",
                )
        else:
            self._require("resolve", CaseState.APPROVED)
        return value

    def resolve(
        self, outcome: Any, refund: Mapping[str, Any] | None, shipment_id: str | None,
        note: str | None, now: datetime, meta: EventMetadata,
    ) -> None:
        """Record the resolution; the service has already refunded or shipped accordingly."""
        self.require_staff(meta, "resolve cases")
        value = self.check_resolution(outcome)
        if (value == CaseOutcome.REFUNDED) != (refund is not None):
            raise ValidationError("a refund resolution records its refund", "outcome")
        if (value in SHIPS_GOODS) != (shipment_id is not None):
            raise ValidationError("this resolution sends goods in a parcel", "shipment")
        self._trigger(self.Resolved, now, meta, outcome=value.value,
                      refund=dict(refund) if refund else None, shipment_id=shipment_id,
                      note=_text(note, "note", 500))

    def withdraw(self, reason: str | None, now: datetime, meta: EventMetadata) -> None:
        self.require_party(meta)
        if meta.actor_role.is_staff:
            meta.require_reason()  # staff withdraw only on the member's word, on record
        self._require("withdraw", *OPEN_STATES)
        text = _text(reason, "reason", 500)
        self._trigger(self.Withdrawn, now, meta, member_id=self.member_id,
                      personal={"reason": text} if text else None)

    def close(self, now: datetime, meta: EventMetadata) -> None:
        self.require_staff(meta, "close cases")
        self._require("close", CaseState.RESOLVED, CaseState.REJECTED)
        self._trigger(self.Closed, now, meta)

    def post_message(
        self, message_id: str, body: str | None, attachments: Sequence[str] | None,
        now: datetime, meta: EventMetadata,
    ) -> bool:
        """A message in the case's conversation; False for a retry of one already posted."""
        self.require_party(meta)
        if any(m["message_id"] == message_id for m in self.messages):
            return False
        if CaseState(self.state) in (CaseState.CLOSED, CaseState.WITHDRAWN):
            raise InvalidTransitionError(
                f"cannot post a message on a case that is {self.state}",
                current_state=self.state, attempted="post a message",
            )
        text = _text(body, "body", 5000)
        urls = validate_urls(attachments, "attachments")
        if not text and not urls:
            raise ValidationError("write a message or attach a file", "body")
        staff = meta.actor_role.is_staff
        self._trigger(
            self.MessagePosted, now, meta, message_id=message_id, member_id=self.member_id,
            from_staff=staff, first_response=staff and self.first_response_at is None,
            personal={"body": text, "attachments": urls},
        )
        return True

    def check_sla(self, now: datetime, meta: EventMetadata) -> list[str]:
        """The scheduled check: record each deadline missed, once."""
        breached = []
        review_due = datetime.fromisoformat(self.first_review_due)
        if (SlaKind.FIRST_REVIEW not in self.breaches and now > review_due
                and (self.first_reviewed_at is None
                     or datetime.fromisoformat(self.first_reviewed_at) > review_due)):
            self._trigger(self.SlaBreached, now, meta, kind=SlaKind.FIRST_REVIEW.value,
                          due=self.first_review_due)
            breached.append(SlaKind.FIRST_REVIEW.value)
        resolution_due = datetime.fromisoformat(self.resolution_due)
        if (SlaKind.RESOLUTION not in self.breaches and now > resolution_due
                and (self.is_open
                     or (self.resolved_at is not None
                         and datetime.fromisoformat(self.resolved_at) > resolution_due))):
            self._trigger(self.SlaBreached, now, meta, kind=SlaKind.RESOLUTION.value,
                          due=self.resolution_due)
            breached.append(SlaKind.RESOLUTION.value)
        return breached

    def schedule_follow_up(self, at: datetime, now: datetime, meta: EventMetadata) -> None:
        self.require_staff(meta, "schedule follow-ups")
        self._require("schedule a follow-up for", CaseState.RESOLVED, CaseState.CLOSED)
        if at.tzinfo is None:
            raise ValidationError("the follow-up time needs a time zone", "scheduled_for")
        if at < now:
            raise ValidationError("a follow-up cannot be scheduled in the past",
                                  "scheduled_for")
        if self.follow_up is not None and self.follow_up.get("outcome"):
            raise InvalidTransitionError("the follow-up has already taken place",
                                         current_state="followed_up",
                                         attempted="schedule a follow-up")
        self._trigger(self.FollowUpScheduled, now, meta, scheduled_for=at.isoformat())

    def record_follow_up(self, outcome: Any, note: str | None, now: datetime,
                         meta: EventMetadata) -> None:
        self.require_staff(meta, "record follow-ups")
        self._require("record a follow-up for", CaseState.RESOLVED, CaseState.CLOSED)
        if self.follow_up is not None and self.follow_up.get("outcome"):
            raise InvalidTransitionError("the follow-up has already been recorded",
                                         current_state="followed_up",
                                         attempted="record a follow-up")
        text = _text(note, "note")
        self._trigger(self.FollowUpRecorded, now, meta,
                      outcome=enum_value(FollowUpOutcome, outcome, "outcome"),
                      member_id=self.member_id, personal={"note": text} if text else None)

    def rate(self, attitude: Any, ability: Any, efficiency: Any, category: Any,
             comment: str | None, now: datetime, meta: EventMetadata) -> None:
        """The member's satisfaction, once, after resolution."""
        if meta.actor_role is not Role.MEMBER:
            raise ForbiddenError("only the member rates their case")
        self.require_party(meta)
        self._require("rate", CaseState.RESOLVED, CaseState.CLOSED)
        if self.rating is not None:
            raise InvalidTransitionError("this case has already been rated",
                                         current_state="rated", attempted="rate")
        text = _text(comment, "comment")
        self._trigger(
            self.Rated, now, meta, attitude=rating_value(attitude, "attitude"),
            ability=rating_value(ability, "ability"),
            efficiency=rating_value(efficiency, "efficiency"),
            category=enum_value(FeedbackCategory, category, "category"),
            member_id=self.member_id, personal={"comment": text} if text else None,
        )

    # -- events -----------------------------------------------------------------------------


    def _enter(self, state: CaseState, at: datetime) -> None:
        self.state = state.value
        self.history.append({"state": state.value, "at": at.isoformat()})

    def _reviewed(self, at: datetime) -> None:
        if self.first_reviewed_at is None:
            self.first_reviewed_at = at.isoformat()

    class Assigned(RecordedAggregate.Event):
        agent_id: str
        team: str
        previous_agent: str | None
        starts_review: bool

        def apply(self, case: Any) -> None:
            case.assignee = self.agent_id
            case.team = self.team
            if self.starts_review:
                case._reviewed(self.timestamp)
                case._enter(CaseState.UNDER_REVIEW, self.timestamp)

    class Approved(RecordedAggregate.Event):
        note: str | None
        first_review: bool

        def apply(self, case: Any) -> None:
            case._reviewed(self.timestamp)
            case._enter(CaseState.APPROVED, self.timestamp)

    class Rejected(RecordedAggregate.Event):
        reason: str
        first_review: bool

        def apply(self, case: Any) -> None:
            case._reviewed(self.timestamp)
            case.rejection_reason = self.reason
            case._enter(CaseState.REJECTED, self.timestamp)

    class ReturnLabelIssued(RecordedAggregate.Event):
        shipment_id: str
        carrier: str
        tracking_number: str
        label_url: str | None

        def apply(self, case: Any) -> None:
            case.return_parcel = {
                "shipment_id": self.shipment_id, "carrier": self.carrier,
                "tracking_number": self.tracking_number, "label_url": self.label_url,
                "received_at": None, "received_via": None,
            }
            case._enter(CaseState.AWAITING_RETURN, self.timestamp)

    class ReturnReceived(RecordedAggregate.Event):
        via: str

        def apply(self, case: Any) -> None:
            case.return_parcel = {**case.return_parcel, "received_at": self.timestamp.isoformat(),
                                  "received_via": self.via}
            case._enter(CaseState.RECEIVED, self.timestamp)

    class Inspected(RecordedAggregate.Event):
        result: str
        disposition: str
        member_id: str
        personal: dict[str, Any] | None

        def apply(self, case: Any) -> None:
            case.inspection = {"result": self.result, "disposition": self.disposition,
                               "notes": (self.personal or {}).get("notes"),
                               "at": self.timestamp.isoformat()}
            case._enter(CaseState.INSPECTED, self.timestamp)

    class Resolved(RecordedAggregate.Event):
        outcome: str
        refund: dict[str, Any] | None
        shipment_id: str | None
        note: str | None

        def apply(self, case: Any) -> None:
            case.resolution = {"outcome": self.outcome, "refund": self.refund,
                               "shipment_id": self.shipment_id, "note": self.note}
            case.resolved_at = self.timestamp.isoformat()
            case._enter(CaseState.RESOLVED, self.timestamp)

    class Withdrawn(RecordedAggregate.Event):
        member_id: str
        personal: dict[str, Any] | None

        def apply(self, case: Any) -> None:
            case._enter(CaseState.WITHDRAWN, self.timestamp)

    class Closed(RecordedAggregate.Event):

        def apply(self, case: Any) -> None:
            case._enter(CaseState.CLOSED, self.timestamp)

    class MessagePosted(RecordedAggregate.Event):
        message_id: str
        member_id: str
        from_staff: bool
        first_response: bool
        personal: dict[str, Any] | None

        def apply(self, case: Any) -> None:
            personal = self.personal or {}
            case.messages.append({
                "message_id": self.message_id, "from_staff": self.from_staff,
                "author_id": self.meta["actor_id"], "author_role": self.meta["actor_role"],
                "body": personal.get("body"), "attachments": personal.get("attachments") or [],
                "at": self.timestamp.isoformat(), "erased": self.personal is None,
            })
            if self.first_response:
                case.first_response_at = self.timestamp.isoformat()

    class SlaBreached(RecordedAggregate.Event):
        kind: str
        due: str

        def apply(self, case: Any) -> None:
            case.breaches[self.kind] = self.timestamp.isoformat()

    class FollowUpScheduled(RecordedAggregate.Event):
        scheduled_for: str

        def apply(self, case: Any) -> None:
            case.follow_up = {"scheduled_for": self.scheduled_for, "outcome": None,
                              "note": None, "recorded_at": None}

    class FollowUpRecorded(RecordedAggregate.Event):
        outcome: str
        member_id: str
        personal: dict[str, Any] | None

        def apply(self, case: Any) -> None:
            case.follow_up = {**(case.follow_up or {"scheduled_for": None}),
                              "outcome": self.outcome,
                              "note": (self.personal or {}).get("note"),
                              "recorded_at": self.timestamp.isoformat()}

    class Rated(RecordedAggregate.Event):
        attitude: int
        ability: int
        efficiency: int
        category: str
        member_id: str
        personal: dict[str, Any] | None

        def apply(self, case: Any) -> None:
            case.rating = {"attitude": self.attitude, "ability": self.ability,
                           "efficiency": self.efficiency, "category": self.category,
                           "comment": (self.personal or {}).get("comment"),
                           "at": self.timestamp.isoformat()}


def resolution_due(opened_at: datetime, days: int) -> datetime:
    return opened_at + timedelta(days=days)
