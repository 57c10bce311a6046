"""A member's points, live: the `pointsChanged` subscription over graphql-transport-ws.

A real websocket to the application (Starlette's test client), authenticated the way
browsers must do it, with the bearer token in the `connection_init` payload.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from api.runtime import Runtime
from domain.metadata import Role
from tests.graphql import REGISTER, token_for

ADMIN = token_for(Role.ADMIN, "admin-1")
PROTOCOL = "graphql-transport-ws"
SUBSCRIPTION = "subscription { pointsChanged { available pending debt tier } }"
ADJUST = """
mutation A($input: AdjustPointsInput!) {
  adjustPoints(input: $input) { position account { available } userErrors { code } }
}
"""
TIMEOUT = 10.0


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


def post(http: TestClient, query: str, variables: dict[str, Any],
         token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.post("/graphql", json={"query": query, "variables": variables},
                         headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert not body.get("errors"), body["errors"]
    return body["data"]  # type: ignore[no-any-return]


class Messages:
    """Server messages of one socket, read with a deadline so a silent server fails fast."""

    def __init__(self, socket: WebSocketTestSession) -> None:
        self.socket = socket
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                self._queue.put(self.socket.receive_json())

    def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message from the server within {timeout}s") from None

    def next_of(self, *types: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message of one of `types`, skipping keep-alive pings."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.01))
            if message["type"] == "ping":
                self.socket.send_json({"type": "pong"})
                continue
            assert message["type"] in types, message
            return message


def subscribe(socket: WebSocketTestSession, payload: dict[str, Any] | None) -> Messages:
    messages = Messages(socket)
    init: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        init["payload"] = payload
    socket.send_json(init)
    assert messages.next_of("connection_ack")["type"] == "connection_ack"
    socket.send_json({"id": "points", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    return messages


def test_a_member_sees_their_points_change_as_it_happens(http: TestClient) -> None:
    registered = post(http, REGISTER, {"input": {"name": "Ann Lee", "email": "ann@example.com"}})
    payload = registered["registerMember"]
    member_token, member_id = payload["token"], payload["member"]["id"]

    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        assert socket.accepted_subprotocol == PROTOCOL
        messages = subscribe(socket, {"Authorization": f"Bearer {member_token}"})
        # The subscription first sends the account as it is, then every change.
        current = messages.next_of("next")
        assert current["payload"]["data"]["pointsChanged"]["available"] == 0

        adjusted = post(http, ADJUST, {"input": {
            "memberId": member_id, "points": 250, "reason": "welcome gift",
            "idempotencyKey": "gift-1",
        }}, ADMIN)["adjustPoints"]
        assert adjusted["userErrors"] == [] and adjusted["account"]["available"] == 250

        update = messages.next_of("next")
        assert update["id"] == "points"
        assert "errors" not in update["payload"], update
        assert update["payload"]["data"]["pointsChanged"] == {
            "available": 250, "pending": 0, "debt": 0, "tier": "REGULAR"}

        post(http, ADJUST, {"input": {
            "memberId": member_id, "points": -100, "reason": "correction",
            "idempotencyKey": "gift-2",
        }}, ADMIN)
        update = messages.next_of("next")
        assert update["payload"]["data"]["pointsChanged"]["available"] == 150

        socket.send_json({"id": "points", "type": "complete"})


@pytest.mark.parametrize(
    "connection_payload",
    [None, {}, {"Authorization": f"Bearer {ADMIN}"}],
    ids=["no-payload", "no-token", "staff-token"],
)
def test_a_subscription_without_a_member_token_is_refused(
    http: TestClient, connection_payload: dict[str, Any] | None
) -> None:
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as socket:
        messages = subscribe(socket, connection_payload)
        refused = messages.next_of("next", "error")
        assert refused["id"] == "points"
        errors = (refused["payload"]["errors"] if refused["type"] == "next"
                  else refused["payload"])
        assert errors and errors[0]["extensions"]["code"] in ("FORBIDDEN", "UNAUTHENTICATED")
        assert refused["type"] == "error" or refused["payload"].get("data") is None
        assert messages.next_of("complete")["id"] == "points"


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Basic abc", 42])
def test_a_bad_token_in_the_connection_payload_is_refused_at_connection_init(
    http: TestClient, authorization: Any
) -> None:
    # graphql-transport-ws: the server closes with 4403 Forbidden instead of connection_ack.
    with pytest.raises(WebSocketDisconnect) as refused, http.websocket_connect(
        "/graphql", subprotocols=[PROTOCOL]
    ) as socket:
        socket.send_json({"type": "connection_init",
                          "payload": {"Authorization": authorization}})
        socket.receive_json()
    assert refused.value.code == 4403


def test_a_member_token_in_the_handshake_header_also_subscribes(http: TestClient) -> None:
    registered = post(http, REGISTER, {"input": {"name": "Bea Wu", "email": "bea@example.com"}})
    payload = registered["registerMember"]
    with http.websocket_connect("/graphql", subprotocols=[PROTOCOL],
                                headers={"Authorization": f"Bearer {payload['token']}"}) as socket:
        messages = subscribe(socket, {})
        assert messages.next_of("next")["payload"]["data"]["pointsChanged"]["available"] == 0
        post(http, ADJUST, {"input": {
            "memberId": payload["member"]["id"], "points": 80, "reason": "survey",
            "idempotencyKey": "survey-1",
        }}, ADMIN)
        update = messages.next_of("next")
        assert update["payload"]["data"]["pointsChanged"]["available"] == 80


def test_a_bad_token_in_the_handshake_header_is_refused_before_the_socket_opens(
    http: TestClient,
) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, http.websocket_connect(
        "/graphql", subprotocols=[PROTOCOL], headers={"Authorization": "Bearer not-a-token"}
    ):
        pass
    assert refused.value.code == 4401
