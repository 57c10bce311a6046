"""Orders are priced by the catalogue, never by the client; amounts and points are 64-bit.

Issue 13, items 1 and 3, driven over GraphQL the way a shop frontend and the back office
would: a member names products and quantities, the catalogue (read from the event store
in the order's own unit of work) prices them, and the order keeps that snapshot. The rules
in force here come from a TOML file named by PATRON_LOYALTY_RULES, as a shop configures
them: at most 5 of a product per line, orders worth at most 10^15 minor units, admin point
adjustments of at most 10^13 — high enough to reach point balances far beyond 32 bits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import Settings
from api.runtime import Runtime
from domain.errors import ValidationError
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role
from tests.graphql import data, gql, list_product, token_for
from tests.test_orders_api import (
    ADJUST_POINTS,
    ADMIN,
    AGENT,
    PLACE_ORDER,
    error_of,
    head,
    loyalty,
    mutate,
    ok,
    pay,
    read_order,
    shopper,
)

MAX_ORDER_VALUE = 10**15
REPRODUCTION = 99_999_999_999_999_999  # the line price issue 13 found accepted

SET_AVAILABILITY = """
mutation S($input: SetProductAvailabilityInput!) {
  setProductAvailability(input: $input) { position userErrors { field code } }
}
"""
LINES = """
query O($id: ID!) { order(id: $id) {
  lines { lineId productId sku name category brand quantity unitPrice { amount currency }
          amount { amount } priceOverride { cataloguePrice { amount } reason actorId } }
  pricing { subtotal { amount } total { amount } }
} }
"""
RULES = "{ loyaltyRules { maxLineQuantity maxOrderValue { amount } maxPointsAdjustment } }"


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings (payment provider, limits off, …) with small order limits."""
    rules = tmp_path / "rules.toml"
    rules.write_text(f"max_line_quantity = 5\nmax_order_value = {MAX_ORDER_VALUE}\n"
                     "max_points_adjustment = 10000000000000\n")
    return dataclasses.replace(settings, loyalty_rules=LoyaltyRules.load(rules))


async def order_of(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    order: dict[str, Any] = data(await gql(client, LINES, {"id": order_id},
                                           token=AGENT))["order"]
    return order


def placing(lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"lines": lines, "idempotencyKey": uuid.uuid4().hex, **extra}


async def test_the_catalogue_prices_the_order_and_the_order_keeps_that_snapshot(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "tent-2p", 32_900, name="Trail tent", category="Outdoor",
                       brand="Ridge")
    await list_product(client, "mug", 3_000, name="Enamel mug")

    placed = ok(await mutate(client, PLACE_ORDER, placing([
        {"productId": "tent-2p", "quantity": 2}, {"productId": "mug", "quantity": 1}]),
        ann.token))["order"]
    order = await order_of(client, placed["id"])
    assert [(x["productId"], x["sku"], x["name"], x["category"], x["brand"], x["quantity"],
             x["unitPrice"]["amount"], x["amount"]["amount"], x["priceOverride"])
            for x in order["lines"]] == [
        ("tent-2p", "tent-2p", "Trail tent", "outdoor", "ridge", 2, 32_900, 65_800, None),
        ("mug", "mug", "Enamel mug", None, None, 1, 3_000, 3_000, None),
    ]
    assert order["pricing"]["subtotal"]["amount"] == 68_800

    # The shop reprices and renames the tent: the placed order does not move, a new one
    # pays the new price.
    await list_product(client, "tent-2p", 1, name="Renamed tent", category="Sale")
    assert await order_of(client, placed["id"]) == order
    later = ok(await mutate(client, PLACE_ORDER, placing([
        {"productId": "tent-2p", "quantity": 1}]), ann.token))["order"]
    (line,) = (await order_of(client, later["id"]))["lines"]
    assert (line["name"], line["category"], line["unitPrice"]["amount"]) == (
        "Renamed tent", "sale", 1)


async def test_a_member_cannot_send_a_price_name_or_category(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "tent-2p", 32_900)
    before = head(live_runtime)
    for extra in ({"unitPrice": 1}, {"name": "Cheap tent"}, {"category": "free"},
                  {"brand": "any"}, {"sku": "TENT"}):
        body = await gql(client, PLACE_ORDER, {"input": placing([
            {"productId": "tent-2p", "quantity": 1, **extra}])}, token=ann.token)
        assert body["data"] is None
        (field,) = extra
        assert f"'OrderLineInput' not to include unknown field '{field}'" in (
            body["errors"][0]["message"])
    fields = data(await gql(client, '{ __type(name: "OrderLineInput") { inputFields '
                                    '{ name } } }'))["__type"]["inputFields"]
    assert [f["name"] for f in fields] == ["productId", "quantity"]
    # The staff-only override is refused to a member, naming it.
    forbidden = error_of(await mutate(client, PLACE_ORDER, placing(
        [{"productId": "tent-2p", "quantity": 1}],
        priceOverrides=[{"line": 0, "unitPrice": 1, "reason": "I want it cheap"}]), ann.token))
    assert (forbidden["code"], forbidden["field"]) == ("FORBIDDEN", "priceOverrides")
    assert head(live_runtime) == before


async def test_unknown_unavailable_and_too_many_name_the_line_and_record_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "tent-2p", 32_900)
    await list_product(client, "mug", 3_000)
    await list_product(client, "lamp", 6_500)
    taken_off = data(await gql(client, SET_AVAILABILITY, {"input": {
        "productId": "lamp", "available": False, "reason": "recalled"}}, token=ADMIN))
    assert taken_off["setProductAvailability"]["userErrors"] == []
    rules = data(await gql(client, RULES, token=ADMIN))["loyaltyRules"]
    assert rules == {"maxLineQuantity": 5, "maxOrderValue": {"amount": MAX_ORDER_VALUE},
                     "maxPointsAdjustment": 10**13}

    tent, mug = {"productId": "tent-2p", "quantity": 1}, {"productId": "mug", "quantity": 5}
    cases: list[tuple[list[dict[str, Any]], str, str]] = [
        ([tent, mug, {"productId": "no-such-thing", "quantity": 1}], "NOT_FOUND",
         "lines.2.productId"),
        ([tent, {"productId": "lamp", "quantity": 1}], "VALIDATION", "lines.1.productId"),
        ([{"productId": "bad id!", "quantity": 1}], "VALIDATION", "lines.0.productId"),
        ([{**mug, "quantity": 6}], "VALIDATION", "lines.0.quantity"),
        ([tent, {**tent, "quantity": 0}], "VALIDATION", "lines.1.quantity"),
    ]
    before = head(live_runtime)
    for lines, code, field in cases:
        error = error_of(await mutate(client, PLACE_ORDER, placing(lines), ann.token))
        assert (error["code"], error["field"]) == (code, field), (lines, error)
    assert head(live_runtime) == before
    # The limit is inclusive, and the lamp can be bought again once it is back on sale.
    assert ok(await mutate(client, PLACE_ORDER, placing([tent, mug]), ann.token))["order"]
    await gql(client, SET_AVAILABILITY, {"input": {"productId": "lamp", "available": True}},
              token=ADMIN)
    assert ok(await mutate(client, PLACE_ORDER, placing(
        [{"productId": "lamp", "quantity": 1}]), ann.token))["order"]


async def test_staff_may_override_a_price_only_with_a_reason_and_it_is_recorded(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "tent-2p", 32_900)
    await list_product(client, "mug", 3_000)
    lines = [{"productId": "tent-2p", "quantity": 1}, {"productId": "mug", "quantity": 2}]
    agent = token_for(Role.AGENT, "agent-7")
    bad = [
        ([{"line": 1, "unitPrice": 2_000, "reason": "  "}], "VALIDATION",
         "priceOverrides.0.reason"),
        ([{"line": 1, "unitPrice": 2_000}], None, None),  # reason missing: not even valid
        ([{"line": 2, "unitPrice": 2_000, "reason": "dented"}], "VALIDATION",
         "priceOverrides.0.line"),
        ([{"line": 1, "unitPrice": -1, "reason": "dented"}], "VALIDATION",
         "priceOverrides.0.unitPrice"),
        ([{"line": 1, "unitPrice": 1, "reason": "a"}, {"line": 1, "unitPrice": 2,
                                                       "reason": "b"}],
         "VALIDATION", "priceOverrides.1.line"),
    ]
    before = head(live_runtime)
    for overrides, code, field in bad:
        request = placing(lines, memberId=ann.id, reason="ordered by phone",
                          priceOverrides=overrides)
        if code is None:
            body = await gql(client, PLACE_ORDER, {"input": request}, token=agent)
            assert body["data"] is None and "reason" in body["errors"][0]["message"]
            continue
        error = error_of(await mutate(client, PLACE_ORDER, request, agent))
        assert (error["code"], error["field"]) == (code, field), (overrides, error)
    assert head(live_runtime) == before

    placed = ok(await mutate(client, PLACE_ORDER, placing(
        lines, memberId=ann.id, reason="ordered by phone",
        priceOverrides=[{"line": 1, "unitPrice": 2_000, "reason": "dented, agreed by phone"}]),
        agent))["order"]
    order = await order_of(client, placed["id"])
    assert [(x["unitPrice"]["amount"], x["priceOverride"]) for x in order["lines"]] == [
        (32_900, None),
        (2_000, {"cataloguePrice": {"amount": 3_000}, "reason": "dented, agreed by phone",
                 "actorId": "agent-7"}),
    ]
    assert order["pricing"]["subtotal"]["amount"] == 36_900
    # The override is on the order's Placed event itself, with who and why.
    stored = live_runtime.orders.get(uuid.UUID(placed["orderId"]))
    assert stored.lines[1]["price_override"] == {
        "catalogue_price": 3_000, "reason": "dented, agreed by phone", "actor_id": "agent-7",
        "actor_role": "agent"}


async def test_the_issue_13_reproduction_is_refused_and_names_the_field(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "gift-card", 100)
    await list_product(client, "yacht", REPRODUCTION)
    await list_product(client, "villa", MAX_ORDER_VALUE // 2 + 1)
    before = head(live_runtime)
    cases: list[tuple[dict[str, Any], str, str]] = [
        # A member cannot name a price; the catalogue's own price is still bounded.
        (placing([{"productId": "yacht", "quantity": 1}]), ann.token, "lines.0.quantity"),
        # Each villa is under the limit, two are over it.
        (placing([{"productId": "villa", "quantity": 1},
                  {"productId": "villa", "quantity": 1}]), ann.token, "lines"),
        # Staff cannot override a price to it either.
        (placing([{"productId": "gift-card", "quantity": 1}], memberId=ann.id,
                 reason="phone order", priceOverrides=[
                     {"line": 0, "unitPrice": REPRODUCTION, "reason": "as asked"}]),
         AGENT, "priceOverrides.0.unitPrice"),
    ]
    for request, token, field in cases:
        error = error_of(await mutate(client, PLACE_ORDER, request, token))
        assert (error["code"], error["field"]) == ("VALIDATION", field), (request, error)
    assert head(live_runtime) == before
    # Beyond 64 bits is not even a Long.
    body = await gql(client, PLACE_ORDER, {"input": placing(
        [{"productId": "gift-card", "quantity": 1}], memberId=ann.id, reason="phone order",
        priceOverrides=[{"line": 0, "unitPrice": 2**63, "reason": "as asked"}])},
        token=AGENT)
    assert body["data"] is None and "64-bit" in body["errors"][0]["message"]


async def test_points_far_beyond_32_bits_read_fine(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    await list_product(client, "island", MAX_ORDER_VALUE)
    placed = ok(await mutate(client, PLACE_ORDER, placing(
        [{"productId": "island", "quantity": 1}]), ann.token))["order"]
    await pay(client, ann, placed)
    account = await loyalty(client, ann)
    # 10^15 fen paid is 10^13 yuan: that many points, Platinum at once (x2 from then on).
    (lot,) = [lot for lot in account["lots"] if lot["source"] == "order"]
    assert account["tier"] == "PLATINUM"
    assert lot["points"] == account["pending"] == 10**13 > 2**31
    full = data(await gql(
        client, "{ me { loyalty { pending available lots { points remaining } "
                "ledger(first: 5) { edges { node { points pendingAfter } } } } } }",
        token=ann.token))
    assert full["me"]["loyalty"]["pending"] == 10**13

    # Admin adjustments are 64-bit too, and bounded by the configured limit.
    credited = ok(await mutate(client, ADJUST_POINTS, {
        "memberId": ann.id, "points": 5 * 10**12, "reason": "make good",
        "idempotencyKey": "big"}, ADMIN))["account"]
    assert credited["available"] == 5 * 10**12
    before = head(live_runtime)
    for points in (10**13 + 1, -(10**13 + 1)):
        error = error_of_account(await mutate(client, ADJUST_POINTS, {
            "memberId": ann.id, "points": points, "reason": "typo",
            "idempotencyKey": f"too-big-{points}"}, ADMIN))
        assert (error["code"], error["field"]) == ("VALIDATION", "points")
    assert head(live_runtime) == before
    assert (await read_order(client, placed["id"]))["pricing"]["total"]["amount"] == (
        MAX_ORDER_VALUE)


def error_of_account(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["account"] is None and payload["position"] is None
    (error,) = payload["userErrors"]
    result: dict[str, Any] = error
    return result


async def test_orders_racing_a_price_change_each_pay_one_price_and_retries_place_one_order(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    members = [await shopper(client, f"Racer {n}") for n in range(6)]
    await list_product(client, "lamp", 6_500)

    async def order(who: Any, key: str) -> dict[str, Any]:
        payload = await mutate(client, PLACE_ORDER, {
            "lines": [{"productId": "lamp", "quantity": 3}], "idempotencyKey": key}, who.token)
        result: dict[str, Any] = ok(payload)["order"]
        return result

    # Every member sends the same order twice at once while the shop reprices the lamp.
    racing = [order(who, f"race-{n}") for n, who in enumerate(members) for _ in range(2)]
    placed, _ = await asyncio.gather(asyncio.gather(*racing),
                                     list_product(client, "lamp", 7_000))
    for first, retry in zip(placed[::2], placed[1::2], strict=True):
        assert first["id"] == retry["id"]
    orders = [await order_of(client, o["id"]) for o in placed[::2]]
    for snapshot in orders:
        (line,) = snapshot["lines"]
        assert line["unitPrice"]["amount"] in (6_500, 7_000)
        assert snapshot["pricing"]["subtotal"]["amount"] == 3 * line["unitPrice"]["amount"]
    counts = [data(await gql(client, "{ me { orders { totalCount } } }",
                             token=who.token))["me"]["orders"]["totalCount"] for who in members]
    assert counts == [1] * len(members)
    # Once the repricing answered, every new order pays the new price.
    later = await order_of(client, (await order(members[0], "after"))["id"])
    assert later["lines"][0]["unitPrice"]["amount"] == 7_000


def test_the_event_store_not_the_lagging_read_model_decides_what_can_be_bought(
    runtime: Runtime
) -> None:
    """No projection runs here: the products read model knows nothing of the catalogue,
    yet the order is priced, and refused, by the catalogue's own events."""
    member = runtime.members.register({"name": "Lia", "email": "lia@example.com"},
                                      meta_for("anon", Role.ANONYMOUS)).aggregate_id
    own = meta_for(str(member), Role.MEMBER)
    admin = meta_for("admin-1", Role.ADMIN, "catalogue")
    runtime.catalogue.upsert({"product_id": "kettle", "name": "Kettle", "price": 12_000,
                              "currency": runtime.rules.currency}, admin)
    placed = runtime.orders.place(member, [{"product_id": "kettle", "quantity": 2}], None, 0,
                                  "k1", own)
    assert runtime.orders.get(placed.aggregate_id).lines[0]["unit_price"] == 12_000
    runtime.catalogue.set_availability("kettle", False, "recalled", admin)
    with pytest.raises(ValidationError) as refused:
        runtime.orders.place(member, [{"product_id": "kettle", "quantity": 1}], None, 0, "k2",
                             own)
    assert refused.value.field == "lines.0.product_id"


def meta_for(actor: str, role: Role, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "corr", None, uuid.uuid4().hex, reason)
