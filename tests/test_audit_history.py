"""Auditors follow any aggregate's history and state through one pair of queries."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from strawberry.relay import to_base64

from api.schema.audit import audit_target
from api.schema.common import ApiError
from domain.recommender import REGISTRY_ID
from tests.graphql import data, gql
from tests.test_erasure_and_audit import AUDITOR, AUDITOR_WITH_PII
from tests.test_orders_api import AGENT, line, pay, place, shopper

HISTORY = """query($id: ID!, $first: Int, $after: String) {
  history(id: $id, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { aggregateId version type actorId actorRole channel reason personalData
                   data } } } }"""
AS_OF = """query($id: ID!, $version: Int, $at: DateTime) {
  asOf(id: $id, version: $version, at: $at) { id type version at personalData data } }"""


async def history(client: httpx.AsyncClient, id: str, token: str = AUDITOR,
                  **args: Any) -> dict[str, Any]:
    return await gql(client, HISTORY, {"id": id, **args}, token=token)


def nodes(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [edge["node"] for edge in data(body)["history"]["edges"]]


async def test_an_orders_history_and_state_at_each_version(client: httpx.AsyncClient) -> None:
    ann = await shopper(client)
    order = await pay(client, ann, await place(client, ann, [line("tent-2p", 1, 6_500)]))
    events = nodes(await history(client, order["id"]))
    assert events[0]["type"] == "Order.Placed" and events[-1]["type"] == "Order.Paid"
    assert events[0]["actorRole"] == "member" and events[0]["channel"] == "web"
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert {e["aggregateId"] for e in events} == {order["orderId"]}

    page = data(await history(client, order["id"], first=1))["history"]
    assert page["totalCount"] == len(events) and page["pageInfo"]["hasNextPage"]
    rest = nodes(await history(client, order["id"], after=page["pageInfo"]["endCursor"]))
    assert [e["version"] for e in rest] == list(range(2, len(events) + 1))

    placed = data(await gql(client, AS_OF, {"id": order["id"], "version": 1},
                            token=AUDITOR))["asOf"]
    assert (placed["type"], placed["version"], placed["data"]["state"]) == ("Order", 1,
                                                                          "placed")
    latest = data(await gql(client, AS_OF, {"id": order["id"], "at": "2199-01-01T00:00:00Z"},
                            token=AUDITOR))["asOf"]
    assert latest["data"]["state"] == "paid" and latest["version"] == len(events)


async def test_a_loyalty_account_coupon_and_product_each_have_a_history(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    await place(client, ann, [line("tent-2p", 1, 6_500)])
    me = data(await gql(client, "{ me { loyalty { historyId } coupons { id } } }",
                        token=ann.token))["me"]
    account = nodes(await history(client, me["loyalty"]["historyId"]))
    assert account[0]["type"] == "LoyaltyAccount.Opened"
    (coupon,) = me["coupons"]  # the welcome coupon
    assert nodes(await history(client, coupon["id"]))[0]["type"] == "Coupon.Issued"
    product = nodes(await history(client, to_base64("Product", "tent-2p")))
    assert product[0]["type"] == "CatalogueProduct.Listed"
    assert product[0]["actorRole"] == "admin"


async def test_personal_data_in_history_is_masked_without_the_scope(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    order = await pay(client, ann, await place(client, ann, [line("tent-2p", 1, 6_500)]))
    ship = await gql(client, """mutation($input: CreateShipmentInput!) {
        createShipment(input: $input) { shipment { id } userErrors { field message } } }""",
        {"input": {"orderId": order["id"], "method": "HOME_DELIVERY", "carrier": "SF",
                   "trackingNumber": f"SF{uuid.uuid4().hex[:10].upper()}",
                   "address": {"recipient": "Ann Lee", "line1": "1 Privet Drive",
                               "city": "Shenzhen", "country": "CN"}}}, token=AGENT)
    shipment_id = data(ship)["createShipment"]["shipment"]["id"]
    (created, *_) = nodes(await history(client, shipment_id))
    assert created["personalData"] == "masked"
    assert "Privet" not in str(created["data"])
    (created, *_) = nodes(await history(client, shipment_id, token=AUDITOR_WITH_PII))
    assert created["personalData"] == "visible"
    assert created["data"]["personal"]["address"]["line1"] == "1 Privet Drive"
    state = data(await gql(client, AS_OF, {"id": shipment_id, "version": 1},
                           token=AUDITOR))["asOf"]
    assert state["personalData"] == "masked" and "Privet" not in str(state["data"])


async def test_history_is_for_auditors_and_names_what_is_wrong_with_an_id(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("tent-2p", 1, 6_500)])
    for token in (ann.token, AGENT):
        body = await history(client, order["id"], token=token)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    cases = [
        ("not-a-global-id", "VALIDATION"),
        (to_base64("Notification", str(uuid.uuid4())), "VALIDATION"),
        (to_base64("Order", "not-a-uuid"), "VALIDATION"),
        (to_base64("Order", str(uuid.uuid4())), "NOT_FOUND"),
    ]
    for id, code in cases:
        body = await history(client, id)
        assert body["errors"][0]["extensions"] == {"code": code, "field": "id"}, id
        assert body["data"] is None


def test_a_recommender_models_history_is_its_versions_events_in_the_registry() -> None:
    target = audit_target(to_base64("RecommenderModel", "3"))
    assert (target.aggregate_id, target.model_version) == (REGISTRY_ID, 3)
    assert target.concerns(SimpleNamespace(version=3))
    assert target.concerns(SimpleNamespace(version=4, previous=3))  # 3 retired by 4
    assert not target.concerns(SimpleNamespace(version=4, previous=2))
    assert not target.concerns(SimpleNamespace(slot="2026-12-01"))
    with pytest.raises(ApiError):
        audit_target(to_base64("RecommenderModel", "three"))
