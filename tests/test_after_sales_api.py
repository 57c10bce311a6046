"""After-sales cases through the GraphQL API: returns, exchanges, repairs, refunds only and
reissues, from the member's request to the close, the agents' queue and the service KPIs.

Driven as the shop (member tokens) and the back office (staff tokens) would drive it, over
HTTP; business time moves with the test clock and the scheduler's tick records missed
deadlines. "Nothing recorded" is checked against the event store's head position.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from strawberry.relay import GlobalID

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, token_for
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    AUDITOR,
    Shopper,
    head,
    loyalty,
    mutate,
    ok,
    read_order,
    shopper,
    tick,
)
from tests.test_shipments_api import RATE as RATE_DELIVERY
from tests.test_shipments_api import deliver_parcel, paid, ship
from tests.test_shipments_api import error_of as shipment_error_of

OTHER_AGENT = token_for(Role.AGENT, "agent-9")
PII_AUDITOR = token_for(Role.AUDITOR, "auditor-4", scopes=("pii",))

PARCEL = "id status direction caseId items { lineId quantity }"
CASE_FIELDS = f"""
  id caseId caseNumber orderId order {{ id state }} memberId member {{ id }}
  type reason reasonDetail evidence {{ notes photoUrls }} lines {{ lineId quantity }}
  preferredOutcome state tier team assignee openedByRole openedAt
  firstReviewDue firstReviewedAt firstResponseAt resolutionDue urgencySeconds
  breaches {{ kind due }} rejectionReason
  returnParcel {{ carrier trackingNumber labelUrl receivedAt shipment {{ {PARCEL} }} }}
  inspection {{ result disposition notes }}
  resolution {{ outcome refund {{ amount currency }} resolvedAt shipment {{ {PARCEL} }} }}
  closedAt messageCount lastMessageAt
  messages {{ id fromStaff authorRole authorId body attachments at }}
  followUp {{ scheduledFor outcome note recordedAt }}
  rating {{ attitude ability efficiency category comment at }}
  timeline {{ version kind state actorRole actorId detail position }}
  updatedAt version
"""
USER_ERRORS = "userErrors { field message code }"


def _mutation(name: str, input_type: str) -> str:
    return (
        f"mutation M($input: {input_type}!) {{ {name}(input: $input) "
        f"{{ position case {{ {CASE_FIELDS} }} {USER_ERRORS} }} }}"
    )


OPEN = _mutation("openAfterSalesCase", "OpenAfterSalesCaseInput")
REVIEW = _mutation("reviewCase", "ReviewCaseInput")
ASSIGN = _mutation("assignCase", "AssignCaseInput")
MESSAGE = _mutation("postCaseMessage", "PostCaseMessageInput")
LABEL = _mutation("issueReturnLabel", "IssueReturnLabelInput")
RECEIVE = _mutation("receiveReturn", "CaseActionInput")
INSPECT = _mutation("inspectReturn", "InspectReturnInput")
RESOLVE = _mutation("resolveCase", "ResolveCaseInput")
WITHDRAW = _mutation("withdrawCase", "WithdrawCaseInput")
CLOSE = _mutation("closeCase", "CaseActionInput")
SCHEDULE = _mutation("scheduleFollowUp", "ScheduleFollowUpInput")
FOLLOW_UP = _mutation("recordFollowUp", "RecordFollowUpInput")
RATE = _mutation("rateCase", "RateCaseInput")
TRACK = """
mutation T($input: RecordTrackingEventInput!) { recordTrackingEvent(input: $input) {
  shipment { id status } userErrors { code message } } }
"""
CASE = f"query C($id: ID!) {{ case(id: $id) {{ {CASE_FIELDS} }} }}"
NODE = "query N($id: ID!) { node(id: $id) { id ... on AfterSalesCase { state } } }"
ORDER = f"""
query O($id: ID!) {{ order(id: $id) {{
  state paid {{ amount }} refunded {{ amount }}
  refunds {{ refundId amount {{ amount }} lines {{ lineId quantity }} }}
  lines {{ lineId refundedQuantity }}
  shipments {{ {PARCEL} }}
}} }}
"""
QUEUE = """
query Q($filter: CaseQueueFilterInput, $sort: CaseSort, $first: Int, $after: String) {
  caseQueue(filter: $filter, sort: $sort, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { id state type team tier assignee urgencySeconds breaches { kind } } }
  }
}
"""
MY_CASES = """
query M($filter: MemberCaseFilterInput, $first: Int, $after: String) {
  me { cases(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { id state type } }
  } }
}
"""
MEMBER_CASES = """
query M($id: ID!) { member(id: $id) { cases { totalCount edges { node { id state } } } } }
"""
KPIS = """
query K($from: DateTime!, $to: DateTime!, $groupBy: KpiGrouping) {
  serviceKpis(from: $from, to: $to, groupBy: $groupBy) {
    key cases resolved
    firstResponseSeconds { count average p50 p90 p99 }
    resolutionSeconds { count average p50 p90 p99 }
    slaBreachRate firstReviewBreachRate resolutionBreachRate
    ratings attitude ability efficiency
    byCategory { category ratings average }
  }
}
"""


# -- helpers ----------------------------------------------------------------------------------


def error_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The single user error of a rejected mutation, which returned no result."""
    assert len(payload["userErrors"]) == 1, payload["userErrors"]
    assert payload["case"] is None and payload["position"] is None
    error: dict[str, Any] = payload["userErrors"][0]
    return error


async def delivered(client: httpx.AsyncClient, who: Shopper,
                    clock: AdjustableClock) -> dict[str, Any]:
    """A delivered order: two tents (L1, 6,500 each) and a mug (L2, 3,000)."""
    order = await paid(client, who)
    parcel = await ship(client, order)
    await deliver_parcel(client, parcel, clock.now() - timedelta(minutes=5))
    found = await read_order(client, order["id"])
    assert found["state"] == "DELIVERED"
    return found


async def open_case(client: httpx.AsyncClient, token: str, order: dict[str, Any], *,
                    type: str = "RETURN", reason: str = "defective",
                    lines: list[dict[str, Any]] | None = None, key: str | None = None,
                    **extra: Any) -> dict[str, Any]:
    return await mutate(client, OPEN, {
        "orderId": order["id"], "type": type, "reason": reason,
        "lines": lines if lines is not None else [{"lineId": "L1", "quantity": 1}],
        "idempotencyKey": key or uuid.uuid4().hex, **extra,
    }, token)


async def opened(client: httpx.AsyncClient, who: Shopper, order: dict[str, Any],
                 **extra: Any) -> dict[str, Any]:
    case: dict[str, Any] = ok(await open_case(client, who.token, order, **extra))["case"]
    return case


async def act(client: httpx.AsyncClient, document: str, case: dict[str, Any],
              token: str = AGENT, **fields: Any) -> dict[str, Any]:
    """A mutation on `case` that must succeed; the case as it returns."""
    result: dict[str, Any] = ok(await mutate(client, document, {"caseId": case["id"], **fields},
                                             token))["case"]
    return result


async def read_case(client: httpx.AsyncClient, case_id: str, token: str = AGENT,
                    headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    found: dict[str, Any] | None = data(await gql(
        client, CASE, {"id": case_id}, token=token, headers=headers))["case"]
    return found


async def order_view(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    found: dict[str, Any] = data(await gql(client, ORDER, {"id": order_id}, token=AGENT))[
        "order"]
    return found


async def queue(client: httpx.AsyncClient, filter: dict[str, Any] | None = None,
                token: str = AGENT, headers: dict[str, str] | None = None,
                **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = data(await gql(client, QUEUE, {"filter": filter, **args},
                                          token=token, headers=headers))["caseQueue"]
    return page


def seen(position: int | None) -> dict[str, str]:
    """Makes a reader who did not write it wait until the read models include `position`."""
    return {"X-Patron-Min-Position": str(position or 0)}


def ids(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in page["edges"]]


def at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


async def approved_return(client: httpx.AsyncClient, who: Shopper, clock: AdjustableClock,
                          type: str = "RETURN") -> tuple[dict[str, Any], dict[str, Any]]:
    """A delivered order and an approved case of `type` on one tent."""
    order = await delivered(client, who, clock)
    case = await opened(client, who, order, type=type)
    return order, await act(client, REVIEW, case, decision="APPROVE")


async def inspected(client: httpx.AsyncClient, case: dict[str, Any]) -> dict[str, Any]:
    """Label, arrival (reported by staff) and a confirming inspection."""
    await act(client, LABEL, case, carrier="SF", trackingNumber=f"RT{uuid.uuid4().hex[:8]}")
    await act(client, RECEIVE, case)
    return await act(client, INSPECT, case, result="CONFIRMED", disposition="RESTOCK")


# -- the happy paths ----------------------------------------------------------------------------


async def test_a_return_travels_back_is_refunded_and_its_points_are_clawed_back(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    points_before = await loyalty(client, ann)
    assert points_before["pending"] > 0

    created = ok(await open_case(
        client, ann.token, order, reason="defective", reasonDetail="The pole snapped",
        evidence={"notes": "See the photo", "photoUrls": ["https://img.example/pole.jpg"]},
        preferredOutcome="REFUNDED", key="ann-return-1",
    ))
    case = created["case"]
    assert created["position"] > 0
    opened_at = clock.now()
    assert case["caseNumber"].startswith(f"AS-{opened_at:%y%m%d}-")
    assert GlobalID.from_id(case["id"]).type_name == "AfterSalesCase"
    assert case["caseId"] == GlobalID.from_id(case["id"]).node_id
    assert (case["type"], case["reason"], case["state"]) == ("RETURN", "defective", "REQUESTED")
    assert case["reasonDetail"] == "The pole snapped"
    assert case["evidence"] == {"notes": "See the photo",
                                "photoUrls": ["https://img.example/pole.jpg"]}
    assert case["lines"] == [{"lineId": "L1", "quantity": 1}]
    assert case["preferredOutcome"] == "REFUNDED"
    assert (case["tier"], case["team"], case["assignee"]) == ("REGULAR", "general", None)
    assert case["openedByRole"] == "member"
    assert case["order"] == {"id": order["id"], "state": "DELIVERED"}
    assert case["memberId"] == ann.id and case["member"] is None  # staff only
    assert at(case["firstReviewDue"]) == opened_at + timedelta(hours=24)
    assert at(case["resolutionDue"]) == opened_at + timedelta(days=7)
    assert case["urgencySeconds"] == 24 * 3600
    assert case["breaches"] == [] and case["messages"] == [] and case["messageCount"] == 0
    assert [(t["kind"], t["state"], t["actorRole"]) for t in case["timeline"]] == [
        ("opened", "REQUESTED", "member")]
    assert case["timeline"][0]["actorId"] is None  # who did it: staff and auditors only

    # Staff see the member behind it; a retry with the same key finds the same case.
    staff_view = await read_case(client, case["id"], headers=seen(created["position"]))
    assert staff_view is not None and staff_view["member"] == {"id": ann.id}
    retried = ok(await open_case(
        client, ann.token, order, reason="defective", reasonDetail="The pole snapped",
        evidence={"notes": "See the photo", "photoUrls": ["https://img.example/pole.jpg"]},
        preferredOutcome="REFUNDED", key="ann-return-1",
    ))
    assert retried["position"] is None and retried["case"]["id"] == case["id"]

    # An agent takes it (its review starts) and answers; the member replies.
    clock.advance(timedelta(hours=2))
    taken = await act(client, ASSIGN, case)
    assert (taken["state"], taken["assignee"]) == ("UNDER_REVIEW", "agent-7")
    assert at(taken["firstReviewedAt"]) == clock.now()
    # Reviewed: the case now works towards its resolution deadline.
    assert taken["urgencySeconds"] == int((opened_at + timedelta(days=7) - clock.now())
                                          .total_seconds())
    answered = await act(client, MESSAGE, case, body="Sorry! Please send it back.",
                         attachments=["https://help.example/returns.pdf"],
                         idempotencyKey="agent-msg-1")
    assert at(answered["firstResponseAt"]) == clock.now()
    again = ok(await mutate(client, MESSAGE, {"caseId": case["id"], "body": "Sorry! Please "
                                              "send it back.", "idempotencyKey": "agent-msg-1"},
                            AGENT))
    assert again["position"] is None and again["case"]["messageCount"] == 1
    replied = await act(client, MESSAGE, case, ann.token, body="Thanks, will do")
    assert [(m["fromStaff"], m["authorRole"], m["body"]) for m in replied["messages"]] == [
        (True, "agent", "Sorry! Please send it back."), (False, "member", "Thanks, will do")]
    assert replied["messages"][0]["id"] == "agent-msg-1"
    assert replied["messages"][0]["attachments"] == ["https://help.example/returns.pdf"]
    assert replied["messages"][0]["authorId"] is None  # the member does not see staff ids
    assert replied["messageCount"] == 2

    approved = await act(client, REVIEW, case, decision="APPROVE", note="Clear defect")
    assert approved["state"] == "APPROVED"

    # The return label: an inbound parcel whose delivery moves the case on.
    labelled = await act(client, LABEL, case, carrier="SF", trackingNumber="RET-ANN-1",
                         labelUrl="https://labels.example/RET-ANN-1.pdf")
    assert labelled["state"] == "AWAITING_RETURN"
    parcel = labelled["returnParcel"]
    assert (parcel["carrier"], parcel["trackingNumber"], parcel["labelUrl"]) == (
        "sf", "RET-ANN-1", "https://labels.example/RET-ANN-1.pdf")
    assert parcel["receivedAt"] is None
    assert parcel["shipment"]["items"] == [{"lineId": "L1", "quantity": 1}]
    assert (parcel["shipment"]["direction"], parcel["shipment"]["caseId"]) == (
        "INBOUND", case["id"])
    clock.advance(timedelta(days=1))
    ok(await mutate(client, TRACK, {
        "shipmentId": parcel["shipment"]["id"], "updateId": "ret-1", "status": "DELIVERED",
        "occurredAt": (clock.now() - timedelta(minutes=1)).isoformat()}, AGENT))
    arrived = await read_case(client, case["id"])
    assert arrived is not None and arrived["state"] == "RECEIVED"
    assert at(arrived["returnParcel"]["receivedAt"]) == clock.now()
    assert arrived["returnParcel"]["shipment"]["status"] == "DELIVERED"
    # A return parcel is never waiting for the member's rating, and cannot be rated.
    unrated = data(await gql(client, "{ shipments(filter: {unrated: true}) "
                                     "{ edges { node { id direction } } } }", token=AGENT))
    assert parcel["shipment"]["id"] not in [e["node"]["id"] for e in
                                            unrated["shipments"]["edges"]]
    rating = {"shipmentId": parcel["shipment"]["id"], "speed": 5, "courierAttitude": 5,
              "packagingCondition": 5}
    refused = shipment_error_of(await mutate(client, RATE_DELIVERY, rating, ann.token))
    assert refused["code"] == "INVALID_TRANSITION"

    checked = await act(client, INSPECT, case, result="CONFIRMED", disposition="REFURBISH",
                        notes="Pole cracked at the joint")
    assert checked["state"] == "INSPECTED"
    assert checked["inspection"] == {"result": "CONFIRMED", "disposition": "REFURBISH",
                                     "notes": "Pole cracked at the joint"}

    # The refund: the order's own refund, and the points it earned come back.
    resolved = ok(await mutate(client, RESOLVE, {"caseId": case["id"], "outcome": "REFUNDED",
                                                 "note": "Refunded"}, AGENT))
    resolution = resolved["case"]["resolution"]
    assert resolved["case"]["state"] == "RESOLVED"
    assert resolution["outcome"] == "REFUNDED" and resolution["shipment"] is None
    assert resolution["refund"] == {"amount": 6_500, "currency": "CNY"}
    assert at(resolution["resolvedAt"]) == clock.now()
    assert resolved["case"]["urgencySeconds"] is None
    after = await order_view(client, order["id"])
    assert after["refunded"]["amount"] == 6_500
    assert after["refunds"] == [{"refundId": f"case:{case['caseId']}", "amount": {"amount": 6_500},
                                 "lines": [{"lineId": "L1", "quantity": 1}]}]
    assert {line["lineId"]: line["refundedQuantity"] for line in after["lines"]} == {
        "L1": 1, "L2": 0}
    points_after = await loyalty(client, ann, headers={
        "X-Patron-Min-Position": str(resolved["position"])})
    clawed = points_before["pending"] * 6_500 // after["paid"]["amount"]
    assert clawed > 0
    assert points_after["pending"] == points_before["pending"] - clawed

    # After resolution: the member rates it; staff follow up, then close it.
    rated = await act(client, RATE, case, ann.token, attitude=5, ability=4, efficiency=3,
                      category="AFTER_SALES", comment="Quick and kind")
    assert rated["rating"] == {"attitude": 5, "ability": 4, "efficiency": 3,
                               "category": "AFTER_SALES", "comment": "Quick and kind",
                               "at": rated["rating"]["at"]}
    when = clock.now() + timedelta(days=3)
    scheduled = await act(client, SCHEDULE, case, scheduledFor=when.isoformat())
    assert at(scheduled["followUp"]["scheduledFor"]) == when
    assert scheduled["followUp"]["outcome"] is None
    followed = await act(client, FOLLOW_UP, case, outcome="SATISFIED", note="All good")
    assert followed["followUp"]["outcome"] == "SATISFIED"
    assert followed["followUp"]["note"] == "All good"
    closed = await act(client, CLOSE, case)
    assert closed["state"] == "CLOSED" and at(closed["closedAt"]) == clock.now()
    assert closed["urgencySeconds"] is None and closed["rejectionReason"] is None
    assert [t["kind"] for t in closed["timeline"]] == [
        "opened", "assigned", "message_posted", "message_posted", "approved",
        "return_label_issued", "return_received", "inspected", "resolved", "rated",
        "follow_up_scheduled", "follow_up_recorded", "closed"]
    assert [t["version"] for t in closed["timeline"]] == list(range(1, 14))
    assert closed["timeline"][1]["actorId"] == "agent-7"  # staff see who did it
    assert closed["version"] == 13

    # The member reads it all, their own words included.
    mine = await read_case(client, case["id"], ann.token, headers=seen(head(live_runtime)))
    assert mine is not None and mine["state"] == "CLOSED"
    assert mine["reasonDetail"] == "The pole snapped"
    assert mine["rating"]["comment"] == "Quick and kind"


async def test_a_retried_resolution_refunds_once(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order, case = await approved_return(client, ann, clock, type="REFUND_ONLY")
    first = ok(await mutate(client, RESOLVE, {"caseId": case["id"], "outcome": "REFUNDED"},
                            AGENT))
    assert first["position"] is not None
    refunded = (await order_view(client, order["id"]))["refunded"]["amount"]
    assert refunded == 6_500

    before = head(live_runtime)
    retried = ok(await mutate(client, RESOLVE, {"caseId": case["id"], "outcome": "REFUNDED"},
                              ADMIN))
    assert retried["position"] is None
    assert retried["case"]["resolution"]["refund"]["amount"] == 6_500
    assert head(live_runtime) == before
    after = await order_view(client, order["id"])
    assert after["refunded"]["amount"] == refunded and len(after["refunds"]) == 1

    # Another outcome for a resolved case is a wrong state, not a second settlement.
    other = error_of(await mutate(client, RESOLVE, {
        "caseId": case["id"], "outcome": "REISSUED",
        "shipment": {"carrier": "SF", "trackingNumber": "RE-X"}}, AGENT))
    assert other["code"] in ("INVALID_TRANSITION", "VALIDATION")
    assert head(live_runtime) == before


async def test_an_exchange_sends_a_replacement_parcel_that_the_order_shows(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order, case = await approved_return(client, ann, clock, type="EXCHANGE")
    ready = await inspected(client, case)
    assert ready["state"] == "INSPECTED"

    before = head(live_runtime)
    no_parcel = error_of(await mutate(client, RESOLVE, {"caseId": case["id"],
                                                        "outcome": "EXCHANGED"}, AGENT))
    assert (no_parcel["code"], no_parcel["field"]) == ("VALIDATION", "shipment")
    not_allowed = error_of(await mutate(client, RESOLVE, {
        "caseId": case["id"], "outcome": "REISSUED",
        "shipment": {"carrier": "SF", "trackingNumber": "EX-ANN-1"}}, AGENT))
    assert (not_allowed["code"], not_allowed["field"]) == ("VALIDATION", "outcome")
    assert head(live_runtime) == before

    resolved = await act(client, RESOLVE, case, outcome="EXCHANGED",
                         shipment={"carrier": "SF", "trackingNumber": "EX-ANN-1"})
    replacement = resolved["resolution"]["shipment"]
    assert resolved["state"] == "RESOLVED" and resolved["resolution"]["refund"] is None
    assert replacement["items"] == [{"lineId": "L1", "quantity": 1}]
    assert replacement["status"] == "LABEL_CREATED"
    assert (replacement["direction"], replacement["caseId"]) == ("OUTBOUND", case["id"])
    shown = await order_view(client, order["id"])
    assert replacement["id"] in [s["id"] for s in shown["shipments"]]
    assert shown["refunded"]["amount"] == 0 and shown["state"] == "DELIVERED"


async def test_a_repair_sends_the_goods_back_repaired(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order, case = await approved_return(client, ann, clock, type="REPAIR")
    await inspected(client, case)
    resolved = await act(client, RESOLVE, case, outcome="REPAIRED",
                         shipment={"carrier": "ZTO", "trackingNumber": "RP-ANN-1"},
                         note="New zip sewn in")
    assert resolved["resolution"]["outcome"] == "REPAIRED"
    back = resolved["resolution"]["shipment"]
    assert back["items"] == [{"lineId": "L1", "quantity": 1}]
    assert back["id"] in [s["id"] for s in (await order_view(client, order["id"]))["shipments"]]
    assert (await order_view(client, order["id"]))["refunded"]["amount"] == 0


async def test_a_reissue_and_a_refund_only_need_no_return_parcel(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    reissue = await opened(client, ann, order, type="REISSUE", reason="missing_item",
                           lines=[{"lineId": "L2", "quantity": 1}])
    refund_only = await opened(client, ann, order, type="REFUND_ONLY", reason="damaged_in_transit")
    for case in (reissue, refund_only):
        await act(client, REVIEW, case, decision="APPROVE")

    before = head(live_runtime)
    no_label = error_of(await mutate(client, LABEL, {
        "caseId": reissue["id"], "carrier": "SF", "trackingNumber": "RT-NO"}, AGENT))
    assert no_label["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before

    sent = await act(client, RESOLVE, reissue, outcome="REISSUED",
                     shipment={"carrier": "SF", "trackingNumber": "RI-ANN-1"})
    assert sent["state"] == "RESOLVED"
    parcel = sent["resolution"]["shipment"]
    assert parcel["items"] == [{"lineId": "L2", "quantity": 1}]
    refunded = await act(client, RESOLVE, refund_only, outcome="REFUNDED")
    assert refunded["resolution"]["refund"]["amount"] == 6_500
    shown = await order_view(client, order["id"])
    assert parcel["id"] in [s["id"] for s in shown["shipments"]]
    assert shown["refunded"]["amount"] == 6_500


# -- wrong states -------------------------------------------------------------------------------


async def test_each_command_in_a_wrong_state_is_an_invalid_transition_that_records_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    fresh = await opened(client, ann, order)  # REQUESTED
    done = await opened(client, ann, order, type="REFUND_ONLY",
                        lines=[{"lineId": "L2", "quantity": 1}])
    await act(client, REVIEW, done, decision="APPROVE")
    await act(client, RESOLVE, done, outcome="REFUNDED")
    await act(client, CLOSE, done)

    attempts: list[tuple[str, dict[str, Any], str, str, str]] = [
        # (document, input, token, the case it is tried on, its state)
        (LABEL, {"carrier": "SF", "trackingNumber": "RT-1"}, AGENT, "fresh", "requested"),
        (RECEIVE, {}, AGENT, "fresh", "requested"),
        (INSPECT, {"result": "CONFIRMED", "disposition": "RESTOCK"}, AGENT, "fresh",
         "requested"),
        (RESOLVE, {"outcome": "REFUNDED"}, AGENT, "fresh", "requested"),
        (CLOSE, {}, AGENT, "fresh", "requested"),
        (SCHEDULE, {"scheduledFor": (clock.now() + timedelta(days=1)).isoformat()}, AGENT,
         "fresh", "requested"),
        (FOLLOW_UP, {"outcome": "SATISFIED"}, AGENT, "fresh", "requested"),
        (RATE, {"attitude": 5, "ability": 5, "efficiency": 5, "category": "PRODUCT"},
         ann.token, "fresh", "requested"),
        (REVIEW, {"decision": "APPROVE"}, AGENT, "done", "closed"),
        (REVIEW, {"decision": "REJECT", "reason": "Too late"}, AGENT, "done", "closed"),
        (ASSIGN, {"agentId": "agent-9"}, AGENT, "done", "closed"),
        (MESSAGE, {"body": "Hello?"}, ann.token, "done", "closed"),
        (WITHDRAW, {"reason": "Never mind"}, ann.token, "done", "closed"),
    ]
    cases = {"fresh": fresh, "done": done}
    for document, fields, token, which, state in attempts:
        case = cases[which]
        before = head(live_runtime)
        error = error_of(await mutate(client, document, {"caseId": case["id"], **fields},
                                      token))
        assert error["code"] == "INVALID_TRANSITION", (document, error)
        assert state in error["message"], (document, error)
        assert head(live_runtime) == before, document
        now = await read_case(client, case["id"])
        assert now is not None and now["state"] == state.upper(), document


async def test_a_rejected_case_says_why_and_releases_its_lines(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    case = await opened(client, ann, order, lines=[{"lineId": "L1", "quantity": 2}])
    before = head(live_runtime)
    silent = error_of(await mutate(client, REVIEW, {"caseId": case["id"],
                                                    "decision": "REJECT"}, AGENT))
    assert (silent["code"], silent["field"]) == ("VALIDATION", "reason")
    assert head(live_runtime) == before
    rejected = await act(client, REVIEW, case, decision="REJECT",
                         reason="Used outside its intended conditions")
    assert rejected["state"] == "REJECTED"
    assert rejected["rejectionReason"] == "Used outside its intended conditions"
    assert rejected["urgencySeconds"] is None
    closed = await act(client, CLOSE, case)
    assert closed["rejectionReason"] == "Used outside its intended conditions"
    # Its claim on the tents ended with it.
    again = await opened(client, ann, order, lines=[{"lineId": "L1", "quantity": 2}])
    assert again["state"] == "REQUESTED"


# -- claims, idempotency, access ------------------------------------------------------------------


async def test_a_line_is_claimed_by_one_open_case_at_a_time(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    first = await opened(client, ann, order, lines=[{"lineId": "L1", "quantity": 1}])
    second = await opened(client, ann, order, type="EXCHANGE", reason="size_or_fit",
                          lines=[{"lineId": "L1", "quantity": 1}])

    before = head(live_runtime)
    over = error_of(await open_case(client, ann.token, order,
                                    lines=[{"lineId": "L1", "quantity": 1}]))
    assert (over["code"], over["field"]) == ("VALIDATION", "lines")
    assert "L1" in over["message"]
    too_many = error_of(await open_case(client, ann.token, order,
                                        lines=[{"lineId": "L2", "quantity": 2}]))
    assert (too_many["code"], too_many["field"]) == ("VALIDATION", "lines")
    unknown = error_of(await open_case(client, ann.token, order,
                                       lines=[{"lineId": "L9", "quantity": 1}]))
    assert unknown["code"] == "NOT_FOUND"
    none = error_of(await open_case(client, ann.token, order, lines=[]))
    assert (none["code"], none["field"]) == ("VALIDATION", "lines")
    odd_reason = error_of(await open_case(client, ann.token, order, reason="bored",
                                          lines=[{"lineId": "L2", "quantity": 1}]))
    assert (odd_reason["code"], odd_reason["field"]) == ("VALIDATION", "reason")
    wrong_outcome = error_of(await open_case(client, ann.token, order, type="REISSUE",
                                             preferredOutcome="REPAIRED",
                                             lines=[{"lineId": "L2", "quantity": 1}]))
    assert (wrong_outcome["code"], wrong_outcome["field"]) == ("VALIDATION", "preferredOutcome")
    ok(await open_case(client, ann.token, order, key="same-key",
                       lines=[{"lineId": "L2", "quantity": 1}]))
    before = head(live_runtime)
    conflict = error_of(await open_case(client, ann.token, order, key="same-key",
                                        type="REFUND_ONLY",
                                        lines=[{"lineId": "L2", "quantity": 1}]))
    assert (conflict["code"], conflict["field"]) == ("IDEMPOTENCY_CONFLICT", "idempotencyKey")
    assert head(live_runtime) == before

    # Withdrawing the first releases its tent for a new case.
    withdrawn = await act(client, WITHDRAW, first, ann.token, reason="Found the spare pole")
    assert withdrawn["state"] == "WITHDRAWN" and withdrawn["urgencySeconds"] is None
    third = await opened(client, ann, order, lines=[{"lineId": "L1", "quantity": 1}])
    assert third["state"] == "REQUESTED" and second["state"] == "REQUESTED"

    # A case needs delivered goods.
    undelivered = await paid(client, ann)
    not_yet = error_of(await open_case(client, ann.token, undelivered))
    assert not_yet["code"] == "VALIDATION" and not_yet["field"] == "lines"


async def test_a_member_can_neither_see_nor_act_on_another_members_case(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await delivered(client, ann, clock)
    case = await opened(client, ann, order, reasonDetail="Torn seam")

    caught_up = seen(head(live_runtime))
    assert await read_case(client, case["id"], bob.token, headers=caught_up) is None
    assert data(await gql(client, NODE, {"id": case["id"]}, token=bob.token))["node"] is None
    mine = data(await gql(client, NODE, {"id": case["id"]}, token=ann.token))["node"]
    assert mine == {"id": case["id"], "state": "REQUESTED"}
    anonymous = await gql(client, CASE, {"id": case["id"]})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    malformed = await gql(client, CASE, {"id": order["id"]}, token=ann.token)
    assert malformed["errors"][0]["extensions"]["code"] == "VALIDATION"
    bob_cases = data(await gql(client, MY_CASES, token=bob.token))["me"]["cases"]
    assert bob_cases["totalCount"] == 0

    before = head(live_runtime)
    for document, fields in [
        (MESSAGE, {"body": "Let me in"}),
        (WITHDRAW, {"reason": "Mischief"}),
        (RATE, {"attitude": 1, "ability": 1, "efficiency": 1, "category": "SYSTEM"}),
    ]:
        error = error_of(await mutate(client, document, {"caseId": case["id"], **fields},
                                      bob.token))
        assert error["code"] == "FORBIDDEN", (document, error)
    stolen = error_of(await open_case(client, bob.token, order))
    assert stolen["code"] == "FORBIDDEN"
    # The member cannot do staff work on their own case either, nor can auditors.
    for token in (ann.token, AUDITOR):
        for document, fields in [
            (REVIEW, {"decision": "APPROVE"}), (ASSIGN, {"agentId": "agent-7"}),
            (LABEL, {"carrier": "SF", "trackingNumber": "RT-9"}), (RECEIVE, {}),
            (RESOLVE, {"outcome": "REFUNDED"}), (CLOSE, {}),
        ]:
            error = error_of(await mutate(client, document, {"caseId": case["id"], **fields},
                                          token))
            assert error["code"] == "FORBIDDEN", (document, error)
    unknown = error_of(await mutate(client, MESSAGE, {
        "caseId": str(GlobalID("AfterSalesCase", str(uuid.uuid4()))), "body": "?"}, AGENT))
    assert (unknown["code"], unknown["field"]) == ("NOT_FOUND", "caseId")
    assert head(live_runtime) == before

    # Auditors read cases; personal fields only with the pii scope.
    masked = await read_case(client, case["id"], AUDITOR, headers=caught_up)
    assert masked is not None and masked["reasonDetail"] is None
    assert masked["member"] == {"id": ann.id}
    unmasked = await read_case(client, case["id"], PII_AUDITOR, headers=caught_up)
    assert unmasked is not None and unmasked["reasonDetail"] == "Torn seam"


async def test_the_members_erasure_removes_what_they_wrote_from_their_cases(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)
    case = await opened(client, ann, order, reasonDetail="Torn seam",
                        evidence={"notes": "Photo attached",
                                  "photoUrls": ["https://img.example/seam.jpg"]})
    await act(client, MESSAGE, case, ann.token, body="My phone is 138 0000 0000")
    erased = ok(await mutate(client, """
      mutation E($input: EraseMemberInput!) { eraseMember(input: $input) {
        position member { erased } userErrors { field message code } } }
    """, {"memberId": ann.id, "reason": "GDPR request"}, ADMIN))
    assert erased["member"]["erased"] is True
    after = await read_case(client, case["id"], ADMIN)
    assert after is not None
    assert after["reasonDetail"] is None and after["evidence"] is None
    assert [(m["body"], m["attachments"]) for m in after["messages"]] == [(None, [])]
    assert (after["state"], after["reason"], after["messageCount"]) == (
        "REQUESTED", "defective", 1)


async def test_staff_open_on_a_members_behalf_and_reassign_only_with_a_reason(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await delivered(client, ann, clock)

    before = head(live_runtime)
    silent = error_of(await open_case(client, AGENT, order))
    assert (silent["code"], silent["field"]) == ("REASON_REQUIRED", "onBehalfReason")
    audited = error_of(await open_case(client, AUDITOR, order, onBehalfReason="Phone call"))
    assert audited["code"] == "FORBIDDEN"
    assert head(live_runtime) == before
    case = ok(await open_case(client, AGENT, order,
                              onBehalfReason="Member phoned the hotline"))["case"]
    assert case["openedByRole"] == "agent" and case["memberId"] == ann.id
    assert await read_case(client, case["id"], ann.token,
                           headers=seen(head(live_runtime))) is not None

    taken = await act(client, ASSIGN, case, agentId="agent-7", team="returns-desk")
    assert (taken["assignee"], taken["team"]) == ("agent-7", "returns-desk")
    before = head(live_runtime)
    same = ok(await mutate(client, ASSIGN, {"caseId": case["id"], "agentId": "agent-7",
                                            "team": "returns-desk"}, AGENT))
    assert same["position"] is None and same["case"]["assignee"] == "agent-7"
    grab = error_of(await mutate(client, ASSIGN, {"caseId": case["id"]}, OTHER_AGENT))
    assert (grab["code"], grab["field"]) == ("REASON_REQUIRED", "reason")
    assert head(live_runtime) == before
    moved = await act(client, ASSIGN, case, OTHER_AGENT, reason="agent-7 is on leave")
    assert (moved["assignee"], moved["team"]) == ("agent-9", "returns-desk")
    assert moved["state"] == "UNDER_REVIEW"

    # Staff withdraw on the member's word only with a reason.
    before = head(live_runtime)
    no_reason = error_of(await mutate(client, WITHDRAW, {"caseId": case["id"]}, AGENT))
    assert no_reason["code"] == "REASON_REQUIRED"
    assert head(live_runtime) == before
    withdrawn = await act(client, WITHDRAW, case, reason="Member asked by phone")
    assert withdrawn["state"] == "WITHDRAWN"


# -- lists ---------------------------------------------------------------------------------------


async def test_the_case_queue_filters_sorts_and_pages(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    ann_order = await delivered(client, ann, clock)
    bob_order = await delivered(client, bob, clock)
    oldest = await opened(client, ann, ann_order, type="REFUND_ONLY",
                          lines=[{"lineId": "L2", "quantity": 1}])  # due in 24h
    clock.advance(timedelta(hours=1))
    middle = await opened(client, bob, bob_order, type="EXCHANGE", reason="size_or_fit")
    clock.advance(timedelta(hours=1))
    newest = await opened(client, ann, ann_order, type="RETURN")
    clock.advance(timedelta(hours=1))
    # The middle case is reviewed: it now works towards its 10-day resolution deadline.
    await act(client, ASSIGN, middle, team="exchanges")
    done = await opened(client, bob, bob_order, type="REFUND_ONLY",
                        lines=[{"lineId": "L2", "quantity": 1}])
    await act(client, REVIEW, done, decision="APPROVE")
    await act(client, RESOLVE, done, outcome="REFUNDED")

    urgent = await queue(client)
    assert ids(urgent) == [oldest["id"], newest["id"], middle["id"]]
    assert urgent["totalCount"] == 3
    assert [e["node"]["urgencySeconds"] for e in urgent["edges"]] == [
        21 * 3600, 23 * 3600, 10 * 86400 - 2 * 3600]
    assert ids(await queue(client, sort="NEWEST")) == [newest["id"], middle["id"],
                                                        oldest["id"]]
    assert ids(await queue(client, sort="OLDEST")) == [oldest["id"], middle["id"],
                                                        newest["id"]]
    everything = await queue(client, {"openOnly": False}, sort="NEWEST")
    assert ids(everything) == [done["id"], newest["id"], middle["id"], oldest["id"]]
    resolved = await queue(client, {"states": ["RESOLVED"]})
    assert ids(resolved) == [done["id"]]

    assert ids(await queue(client, {"types": ["EXCHANGE"]})) == [middle["id"]]
    assert ids(await queue(client, {"teams": ["exchanges"]})) == [middle["id"]]
    assert ids(await queue(client, {"teams": ["general"], "tiers": ["regular"]})) == [
        oldest["id"], newest["id"]]
    assert ids(await queue(client, {"assignee": "agent-7"})) == [middle["id"]]
    assert ids(await queue(client, {"unassigned": True})) == [oldest["id"], newest["id"]]
    assert ids(await queue(client, {"unassigned": False})) == [middle["id"]]
    assert ids(await queue(client, {"memberId": bob.id})) == [middle["id"]]
    assert ids(await queue(client, {"orderId": ann_order["id"], "openOnly": False},
                           sort="OLDEST")) == [oldest["id"], newest["id"]]
    assert ids(await queue(client, {"breached": True})) == []

    # Pages of two, urgency order, each continuing where the last ended.
    page_one = await queue(client, first=2)
    assert ids(page_one) == [oldest["id"], newest["id"]]
    assert page_one["pageInfo"]["hasNextPage"] is True
    assert page_one["pageInfo"]["hasPreviousPage"] is False
    page_two = await queue(client, first=2, after=page_one["pageInfo"]["endCursor"])
    assert ids(page_two) == [middle["id"]] and page_two["pageInfo"]["hasNextPage"] is False
    assert page_two["totalCount"] == 3
    newest_first = await queue(client, first=1, sort="NEWEST")
    next_newest = await queue(client, first=2, sort="NEWEST",
                              after=newest_first["pageInfo"]["endCursor"])
    assert ids(next_newest) == [middle["id"], oldest["id"]]

    for cursor in ("not-a-cursor", newest_first["pageInfo"]["endCursor"]):
        body = await gql(client, QUEUE, {"after": cursor}, token=AGENT)  # URGENCY order
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION"
        assert body["errors"][0]["extensions"]["field"] == "after"
    too_big = await gql(client, QUEUE, {"first": 10_000}, token=AGENT)
    assert too_big["errors"][0]["extensions"]["code"] == "VALIDATION"

    # The first-review deadline of the oldest passes (the newest has an hour left); the
    # scheduler records it.
    clock.advance(timedelta(hours=22))
    seen = await tick(live_runtime)
    breached = await queue(client, {"breached": True}, headers=seen)
    assert ids(breached) == [oldest["id"]]
    assert breached["edges"][0]["node"]["breaches"] == [{"kind": "FIRST_REVIEW"}]
    assert breached["edges"][0]["node"]["urgencySeconds"] == -3600
    assert ids(await queue(client, {"breached": False}, headers=seen)) == [newest["id"],
                                                                          middle["id"]]

    # Auditors read the queue; members do not.
    assert (await queue(client, token=AUDITOR, headers=seen))["totalCount"] == 3
    refused = await gql(client, QUEUE, {}, token=ann.token)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await gql(client, QUEUE, {})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_members_list_their_own_cases_and_staff_list_a_members(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await delivered(client, ann, clock)
    first = await opened(client, ann, order, type="RETURN")
    clock.advance(timedelta(minutes=5))
    second = await opened(client, ann, order, type="REFUND_ONLY",
                          lines=[{"lineId": "L2", "quantity": 1}])
    clock.advance(timedelta(minutes=5))
    await act(client, WITHDRAW, first, ann.token)
    await opened(client, bob, await delivered(client, bob, clock))

    mine = data(await gql(client, MY_CASES, token=ann.token))["me"]["cases"]
    assert [e["node"]["id"] for e in mine["edges"]] == [second["id"], first["id"]]
    assert mine["totalCount"] == 2
    still_open = data(await gql(client, MY_CASES, {"filter": {"openOnly": True}},
                                token=ann.token))["me"]["cases"]
    assert [e["node"]["id"] for e in still_open["edges"]] == [second["id"]]
    returns = data(await gql(client, MY_CASES, {"filter": {"types": ["RETURN"]}},
                             token=ann.token))["me"]["cases"]
    assert [e["node"]["state"] for e in returns["edges"]] == ["WITHDRAWN"]
    paged = data(await gql(client, MY_CASES, {"first": 1}, token=ann.token))["me"]["cases"]
    assert paged["pageInfo"]["hasNextPage"] is True
    rest = data(await gql(client, MY_CASES, {"first": 1,
                                             "after": paged["pageInfo"]["endCursor"]},
                          token=ann.token))["me"]["cases"]
    assert [e["node"]["id"] for e in rest["edges"]] == [first["id"]]

    for token in (AGENT, AUDITOR):
        theirs = data(await gql(client, MEMBER_CASES, {"id": ann.id}, token=token,
                                headers=seen(head(live_runtime))))
        assert theirs["member"]["cases"]["totalCount"] == 2
    hidden = await gql(client, MEMBER_CASES, {"id": ann.id}, token=bob.token)
    assert hidden["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_case_reasons_are_the_configured_list(client: httpx.AsyncClient,
                                                    live_runtime: Runtime) -> None:
    reasons = data(await gql(client, "{ caseReasons }"))["caseReasons"]
    assert reasons == list(live_runtime.rules.case_reasons)
    assert "defective" in reasons


# -- KPIs ----------------------------------------------------------------------------------------


async def test_service_kpis_measure_response_resolution_breaches_and_satisfaction(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    ann_order = await delivered(client, ann, clock)
    bob_order = await delivered(client, bob, clock)
    start = clock.now()
    quick = await opened(client, ann, ann_order, type="REFUND_ONLY")
    slow = await opened(client, bob, bob_order, type="REFUND_ONLY")

    # The quick case: answered after an hour, refunded an hour later, rated.
    clock.advance(timedelta(hours=1))
    await act(client, MESSAGE, quick, body="Looking into it")
    await act(client, REVIEW, quick, decision="APPROVE")
    clock.advance(timedelta(hours=1))
    await act(client, RESOLVE, quick, outcome="REFUNDED")
    await act(client, RATE, quick, ann.token, attitude=5, ability=4, efficiency=3,
              category="AFTER_SALES")

    # The slow case: nobody looks at it for 30 hours; then it moves to another team.
    clock.advance(timedelta(hours=28))
    await tick(live_runtime)
    moved = ok(await mutate(client, ASSIGN, {"caseId": slow["id"], "team": "escalations"},
                            AGENT))
    # Another reader (an auditor) waits for the read models to include it all.
    seen = {"X-Patron-Min-Position": str(moved["position"])}

    window = {"from": (start - timedelta(minutes=1)).isoformat(),
              "to": (start + timedelta(hours=1)).isoformat()}
    (overall,) = data(await gql(client, KPIS, window, token=AGENT, headers=seen))[
        "serviceKpis"]
    assert overall["key"] is None
    assert (overall["cases"], overall["resolved"]) == (2, 1)
    assert overall["firstResponseSeconds"] == {"count": 1, "average": 3600.0, "p50": 3600.0,
                                               "p90": 3600.0, "p99": 3600.0}
    assert overall["resolutionSeconds"] == {"count": 1, "average": 7200.0, "p50": 7200.0,
                                            "p90": 7200.0, "p99": 7200.0}
    assert overall["slaBreachRate"] == 0.5
    assert overall["firstReviewBreachRate"] == 0.5
    assert overall["resolutionBreachRate"] == 0.0
    assert (overall["ratings"], overall["attitude"], overall["ability"],
            overall["efficiency"]) == (1, 5.0, 4.0, 3.0)
    assert overall["byCategory"] == [{"category": "AFTER_SALES", "ratings": 1,
                                      "average": 4.0}]

    by_team = data(await gql(client, KPIS, {**window, "groupBy": "TEAM"}, token=AUDITOR,
                             headers=seen))["serviceKpis"]
    assert [(g["key"], g["cases"], g["firstReviewBreachRate"]) for g in by_team] == [
        ("escalations", 1, 1.0), ("general", 1, 0.0)]
    by_day = data(await gql(client, KPIS, {**window, "groupBy": "DAY"}, token=AGENT))[
        "serviceKpis"]
    assert [(g["key"], g["cases"]) for g in by_day] == [(start.date().isoformat(), 2)]

    later = {"from": (start + timedelta(hours=1)).isoformat(),
             "to": (start + timedelta(hours=2)).isoformat()}
    (empty,) = data(await gql(client, KPIS, later, token=AGENT))["serviceKpis"]
    assert (empty["cases"], empty["slaBreachRate"], empty["firstResponseSeconds"]["count"]) == (
        0, None, 0)

    backwards = await gql(client, KPIS, {"from": window["to"], "to": window["from"]},
                          token=AGENT)
    assert backwards["errors"][0]["extensions"]["code"] == "VALIDATION"
    refused = await gql(client, KPIS, window, token=ann.token)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize("token", [AGENT, ADMIN], ids=["agent", "admin"])
async def test_staff_see_the_member_and_who_did_what(
    client: httpx.AsyncClient, clock: AdjustableClock, token: str
) -> None:
    ann = await shopper(client)
    case = await opened(client, ann, await delivered(client, ann, clock))
    await act(client, MESSAGE, case, token, body="Hi Ann")
    view = await read_case(client, case["id"], token)
    assert view is not None and view["member"] == {"id": ann.id}
    staff_id = {AGENT: "agent-7", ADMIN: "admin-1"}[token]
    assert view["messages"][0]["authorId"] == staff_id
    assert [(t["kind"], t["actorId"]) for t in view["timeline"]] == [
        ("opened", GlobalID.from_id(ann.id).node_id), ("message_posted", staff_id)]
