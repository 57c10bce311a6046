"""Parcels, live: `shipmentUpdated` and `notificationReceived` over graphql-transport-ws.

A real websocket to the application (Starlette's test client). The subscriptions poll the
read models, so they see whatever the projections write, whichever process recorded it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from strawberry.relay import GlobalID

from api.app import create_app
from api.runtime import Runtime
from api.signing import signed_headers
from domain.clock import AdjustableClock
from domain.metadata import Channel, EventMetadata, Role
from tests.conftest import TEST_PAYMENT_SECRET
from tests.graphql import CATALOGUE_ADMIN, REGISTER, UPSERT_PRODUCT, token_for
from tests.payments import callback
from tests.test_points_subscription import PROTOCOL, Messages, post

AGENT = token_for(Role.AGENT, "agent-7")
AUDITOR = token_for(Role.AUDITOR, "auditor-3")
SHIPMENT_UPDATED = """
subscription S($orderId: ID!) {
  shipmentUpdated(orderId: $orderId) {
    id status version exceptionState openExceptions { kind } timeline { updateId }
  }
}
"""
NOTIFICATION_RECEIVED = """
subscription N($since: EventPosition) {
  notificationReceived(since: $since) { id kind topic title body shipmentId orderId channels }
}
"""
PLACE = """
mutation P($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { id pricing { total { amount } } } userErrors { code } } }
"""
PAY = """
mutation P($input: PayOrderInput!) { payOrder(input: $input) {
  order { id state } attempt { reference amount { amount } } userErrors { code } } }
"""
CREATE = """
mutation C($input: CreateShipmentInput!) { createShipment(input: $input) {
  position shipment { id status } userErrors { code message } } }
"""
TRACK = """
mutation T($input: RecordTrackingEventInput!) { recordTrackingEvent(input: $input) {
  position shipment { id status } userErrors { code message } } }
"""
ADDRESS = {"recipient": "Ann Lee", "line1": "88 Nanshan Rd", "city": "Hangzhou",
           "country": "CN"}


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


class Member:
    def __init__(self, http: TestClient, name: str) -> None:
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        payload = post(http, REGISTER, {"input": {"name": name, "email": email}})[
            "registerMember"]
        self.token: str = payload["token"]
        self.id: str = payload["member"]["id"]


def paid_order(http: TestClient, member: Member) -> str:
    """A paid order of two tents (L1) and a mug (L2)."""
    for product, price in (("tent", 6_500), ("mug", 3_000)):  # the catalogue prices orders
        listed = post(http, UPSERT_PRODUCT, {"input": {
            "productId": product, "name": product, "price": price, "currency": "CNY"}},
            CATALOGUE_ADMIN)["upsertProduct"]
        assert listed["userErrors"] == []
    placed = post(http, PLACE, {"input": {"idempotencyKey": uuid.uuid4().hex, "lines": [
        {"productId": "tent", "quantity": 2}, {"productId": "mug", "quantity": 1},
    ]}}, member.token)["placeOrder"]
    assert placed["userErrors"] == []
    order = placed["order"]
    asked = post(http, PAY, {"input": {
        "orderId": order["id"], "method": "ALIPAY",
        "idempotencyKey": uuid.uuid4().hex}}, member.token)["payOrder"]
    assert asked["userErrors"] == [] and asked["order"]["state"] == "PLACED"
    # The provider confirms the attempt with its signed callback.
    attempt = asked["attempt"]
    body = json.dumps(callback(attempt["reference"], attempt["amount"]["amount"])).encode()
    confirmed = http.post("/webhooks/payments/testpay", content=body, headers={
        "Content-Type": "application/json", **signed_headers(TEST_PAYMENT_SECRET, body)})
    assert confirmed.status_code == 202, confirmed.text
    return str(order["id"])


def ship(http: TestClient, order_id: str, items: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    fields: dict[str, Any] = {"orderId": order_id, "method": "HOME_DELIVERY",
                              "address": ADDRESS, "carrier": "SF",
                              "trackingNumber": f"SF{uuid.uuid4().hex[:8]}"}
    if items is not None:
        fields["items"] = items
    created = post(http, CREATE, {"input": fields}, AGENT)["createShipment"]
    assert created["userErrors"] == [], created["userErrors"]
    return created  # type: ignore[no-any-return]


def track(http: TestClient, shipment_id: str, update_id: str, status: str,
          clock: AdjustableClock, **extra: Any) -> dict[str, Any]:
    tracked = post(http, TRACK, {"input": {
        "shipmentId": shipment_id, "updateId": update_id, "status": status,
        "occurredAt": (clock.now() - timedelta(minutes=1)).isoformat(), **extra,
    }}, AGENT)["recordTrackingEvent"]
    assert tracked["userErrors"] == [], tracked["userErrors"]
    return tracked  # type: ignore[no-any-return]


def open_subscription(socket: WebSocketTestSession, connection_payload: dict[str, Any] | None,
                      query: str, variables: dict[str, Any], op: str = "op") -> Messages:
    messages = Messages(socket)
    init: dict[str, Any] = {"type": "connection_init"}
    if connection_payload is not None:
        init["payload"] = connection_payload
    socket.send_json(init)
    assert messages.next_of("connection_ack")["type"] == "connection_ack"
    socket.send_json({"id": op, "type": "subscribe",
                      "payload": {"query": query, "variables": variables}})
    return messages


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def received(messages: Messages, field: str, op: str = "op") -> dict[str, Any]:
    message = messages.next_of("next")
    assert message["id"] == op
    assert "errors" not in message["payload"], message
    value: dict[str, Any] = message["payload"]["data"][field]
    return value


def refusal(messages: Messages, op: str = "op") -> str:
    """The code of a refused subscription, which then completes."""
    return str(refused_extensions(messages, op)["code"])


def refused_extensions(messages: Messages, op: str = "op") -> dict[str, Any]:
    """The extensions (code, and the argument at fault) of a refused subscription."""
    refused = messages.next_of("next", "error")
    assert refused["id"] == op
    errors = refused["payload"]["errors"] if refused["type"] == "next" else refused["payload"]
    assert refused["type"] == "error" or refused["payload"].get("data") is None
    if refused["type"] == "next":
        assert messages.next_of("complete")["id"] == op
    extensions: dict[str, Any] = errors[0]["extensions"]
    return extensions


# -- shipmentUpdated --------------------------------------------------------------------------


def test_the_member_follows_their_orders_parcels_as_they_move(
    http: TestClient, clock: AdjustableClock
) -> None:
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    first = ship(http, order_id, [{"lineId": "L1", "quantity": 2}])["shipment"]

    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, bearer(ann.token), SHIPMENT_UPDATED,
                                     {"orderId": order_id})
        # First the parcels as they are now.
        now = received(messages, "shipmentUpdated")
        assert (now["id"], now["status"]) == (first["id"], "LABEL_CREATED")

        track(http, first["id"], "u1", "PICKED_UP", clock)
        moved = received(messages, "shipmentUpdated")
        assert (moved["id"], moved["status"]) == (first["id"], "PICKED_UP")
        assert moved["version"] > now["version"]

        # A new parcel of the same order shows up too.
        clock.advance(timedelta(minutes=1))
        second = ship(http, order_id)["shipment"]
        added = received(messages, "shipmentUpdated")
        assert (added["id"], added["status"]) == (second["id"], "LABEL_CREATED")

        # A failed attempt: the update and the exception it opened arrive as they are seen.
        track(http, first["id"], "u2", "DELIVERY_ATTEMPT_FAILED", clock, note="closed")
        failed = received(messages, "shipmentUpdated")
        assert failed["id"] == first["id"] and failed["status"] == "DELIVERY_ATTEMPT_FAILED"
        assert failed["exceptionState"] == "OPEN"
        assert failed["openExceptions"] == [{"kind": "FAILED_ATTEMPT"}]
        assert [u["updateId"] for u in failed["timeline"]] == ["u1", "u2"]

        # A repeated carrier update changes nothing, so nothing is sent.
        post(http, TRACK, {"input": {
            "shipmentId": first["id"], "updateId": "u2", "status": "DELIVERY_ATTEMPT_FAILED",
            "occurredAt": (clock.now() - timedelta(minutes=1)).isoformat()}}, AGENT)
        track(http, second["id"], "v1", "PICKED_UP", clock)
        after_repeat = received(messages, "shipmentUpdated")
        assert (after_repeat["id"], after_repeat["status"]) == (second["id"], "PICKED_UP")

        socket.send_json({"id": "op", "type": "complete"})


@pytest.mark.parametrize("token", [AGENT, AUDITOR], ids=["agent", "auditor"])
def test_staff_follow_any_order_with_a_token_in_the_handshake_header(
    http: TestClient, clock: AdjustableClock, token: str
) -> None:
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    parcel = ship(http, order_id)["shipment"]
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers=bearer(token)) as socket:
        messages = open_subscription(socket, {}, SHIPMENT_UPDATED, {"orderId": order_id})
        assert received(messages, "shipmentUpdated")["status"] == "LABEL_CREATED"
        track(http, parcel["id"], "u1", "IN_TRANSIT", clock)
        assert received(messages, "shipmentUpdated")["status"] == "IN_TRANSIT"


def test_an_order_without_parcels_yet_sends_its_first_parcel_when_it_is_created(
    http: TestClient,
) -> None:
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, bearer(ann.token), SHIPMENT_UPDATED,
                                     {"orderId": order_id})
        parcel = ship(http, order_id)["shipment"]
        assert received(messages, "shipmentUpdated")["id"] == parcel["id"]


def test_a_member_cannot_follow_another_members_order(http: TestClient) -> None:
    ann = Member(http, "Ann Lee")
    bob = Member(http, "Bob Ma")
    order_id = paid_order(http, ann)
    ship(http, order_id)
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, bearer(bob.token), SHIPMENT_UPDATED,
                                     {"orderId": order_id})
        assert refusal(messages) in ("FORBIDDEN", "NOT_FOUND")
    # The same socket header check holds for a token given in the handshake.
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers=bearer(bob.token)) as socket:
        messages = open_subscription(socket, {}, SHIPMENT_UPDATED, {"orderId": order_id})
        assert refusal(messages) in ("FORBIDDEN", "NOT_FOUND")


@pytest.mark.parametrize(
    ("connection_payload", "order", "code"),
    [
        (None, "real", "UNAUTHENTICATED"),
        ("member", "missing", "NOT_FOUND"),
        ("member", "malformed", "VALIDATION"),
    ],
    ids=["no-token", "unknown-order", "not-an-order-id"],
)
def test_following_an_order_needs_a_valid_token_and_an_order(
    http: TestClient, connection_payload: Any, order: str, code: str
) -> None:
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    payload = bearer(ann.token) if connection_payload == "member" else connection_payload
    wanted = {
        "real": order_id,
        "missing": str(GlobalID("Order", str(uuid.uuid4()))),
        "malformed": ann.id,
    }[order]
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, payload, SHIPMENT_UPDATED, {"orderId": wanted})
        extensions = refused_extensions(messages)
        assert extensions["code"] == code
        if order != "real":
            # The argument as the client wrote it, not the resolver's `order_id`.
            assert extensions["field"] == "orderId"


def test_each_subscription_on_a_socket_is_authorised_on_its_own(http: TestClient) -> None:
    ann = Member(http, "Ann Lee")
    bob = Member(http, "Bob Ma")
    ann_order = paid_order(http, ann)
    bob_order = paid_order(http, bob)
    ann_parcel = ship(http, ann_order)["shipment"]
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, bearer(ann.token), SHIPMENT_UPDATED,
                                     {"orderId": ann_order}, op="mine")
        assert received(messages, "shipmentUpdated", "mine")["id"] == ann_parcel["id"]
        socket.send_json({"id": "theirs", "type": "subscribe", "payload": {
            "query": SHIPMENT_UPDATED, "variables": {"orderId": bob_order}}})
        assert refusal(messages, "theirs") in ("FORBIDDEN", "NOT_FOUND")


# -- notificationReceived ---------------------------------------------------------------------


def test_the_member_receives_each_new_notification(
    http: TestClient, clock: AdjustableClock
) -> None:
    ann = Member(http, "Ann Lee")
    bob = Member(http, "Bob Ma")
    order_id = paid_order(http, ann)
    created = ship(http, order_id)
    parcel = created["shipment"]
    bob_parcel = ship(http, paid_order(http, bob))["shipment"]

    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        # From the position the member last saw: nothing recorded since is missed.
        messages = open_subscription(socket, bearer(ann.token), NOTIFICATION_RECEIVED,
                                     {"since": created["position"]})
        track(http, bob_parcel["id"], "b1", "PICKED_UP", clock)  # not Ann's
        track(http, parcel["id"], "u1", "PICKED_UP", clock, location="Hangzhou hub")
        picked = received(messages, "notificationReceived")
        assert (picked["kind"], picked["topic"]) == ("MILESTONE", "shipment.picked_up")
        assert picked["shipmentId"] == parcel["id"] and picked["orderId"] == order_id
        assert "Hangzhou hub" in picked["body"] and picked["title"]
        assert "inbox" in picked["channels"]

        track(http, parcel["id"], "u2", "DELIVERY_ATTEMPT_FAILED", clock, note="closed")
        attempt = received(messages, "notificationReceived")
        assert (attempt["kind"], attempt["topic"]) == (
            "MILESTONE", "shipment.delivery_attempt_failed")
        exception = received(messages, "notificationReceived")
        assert (exception["kind"], exception["topic"]) == ("EXCEPTION", "shipment.exception")
        assert len({picked["id"], attempt["id"], exception["id"]}) == 3


def test_without_since_only_notifications_after_subscribing_arrive(
    http: TestClient, clock: AdjustableClock
) -> None:
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    parcel = ship(http, order_id)["shipment"]  # its label notice is already there
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers=bearer(ann.token)) as socket:
        messages = open_subscription(socket, {}, NOTIFICATION_RECEIVED, {})
        # The socket also follows the order: by the time its current state arrives, the
        # notification subscription, started first with less to do, has its starting point.
        socket.send_json({"id": "order", "type": "subscribe", "payload": {
            "query": SHIPMENT_UPDATED, "variables": {"orderId": order_id}}})
        assert received(messages, "shipmentUpdated", "order")["id"] == parcel["id"]
        track(http, parcel["id"], "u1", "OUT_FOR_DELIVERY", clock)
        while True:
            message = messages.next_of("next")
            if message["id"] == "op":
                break
        notice = message["payload"]["data"]["notificationReceived"]
        assert notice["topic"] == "shipment.out_for_delivery"


@pytest.mark.parametrize(
    "connection_payload",
    [None, {"Authorization": f"Bearer {AGENT}"}],
    ids=["no-token", "staff-token"],
)
def test_notifications_are_only_for_a_signed_in_member(
    http: TestClient, connection_payload: dict[str, Any] | None
) -> None:
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = open_subscription(socket, connection_payload, NOTIFICATION_RECEIVED, {})
        assert refusal(messages) in ("UNAUTHENTICATED", "FORBIDDEN")


def test_updates_written_by_another_process_reach_subscribers(
    http: TestClient, runtime: Runtime, clock: AdjustableClock
) -> None:
    """Another server (its own event-store connection, no projections of its own) records
    the carrier update; this server's projections pick it up (NOTIFY on PostgreSQL, polling
    on SQLite) and the subscriber hears of it."""
    ann = Member(http, "Ann Lee")
    order_id = paid_order(http, ann)
    parcel = ship(http, order_id)["shipment"]
    other = Runtime(runtime.settings, clock=clock)  # runner not started: it only writes
    try:
        with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
            messages = open_subscription(socket, bearer(ann.token), SHIPMENT_UPDATED,
                                         {"orderId": order_id})
            assert received(messages, "shipmentUpdated")["status"] == "LABEL_CREATED"
            other.shipping.record_tracking(
                uuid.UUID(GlobalID.from_id(parcel["id"]).node_id), "far-1", "in_transit",
                clock.now() - timedelta(minutes=1), "Wuxi hub", None, None,
                other_meta(),
            )
            moved = received(messages, "shipmentUpdated")
            assert moved["status"] == "IN_TRANSIT"
            assert [u["updateId"] for u in moved["timeline"]] == ["far-1"]
            socket.send_json({"id": "op", "type": "complete"})
    finally:
        other.close()


def other_meta() -> EventMetadata:
    return EventMetadata("carrier:sf", Role.SYSTEM, Channel.SYSTEM, "c", None,
                         uuid.uuid4().hex)
