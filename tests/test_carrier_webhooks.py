"""Carrier webhooks: signed, de-duplicated, order-independent, and strict about bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from api.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from domain.clock import AdjustableClock
from domain.errors import ValidationError
from domain.metadata import Channel, EventMetadata, Role
from tests.shop import stocked

SECRET = "sf-webhook-secret-0123456789"


@pytest.fixture
def carrier_runtime(settings: Settings, clock: AdjustableClock) -> Iterator[Runtime]:
    rt = Runtime(dataclasses.replace(settings, carrier_secrets={"sf": SECRET}), clock=clock)
    yield rt
    rt.close()


@pytest.fixture
async def carrier_client(carrier_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    carrier_runtime.start_projections()
    app = create_app(runtime=carrier_runtime, migrate_on_start=False, run_projections=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://patron.test") as http:
        yield http
    carrier_runtime.runner.stop()
    await carrier_runtime.async_engine.dispose()


def meta(actor: str, role: Role, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "c", None, uuid.uuid4().hex, reason)


async def shipped_order(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID]:
    """A paid order in one parcel with tracking number SF1; returns (order, shipment)."""

    def setup() -> tuple[uuid.UUID, uuid.UUID]:
        member = runtime.members.register(
            {"name": "Lin", "email": "lin@example.com"}, meta("anon", Role.ANONYMOUS)
        ).aggregate_id
        own = meta(str(member), Role.MEMBER)
        lines = [{"product_id": "p", "sku": "s", "name": "Kettle", "quantity": 1,
                  "unit_price": 12_000}]
        order = runtime.orders.place(member, stocked(runtime, lines), None, 0, "o1",
                                     own).aggregate_id
        runtime.orders.pay(order, "card", runtime.orders.get(order).total, None, "p1", own)
        address = {"recipient": "Lin", "line1": "2 Lake Rd", "city": "Hangzhou", "country": "CN"}
        shipment = runtime.shipping.create(
            order, None, "home_delivery", "standard", None, None, address, None, "SF", "SF1",
            meta("agent", Role.AGENT, "packed"),
        ).aggregate_id
        return order, shipment

    order, shipment = await asyncio.to_thread(setup)
    for _ in range(200):  # the webhook finds shipments through the read model
        if runtime.runner.position("shipment_tracking") >= runtime.runner.head():
            break
        await asyncio.sleep(0.02)
    return order, shipment


async def post(client: httpx.AsyncClient, payload: Any, *, secret: str = SECRET,
               signature: str | None = None, carrier: str = "sf",
               raw: bytes | None = None, timestamp: int | None = None) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature != "":
        headers.update(signed_headers(secret, body, timestamp))
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
    return await client.post(f"/webhooks/carriers/{carrier}", content=body, headers=headers)


def update(update_id: str, status: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"update_id": update_id, "tracking_number": "SF1", "status": status,
            "occurred_at": at.isoformat(), **extra}


async def test_signed_updates_build_the_timeline_once_and_in_order(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock
) -> None:
    order, shipment = await shipped_order(carrier_runtime)
    clock.advance(timedelta(days=1))  # the parcel travels for a day
    now = clock.now()
    # Delivered arrives first, then the older updates, one of them twice.
    out_of_order = [
        update("u3", "delivered", now, location="Hangzhou"),
        update("u1", "picked_up", now - timedelta(hours=20), location="Shanghai hub"),
        update("u2", "in_transit", now - timedelta(hours=10), eta=(now).isoformat()),
        update("u1", "picked_up", now - timedelta(hours=20), location="Shanghai hub"),
    ]
    responses = [await post(carrier_client, body) for body in out_of_order]
    assert [r.status_code for r in responses] == [202, 202, 202, 202]
    assert [r.json()["duplicate"] for r in responses] == [False, False, False, True]

    state = await asyncio.to_thread(carrier_runtime.shipping.get, shipment)
    assert [t["status"] for t in state.timeline] == ["picked_up", "in_transit", "delivered"]
    assert state.status == "delivered"  # a late, older update never undoes delivery
    assert (await asyncio.to_thread(carrier_runtime.orders.get, order)).state == "delivered"


@pytest.mark.parametrize(
    ("signature", "secret", "code"),
    [("", SECRET, "UNSIGNED"), (None, "another-secret-value-xyz", "BAD_SIGNATURE"),
     ("sha256=deadbeef", SECRET, "BAD_SIGNATURE")],
)
async def test_unsigned_or_wrongly_signed_bodies_are_refused_with_no_event(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
    signature: str | None, secret: str, code: str,
) -> None:
    await shipped_order(carrier_runtime)
    head = carrier_runtime.runner.head()
    response = await post(carrier_client, update("u1", "picked_up", clock.now()),
                          secret=secret, signature=signature)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert carrier_runtime.runner.head() == head


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "MALFORMED"),
        (b"[1, 2]", 400, "MALFORMED"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit"})
         .encode(), 400, "MALFORMED"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "2026-11-22T10:00:00"}).encode(), 400, "MALFORMED"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "teleported",
                     "occurred_at": "2026-11-22T10:00:00+00:00"}).encode(), 422, "VALIDATION"),
        (json.dumps({"update_id": "u1", "tracking_number": "NOPE", "status": "in_transit",
                     "occurred_at": "2026-11-22T10:00:00+00:00"}).encode(), 404,
         "UNKNOWN_SHIPMENT"),
    ],
)
async def test_malformed_updates_get_a_clear_error_and_record_nothing(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, body: bytes, status: int,
    code: str,
) -> None:
    await shipped_order(carrier_runtime)
    head = carrier_runtime.runner.head()
    response = await post(carrier_client, None, raw=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert carrier_runtime.runner.head() == head


async def test_an_unknown_carrier_is_not_found(
    carrier_client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    response = await post(carrier_client, update("u1", "picked_up", clock.now()), carrier="ups")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UNKNOWN_CARRIER"


async def test_a_failed_attempt_opens_an_exception_and_time_reveals_lateness(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock
) -> None:
    _order, shipment = await shipped_order(carrier_runtime)
    response = await post(carrier_client, update("u1", "delivery_attempt_failed", clock.now(),
                                                 note="nobody home"))
    assert response.status_code == 202
    state = await asyncio.to_thread(carrier_runtime.shipping.get, shipment)
    assert state.open_exceptions == {"failed_attempt": "nobody home"}

    clock.advance(timedelta(days=5))  # past the standard 3-day promise
    head = carrier_runtime.runner.head()
    for _ in range(200):
        if carrier_runtime.runner.position("shipment_tracking") >= head:
            break
        await asyncio.sleep(0.02)
    await asyncio.to_thread(carrier_runtime.scheduler.tick)
    state = await asyncio.to_thread(carrier_runtime.shipping.get, shipment)
    assert set(state.open_exceptions) == {"failed_attempt", "late", "no_movement"}

    def recorded() -> int:
        return len(list(carrier_runtime.app.events.get(shipment)))

    events_after = await asyncio.to_thread(recorded)
    await asyncio.to_thread(carrier_runtime.scheduler.tick)  # found once, not again
    assert await asyncio.to_thread(recorded) == events_after


def test_the_signature_is_hmac_sha256_of_the_timestamp_and_the_raw_body() -> None:
    body = b'{"a":1}'
    expected = "sha256=" + hmac.new(SECRET.encode(), b'1700000000.{"a":1}',
                                    hashlib.sha256).hexdigest()
    assert signed_headers(SECRET, body, 1_700_000_000) == {
        TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: expected}


async def test_a_tracking_number_identifies_one_parcel_only(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime
) -> None:
    order, shipment = await shipped_order(carrier_runtime)

    def second_order_reusing_the_number() -> None:
        member = carrier_runtime.members.register(
            {"name": "Max", "email": "max@example.com"}, meta("anon", Role.ANONYMOUS)
        ).aggregate_id
        own = meta(str(member), Role.MEMBER)
        lines = [{"product_id": "p", "sku": "s", "name": "Cup", "quantity": 1,
                  "unit_price": 9_000}]
        other = carrier_runtime.orders.place(member, stocked(carrier_runtime, lines), None, 0,
                                             "o2", own).aggregate_id
        carrier_runtime.orders.pay(other, "card", carrier_runtime.orders.get(other).total,
                                   None, "p2", own)
        address = {"recipient": "Max", "line1": "3 Hill Rd", "city": "Suzhou", "country": "CN"}
        carrier_runtime.shipping.create(
            other, None, "home_delivery", "standard", None, None, address, None, "SF", "SF1",
            meta("agent", Role.AGENT, "packed"),
        )

    with pytest.raises(ValidationError, match="another parcel"):
        await asyncio.to_thread(second_order_reusing_the_number)
    # The same parcel created again (a retry) is simply found.
    retried = await asyncio.to_thread(
        carrier_runtime.shipping.create, order, None, "home_delivery", "standard", None, None,
        {"recipient": "Lin", "line1": "2 Lake Rd", "city": "Hangzhou", "country": "CN"}, None,
        "sf", "SF1", meta("agent", Role.AGENT, "retry"),
    )
    assert retried.aggregate_id == shipment and retried.position is None


@pytest.mark.parametrize(("age", "code"), [(301, "STALE"), (-301, "STALE")])
async def test_a_timestamp_outside_the_replay_window_is_refused(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
    age: int, code: str,
) -> None:
    """A captured request replayed later (or signed with a clock far ahead) is worthless:
    the timestamp is signed, so it cannot be refreshed without the secret."""
    await shipped_order(carrier_runtime)
    head = carrier_runtime.runner.head()
    response = await post(carrier_client, update("u1", "picked_up", clock.now()),
                          timestamp=int(time.time()) - age)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert carrier_runtime.runner.head() == head


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (deep(5_000), 400, "MALFORMED", None),
        (b'{"update_id": ' + deep(5_000) + b"}", 400, "MALFORMED", None),
        (b"null", 400, "MALFORMED", None),
        (b"1", 400, "MALFORMED", None),
        (b'"text"', 400, "MALFORMED", None),
        (b"\xef\xbb\xbf{}", 400, "MALFORMED", None),
        (b'{"a": NaN}', 400, "MALFORMED", None),
        (b"\xff", 400, "MALFORMED", None),
        (b"", 400, "MALFORMED", None),
        (json.dumps({"update_id": "u\u0000", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "2026-11-22T10:00:00+00:00"}).encode(), 422, "VALIDATION",
         "update_id"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "0001-01-01T00:00:00+14:00"}).encode(), 422, "VALIDATION",
         "occurred_at"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "2026-11-22T10:00:00+23:59"}).encode(), 422, "VALIDATION",
         "occurred_at"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "2000-01-01T00:00:00+00:00"}).encode(), 422, "VALIDATION",
         "occurred_at"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "NOW", "eta": "9999-12-31T23:59:59-23:59"}).encode(),
         400, "MALFORMED", "occurred_at"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "{now}", "eta": "9999-12-31T23:59:59-23:59"}).encode(),
         422, "VALIDATION", "eta"),
        (json.dumps({"update_id": "u1", "tracking_number": "SF1", "status": "in_transit",
                     "occurred_at": "{now}", "eta": "2201-01-01T00:00:00+00:00"}).encode(),
         422, "VALIDATION", "eta"),
    ],
)
async def test_hostile_bodies_are_client_errors_naming_the_field_and_record_nothing(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
    body: bytes, status: int, code: str, field: str | None,
) -> None:
    """Issue 14: deep nesting, non-objects, NUL, year-0001 or year-2000 times and an `eta`
    at the end of the calendar with a -23:59 offset are refused at the edge (never a 500,
    never an overflow in a projection)."""
    await shipped_order(carrier_runtime)
    head = carrier_runtime.runner.head()
    body = body.replace(b"{now}", clock.now().isoformat().encode())
    response = await post(carrier_client, None, raw=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"].get("field") == field
    assert carrier_runtime.runner.head() == head


async def test_an_oversized_body_is_refused_from_its_declared_length(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime
) -> None:
    head = carrier_runtime.runner.head()
    body = b'{"note": "' + b"x" * (64 * 1024) + b'"}'
    response = await post(carrier_client, None, raw=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "TOO_LARGE"
    assert carrier_runtime.runner.head() == head


async def test_an_oversized_streamed_body_is_refused_before_it_is_read_whole(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime
) -> None:
    """No Content-Length (chunked): the count while reading stops it, and the sender's
    stream is not drained to the end."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1_000):  # up to 16 MB if it were all read
            sent += 1
            yield b"x" * 16_384

    response = await carrier_client.post(
        "/webhooks/carriers/sf", content=chunks(),
        headers={"Content-Type": "application/json", **signed_headers(SECRET, b"")},
    )
    assert response.status_code == 413
    assert sent < 1_000


async def test_an_eta_with_an_odd_offset_inside_the_range_is_tracked(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock
) -> None:
    """Accepted values never overflow downstream: the projection shows the same instant."""
    _order, shipment = await shipped_order(carrier_runtime)
    eta = "2200-12-31T23:59:59-13:59"
    response = await post(carrier_client, update("u1", "in_transit", clock.now(), eta=eta))
    assert response.status_code == 202, response.text
    head = carrier_runtime.runner.head()
    for _ in range(200):
        if carrier_runtime.runner.position("shipment_tracking") >= head:
            break
        await asyncio.sleep(0.02)
    state = await asyncio.to_thread(carrier_runtime.shipping.get, shipment)
    assert datetime.fromisoformat(state.eta) == datetime.fromisoformat(eta)
