"""An after-sales case, live: `caseUpdated` over graphql-transport-ws.

A real websocket to the application (Starlette's test client). The subscription polls the
case's read-model row, so it sees whatever the projections write, whichever process
recorded it; it sends the case again only when the row's version moves.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from strawberry.relay import GlobalID

from api.app import create_app
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import token_for
from tests.test_points_subscription import PROTOCOL, post
from tests.test_shipment_subscriptions import (
    Member,
    bearer,
    open_subscription,
    paid_order,
    received,
    refusal,
    refused_extensions,
    ship,
    track,
)

AGENT = token_for(Role.AGENT, "agent-7")
AUDITOR = token_for(Role.AUDITOR, "auditor-3")
CASE_UPDATED = """
subscription C($caseId: ID!) {
  caseUpdated(caseId: $caseId) {
    id state assignee version reasonDetail messageCount
    messages { fromStaff body }
  }
}
"""
OPEN = """
mutation O($input: OpenAfterSalesCaseInput!) { openAfterSalesCase(input: $input) {
  position case { id state version } userErrors { code message } } }
"""
ASSIGN = """
mutation A($input: AssignCaseInput!) { assignCase(input: $input) {
  position case { id state } userErrors { code message } } }
"""
MESSAGE = """
mutation M($input: PostCaseMessageInput!) { postCaseMessage(input: $input) {
  position case { id } userErrors { code message } } }
"""
REVIEW = """
mutation R($input: ReviewCaseInput!) { reviewCase(input: $input) {
  position case { id state } userErrors { code message } } }
"""


@pytest.fixture
def http(runtime: Runtime) -> Iterator[TestClient]:
    """The application, served to a test client with its projections running."""
    app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
    runtime.start_projections()
    with TestClient(app) as client:
        yield client
        if runtime._async_engine is not None:
            # The engine's connections belong to the client's event loop: close them there.
            client.portal.call(runtime._async_engine.dispose)
            runtime._async_engine = None


def command(http: TestClient, document: str, fields: dict[str, Any],
            token: str) -> dict[str, Any]:
    (payload,) = post(http, document, {"input": fields}, token).values()
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload  # type: ignore[no-any-return]


def open_case(http: TestClient, member: Member, clock: AdjustableClock) -> str:
    """A return of one tent from a delivered order of `member`, opened by them."""
    order_id = paid_order(http, member)
    parcel = ship(http, order_id)["shipment"]
    track(http, parcel["id"], "d1", "DELIVERED", clock)
    opened = command(http, OPEN, {
        "orderId": order_id, "type": "RETURN", "reason": "defective",
        "reasonDetail": "The pole snapped", "lines": [{"lineId": "L1", "quantity": 1}],
        "idempotencyKey": uuid.uuid4().hex,
    }, member.token)
    return str(opened["case"]["id"])


def test_the_member_follows_their_case_as_it_is_worked(
    http: TestClient, clock: AdjustableClock
) -> None:
    ann = Member(http, "Ann Lee")
    case_id = open_case(http, ann, clock)

    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        # The token in the connection_init payload, as browsers must send it.
        messages = open_subscription(socket, bearer(ann.token), CASE_UPDATED,
                                     {"caseId": case_id})
        now = received(messages, "caseUpdated")
        assert (now["id"], now["state"], now["assignee"]) == (case_id, "REQUESTED", None)
        # Personal fields are the member's own: shown to them on the socket too.
        assert now["reasonDetail"] == "The pole snapped"

        command(http, ASSIGN, {"caseId": case_id}, AGENT)
        taken = received(messages, "caseUpdated")
        assert (taken["state"], taken["assignee"]) == ("UNDER_REVIEW", "agent-7")
        assert taken["version"] > now["version"]

        # A retried assignment records nothing, so nothing is sent; the next change is.
        retried = command(http, ASSIGN, {"caseId": case_id}, AGENT)
        assert retried["position"] is None
        command(http, MESSAGE, {"caseId": case_id, "body": "Please send it back"}, AGENT)
        answered = received(messages, "caseUpdated")
        assert answered["messageCount"] == 1
        assert answered["messages"] == [{"fromStaff": True, "body": "Please send it back"}]
        assert answered["version"] == taken["version"] + 1

        command(http, REVIEW, {"caseId": case_id, "decision": "APPROVE"}, AGENT)
        assert received(messages, "caseUpdated")["state"] == "APPROVED"
        socket.send_json({"id": "op", "type": "complete"})


@pytest.mark.parametrize(("token", "personal"), [(AGENT, True), (AUDITOR, False)],
                         ids=["agent", "auditor"])
def test_staff_and_auditors_follow_any_case_with_a_token_in_the_handshake_header(
    http: TestClient, clock: AdjustableClock, token: str, personal: bool
) -> None:
    ann = Member(http, "Ann Lee")
    case_id = open_case(http, ann, clock)
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers=bearer(token)) as socket:
        messages = open_subscription(socket, {}, CASE_UPDATED, {"caseId": case_id})
        now = received(messages, "caseUpdated")
        assert now["state"] == "REQUESTED"
        # Auditors without the pii scope see the case, not what the member wrote.
        assert now["reasonDetail"] == ("The pole snapped" if personal else None)
        command(http, REVIEW, {"caseId": case_id, "decision": "REJECT",
                               "reason": "Outside the warranty"}, AGENT)
        assert received(messages, "caseUpdated")["state"] == "REJECTED"


def test_a_member_cannot_follow_another_members_case(
    http: TestClient, clock: AdjustableClock
) -> None:
    ann = Member(http, "Ann Lee")
    bob = Member(http, "Bob Ma")
    case_id = open_case(http, ann, clock)
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, bearer(bob.token), CASE_UPDATED,
                                     {"caseId": case_id})
        assert refusal(messages) == "FORBIDDEN"
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers=bearer(bob.token)) as socket:
        messages = open_subscription(socket, {}, CASE_UPDATED, {"caseId": case_id})
        assert refusal(messages) == "FORBIDDEN"


@pytest.mark.parametrize(
    ("connection_payload", "case", "code"),
    [
        (None, "real", "UNAUTHENTICATED"),
        ("member", "missing", "NOT_FOUND"),
        ("member", "malformed", "VALIDATION"),
    ],
    ids=["no-token", "unknown-case", "not-a-case-id"],
)
def test_following_a_case_needs_a_valid_token_and_a_case(
    http: TestClient, clock: AdjustableClock, connection_payload: Any, case: str, code: str
) -> None:
    ann = Member(http, "Ann Lee")
    case_id = open_case(http, ann, clock)
    payload = bearer(ann.token) if connection_payload == "member" else connection_payload
    wanted = {
        "real": case_id,
        "missing": str(GlobalID("AfterSalesCase", str(uuid.uuid4()))),
        "malformed": ann.id,
    }[case]
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, payload, CASE_UPDATED, {"caseId": wanted})
        extensions = refused_extensions(messages)
        assert extensions["code"] == code
        if case != "real":
            assert extensions["field"] == "caseId"  # the argument as written
