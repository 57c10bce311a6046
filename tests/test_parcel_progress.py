"""How a parcel's carrier scans move it and its order.

An order ships when a carrier picks a parcel up, not when a label is printed (issue 16
item 4). A parcel's final scan takes effect whatever its timestamp says (carrier clocks
drift).

Reproductions from issue 16 item 1: signed carrier updates `picked_up` at now-60 s,
`out_for_delivery` at now-10 s and then `delivered` at now-20 s left the parcel out for
delivery, the order shipped, no delivered notice, and RESHIP still offered. The aggregate,
the tracking read model and the notices must all agree that the parcel was delivered,
while the timeline stays in time order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from strawberry.relay import to_base64

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.errors import InvalidTransitionError
from domain.metadata import Role
from domain.shipment import status_entry, status_rank
from projections.shipping_tables import notifications
from tests.graphql import gql, token_for
from tests.test_carrier_webhooks import carrier_client as carrier_client_fixture
from tests.test_carrier_webhooks import carrier_runtime as carrier_runtime_fixture
from tests.test_carrier_webhooks import meta, post, shipped_order, update

# The carrier webhook's fixtures, under the names the tests below ask for.
carrier_runtime = carrier_runtime_fixture
carrier_client = carrier_client_fixture

TRACKING = """query($id: ID!) { shipment(id: $id) { status timeline { status } } }"""


def entry(status: str, at: str, recorded: str = "r") -> dict[str, str]:
    return {"status": status, "occurred_at": at, "recorded_at": recorded}


def test_a_final_status_outranks_any_later_non_final_one() -> None:
    assert status_rank("delivered", "10:00", "a") > status_rank("out_for_delivery", "10:01", "b")
    assert status_rank("in_transit", "10:01", "a") > status_rank("picked_up", "10:00", "b")
    assert status_rank("collected", "10:00", "b") < status_rank("returned_to_sender", "11:00", "a")


def test_the_deciding_entry_does_not_depend_on_arrival_order() -> None:
    timeline = [entry("picked_up", "09:59"), entry("out_for_delivery", "10:50"),
                entry("delivered", "10:40")]
    assert status_entry(timeline)["status"] == "delivered"
    assert status_entry(list(reversed(timeline)))["status"] == "delivered"
    assert status_entry([]) is None


async def _settled(runtime: Runtime) -> None:
    for _ in range(250):
        if runtime.runner.position("notifications") >= runtime.runner.head() and \
                runtime.runner.position("shipment_tracking") >= runtime.runner.head():
            return
        await asyncio.sleep(0.02)


async def _final_scan_arrives_late(
    client: httpx.AsyncClient, runtime: Runtime, clock: AdjustableClock,
    updates: list[tuple[str, int]], final: str,
) -> None:
    order, shipment = await shipped_order(runtime)
    now = clock.now()
    for n, (status, seconds_ago) in enumerate(updates):
        response = await post(client, update(f"u{n}", status, now - timedelta(seconds=seconds_ago)))
        assert response.status_code == 202, response.text

    state = await asyncio.to_thread(runtime.shipping.get, shipment)
    assert state.status == final
    # The timeline stays ordered by when things happened, final scan included.
    assert [t["status"] for t in state.timeline] == [
        s for s, _ in sorted(updates, key=lambda u: -u[1])
    ]
    assert (await asyncio.to_thread(runtime.orders.get, order)).state == "delivered"

    await _settled(runtime)
    staff = token_for(Role.AGENT, "agent-1")
    body = await gql(client, TRACKING, {"id": _global_id(shipment)}, token=staff)
    assert body["data"]["shipment"]["status"] == final.upper()
    with runtime.sync_engine.connect() as conn:
        topics = conn.execute(
            select(notifications.c.topic).where(notifications.c.shipment_id == str(shipment))
        ).scalars().all()
    assert f"shipment.{final}" in topics


def _global_id(shipment_id: object) -> str:
    return to_base64("Shipment", str(shipment_id))


async def test_a_delivered_scan_stamped_before_out_for_delivery_still_delivers(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
) -> None:
    await _final_scan_arrives_late(
        carrier_client, carrier_runtime, clock,
        [("picked_up", 60), ("out_for_delivery", 10), ("delivered", 20)], "delivered",
    )


async def test_a_collected_scan_stamped_before_ready_for_pickup_still_completes(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
) -> None:
    await _final_scan_arrives_late(
        carrier_client, carrier_runtime, clock,
        [("picked_up", 60), ("ready_for_pickup", 5), ("collected", 6)], "collected",
    )


async def test_an_order_ships_when_the_carrier_picks_its_parcel_up_not_at_the_label(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
) -> None:
    order, _ = await shipped_order(carrier_runtime)
    assert (await asyncio.to_thread(carrier_runtime.orders.get, order)).state == "paid"
    # Labelled but not yet shipped: cancelling would send a parcel for a cancelled order.
    with pytest.raises(InvalidTransitionError):
        await asyncio.to_thread(carrier_runtime.orders.cancel, order, "member_request", None,
                                meta("member", Role.MEMBER))

    response = await post(carrier_client, update("u1", "picked_up", clock.now()))
    assert response.status_code == 202
    assert (await asyncio.to_thread(carrier_runtime.orders.get, order)).state == "shipped"
    await _settled(carrier_runtime)
    body = await gql(carrier_client, "query($id: ID!) { order(id: $id) { state history "
                     "{ state } } }", {"id": to_base64("Order", str(order))},
                     token=token_for(Role.AGENT, "agent-1"))
    states = [h["state"] for h in body["data"]["order"]["history"]]
    assert body["data"]["order"]["state"] == "SHIPPED" and states[-2:] == ["PAID", "SHIPPED"]
    # A repeated or later scan changes nothing more.
    await post(carrier_client, update("u2", "in_transit", clock.now()))
    assert (await asyncio.to_thread(carrier_runtime.orders.get, order)).state == "shipped"


async def test_a_reused_update_id_with_other_content_is_a_conflict_and_statuses_ignore_case(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
) -> None:
    _, shipment = await shipped_order(carrier_runtime)
    at = clock.now() - timedelta(minutes=5)
    first = await post(carrier_client, update("u1", "PICKED_UP", at, location="Hub"))
    assert first.status_code == 202 and first.json()["duplicate"] is False
    again = await post(carrier_client, update("u1", "picked_up", at, location="Hub"))
    assert again.status_code == 202 and again.json()["duplicate"] is True
    head = carrier_runtime.runner.head()
    changed = await post(carrier_client, update("u1", "in_transit", at, location="Hub"))
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert carrier_runtime.runner.head() == head
    state = await asyncio.to_thread(carrier_runtime.shipping.get, shipment)
    assert [t["status"] for t in state.timeline] == ["picked_up"]


async def test_a_label_dated_days_before_the_parcel_existed_is_refused(
    carrier_client: httpx.AsyncClient, carrier_runtime: Runtime, clock: AdjustableClock,
) -> None:
    await shipped_order(carrier_runtime)
    response = await post(carrier_client, update(
        "u1", "label_created", clock.now() - timedelta(days=3)))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "occurred_at"
