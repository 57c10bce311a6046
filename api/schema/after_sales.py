"""After-sales cases: returns, exchanges, repairs, refunds only and reissues, from the
member's request to its close, with the agents' work queue and the service KPIs.

What a queue, a list or a KPI report needs comes from the "case_queue" and "service_kpis"
read models, so listing many cases never replays their events. What the member or an agent
wrote about the member (the reason's detail, evidence, messages, notes, comments) is
personal data that only the events keep: those fields load the case aggregate, so they are
gone after the member's erasure and masked for auditors without the `pii` scope.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry import relay
from strawberry.scalars import JSON

from api import after_sales_readmodels as readmodels
from api.after_sales_readmodels import (
    CaseFilter,
    case_cursor,
    case_timeline,
    get_cases,
    list_cases,
    service_kpis,
)
from api.auth import Principal
from api.context import RequestContext
from api.readmodels import (
    InvalidCursorError,
    instant,
    required_instant,
)
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Tier,
    UserError,
    context,
    followed_id,
    make_connection,
    page_size,
    readable,
    run_command,
    subscription_principal,
)
from api.schema.members import MemberNode, decode_member_id
from api.schema.orders import STAFF, Money, OrderNode, decode_uuid, money
from api.schema.shipments import ShipmentNode
from api.service import CommandResult
from api.shipping_readmodels import get_shipments
from domain import after_sales as model
from domain.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from domain.metadata import EventMetadata, Role

CaseType = strawberry.enum(model.CaseType, description="What the member asks for.")
CaseState = strawberry.enum(model.CaseState)
CaseOutcome = strawberry.enum(model.CaseOutcome, description="How a case ended.")
InspectionResult = strawberry.enum(model.InspectionResult)
ReturnDisposition = strawberry.enum(model.Disposition, name="ReturnDisposition",
                                    description="What happens to returned goods.")
SlaKind = strawberry.enum(model.SlaKind)
FollowUpOutcome = strawberry.enum(model.FollowUpOutcome)
FeedbackCategory = strawberry.enum(model.FeedbackCategory)
CaseSort = strawberry.enum(readmodels.CaseSort, name="CaseSort")
KpiGrouping = strawberry.enum(readmodels.KpiGrouping, name="KpiGrouping")

READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)
NODE = "AfterSalesCase"
POLL_SECONDS = 0.25


@strawberry.enum(description="A review's decision.")
class CaseDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


_at = instant
_required_at = required_instant


# -- output types ---------------------------------------------------------------------------


@strawberry.type(description="An order line the case is about, and how many of it.")
class CaseLine:
    line_id: str
    quantity: int


@strawberry.type(description="What the member showed: personal data.")
class CaseEvidence:
    notes: str | None
    photo_urls: list[str]


@strawberry.type(description="A deadline the case missed, as the scheduled check recorded.")
class SlaBreach:
    kind: SlaKind  # type: ignore[valid-type]
    due: dt.datetime = strawberry.field(description="The deadline that passed.")


@strawberry.type(description="The parcel the member sends the goods back in.")
class ReturnParcel:
    case: strawberry.Private[Any]
    carrier: str
    tracking_number: str
    label_url: str | None
    shipment_id: strawberry.Private[str | None]

    @strawberry.field(description="When the goods arrived (by the carrier's scan or staff).")
    async def received_at(self, info: strawberry.Info) -> dt.datetime | None:
        case = await self.case.aggregate(info)
        return _at((case.return_parcel or {}).get("received_at"))

    @strawberry.field(description="The inbound parcel and its tracking.")
    async def shipment(self, info: strawberry.Info) -> ShipmentNode | None:
        return await self.case.shipment(info, self.shipment_id)


@strawberry.type(description="What staff found when the goods came back.")
class CaseInspection:
    case: strawberry.Private[Any]
    result: InspectionResult  # type: ignore[valid-type]
    disposition: ReturnDisposition | None  # type: ignore[valid-type]

    @strawberry.field(description="Personal data: null when masked or erased.")
    async def notes(self, info: strawberry.Info) -> str | None:
        if not self.case.personal_visible(info):
            return None
        case = await self.case.aggregate(info)
        return (case.inspection or {}).get("notes")


@strawberry.type(description="How the case was resolved.")
class CaseResolution:
    case: strawberry.Private[Any]
    outcome: CaseOutcome  # type: ignore[valid-type]
    refund: Money | None = strawberry.field(description="What the order refunded (REFUNDED).")
    shipment_id: strawberry.Private[str | None]
    resolved_at: dt.datetime | None

    @strawberry.field(description="The parcel sent to the member (EXCHANGED, REPAIRED, "
                                  "REISSUED).")
    async def shipment(self, info: strawberry.Info) -> ShipmentNode | None:
        return await self.case.shipment(info, self.shipment_id)


@strawberry.type(description="One message of the case's conversation, oldest first.")
class CaseMessage:
    id: str = strawberry.field(description="The message id (its idempotency key, if given).")
    from_staff: bool
    author_role: str = strawberry.field(description="member, agent or admin.")
    author_id: str | None = strawberry.field(
        description="Who wrote it: shown to staff and auditors only."
    )
    body: str | None = strawberry.field(description="Personal data: null when masked or erased.")
    attachments: list[str] = strawberry.field(
        description="Links to files: personal data, empty when masked or erased."
    )
    at: dt.datetime


@strawberry.type(description="The call or message after resolution, to see all is well.")
class CaseFollowUp:
    case: strawberry.Private[Any]
    scheduled_for: dt.datetime | None
    outcome: FollowUpOutcome | None  # type: ignore[valid-type]

    @strawberry.field(description="Personal data: null when masked or erased.")
    async def note(self, info: strawberry.Info) -> str | None:
        if not self.case.personal_visible(info):
            return None
        case = await self.case.aggregate(info)
        return (case.follow_up or {}).get("note")

    @strawberry.field
    async def recorded_at(self, info: strawberry.Info) -> dt.datetime | None:
        case = await self.case.aggregate(info)
        return _at((case.follow_up or {}).get("recorded_at"))


@strawberry.type(description="The member's satisfaction with how the case was handled.")
class CaseRating:
    case: strawberry.Private[Any]
    attitude: int = strawberry.field(description="1 to 5.")
    ability: int = strawberry.field(description="1 to 5.")
    efficiency: int = strawberry.field(description="1 to 5.")
    category: FeedbackCategory  # type: ignore[valid-type]
    at: dt.datetime | None

    @strawberry.field(description="Personal data: null when masked or erased.")
    async def comment(self, info: strawberry.Info) -> str | None:
        if not self.case.personal_visible(info):
            return None
        case = await self.case.aggregate(info)
        return (case.rating or {}).get("comment")


@strawberry.type(description="One recorded step of the case, oldest first.")
class CaseTimelineEntry:
    version: int
    at: dt.datetime
    kind: str = strawberry.field(description="opened, assigned, approved, rejected, "
                                             "return_label_issued, message_posted, …")
    state: CaseState = strawberry.field(  # type: ignore[valid-type]
        description="The case's state after this step."
    )
    actor_role: str
    actor_id: str | None = strawberry.field(
        description="Who did it: shown to staff and auditors only."
    )
    detail: JSON = strawberry.field(description="The step's facts (never personal data).")
    position: EventPosition  # type: ignore[valid-type]


@strawberry.type(name="AfterSalesCase",
                 description="A member's claim on delivered goods of one order.")
class CaseNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]
    # Who looks: a subscription's principal comes from its socket, not from the request.
    viewer: strawberry.Private[Principal | None] = None
    loaded: strawberry.Private[list[asyncio.Future[model.AfterSalesCase]] | None] = None

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[CaseNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        rows = await get_cases(ctx.runtime.async_engine, ids)
        return [cls.from_row(row) if row else None for row in readable(ctx.principal, rows, ids)]

    @classmethod
    def from_row(cls, row: dict[str, Any], viewer: Principal | None = None) -> CaseNode:
        return cls(key=row["case_id"], row=row, viewer=viewer, loaded=[])

    # -- helpers (not fields) ---------------------------------------------------------------

    def principal(self, info: strawberry.Info) -> Principal:
        return self.viewer or context(info).principal

    def personal_visible(self, info: strawberry.Info) -> bool:
        return self.principal(info).can_see_personal_data(self.row["member_id"])

    def staff_view(self, info: strawberry.Info) -> bool:
        return self.principal(info).role in READERS

    async def aggregate(self, info: strawberry.Info) -> model.AfterSalesCase:
        """The case from the event store, loaded once per node however many fields ask.

        Only the events hold the personal fields and the messages.
        """
        if self.loaded is None:
            self.loaded = []
        if not self.loaded:
            runtime = context(info).runtime
            self.loaded.append(asyncio.ensure_future(
                run_in_threadpool(runtime.after_sales.get, uuid.UUID(self.key))
            ))
        return await self.loaded[0]

    async def personal(self, info: strawberry.Info) -> dict[str, Any] | None:
        if not self.personal_visible(info):
            return None
        return (await self.aggregate(info)).personal

    async def shipment(self, info: strawberry.Info,
                       shipment_id: str | None) -> ShipmentNode | None:
        if not shipment_id:
            return None
        rows = await get_shipments(context(info).runtime.async_engine, [shipment_id])
        row = rows.get(shipment_id)
        return ShipmentNode.from_row(row) if row else None

    # -- fields -----------------------------------------------------------------------------

    @strawberry.field(description="The case's UUID (the id inside the global id).")
    def case_id(self) -> str:
        return self.key

    @strawberry.field(description="What the member reads out on the phone, e.g. "
                                  "AS-261122-KOF6G577.")
    def case_number(self) -> str:
        return str(self.row["case_number"])

    @strawberry.field(description="The order's global id.")
    def order_id(self) -> strawberry.ID:
        return strawberry.ID(str(relay.GlobalID("Order", self.row["order_id"])))

    @strawberry.field(description="The order the goods came with.")
    async def order(self, info: strawberry.Info) -> OrderNode | None:
        row = await context(info).loaders.orders.load(self.row["order_id"])
        return OrderNode.from_row(row) if row else None

    @strawberry.field(description="The member's global id.")
    def member_id(self) -> strawberry.ID:
        return strawberry.ID(str(relay.GlobalID("Member", self.row["member_id"])))

    @strawberry.field(description="The member's profile: staff and auditors only.")
    async def member(self, info: strawberry.Info) -> MemberNode | None:
        if not self.staff_view(info):
            return None
        row = await context(info).loaders.member_profiles.load(self.row["member_id"])
        return MemberNode.from_row(row) if row else None

    @strawberry.field(description="What the member asks for; it decides the case's path.")
    def type(self) -> CaseType:  # type: ignore[valid-type]
        return CaseType(self.row["case_type"])

    @strawberry.field(description="One of `caseReasons`.")
    def reason(self) -> str:
        return str(self.row["reason"])

    @strawberry.field(description="The member's own words: personal data, null when masked "
                                  "or erased.")
    async def reason_detail(self, info: strawberry.Info) -> str | None:
        return ((await self.personal(info)) or {}).get("reason_detail")

    @strawberry.field(description="Personal data: null when masked, erased or not given.")
    async def evidence(self, info: strawberry.Info) -> CaseEvidence | None:
        personal = await self.personal(info)
        if not personal or not (personal.get("evidence_notes") or personal.get("photo_urls")):
            return None
        return CaseEvidence(notes=personal.get("evidence_notes"),
                            photo_urls=list(personal.get("photo_urls") or []))

    @strawberry.field(description="The order lines claimed, and how many of each.")
    def lines(self) -> list[CaseLine]:
        return [CaseLine(line_id=i["line_id"], quantity=int(i["quantity"]))
                for i in self.row["lines"] or []]

    @strawberry.field(description="What the member would like; staff decide.")
    def preferred_outcome(self) -> CaseOutcome | None:  # type: ignore[valid-type]
        value = self.row.get("preferred_outcome")
        return CaseOutcome(value) if value else None

    @strawberry.field(description="Where the case is in its path.")
    def state(self) -> CaseState:  # type: ignore[valid-type]
        return CaseState(self.row["state"])

    @strawberry.field(description="The member's tier when the case was opened; it set the "
                                  "first-review deadline.")
    def tier(self) -> Tier:
        return Tier(self.row["tier"])

    @strawberry.field(description="The service team the case is routed to.")
    def team(self) -> str:
        return str(self.row["team"])

    @strawberry.field(description="The agent working the case.")
    def assignee(self) -> str | None:
        return self.row.get("assignee")

    @strawberry.field(description="member, agent or admin: who opened the case.")
    def opened_by_role(self) -> str:
        return str(self.row["opened_by_role"])

    @strawberry.field(description="When the case was opened (business time).")
    def opened_at(self) -> dt.datetime:
        return _required_at(self.row["opened_at"])

    @strawberry.field(description="The case should be reviewed by then.")
    def first_review_due(self) -> dt.datetime:
        return _required_at(self.row["first_review_due"])

    @strawberry.field(description="The first assignment, approval or rejection.")
    def first_reviewed_at(self) -> dt.datetime | None:
        return _at(self.row.get("first_reviewed_at"))

    @strawberry.field(description="The first message from staff.")
    def first_response_at(self) -> dt.datetime | None:
        return _at(self.row.get("first_response_at"))

    @strawberry.field(description="The case should be resolved by then.")
    def resolution_due(self) -> dt.datetime:
        return _required_at(self.row["resolution_due"])

    @strawberry.field(description="Seconds until the deadline the case works towards now "
                                  "(negative: overdue, by business time); null once it is "
                                  "no longer open.")
    def urgency_seconds(self, info: strawberry.Info) -> int | None:
        due = _at(self.row.get("next_due_at"))
        if due is None:
            return None
        return int((due - context(info).runtime.clock.now()).total_seconds())

    @strawberry.field(description="Deadlines missed, as the scheduled SLA check recorded.")
    def breaches(self) -> list[SlaBreach]:
        found = []
        if self.row.get("first_review_breached"):
            found.append(SlaBreach(kind=SlaKind.FIRST_REVIEW,  # type: ignore[attr-defined]
                                   due=_required_at(self.row["first_review_due"])))
        if self.row.get("resolution_breached"):
            found.append(SlaBreach(kind=SlaKind.RESOLUTION,  # type: ignore[attr-defined]
                                   due=_required_at(self.row["resolution_due"])))
        return found

    @strawberry.field(description="Why the case was rejected.")
    async def rejection_reason(self, info: strawberry.Info) -> str | None:
        state = self.row["state"]
        # A rejected case may be closed afterwards; a resolved one has an outcome.
        if not (state == model.CaseState.REJECTED
                or (state == model.CaseState.CLOSED and not self.row.get("outcome"))):
            return None
        return (await self.aggregate(info)).rejection_reason

    @strawberry.field(description="The return parcel, once its label is issued.")
    def return_parcel(self) -> ReturnParcel | None:
        if not self.row.get("return_tracking_number"):
            return None
        return ReturnParcel(case=self, carrier=str(self.row["return_carrier"]),
                            tracking_number=str(self.row["return_tracking_number"]),
                            label_url=self.row.get("label_url"),
                            shipment_id=self.row.get("return_shipment_id"))

    @strawberry.field(description="What the returned goods showed, once inspected.")
    def inspection(self) -> CaseInspection | None:
        result = self.row.get("inspection_result")
        if not result:
            return None
        disposition = self.row.get("disposition")
        return CaseInspection(case=self, result=InspectionResult(result),
                              disposition=ReturnDisposition(disposition) if disposition
                              else None)

    @strawberry.field(description="How the case was settled, once resolved.")
    def resolution(self) -> CaseResolution | None:
        outcome = self.row.get("outcome")
        if not outcome:
            return None
        refund = self.row.get("refund")
        return CaseResolution(
            case=self, outcome=CaseOutcome(outcome),
            refund=money(int(refund["amount"]), refund["currency"]) if refund else None,
            shipment_id=self.row.get("replacement_shipment_id"),
            resolved_at=_at(self.row.get("resolved_at")),
        )

    @strawberry.field(description="When staff closed the case.")
    def closed_at(self) -> dt.datetime | None:
        return _at(self.row.get("closed_at"))

    @strawberry.field(description="The conversation between the member and staff.")
    async def messages(self, info: strawberry.Info) -> list[CaseMessage]:
        case = await self.aggregate(info)
        personal = self.personal_visible(info)
        staff = self.staff_view(info)
        return [
            CaseMessage(
                id=m["message_id"], from_staff=bool(m["from_staff"]),
                author_role=str(m["author_role"]),
                author_id=m["author_id"] if staff else None,
                body=m.get("body") if personal and not m.get("erased") else None,
                attachments=list(m.get("attachments") or [])
                if personal and not m.get("erased") else [],
                at=_required_at(m["at"]),
            )
            for m in case.messages
        ]

    @strawberry.field(description="How many messages the conversation has (no need to load "
                                  "them).")
    def message_count(self) -> int:
        return int(self.row.get("message_count") or 0)

    @strawberry.field(description="When the latest message was posted.")
    def last_message_at(self) -> dt.datetime | None:
        return _at(self.row.get("last_message_at"))

    @strawberry.field(description="The check with the member after resolution, once "
                                  "scheduled or recorded.")
    def follow_up(self) -> CaseFollowUp | None:
        scheduled = self.row.get("follow_up_scheduled_for")
        outcome = self.row.get("follow_up_outcome")
        if not scheduled and not outcome:
            return None
        return CaseFollowUp(case=self, scheduled_for=_at(scheduled),
                            outcome=FollowUpOutcome(outcome) if outcome else None)

    @strawberry.field(description="The member's rating, once given.")
    def rating(self) -> CaseRating | None:
        r = self.row.get("rating")
        if not r:
            return None
        return CaseRating(case=self, attitude=int(r["attitude"]), ability=int(r["ability"]),
                          efficiency=int(r["efficiency"]),
                          category=FeedbackCategory(r["category"]), at=_at(r.get("at")))

    @strawberry.field(description="Every recorded step, oldest first.")
    async def timeline(self, info: strawberry.Info) -> list[CaseTimelineEntry]:
        rows = await case_timeline(context(info).runtime.async_engine, self.key)
        staff = self.staff_view(info)
        return [
            CaseTimelineEntry(
                version=int(r["version"]), at=_required_at(r["at"]), kind=str(r["kind"]),
                state=CaseState(r["state"]), actor_role=str(r["actor_role"]),
                actor_id=r["actor_id"] if staff else None, detail=r["detail"] or {},
                position=int(r["position"]),
            )
            for r in rows
        ]

    @strawberry.field(description="When the case last changed.")
    def updated_at(self) -> dt.datetime:
        return _required_at(self.row["updated_at"])

    @strawberry.field(description="Version of the case this view reflects.")
    def version(self) -> int:
        return int(self.row["version"])


@strawberry.type(description="Seconds from opening to a milestone, over the cases that "
                             "reached it.")
class DurationDistribution:
    count: int
    average: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, d: readmodels.Distribution) -> DurationDistribution:
        return cls(count=d.count, average=d.average, p50=d.p50, p90=d.p90, p99=d.p99)


@strawberry.type(description="Ratings of one feedback category.")
class CategorySatisfaction:
    category: FeedbackCategory  # type: ignore[valid-type]
    ratings: int
    average: float | None = strawberry.field(
        description="Mean of attitude, ability and efficiency (1 to 5)."
    )


@strawberry.type(description="Service KPIs of the cases opened in a period (or one day or "
                             "team of it).")
class ServiceKpiGroup:
    key: str | None = strawberry.field(
        description="The day (YYYY-MM-DD, UTC, of opening) or the team; null when not grouped."
    )
    cases: int = strawberry.field(description="Cases opened in the period.")
    resolved: int = strawberry.field(description="Of them, those resolved so far.")
    first_response_seconds: DurationDistribution
    resolution_seconds: DurationDistribution
    sla_breach_rate: float | None = strawberry.field(
        description="Share of cases that missed any deadline (0 to 1)."
    )
    first_review_breach_rate: float | None
    resolution_breach_rate: float | None
    ratings: int = strawberry.field(description="Of them, those the member rated.")
    attitude: float | None = strawberry.field(description="Average, 1 to 5.")
    ability: float | None = strawberry.field(description="Average, 1 to 5.")
    efficiency: float | None = strawberry.field(description="Average, 1 to 5.")
    by_category: list[CategorySatisfaction]

    @classmethod
    def of(cls, group: readmodels.KpiGroup) -> ServiceKpiGroup:
        return cls(
            key=group.key, cases=group.cases, resolved=group.resolved,
            first_response_seconds=DurationDistribution.of(group.first_response_seconds),
            resolution_seconds=DurationDistribution.of(group.resolution_seconds),
            sla_breach_rate=group.sla_breach_rate,
            first_review_breach_rate=group.first_review_breach_rate,
            resolution_breach_rate=group.resolution_breach_rate, ratings=group.ratings,
            attitude=group.attitude, ability=group.ability, efficiency=group.efficiency,
            by_category=[
                CategorySatisfaction(category=FeedbackCategory(c.category), ratings=c.ratings,
                                     average=c.average)
                for c in group.by_category
            ],
        )


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input
class CaseLineInput:
    line_id: str
    quantity: int


@strawberry.input(description="What the member shows: personal data.")
class CaseEvidenceInput:
    notes: str | None = None
    photo_urls: list[str] | None = strawberry.field(
        default=None, description="http(s) links to photos stored elsewhere (at most 10)."
    )


@strawberry.input
class OpenAfterSalesCaseInput:
    # `reason` is the case's; staff's own reason is `onBehalfReason`.
    domain_paths: ClassVar[dict[str, str]] = {"meta.reason": "on_behalf_reason"}
    order_id: strawberry.ID
    type: CaseType  # type: ignore[valid-type]
    reason: str = strawberry.field(description="One of `caseReasons`.")
    reason_detail: str | None = strawberry.field(
        default=None, description="The member's own words (personal data)."
    )
    lines: list[CaseLineInput] = strawberry.field(
        description="Delivered lines and quantities; no other open case may claim them."
    )
    evidence: CaseEvidenceInput | None = None
    preferred_outcome: CaseOutcome | None = None  # type: ignore[valid-type]
    idempotency_key: str = strawberry.field(
        description="A retry with the same key and input returns the first case."
    )
    on_behalf_reason: str | None = strawberry.field(
        default=None, description="Required when staff open a case for a member: why, for "
                                  "the audit trail."
    )


@strawberry.input
class ReviewCaseInput:
    case_id: strawberry.ID
    decision: CaseDecision
    note: str | None = strawberry.field(default=None, description="On approval.")
    reason: str | None = strawberry.field(
        default=None, description="Why: required to REJECT (the member sees it)."
    )


@strawberry.input
class AssignCaseInput:
    case_id: strawberry.ID
    agent_id: str | None = strawberry.field(
        default=None, description="Defaults to the signed-in staff member."
    )
    team: str | None = strawberry.field(default=None, description="Defaults to the case's.")
    reason: str | None = strawberry.field(
        default=None, description="Required to take a case from the agent who holds it."
    )


@strawberry.input
class PostCaseMessageInput:
    case_id: strawberry.ID
    body: str | None = None
    attachments: list[str] | None = strawberry.field(
        default=None, description="http(s) links to files stored elsewhere (at most 10)."
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="A retry with the same key posts the message once."
    )


@strawberry.input
class IssueReturnLabelInput:
    case_id: strawberry.ID
    carrier: str
    tracking_number: str = strawberry.field(
        description="The return parcel's: its tracking moves the case on arrival."
    )
    label_url: str | None = None
    reason: str | None = None


@strawberry.input
class CaseActionInput:
    case_id: strawberry.ID
    reason: str | None = None


@strawberry.input
class InspectReturnInput:
    case_id: strawberry.ID
    result: InspectionResult  # type: ignore[valid-type]
    disposition: ReturnDisposition  # type: ignore[valid-type]
    notes: str | None = strawberry.field(default=None, description="Personal data.")
    reason: str | None = None


@strawberry.input(description="The parcel a resolution sends.")
class CaseShipmentInput:
    carrier: str
    tracking_number: str


@strawberry.input
class ResolveCaseInput:
    case_id: strawberry.ID
    outcome: CaseOutcome  # type: ignore[valid-type]
    shipment: CaseShipmentInput | None = strawberry.field(
        default=None, description="Required when the outcome sends goods (EXCHANGED, "
                                  "REPAIRED, REISSUED)."
    )
    note: str | None = None
    reason: str | None = strawberry.field(
        default=None, description="For the audit trail; defaults to naming the case."
    )


@strawberry.input
class WithdrawCaseInput:
    case_id: strawberry.ID
    reason: str | None = strawberry.field(
        default=None, description="Why; required from staff (acting on the member's word)."
    )


@strawberry.input
class ScheduleFollowUpInput:
    case_id: strawberry.ID
    scheduled_for: dt.datetime
    reason: str | None = None


@strawberry.input
class RecordFollowUpInput:
    case_id: strawberry.ID
    outcome: FollowUpOutcome  # type: ignore[valid-type]
    note: str | None = strawberry.field(default=None, description="Personal data.")
    reason: str | None = None


@strawberry.input
class RateCaseInput:
    case_id: strawberry.ID
    attitude: int = strawberry.field(description="1 to 5.")
    ability: int = strawberry.field(description="1 to 5.")
    efficiency: int = strawberry.field(description="1 to 5.")
    category: FeedbackCategory  # type: ignore[valid-type]
    comment: str | None = strawberry.field(default=None, description="Personal data.")


@strawberry.input
class MemberCaseFilterInput:
    order_id: strawberry.ID | None = None
    states: list[CaseState] | None = None  # type: ignore[valid-type]
    types: list[CaseType] | None = None  # type: ignore[valid-type]
    open_only: bool = strawberry.field(default=False,
                                       description="Only cases still being worked on.")


@strawberry.input
class CaseQueueFilterInput:
    states: list[CaseState] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Given states replace the openOnly default."
    )
    types: list[CaseType] | None = None  # type: ignore[valid-type]
    teams: list[str] | None = None
    tiers: list[str] | None = None
    assignee: str | None = None
    unassigned: bool | None = strawberry.field(
        default=None, description="True: nobody holds it; false: somebody does."
    )
    breached: bool | None = strawberry.field(
        default=None, description="True: it missed a deadline; false: none yet."
    )
    open_only: bool = strawberry.field(
        default=True, description="Only cases still being worked on (unless states are given)."
    )
    member_id: strawberry.ID | None = None
    order_id: strawberry.ID | None = None


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class CasePayload:
    case: CaseNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; null when nothing was recorded."
    )
    user_errors: list[UserError]


@strawberry.type
class OpenAfterSalesCasePayload(CasePayload):
    pass


@strawberry.type
class ReviewCasePayload(CasePayload):
    pass


@strawberry.type
class AssignCasePayload(CasePayload):
    pass


@strawberry.type
class PostCaseMessagePayload(CasePayload):
    pass


@strawberry.type
class IssueReturnLabelPayload(CasePayload):
    pass


@strawberry.type
class ReceiveReturnPayload(CasePayload):
    pass


@strawberry.type
class InspectReturnPayload(CasePayload):
    pass


@strawberry.type
class ResolveCasePayload(CasePayload):
    pass


@strawberry.type
class WithdrawCasePayload(CasePayload):
    pass


@strawberry.type
class CloseCasePayload(CasePayload):
    pass


@strawberry.type
class ScheduleFollowUpPayload(CasePayload):
    pass


@strawberry.type
class RecordFollowUpPayload(CasePayload):
    pass


@strawberry.type
class RateCasePayload(CasePayload):
    pass


# -- helpers --------------------------------------------------------------------------------

P = TypeVar("P", bound=CasePayload)


def decode_case_id(global_id: strawberry.ID, field: str = "case_id") -> uuid.UUID:
    return decode_uuid(global_id, NODE, field)


def owned_case(ctx: RequestContext, case_id: strawberry.ID) -> uuid.UUID:
    """The case, if the caller may act on it: its member, or staff."""
    cid = decode_case_id(case_id)
    try:
        case = ctx.runtime.after_sales.get(cid)
    except NotFoundError:
        raise NotFoundError(f"case {case_id} not found", "case_id") from None
    ctx.principal.require_member_access(case.member_id)
    return cid


def _require_staff(ctx: RequestContext) -> None:
    ctx.principal.require_role(*STAFF)


def _readable(ctx: RequestContext) -> None:
    if ctx.principal.role is Role.ANONYMOUS:
        ctx.principal.require_role(Role.MEMBER)


async def load_case(ctx: RequestContext, case_id: str,
                    result: CommandResult) -> CaseNode | None:
    """The case as the read model shows it once it includes this write.

    A retried command records nothing (no position), so the row is awaited by the
    version the command saw instead: the first attempt may still be on its way.
    """
    try:
        await ctx.runtime.wait_for_read_models(result.position)
    except Exception:
        return None
    engine = ctx.runtime.async_engine
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.runtime.settings.read_your_writes_timeout
    while True:
        row = (await get_cases(engine, [case_id])).get(case_id)
        if row is not None and int(row["version"]) >= result.version:
            return CaseNode.from_row(row)
        if loop.time() > deadline:
            return CaseNode.from_row(row) if row else None
        await ctx.runtime.changes.wait(POLL_SECONDS)


async def case_mutation(
    info: strawberry.Info,
    payload: type[P],
    act: Callable[[RequestContext, EventMetadata], CommandResult],
    reason: str | None,
) -> P:
    """The shape every case mutation shares: record, then read the case back."""
    result, errors = await run_command(info, act, reason)
    if result is None:
        return payload(case=None, position=None, user_errors=errors)
    case = await load_case(context(info), str(result.aggregate_id), result)
    return payload(case=case, position=result.position, user_errors=[])


def _filter_values(values: list[Any] | None) -> tuple[str, ...] | None:
    """Enum values to filter by; an empty list is a filter nothing passes."""
    return tuple(str(v.value) for v in values) if values is not None else None


async def cases_connection(
    info: strawberry.Info, where: CaseFilter, sort: readmodels.CaseSort, first: int | None,
    after: str | None,
) -> Connection[CaseNode]:
    size = page_size(info, first)
    try:
        page = await list_cases(context(info).runtime.async_engine, where, sort, size, after)
    except (InvalidCursorError, ValueError, TypeError):
        raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None
    return make_connection(
        [CaseNode.from_row(r) for r in page.rows],
        [case_cursor(r, sort) for r in page.rows],
        has_next=page.has_next, has_previous=after is not None, total=page.total,
    )


async def member_cases(
    info: strawberry.Info, member_id: str, filter: MemberCaseFilterInput | None,
    first: int | None, after: str | None,
) -> Connection[CaseNode]:
    """A member's cases, newest first (for `Member.cases`)."""
    ctx = context(info)
    if not ctx.principal.can_read_member(member_id):
        raise ApiError("you may only read your own cases", ErrorCode.FORBIDDEN.value)
    f = filter or MemberCaseFilterInput()
    try:
        order_id = (str(decode_uuid(f.order_id, "Order", "order_id")) if f.order_id
                    else None)
    except DomainError as error:
        raise ApiError.from_domain(error) from None
    where = CaseFilter(member_id=member_id, order_id=order_id, open_only=f.open_only,
                       states=_filter_values(f.states), case_types=_filter_values(f.types))
    return await cases_connection(info, where, readmodels.CaseSort.NEWEST, first, after)


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class CaseQueries:
    @strawberry.field(name="case", description="An after-sales case: its member, or staff "
                                               "and auditors.")
    async def case(self, info: strawberry.Info, id: strawberry.ID) -> CaseNode | None:
        ctx = context(info)
        try:
            case_id = str(decode_case_id(id, "id"))
            _readable(ctx)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        row = (await get_cases(ctx.runtime.async_engine, [case_id])).get(case_id)
        if row is None or not ctx.principal.can_read_member(row["member_id"]):
            return None
        return CaseNode.from_row(row)

    @strawberry.field(description="The agents' work queue: staff and auditors. By default the "
                                  "open cases, the most urgent first.")
    async def case_queue(
        self,
        info: strawberry.Info,
        filter: CaseQueueFilterInput | None = None,
        sort: CaseSort = readmodels.CaseSort.URGENCY,  # type: ignore[valid-type]
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[CaseNode]:
        ctx = context(info)
        f = filter or CaseQueueFilterInput()
        try:
            ctx.principal.require_role(*READERS)
            where = CaseFilter(
                member_id=decode_member_id(f.member_id, "member_id") if f.member_id else None,
                order_id=str(decode_uuid(f.order_id, "Order", "order_id")) if f.order_id
                else None,
                open_only=f.open_only and f.states is None,
                states=_filter_values(f.states), case_types=_filter_values(f.types),
                teams=tuple(f.teams) if f.teams is not None else None,
                tiers=tuple(f.tiers) if f.tiers is not None else None,
                assignee=f.assignee, unassigned=f.unassigned, breached=f.breached,
            )
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        return await cases_connection(info, where, readmodels.CaseSort(sort.value), first,
                                      after)

    @strawberry.field(description="Response and resolution times, SLA breaches and "
                                  "satisfaction of the cases opened in [from, to): staff and "
                                  "auditors.")
    async def service_kpis(
        self,
        info: strawberry.Info,
        from_: Annotated[dt.datetime, strawberry.argument(name="from")],
        to: dt.datetime,
        group_by: KpiGrouping = readmodels.KpiGrouping.NONE,  # type: ignore[valid-type]
    ) -> list[ServiceKpiGroup]:
        ctx = context(info)
        try:
            ctx.principal.require_role(*READERS)
            if from_.tzinfo is None or to.tzinfo is None:
                raise ValidationError("give from and to with a time zone", "from")
            if to <= from_:
                raise ValidationError("to must be after from", "to")
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        groups = await service_kpis(ctx.runtime.async_engine, from_, to,
                                    readmodels.KpiGrouping(group_by.value))
        return [ServiceKpiGroup.of(g) for g in groups]

    @strawberry.field(description="The reasons a member picks from when opening a case.")
    def case_reasons(self, info: strawberry.Info) -> list[str]:
        return list(context(info).runtime.rules.case_reasons)


@strawberry.type
class CaseMutations:
    @strawberry.mutation(description="Open a case on delivered lines of an order: its member, "
                                      "or staff on the member's behalf with a reason.")
    async def open_after_sales_case(
        self, info: strawberry.Info, input: OpenAfterSalesCaseInput
    ) -> OpenAfterSalesCasePayload:
        lines = [(line.line_id, line.quantity) for line in input.lines]
        evidence = input.evidence or CaseEvidenceInput()

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER, *STAFF)
            if ctx.principal.is_staff:
                meta.require_reason()
            order_id = decode_uuid(input.order_id, "Order", "order_id")
            return ctx.runtime.after_sales.open(
                order_id, input.type.value, input.reason, input.reason_detail, lines,
                evidence.notes, evidence.photo_urls,
                input.preferred_outcome.value if input.preferred_outcome else None,
                input.idempotency_key, meta,
            )

        return await case_mutation(info, OpenAfterSalesCasePayload, act,
                                   input.on_behalf_reason)

    @strawberry.mutation(description="Staff: approve a case, or reject it saying why.")
    async def review_case(
        self, info: strawberry.Info, input: ReviewCaseInput
    ) -> ReviewCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            case_id = owned_case(ctx, input.case_id)
            if input.decision is CaseDecision.APPROVE:
                return ctx.runtime.after_sales.approve(case_id, input.note, meta)
            return ctx.runtime.after_sales.reject(case_id, input.reason, meta)

        return await case_mutation(info, ReviewCasePayload, act, input.reason)

    @strawberry.mutation(description="Staff: give a case to an agent (the first assignment "
                                      "starts its review; taking it from another needs a "
                                      "reason).")
    async def assign_case(
        self, info: strawberry.Info, input: AssignCaseInput
    ) -> AssignCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            case_id = owned_case(ctx, input.case_id)
            agent = input.agent_id if input.agent_id is not None else ctx.principal.subject
            return ctx.runtime.after_sales.assign(case_id, agent, input.team, meta)

        return await case_mutation(info, AssignCasePayload, act, input.reason)

    @strawberry.mutation(description="A message in the case's conversation: its member or "
                                      "staff.")
    async def post_case_message(
        self, info: strawberry.Info, input: PostCaseMessageInput
    ) -> PostCaseMessagePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            case_id = owned_case(ctx, input.case_id)
            return ctx.runtime.after_sales.post_message(
                case_id, input.body, input.attachments, input.idempotency_key, meta)

        return await case_mutation(info, PostCaseMessagePayload, act, None)

    @strawberry.mutation(description="Staff: the label the member sends the goods back with.")
    async def issue_return_label(
        self, info: strawberry.Info, input: IssueReturnLabelInput
    ) -> IssueReturnLabelPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            case_id = owned_case(ctx, input.case_id)
            return ctx.runtime.after_sales.issue_return_label(
                case_id, input.carrier, input.tracking_number, input.label_url, meta)

        return await case_mutation(info, IssueReturnLabelPayload, act, input.reason)

    @strawberry.mutation(description="Staff: the returned goods arrived (the carrier's "
                                      "delivery scan also records it).")
    async def receive_return(
        self, info: strawberry.Info, input: CaseActionInput
    ) -> ReceiveReturnPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.after_sales.receive_return(owned_case(ctx, input.case_id), meta)

        return await case_mutation(info, ReceiveReturnPayload, act, input.reason)

    @strawberry.mutation(description="Staff: what the returned goods showed, and what happens "
                                      "to them.")
    async def inspect_return(
        self, info: strawberry.Info, input: InspectReturnInput
    ) -> InspectReturnPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.after_sales.inspect(
                owned_case(ctx, input.case_id), input.result.value, input.disposition.value,
                input.notes, meta)

        return await case_mutation(info, InspectReturnPayload, act, input.reason)

    @strawberry.mutation(description="Staff: refund the order (and claw back its points) or "
                                      "send goods, and resolve the case; a retry does neither "
                                      "twice.")
    async def resolve_case(
        self, info: strawberry.Info, input: ResolveCaseInput
    ) -> ResolveCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            parcel = input.shipment
            return ctx.runtime.after_sales.resolve(
                owned_case(ctx, input.case_id), input.outcome.value,
                parcel.carrier if parcel else None, parcel.tracking_number if parcel else None,
                input.note, meta)

        return await case_mutation(info, ResolveCasePayload, act, input.reason)

    @strawberry.mutation(description="Withdraw a case before it is resolved: its member, or "
                                      "staff on the member's word with a reason.")
    async def withdraw_case(
        self, info: strawberry.Info, input: WithdrawCaseInput
    ) -> WithdrawCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            case_id = owned_case(ctx, input.case_id)
            return ctx.runtime.after_sales.withdraw(case_id, input.reason, meta)

        # The member's reason is personal data and stays out of the (plain) metadata;
        # staff's reason is their audit reason.
        staff = context(info).principal.is_staff
        return await case_mutation(info, WithdrawCasePayload, act,
                                   input.reason if staff else None)

    @strawberry.mutation(description="Staff: close a resolved or rejected case.")
    async def close_case(self, info: strawberry.Info, input: CaseActionInput) -> CloseCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.after_sales.close(owned_case(ctx, input.case_id), meta)

        return await case_mutation(info, CloseCasePayload, act, input.reason)

    @strawberry.mutation(description="Staff: when to check with the member after resolution.")
    async def schedule_follow_up(
        self, info: strawberry.Info, input: ScheduleFollowUpInput
    ) -> ScheduleFollowUpPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.after_sales.schedule_follow_up(
                owned_case(ctx, input.case_id), input.scheduled_for, meta)

        return await case_mutation(info, ScheduleFollowUpPayload, act, input.reason)

    @strawberry.mutation(description="Staff: how the follow-up went, once.")
    async def record_follow_up(
        self, info: strawberry.Info, input: RecordFollowUpInput
    ) -> RecordFollowUpPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_staff(ctx)
            return ctx.runtime.after_sales.record_follow_up(
                owned_case(ctx, input.case_id), input.outcome.value, input.note, meta)

        return await case_mutation(info, RecordFollowUpPayload, act, input.reason)

    @strawberry.mutation(description="The member rates how their case was handled, once, "
                                      "after resolution.")
    async def rate_case(self, info: strawberry.Info, input: RateCaseInput) -> RateCasePayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER)
            return ctx.runtime.after_sales.rate(
                owned_case(ctx, input.case_id), input.attitude, input.ability,
                input.efficiency, input.category.value, input.comment, meta)

        return await case_mutation(info, RateCasePayload, act, None)


# -- subscriptions --------------------------------------------------------------------------


@strawberry.type
class CaseSubscriptions:
    @strawberry.subscription(
        description="The case as it is now, then again whenever it changes: its member, "
                    "staff and auditors."
    )
    async def case_updated(
        self, info: strawberry.Info, case_id: strawberry.ID
    ) -> AsyncGenerator[CaseNode, None]:
        principal = subscription_principal(info)
        cid = await followed_id(info, principal, lambda: decode_case_id(case_id),
                                context(info).runtime.after_sales.get, "cases", "case_id")
        runtime = context(info).runtime
        version: int | None = None
        while True:
            row = (await get_cases(runtime.async_engine, [cid])).get(cid)
            if row is not None and row["version"] != version:
                version = row["version"]
                yield CaseNode.from_row(row, viewer=principal)
            await runtime.changes.wait(POLL_SECONDS)


__all__ = [
    "CaseMutations",
    "CaseNode",
    "CaseQueries",
    "CaseSubscriptions",
    "MemberCaseFilterInput",
    "member_cases",
]
