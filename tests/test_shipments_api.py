"""Shipments through the GraphQL API: parcels, delivery options, tracking, exceptions and
their resolutions, ratings, complaints, the staff view and the member's notifications.

Driven as the back office (staff tokens) and the shop (member tokens) would drive it, over
HTTP; business time moves with the test clock. "Nothing recorded" is checked against the
event store's head position.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from strawberry.relay import GlobalID

from api.auth import PII_SCOPE
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, token_for
from tests.test_behaviour_tracking import stored_states
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    AUDITOR,
    Shopper,
    head,
    line,
    mutate,
    ok,
    pay,
    place,
    read_order,
    shopper,
    tick,
)

SHIPMENT_FIELDS = """
  id shipmentId orderId memberId carrier trackingNumber method speed priorityDispatch
  pickupPointId pickupPoint { pointId name address city openingHours }
  window { start end }
  items { lineId quantity }
  packaging { giftWrap eco }
  status statusAt eta promisedBy
  timeline { updateId status occurredAt location note }
  exceptionState openExceptions { kind detail at }
  resolutions { resolution at pickupPointId window { start end } promisedBy exceptions }
  rating { speed courierAttitude packagingCondition comment at } rated
  complaint { text filedAt answer answeredAt answeredBy responseTimeSeconds }
  replaces reshippedAs createdAt deliveredAt version
"""
USER_ERRORS = "userErrors { field message code }"


def _mutation(name: str, input_type: str, extra: str = "") -> str:
    return (
        f"mutation M($input: {input_type}!) {{ {name}(input: $input) "
        f"{{ position shipment {{ {SHIPMENT_FIELDS} }} {extra} {USER_ERRORS} }} }}"
    )


CREATE = _mutation("createShipment", "CreateShipmentInput")
CHANGE = _mutation("changeDeliveryOptions", "ChangeDeliveryOptionsInput")
TRACK = _mutation("recordTrackingEvent", "RecordTrackingEventInput")
RESOLVE = _mutation("resolveShipmentException", "ResolveShipmentExceptionInput",
                    f"replacement {{ {SHIPMENT_FIELDS} }}")
RATE = _mutation("rateDelivery", "RateDeliveryInput")
COMPLAIN = _mutation("fileDeliveryComplaint", "FileDeliveryComplaintInput")
ANSWER = _mutation("answerDeliveryComplaint", "AnswerDeliveryComplaintInput")
SHIPMENT = f"query S($id: ID!) {{ shipment(id: $id) {{ {SHIPMENT_FIELDS} }} }}"
SHIPMENTS = """
query L($filter: ShipmentFilterInput, $first: Int, $after: String) {
  shipments(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { cursor node { id status exceptionState rated } }
  }
}
"""
ORDER_SHIPMENTS = """
query O($id: ID!) { order(id: $id) { state shipments { id status items { lineId quantity } } } }
"""
NOTIFICATIONS = """
query N($first: Int, $after: String) {
  me { notifications(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id notificationId kind topic shipmentId orderId title body channels
                   createdAt } }
  } }
}
"""

ADDRESS = {"recipient": "Ann Lee", "line1": "88 Nanshan Rd", "city": "Hangzhou",
           "country": "CN", "phone": "+8613800000000"}


# -- helpers ----------------------------------------------------------------------------------


def error_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The single user error of a rejected mutation, which returned no result."""
    assert len(payload["userErrors"]) == 1, payload["userErrors"]
    assert payload["shipment"] is None and payload["position"] is None
    error: dict[str, Any] = payload["userErrors"][0]
    return error


async def paid(client: httpx.AsyncClient, who: Shopper,
               lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A paid order: by default two tents (L1) and a mug (L2)."""
    lines = lines or [line("tent-2p", 2, 6_500), line("mug", 1, 3_000)]
    return await pay(client, who, await place(client, who, lines))


async def ship(client: httpx.AsyncClient, order: dict[str, Any], *,
               items: list[dict[str, Any]] | None = None, token: str = AGENT,
               **extra: Any) -> dict[str, Any]:
    """A parcel for `order` (all that is left unless `items`), sent home."""
    fields: dict[str, Any] = {
        "orderId": order["id"], "method": "HOME_DELIVERY", "address": ADDRESS,
        "carrier": "SF", "trackingNumber": f"SF{uuid.uuid4().hex[:10].upper()}", **extra,
    }
    if items is not None:
        fields["items"] = items
    shipment: dict[str, Any] = ok(await mutate(client, CREATE, fields, token))["shipment"]
    return shipment


async def track(client: httpx.AsyncClient, shipment: dict[str, Any], update_id: str,
                status: str, occurred_at: datetime, token: str = AGENT,
                **extra: Any) -> dict[str, Any]:
    return await mutate(client, TRACK, {
        "shipmentId": shipment["id"], "updateId": update_id, "status": status,
        "occurredAt": occurred_at.isoformat(), **extra,
    }, token)


async def deliver_parcel(client: httpx.AsyncClient, shipment: dict[str, Any],
                         at: datetime) -> dict[str, Any]:
    delivered: dict[str, Any] = ok(await track(client, shipment, f"d-{shipment['shipmentId']}",
                                              "DELIVERED", at))["shipment"]
    return delivered


async def read_shipment(client: httpx.AsyncClient, shipment_id: str, token: str = AGENT,
                        headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    found: dict[str, Any] | None = data(await gql(
        client, SHIPMENT, {"id": shipment_id}, token=token, headers=headers))["shipment"]
    return found


async def listed(client: httpx.AsyncClient, filter: dict[str, Any] | None = None,
                 token: str = AGENT, headers: dict[str, str] | None = None,
                 **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = data(await gql(client, SHIPMENTS, {"filter": filter, **args},
                                          token=token, headers=headers))["shipments"]
    return page


def ids(page: dict[str, Any]) -> set[str]:
    return {edge["node"]["id"] for edge in page["edges"]}


def window(start: datetime, hours: int = 4) -> dict[str, str]:
    return {"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()}


def at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# -- creating parcels ---------------------------------------------------------------------------


async def test_parcels_cover_a_paid_order_partly_then_the_rest_and_never_more(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    placed = await place(client, ann, [line("tent-2p", 2, 6_500), line("mug", 1, 3_000)])

    before = head(live_runtime)
    unpaid = error_of(await mutate(client, CREATE, {
        "orderId": placed["id"], "method": "HOME_DELIVERY", "address": ADDRESS,
        "carrier": "SF", "trackingNumber": "SF1"}, AGENT))
    assert unpaid["code"] == "INVALID_TRANSITION" and "placed" in unpaid["message"]
    assert head(live_runtime) == before

    order = await pay(client, ann, placed)
    after_payment = head(live_runtime)
    by_member = error_of(await mutate(client, CREATE, {
        "orderId": order["id"], "method": "HOME_DELIVERY", "address": ADDRESS,
        "carrier": "SF", "trackingNumber": "SF1"}, ann.token))
    assert by_member["code"] == "FORBIDDEN"
    assert head(live_runtime) == after_payment

    first_input = {
        "orderId": order["id"], "items": [{"lineId": "L1", "quantity": 1}],
        "method": "HOME_DELIVERY", "address": ADDRESS, "carrier": "SF",
        "trackingNumber": "SF100", "packaging": {"giftWrap": True, "printedName": "Ann"},
    }
    created = ok(await mutate(client, CREATE, first_input, AGENT))
    first = created["shipment"]
    assert created["position"] > after_payment
    assert first["items"] == [{"lineId": "L1", "quantity": 1}]
    assert (first["method"], first["speed"], first["status"]) == (
        "HOME_DELIVERY", "STANDARD", "LABEL_CREATED")
    assert (first["carrier"], first["trackingNumber"]) == ("sf", "SF100")
    assert first["packaging"] == {"giftWrap": True, "eco": False}
    assert first["priorityDispatch"] is False  # a Regular member
    assert first["orderId"] == order["id"] and first["memberId"] == ann.id
    assert first["exceptionState"] == "NONE" and first["openExceptions"] == []
    assert first["timeline"] == [] and first["statusAt"] is None
    assert at(first["promisedBy"]) == clock.now() + timedelta(days=3)
    assert first["eta"] == first["promisedBy"]
    assert first["pickupPoint"] is None and first["window"] is None
    assert first["rating"] is None and first["complaint"] is None and first["rated"] is False
    # A label is not a shipment: the order ships when the carrier picks the parcel up.
    assert (await read_order(client, order["id"]))["state"] == "PAID"
    ok(await track(client, first, "pick-1", "PICKED_UP", clock.now()))
    assert (await read_order(client, order["id"]))["state"] == "PARTIALLY_SHIPPED"

    # A retry of the same label finds the parcel and records nothing.
    retried = ok(await mutate(client, CREATE, first_input, AGENT))
    assert retried["position"] is None and retried["shipment"]["id"] == first["id"]

    before = head(live_runtime)
    too_many = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "items": [{"lineId": "L1", "quantity": 2}],
    }, AGENT))
    assert (too_many["code"], too_many["field"]) == ("VALIDATION", "items.0.quantity")
    assert "only 1 left" in too_many["message"]
    nothing = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "items": []}, AGENT))
    assert (nothing["code"], nothing["field"]) == ("VALIDATION", "items")
    zero = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "items": [{"lineId": "L2", "quantity": 0}],
    }, AGENT))
    assert (zero["code"], zero["field"]) == ("VALIDATION", "items.0.quantity")
    no_address = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "address": None}, AGENT))
    assert (no_address["code"], no_address["field"]) == ("VALIDATION", "address")
    no_point = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "method": "PICKUP_POINT"}, AGENT))
    assert (no_point["code"], no_point["field"]) == ("VALIDATION", "pickupPointId")
    unknown_point = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF101", "method": "PICKUP_POINT",
        "pickupPointId": "PP-XX-99"}, AGENT))
    assert (unknown_point["code"], unknown_point["field"]) == ("VALIDATION", "pickupPointId")
    assert head(live_runtime) == before

    # Omitting the items ships everything left: the other tent and the mug.
    rest = ok(await mutate(client, CREATE, {
        "orderId": order["id"], "method": "PICKUP_POINT", "pickupPointId": "PP-SH-01",
        "speed": "EXPEDITED", "carrier": "ZTO", "trackingNumber": "ZT200",
        "reason": "expedited as an apology for the split parcel",  # above Ann's tier
    }, ADMIN))["shipment"]
    assert rest["items"] == [{"lineId": "L1", "quantity": 1}, {"lineId": "L2", "quantity": 1}]
    assert rest["method"] == "PICKUP_POINT" and rest["speed"] == "EXPEDITED"
    assert rest["pickupPoint"] == {
        "pointId": "PP-SH-01", "name": "Jing'an Station Kiosk", "address": "1 Jiangning Rd",
        "city": "Shanghai", "openingHours": "Mon-Sat 09:00-21:00"}
    assert at(rest["promisedBy"]) == clock.now() + timedelta(days=1)
    assert (await read_order(client, order["id"]))["state"] == "PARTIALLY_SHIPPED"
    ok(await track(client, rest, "pick-2", "PICKED_UP", clock.now()))
    assert (await read_order(client, order["id"]))["state"] == "SHIPPED"

    before = head(live_runtime)
    more = error_of(await mutate(client, CREATE, {
        **first_input, "trackingNumber": "SF102", "items": None}, AGENT))
    assert more["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before

    bad_id = error_of(await mutate(client, CREATE, {
        **first_input, "orderId": ann.id, "trackingNumber": "SF103"}, AGENT))
    assert (bad_id["code"], bad_id["field"]) == ("VALIDATION", "orderId")


async def test_packaging_and_address_default_to_the_members_delivery_preferences(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    body = await gql(client, """
      mutation P($input: SetMemberPreferencesInput!) {
        setMemberPreferences(input: $input) { userErrors { code message } }
      }""", {"input": {"delivery": {"defaultAddress": ADDRESS, "packaging": ["ECO"]}}},
                     token=ann.token)
    assert data(body)["setMemberPreferences"]["userErrors"] == []
    order = await paid(client, ann)
    parcel = ok(await mutate(client, CREATE, {
        "orderId": order["id"], "method": "HOME_DELIVERY", "carrier": "SF",
        "trackingNumber": "SF-PREF"}, AGENT))["shipment"]
    assert parcel["packaging"] == {"giftWrap": False, "eco": True}
    assert parcel["method"] == "HOME_DELIVERY"


async def test_pickup_points_are_listed_for_everyone(client: httpx.AsyncClient) -> None:
    points = data(await gql(client, "{ pickupPoints { pointId name city openingHours } }"))
    assert [p["pointId"] for p in points["pickupPoints"]] == [
        "PP-HZ-01", "PP-SH-01", "PP-BJ-01", "PP-SZ-01"]


# -- delivery options ---------------------------------------------------------------------------


async def test_delivery_options_change_until_the_carrier_has_the_parcel(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    parcel = await ship(client, await paid(client, ann))

    to_point = ok(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "PICKUP_POINT", "pickupPointId": "PP-HZ-01",
    }, ann.token))["shipment"]
    assert to_point["method"] == "PICKUP_POINT"
    assert to_point["pickupPoint"]["name"] == "West Lake Locker"

    slot = window(clock.now() + timedelta(days=2, hours=1))
    scheduled = ok(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "SCHEDULED", "window": slot,
    }, ann.token))["shipment"]
    assert scheduled["method"] == "SCHEDULED" and scheduled["pickupPoint"] is None
    assert at(scheduled["window"]["start"]) == at(slot["start"])
    assert at(scheduled["window"]["end"]) == at(slot["end"])

    before = head(live_runtime)
    past = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "SCHEDULED",
        "window": window(clock.now() - timedelta(hours=5))}, ann.token))
    assert (past["code"], past["field"]) == ("VALIDATION", "window")
    too_long = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "SCHEDULED",
        "window": window(clock.now() + timedelta(days=1), hours=30)}, ann.token))
    assert (too_long["code"], too_long["field"]) == ("VALIDATION", "window")
    unknown = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "PICKUP_POINT", "pickupPointId": "nowhere",
    }, ann.token))
    assert (unknown["code"], unknown["field"]) == ("VALIDATION", "pickupPointId")
    not_theirs = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "PICKUP_POINT", "pickupPointId": "PP-HZ-01",
    }, bob.token))
    assert not_theirs["code"] == "FORBIDDEN"
    no_reason = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "HOME_DELIVERY"}, AGENT))
    assert no_reason["code"] == "REASON_REQUIRED"
    anonymous = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "HOME_DELIVERY"}, None))
    assert anonymous["code"] == "UNAUTHENTICATED"
    missing = error_of(await mutate(client, CHANGE, {
        "shipmentId": str(GlobalID("Shipment", str(uuid.uuid4()))), "method": "HOME_DELIVERY"},
        ann.token))
    assert (missing["code"], missing["field"]) == ("NOT_FOUND", "shipmentId")
    assert head(live_runtime) == before

    # Staff may change it for the member, with a reason; home delivery keeps the address.
    home = ok(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "HOME_DELIVERY",
        "reason": "member called the hotline"}, AGENT))["shipment"]
    assert home["method"] == "HOME_DELIVERY" and home["window"] is None

    ok(await track(client, parcel, "u1", "PICKED_UP", clock.now() - timedelta(minutes=5)))
    before = head(live_runtime)
    late = error_of(await mutate(client, CHANGE, {
        "shipmentId": parcel["id"], "method": "PICKUP_POINT", "pickupPointId": "PP-HZ-01",
    }, ann.token))
    assert late["code"] == "INVALID_TRANSITION" and "picked_up" in late["message"]
    assert head(live_runtime) == before


# -- tracking -----------------------------------------------------------------------------------


async def test_tracking_updates_are_recorded_once_and_in_the_order_they_happened(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid(client, ann, [line("lamp", 1, 6_500)])
    parcel = await ship(client, order)
    t0 = clock.now() - timedelta(hours=12)

    picked = ok(await track(client, parcel, "u1", "PICKED_UP", t0, location="Hangzhou hub"))
    assert picked["shipment"]["status"] == "PICKED_UP"
    assert at(picked["shipment"]["statusAt"]) == t0
    ok(await track(client, parcel, "u2", "IN_TRANSIT", t0 + timedelta(hours=2)))
    eta = clock.now() + timedelta(hours=6)
    out = ok(await track(client, parcel, "u4", "OUT_FOR_DELIVERY", t0 + timedelta(hours=8),
                         location="Xihu depot", eta=eta.isoformat()))["shipment"]
    assert out["status"] == "OUT_FOR_DELIVERY" and at(out["eta"]) == eta

    # An update that happened earlier but arrives late joins the timeline in its place.
    late = ok(await track(client, parcel, "u3", "IN_TRANSIT", t0 + timedelta(hours=5),
                          location="Shanghai hub", note="sorted"))["shipment"]
    assert late["status"] == "OUT_FOR_DELIVERY"
    assert at(late["statusAt"]) == t0 + timedelta(hours=8)
    assert [(u["updateId"], u["status"]) for u in late["timeline"]] == [
        ("u1", "PICKED_UP"), ("u2", "IN_TRANSIT"), ("u3", "IN_TRANSIT"),
        ("u4", "OUT_FOR_DELIVERY")]
    assert late["timeline"][2]["location"] == "Shanghai hub"
    assert late["timeline"][2]["note"] == "sorted"

    # The same update delivered twice is recorded once.
    before = head(live_runtime)
    again = ok(await track(client, parcel, "u2", "IN_TRANSIT", t0 + timedelta(hours=2)))
    assert again["position"] is None and again["shipment"]["timeline"] == late["timeline"]
    assert head(live_runtime) == before

    future = error_of(await track(client, parcel, "u9", "IN_TRANSIT",
                                  clock.now() + timedelta(hours=1)))
    assert (future["code"], future["field"]) == ("VALIDATION", "occurredAt")
    by_member = error_of(await track(client, parcel, "u9", "DELIVERED", clock.now(),
                                     token=ann.token))
    assert by_member["code"] == "FORBIDDEN"
    by_auditor = error_of(await track(client, parcel, "u9", "DELIVERED", clock.now(),
                                      token=AUDITOR))
    assert by_auditor["code"] == "FORBIDDEN"
    assert head(live_runtime) == before

    delivered = ok(await track(client, parcel, "u5", "DELIVERED", t0 + timedelta(hours=10),
                               location="front door"))["shipment"]
    assert delivered["status"] == "DELIVERED"
    assert at(delivered["deliveredAt"]) == t0 + timedelta(hours=10)
    # A stale update after delivery stays in the timeline but the parcel stays delivered.
    stale = ok(await track(client, parcel, "u6", "OUT_FOR_DELIVERY",
                           t0 + timedelta(hours=9)))["shipment"]
    assert stale["status"] == "DELIVERED" and len(stale["timeline"]) == 6

    # The only parcel reached the member: the order is delivered and its return window runs.
    delivered_order = await read_order(client, order["id"])
    assert delivered_order["state"] == "DELIVERED"
    assert delivered_order["deliveredAt"] is not None


async def test_the_order_is_delivered_when_its_last_parcel_is(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid(client, ann)
    first = await ship(client, order, items=[{"lineId": "L1", "quantity": 2}])
    second = await ship(client, order)
    moment = clock.now() - timedelta(hours=1)

    await deliver_parcel(client, first, moment)
    # The second parcel is labelled but no carrier has it yet.
    assert (await read_order(client, order["id"]))["state"] == "PARTIALLY_SHIPPED"
    # Collected at a pickup point counts as received too.
    collected = ok(await track(client, second, "c-1", "COLLECTED", moment))["shipment"]
    assert collected["status"] == "COLLECTED" and collected["deliveredAt"] is not None
    delivered = await read_order(client, order["id"])
    assert delivered["state"] == "DELIVERED" and delivered["returnWindowClosesAt"] is not None


# -- exceptions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", ["RESCHEDULE", "SWITCH_TO_PICKUP", "RESHIP"])
async def test_a_failed_attempt_opens_an_exception_the_member_resolves(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock, resolution: str
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await paid(client, ann)
    parcel = await ship(client, order)
    t0 = clock.now() - timedelta(hours=6)
    ok(await track(client, parcel, "u1", "OUT_FOR_DELIVERY", t0))

    before = head(live_runtime)
    nothing_open = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "RESHIP"}, ann.token))
    assert nothing_open["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before

    failed = ok(await track(client, parcel, "u2", "DELIVERY_ATTEMPT_FAILED",
                            t0 + timedelta(hours=1), note="nobody home"))["shipment"]
    assert failed["status"] == "DELIVERY_ATTEMPT_FAILED"
    assert failed["exceptionState"] == "OPEN"
    assert [(e["kind"], e["detail"]) for e in failed["openExceptions"]] == [
        ("FAILED_ATTEMPT", "nobody home")]
    assert failed["openExceptions"][0]["at"] is not None
    assert ids(await listed(client, {"exception": True})) == {parcel["id"]}
    assert parcel["id"] not in ids(await listed(client, {"exception": False}))

    before = head(live_runtime)
    foreign = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "RESHIP"}, bob.token))
    assert foreign["code"] == "FORBIDDEN"
    staff_without_reason = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "RESHIP"}, AGENT))
    assert staff_without_reason["code"] == "REASON_REQUIRED"
    no_window = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "RESCHEDULE"}, ann.token))
    assert (no_window["code"], no_window["field"]) == ("VALIDATION", "window")
    no_point = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "SWITCH_TO_PICKUP"}, ann.token))
    assert (no_point["code"], no_point["field"]) == ("VALIDATION", "pickupPointId")
    assert head(live_runtime) == before

    slot = window(clock.now() + timedelta(days=1))
    choice: dict[str, Any] = {"shipmentId": parcel["id"], "resolution": resolution}
    if resolution == "RESCHEDULE":
        choice["window"] = slot
    elif resolution == "SWITCH_TO_PICKUP":
        choice["pickupPointId"] = "PP-BJ-01"
    resolved = ok(await mutate(client, RESOLVE, choice, ann.token))
    shipment = resolved["shipment"]
    assert shipment["id"] == parcel["id"]
    assert shipment["exceptionState"] == "RESOLVED" and shipment["openExceptions"] == []
    (record,) = shipment["resolutions"]
    assert record["resolution"] == resolution and record["exceptions"] == ["FAILED_ATTEMPT"]
    assert record["at"] is not None
    assert ids(await listed(client, {"exception": True})) == set()

    if resolution == "RESCHEDULE":
        assert shipment["method"] == "SCHEDULED"
        assert at(shipment["window"]["end"]) == at(slot["end"])
        assert at(shipment["promisedBy"]) == at(slot["end"])
        assert resolved["replacement"] is None
        final = shipment
    elif resolution == "SWITCH_TO_PICKUP":
        assert shipment["method"] == "PICKUP_POINT"
        assert shipment["pickupPoint"]["city"] == "Beijing"
        assert record["pickupPointId"] == "PP-BJ-01"
        assert resolved["replacement"] is None
        final = shipment
    else:
        replacement = resolved["replacement"]
        assert replacement is not None and replacement["id"] != parcel["id"]
        assert shipment["reshippedAs"] == replacement["id"]
        assert replacement["replaces"] == parcel["id"]
        assert replacement["items"] == parcel["items"]
        assert replacement["trackingNumber"] == f"{parcel['trackingNumber']}-R"
        assert replacement["status"] == "LABEL_CREATED"
        assert at(replacement["promisedBy"]) == clock.now() + timedelta(days=3)
        final = replacement

    before = head(live_runtime)
    twice = error_of(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "RESHIP"}, ann.token))
    assert twice["code"] == "INVALID_TRANSITION"
    assert head(live_runtime) == before

    await deliver_parcel(client, final, clock.now())
    assert (await read_order(client, order["id"]))["state"] == "DELIVERED"


async def test_a_carrier_reported_delay_is_an_exception_staff_resolve_with_a_reason(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    parcel = await ship(client, await paid(client, ann))
    delayed = ok(await track(client, parcel, "u1", "DELAYED",
                             clock.now() - timedelta(hours=1)))["shipment"]
    assert [e["kind"] for e in delayed["openExceptions"]] == ["CARRIER_REPORTED"]
    resolved = ok(await mutate(client, RESOLVE, {
        "shipmentId": parcel["id"], "resolution": "SWITCH_TO_PICKUP",
        "pickupPointId": "PP-SZ-01", "reason": "member asked by phone"}, ADMIN))
    assert resolved["shipment"]["exceptionState"] == "RESOLVED"


# -- feedback -----------------------------------------------------------------------------------


async def test_a_received_parcel_is_rated_once_and_a_complaint_is_answered_with_its_time(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    parcel = await ship(client, await paid(client, ann))
    rating = {"shipmentId": parcel["id"], "speed": 5, "courierAttitude": 4,
              "packagingCondition": 3, "comment": "  quick,   friendly "}

    before = head(live_runtime)
    early = error_of(await mutate(client, RATE, rating, ann.token))
    assert early["code"] == "INVALID_TRANSITION" and "label_created" in early["message"]
    assert head(live_runtime) == before

    await deliver_parcel(client, parcel, clock.now() - timedelta(minutes=30))
    assert parcel["id"] in ids(await listed(client, {"unrated": True}))

    before = head(live_runtime)
    out_of_range = error_of(await mutate(client, RATE, {**rating, "speed": 6}, ann.token))
    assert (out_of_range["code"], out_of_range["field"]) == ("VALIDATION", "speed")
    zero = error_of(await mutate(client, RATE, {**rating, "packagingCondition": 0}, ann.token))
    assert (zero["code"], zero["field"]) == ("VALIDATION", "packagingCondition")
    by_staff = error_of(await mutate(client, RATE, rating, AGENT))
    assert by_staff["code"] == "FORBIDDEN"
    by_other = error_of(await mutate(client, RATE, rating, bob.token))
    assert by_other["code"] == "FORBIDDEN"
    assert head(live_runtime) == before

    rated = ok(await mutate(client, RATE, rating, ann.token))["shipment"]
    assert rated["rated"] is True
    assert {k: v for k, v in rated["rating"].items() if k != "at"} == {
        "speed": 5, "courierAttitude": 4, "packagingCondition": 3,
        "comment": "quick, friendly"}
    assert at(rated["rating"]["at"]) == clock.now()
    assert parcel["id"] not in ids(await listed(client, {"unrated": True}))
    assert parcel["id"] in ids(await listed(client, {"unrated": False}))
    before = head(live_runtime)
    again = error_of(await mutate(client, RATE, rating, ann.token))
    assert again["code"] == "INVALID_TRANSITION" and "already" in again["message"]
    assert head(live_runtime) == before

    complaint = {"shipmentId": parcel["id"], "text": "The box was crushed."}
    empty = error_of(await mutate(client, COMPLAIN, {**complaint, "text": "   "}, ann.token))
    assert (empty["code"], empty["field"]) == ("VALIDATION", "text")
    not_yet = error_of(await mutate(client, ANSWER, {**complaint, "text": "Sorry!"}, AGENT))
    assert not_yet["code"] == "INVALID_TRANSITION"
    assert error_of(await mutate(client, COMPLAIN, complaint, bob.token))["code"] == "FORBIDDEN"
    assert error_of(await mutate(client, COMPLAIN, complaint, AGENT))["code"] == "FORBIDDEN"

    filed = ok(await mutate(client, COMPLAIN, complaint, ann.token))["shipment"]["complaint"]
    assert filed["text"] == "The box was crushed."
    assert at(filed["filedAt"]) == clock.now()
    assert (filed["answer"], filed["answeredAt"], filed["responseTimeSeconds"]) == (
        None, None, None)
    twice = error_of(await mutate(client, COMPLAIN, complaint, ann.token))
    assert twice["code"] == "INVALID_TRANSITION"

    clock.advance(timedelta(hours=2, minutes=5))
    by_member = error_of(await mutate(client, ANSWER, {**complaint, "text": "ok"}, ann.token))
    assert by_member["code"] == "FORBIDDEN"
    answered = ok(await mutate(client, ANSWER, {
        **complaint, "text": "Sorry: a voucher is on its way."}, AGENT))["shipment"]
    reply = answered["complaint"]
    assert reply["answer"] == "Sorry: a voucher is on its way."
    assert at(reply["answeredAt"]) == clock.now()
    assert reply["responseTimeSeconds"] == 2 * 3600 + 5 * 60
    assert reply["answeredBy"] == "agent-7"
    # The member sees the answer, not which staff member wrote it.
    seen = await read_shipment(client, parcel["id"], ann.token)
    assert seen is not None
    assert seen["complaint"]["answer"] == reply["answer"]
    assert seen["complaint"]["answeredBy"] is None
    assert seen["complaint"]["responseTimeSeconds"] == 2 * 3600 + 5 * 60
    again_answer = error_of(await mutate(client, ANSWER, {**complaint, "text": "x"}, AGENT))
    assert again_answer["code"] == "INVALID_TRANSITION"


# -- reading ------------------------------------------------------------------------------------


async def test_a_member_can_neither_see_nor_act_on_another_members_shipment(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await paid(client, ann)
    parcel = await ship(client, order)

    mine = await read_shipment(client, parcel["id"], ann.token)
    assert mine is not None and mine["id"] == parcel["id"]
    assert await read_shipment(client, parcel["id"], AUDITOR) is not None
    assert await read_shipment(client, parcel["id"], bob.token) is None
    node = data(await gql(client, "query N($id: ID!) { node(id: $id) { id } }",
                          {"id": parcel["id"]}, token=bob.token))
    assert node["node"] is None
    anonymous = await gql(client, SHIPMENT, {"id": parcel["id"]})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    malformed = await gql(client, SHIPMENT, {"id": order["id"]}, token=ann.token)
    assert malformed["errors"][0]["extensions"]["code"] == "VALIDATION"

    staff_view = await gql(client, SHIPMENTS, {}, token=bob.token)
    assert staff_view["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    before = head(live_runtime)
    for document, fields in [
        (CHANGE, {"method": "PICKUP_POINT", "pickupPointId": "PP-HZ-01"}),
        (RESOLVE, {"resolution": "RESHIP"}),
        (COMPLAIN, {"text": "where is it?"}),
        (RATE, {"speed": 1, "courierAttitude": 1, "packagingCondition": 1}),
    ]:
        refused = error_of(await mutate(client, document, {"shipmentId": parcel["id"],
                                                           **fields}, bob.token))
        assert refused["code"] == "FORBIDDEN", (document, refused)
    assert head(live_runtime) == before
    assert data(await gql(client, ORDER_SHIPMENTS, {"id": order["id"]},
                          token=bob.token))["order"] is None


async def test_an_order_lists_its_parcels_oldest_first(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid(client, ann)
    first = await ship(client, order, items=[{"lineId": "L2", "quantity": 1}])
    clock.advance(timedelta(minutes=1))
    second = await ship(client, order)
    seen = data(await gql(client, ORDER_SHIPMENTS, {"id": order["id"]}, token=ann.token))
    assert [s["id"] for s in seen["order"]["shipments"]] == [first["id"], second["id"]]
    assert seen["order"]["shipments"][1]["items"] == [{"lineId": "L1", "quantity": 2}]


async def test_staff_filter_shipments_by_order_member_status_exception_lateness_and_rating(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    ann_order = await paid(client, ann)
    standard = await ship(client, ann_order, items=[{"lineId": "L1", "quantity": 2}])
    clock.advance(timedelta(minutes=1))
    express = await ship(client, ann_order, speed="EXPEDITED", reason="staff override")
    clock.advance(timedelta(minutes=1))
    bob_parcel = await ship(client, await paid(client, bob))

    everything = await listed(client)
    assert everything["totalCount"] == 3
    # Newest first.
    assert [e["node"]["id"] for e in everything["edges"]] == [
        bob_parcel["id"], express["id"], standard["id"]]
    assert ids(await listed(client, {"orderId": ann_order["id"]})) == {
        standard["id"], express["id"]}
    assert ids(await listed(client, {"memberId": bob.id})) == {bob_parcel["id"]}
    assert ids(await listed(client, {"late": True})) == set()

    # Pages follow one another.
    page = await listed(client, first=2)
    assert page["pageInfo"]["hasNextPage"] is True and len(page["edges"]) == 2
    rest = await listed(client, first=2, after=page["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in rest["edges"]] == [standard["id"]]
    assert rest["pageInfo"]["hasNextPage"] is False
    bad = await gql(client, SHIPMENTS, {"after": "nonsense"}, token=AGENT)
    assert bad["errors"][0]["extensions"]["code"] == "VALIDATION"
    too_big = await gql(client, SHIPMENTS, {"first": 10_000}, token=AGENT)
    assert too_big["errors"][0]["extensions"]["code"] == "VALIDATION"

    ok(await track(client, standard, "s1", "PICKED_UP", clock.now() - timedelta(hours=1)))
    await deliver_parcel(client, bob_parcel, clock.now() - timedelta(minutes=10))
    assert ids(await listed(client, {"status": "PICKED_UP"})) == {standard["id"]}
    assert ids(await listed(client, {"unrated": True})) == {bob_parcel["id"]}

    # Two days on, the expedited parcel (promised within a day) is late; the standard one
    # (three days) is not yet, and the delivered one never is.
    clock.advance(timedelta(days=2))
    assert ids(await listed(client, {"late": True})) == {express["id"]}
    assert ids(await listed(client, {"late": False})) == {standard["id"], bob_parcel["id"]}
    clock.advance(timedelta(days=2))
    assert ids(await listed(client, {"late": True})) == {express["id"], standard["id"]}
    assert ids(await listed(client, {"late": True, "orderId": ann_order["id"],
                                     "status": "LABEL_CREATED"})) == {express["id"]}
    auditor = await listed(client, {"late": True}, token=AUDITOR)
    assert auditor["totalCount"] == 2

    # A failed attempt opens an exception; the staff view finds it.
    ok(await track(client, standard, "s2", "DELIVERY_ATTEMPT_FAILED",
                   clock.now() - timedelta(minutes=1)))
    exceptions = await listed(client, {"exception": True})
    assert [(e["node"]["id"], e["node"]["exceptionState"]) for e in exceptions["edges"]] == [
        (standard["id"], "OPEN")]


async def test_the_scheduler_opens_exceptions_for_late_and_stalled_parcels(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    order = await paid(client, ann)
    express = await ship(client, order, items=[{"lineId": "L1", "quantity": 2}],
                         speed="EXPEDITED", reason="staff override")
    clock.advance(timedelta(minutes=1))
    stalled = await ship(client, order)
    ok(await track(client, stalled, "s1", "PICKED_UP", clock.now() - timedelta(minutes=1)))
    headers = await tick(live_runtime)
    assert (await listed(client, {"exception": True}, headers=headers))["totalCount"] == 0

    # Two days on: the expedited parcel missed its one-day promise, and the other has not
    # moved since the carrier picked it up (its three-day promise still holds).
    clock.advance(timedelta(days=2, hours=1))
    headers = await tick(live_runtime)
    opened = await listed(client, {"exception": True}, headers=headers)
    assert ids(opened) == {express["id"], stalled["id"]}
    late = await read_shipment(client, express["id"], headers=headers)
    quiet = await read_shipment(client, stalled["id"], headers=headers)
    assert late is not None and quiet is not None
    assert [e["kind"] for e in late["openExceptions"]] == ["LATE"]
    assert [e["kind"] for e in quiet["openExceptions"]] == ["NO_MOVEMENT"]
    assert ids(await listed(client, {"late": True}, headers=headers)) == {express["id"]}

    # Another tick finds them again but opens nothing twice.
    before = head(live_runtime)
    headers = await tick(live_runtime)
    assert head(live_runtime) == before
    again = await read_shipment(client, express["id"], headers=headers)
    assert again is not None and again["openExceptions"] == late["openExceptions"]

    # The member moves the late parcel to a pickup point: a new promise, nothing late.
    ok(await mutate(client, RESOLVE, {"shipmentId": express["id"],
                                      "resolution": "SWITCH_TO_PICKUP",
                                      "pickupPointId": "PP-HZ-01"}, ann.token))
    assert ids(await listed(client, {"late": True})) == set()
    assert ids(await listed(client, {"exception": True})) == {stalled["id"]}


# -- notifications ------------------------------------------------------------------------------


async def test_a_member_reads_their_delivery_notifications_newest_first(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    order = await paid(client, ann)
    parcel = await ship(client, order)
    t0 = clock.now() - timedelta(hours=3)
    ok(await track(client, parcel, "u1", "PICKED_UP", t0))
    ok(await track(client, parcel, "u2", "DELIVERY_ATTEMPT_FAILED", t0 + timedelta(hours=1)))
    await deliver_parcel(client, parcel, t0 + timedelta(hours=2))

    page = data(await gql(client, NOTIFICATIONS, {}, token=ann.token))["me"]["notifications"]
    nodes = [e["node"] for e in page["edges"]]
    topics = [n["topic"] for n in nodes]
    assert topics[0] == "shipment.delivered"
    assert "shipment.picked_up" in topics
    assert page["totalCount"] == len(nodes) >= 3
    exception = [n for n in nodes if n["kind"] == "EXCEPTION"]
    assert exception and all(n["shipmentId"] == parcel["id"] for n in nodes)
    assert all(n["orderId"] == order["id"] and n["title"] and n["body"] for n in nodes)
    assert all("inbox" in n["channels"] for n in nodes)

    first = data(await gql(client, NOTIFICATIONS, {"first": 1}, token=ann.token))
    first_page = first["me"]["notifications"]
    assert first_page["pageInfo"]["hasNextPage"] is True
    assert first_page["edges"][0]["node"] == nodes[0]
    second = data(await gql(client, NOTIFICATIONS, {
        "first": 1, "after": first_page["pageInfo"]["endCursor"]}, token=ann.token))
    assert second["me"]["notifications"]["edges"][0]["node"] == nodes[1]

    others = data(await gql(client, NOTIFICATIONS, {}, token=bob.token))
    assert others["me"]["notifications"]["totalCount"] == 0
    bad_cursor = await gql(client, NOTIFICATIONS, {"after": "nonsense"}, token=ann.token)
    assert bad_cursor["errors"][0]["extensions"]["code"] == "VALIDATION"

    # A notification is a node: its member (and staff) can fetch it by id, no one else.
    node = "query N($id: ID!) { node(id: $id) { ... on Notification { topic position } } }"
    mine = data(await gql(client, node, {"id": nodes[0]["id"]}, token=ann.token))["node"]
    assert mine["topic"] == "shipment.delivered" and mine["position"] > 0
    assert data(await gql(client, node, {"id": nodes[0]["id"]}, token=AGENT))["node"] == mine
    assert data(await gql(client, node, {"id": nodes[0]["id"]}, token=bob.token))[
        "node"] is None


async def test_a_parcels_address_printed_name_and_gift_message_read_back_only_for_those_who_may(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    bob = await shopper(client, "Bob Ma")
    parcel = await ship(client, await paid(client, ann), packaging={
        "giftWrap": True, "printedName": "For Mei", "giftMessage": "Happy birthday! Love, Ann"})
    query = """query($id: ID!) { shipment(id: $id) { packaging { giftWrap }
        personalDetails { address { recipient line1 city country phone }
                          printedName giftMessage } } }"""
    expected = {"address": {k: ADDRESS.get(k) for k in
                            ("recipient", "line1", "city", "country", "phone")},
                "printedName": "For Mei", "giftMessage": "Happy birthday! Love, Ann"}

    async def details(token: str) -> Any:
        body = await gql(client, query, {"id": parcel["id"]}, token=token,
                         headers={"X-Patron-Min-Position": str(head(live_runtime))})
        return body["data"]["shipment"] and body["data"]["shipment"]["personalDetails"]

    assert await details(ann.token) == expected
    assert await details(AGENT) == expected
    assert await details(token_for(Role.AUDITOR, "auditor-2", (PII_SCOPE,))) == expected
    assert await details(AUDITOR) is None  # masked without the personal-data scope
    assert await details(bob.token) is None  # another member does not see the parcel at all

    erased = await gql(client, """mutation($id: ID!) { eraseMember(input: {memberId: $id,
        reason: "GDPR request"}) { userErrors { code } } }""", {"id": ann.id}, token=ADMIN)
    assert erased["data"]["eraseMember"]["userErrors"] == []
    assert await details(AGENT) is None


async def test_members_choose_the_speeds_their_tier_allows_and_staff_override_with_a_reason(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)  # Regular: no expedited delivery
    order = await paid(client, ann)
    before = head(live_runtime)
    refused = error_of(await mutate(client, CREATE, {
        "orderId": order["id"], "method": "HOME_DELIVERY", "address": ADDRESS,
        "speed": "EXPEDITED", "carrier": "SF", "trackingNumber": "SFX1"}, AGENT))
    assert (refused["code"], refused["field"]) == ("REASON_REQUIRED", "reason")
    assert head(live_runtime) == before

    parcel = await ship(client, order)
    assert parcel["speed"] == "STANDARD"
    expedite = {"shipmentId": parcel["id"], "method": "HOME_DELIVERY", "speed": "EXPEDITED"}
    before = head(live_runtime)
    forbidden = error_of(await mutate(client, CHANGE, expedite, ann.token))
    assert (forbidden["code"], forbidden["field"]) == ("FORBIDDEN", "speed")
    assert head(live_runtime) == before

    # Gold includes expedited delivery (8,450 paid promotes her at once): the member
    # chooses it, and the promise follows.
    gold_order = await paid(client, ann, [line("tent-2p", 13, 65_000)])
    gold_parcel = await ship(client, gold_order)
    chosen = ok(await mutate(client, CHANGE, {**expedite, "shipmentId": gold_parcel["id"]},
                             ann.token))["shipment"]
    assert chosen["speed"] == "EXPEDITED"
    assert at(chosen["promisedBy"]) == clock.now() + timedelta(days=1)

    # Staff may expedite Ann's first parcel above her tier only with a reason.
    staff = ok(await mutate(client, CHANGE, {**expedite, "reason": "late-order apology"},
                            AGENT))["shipment"]
    assert staff["speed"] == "EXPEDITED"


async def test_what_a_member_wrote_about_a_parcel_is_erased_with_them(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock
) -> None:
    ann = await shopper(client)
    parcel = await ship(client, await paid(client, ann))
    await deliver_parcel(client, parcel, clock.now() - timedelta(minutes=30))
    ok(await mutate(client, RATE, {
        "shipmentId": parcel["id"], "speed": 2, "courierAttitude": 1, "packagingCondition": 3,
        "comment": "Courier shouted at my neighbour Mrs Wong"}, ann.token))
    ok(await mutate(client, COMPLAIN, {
        "shipmentId": parcel["id"], "text": "Left at 12 Harbour Road, door open"}, ann.token))
    ok(await mutate(client, ANSWER, {
        "shipmentId": parcel["id"], "text": "We are sorry."}, AGENT))
    # Stored under the member's key, never in clear.
    stored = stored_states(live_runtime)
    assert b"Mrs Wong" not in stored and b"Harbour Road" not in stored
    seen = await read_shipment(client, parcel["id"])
    assert seen is not None
    assert seen["rating"]["comment"] == "Courier shouted at my neighbour Mrs Wong"
    assert seen["complaint"]["text"] == "Left at 12 Harbour Road, door open"

    erased = await gql(client, """mutation($id: ID!) { eraseMember(input: {memberId: $id,
        reason: "GDPR request"}) { userErrors { code } } }""", {"id": ann.id}, token=ADMIN)
    assert erased["data"]["eraseMember"]["userErrors"] == []

    async def after_erasure() -> dict[str, Any]:
        found = await read_shipment(client, parcel["id"],
                                    headers={"X-Patron-Min-Position": str(head(live_runtime))})
        assert found is not None
        return found

    for shipment in (await after_erasure(),
                     # A rebuild from the immutable events cannot bring the texts back.
                     (live_runtime.runner.rebuild("shipment_tracking"), await after_erasure())[1]):
        assert shipment["rating"]["comment"] is None
        assert shipment["complaint"]["text"] is None
        # What is not personal stays for the service figures.
        assert (shipment["rating"]["speed"], shipment["rating"]["courierAttitude"]) == (2, 1)
        assert shipment["complaint"]["answer"] == "We are sorry."
