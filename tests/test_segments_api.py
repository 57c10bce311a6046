"""Segments through the GraphQL API: admins define them, everyone allowed reads them live."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, token_for
from tests.test_member_behaviour import Shop, product
from tests.test_orders_api import Shopper, eventually, mutate, ok, shopper, tick

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-1")
AUDITOR = token_for(Role.AUDITOR, "auditor-1")

SEGMENT = "id segmentId name description rule state size evaluatedAt"
PAYLOAD = f"segment {{ {SEGMENT} }} position userErrors {{ field code message location " \
          "{ offset line column } }"
DEFINE = f"mutation D($input: DefineSegmentInput!) {{ defineSegment(input: $input) " \
         f"{{ {PAYLOAD} }} }}"
UPDATE = f"mutation U($input: UpdateSegmentInput!) {{ updateSegment(input: $input) " \
         f"{{ {PAYLOAD} }} }}"
ARCHIVE = f"mutation A($input: ArchiveSegmentInput!) {{ archiveSegment(input: $input) " \
          f"{{ {PAYLOAD} }} }}"
SEGMENT_QUERY = """
query S($id: ID!, $first: Int, $after: String, $from: Date!, $to: Date!) {
  segment(id: $id) {
    name size rule
    members(first: $first, after: $after) {
      totalCount pageInfo { hasNextPage endCursor }
      edges { node { memberId joinedAt why { condition fact value held negated }
                     member { memberId } } }
    }
    changes { totalCount edges { node { memberId change at } } }
    sizes(from: $from, to: $to) { day size joins leaves }
  }
}"""
MY_SEGMENTS = "{ me { segments { segment { name rule } joinedAt why { condition value held } } } }"


def define_input(rule: str, key: str, name: str = "Big spenders", **extra: Any
                 ) -> dict[str, Any]:
    return {"name": name, "rule": rule, "idempotencyKey": key,
            "reason": "target the spring campaign", **extra}


async def test_an_admin_defines_a_segment_and_staff_page_through_its_live_members(
        client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock) -> None:
    shop = Shop(live_runtime, clock)
    ann: Shopper = await shopper(client, "Ann Lee")
    bo: Shopper = await shopper(client, "Bo Wu")
    cy: Shopper = await shopper(client, "Cy Ng")
    for who in (ann, bo):
        shop.buy(who.member_id, [product("tent", "outdoor", "acme", 30_000)])

    payload = ok(await mutate(client, DEFINE, define_input(
        "Purchases >= 1 AND total spent >= 20000", "seg-1", description="bought big"),
        ADMIN))
    segment = payload["segment"]
    assert segment["rule"] == "purchases >= 1 and total_spent >= 20000"
    assert (segment["state"], segment["size"]) == ("ACTIVE", 2)
    assert segment["description"] == "bought big"
    assert segment["evaluatedAt"] is not None
    retried = ok(await mutate(client, DEFINE, define_input(
        "purchases >= 1 and total_spent >= 20000", "seg-1"), ADMIN))
    assert retried["segment"]["id"] == segment["id"] and retried["position"] is None

    today = clock.now().date().isoformat()
    variables = {"id": segment["id"], "first": 1, "from": today, "to": today}
    body = await gql(client, SEGMENT_QUERY, variables, token=AGENT)
    page = data(body)["segment"]["members"]
    assert page["totalCount"] == 2 and page["pageInfo"]["hasNextPage"] is True
    first = page["edges"][0]["node"]
    assert first["member"]["memberId"] == first["memberId"]
    assert {r["condition"]: r["value"] for r in first["why"]} == {
        "purchases >= 1": 1, "total_spent >= 20000": 30_000}
    body = await gql(client, SEGMENT_QUERY,
                     {**variables, "after": page["pageInfo"]["endCursor"]}, token=AUDITOR)
    rest = data(body)["segment"]
    assert rest["members"]["pageInfo"]["hasNextPage"] is False
    seen = {first["memberId"], rest["members"]["edges"][0]["node"]["memberId"]}
    assert seen == {ann.member_id, bo.member_id}
    assert rest["sizes"] == [{"day": today, "size": 2, "joins": 2, "leaves": 0}]

    # Cy's purchase brings Cy in, at once.
    shop.buy(cy.member_id, [product("sofa", "home", "comfy", 50_000)])

    async def cys() -> list[dict[str, Any]]:
        body = await gql(client, MY_SEGMENTS, token=cy.token)
        result: list[dict[str, Any]] = data(body)["me"]["segments"]
        return result

    mine = await eventually(cys, lambda s: len(s) == 1)
    assert mine[0]["segment"]["name"] == "Big spenders"
    assert {r["condition"]: r["held"] for r in mine[0]["why"]} == {
        "purchases >= 1": True, "total_spent >= 20000": True}
    body = await gql(client, "query M($id: ID!) { member(id: $id) { segments { joinedAt } } }",
                     {"id": ann.id}, token=cy.token)
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # A members' own segments never open the segment's member list to them.
    body = await gql(client, SEGMENT_QUERY, variables, token=cy.token)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(client, "{ segments { totalCount edges { node { name size } } } }",
                     token=AGENT)
    assert data(body)["segments"]["edges"] == [{"node": {"name": "Big spenders", "size": 3}}]


async def test_a_malformed_rule_comes_back_with_where_it_went_wrong_and_records_nothing(
        client: httpx.AsyncClient, live_runtime: Runtime) -> None:
    before = live_runtime.runner.head()
    payload = await mutate(client, DEFINE, define_input(
        "tier in [Gold, Platinum]\n  and last purchase within thirty days", "bad-1"), ADMIN)
    assert payload["segment"] is None and payload["position"] is None
    (error,) = payload["userErrors"]
    assert (error["field"], error["code"]) == ("rule", "VALIDATION")
    assert error["location"] == {"offset": 52, "line": 2, "column": 28}
    assert "line 2, column 28" in error["message"]

    payload = await mutate(client, DEFINE, define_input("tier = bronze", "bad-2"), ADMIN)
    (error,) = payload["userErrors"]
    assert error["location"]["column"] == 8

    payload = await mutate(client, DEFINE, define_input("purchases >= 1", "bad-3"), AGENT)
    assert payload["userErrors"][0]["code"] == "FORBIDDEN"
    payload = await mutate(client, DEFINE, {**define_input("purchases >= 1", "bad-4"),
                                            "reason": ""}, ADMIN)
    assert payload["userErrors"][0]["code"] == "REASON_REQUIRED"
    assert live_runtime.runner.head() == before


async def test_admins_change_and_archive_segments_and_the_kpis_show_sizes_over_time(
        client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock) -> None:
    shop = Shop(live_runtime, clock)
    ann: Shopper = await shopper(client, "Ann Lee")
    await shopper(client, "Bo Wu")
    shop.buy(ann.member_id, [product("tent", "outdoor", "acme", 30_000)])
    segment = ok(await mutate(client, DEFINE, define_input("purchases = 0", "s-1",
                                                           name="Not yet"), ADMIN))["segment"]
    assert segment["size"] == 1
    day_one = clock.now().date()

    clock.advance(timedelta(days=1))
    changed = ok(await mutate(client, UPDATE, {
        "segmentId": segment["id"], "rule": "purchases >= 0", "reason": "everyone"}, ADMIN))
    assert changed["segment"]["size"] == 2
    unchanged = ok(await mutate(client, UPDATE, {
        "segmentId": segment["id"], "rule": "purchases>=0", "reason": "again"}, ADMIN))
    assert unchanged["position"] is None
    payload = await mutate(client, UPDATE, {"segmentId": segment["id"], "rule": "purchases >",
                                            "reason": "typo"}, ADMIN)
    assert payload["userErrors"][0]["location"]["column"] == 12

    clock.advance(timedelta(days=1))
    archived = ok(await mutate(client, ARCHIVE, {"segmentId": segment["id"],
                                                 "reason": "campaign over"}, ADMIN))
    assert (archived["segment"]["state"], archived["segment"]["size"]) == ("ARCHIVED", 0)
    payload = await mutate(client, ARCHIVE, {"segmentId": segment["id"], "reason": "again"},
                           ADMIN)
    assert payload["userErrors"][0]["code"] == "INVALID_TRANSITION"

    headers = await tick(live_runtime)
    query = """query K($from: Date!, $to: Date!) { behaviourKpis(from: $from, to: $to) {
        conversion repeatBuyerRate segments { segment { name state } days { day size } } } }"""
    response = await client.post("/graphql", json={"query": query, "variables": {
        "from": (day_one - timedelta(days=1)).isoformat(),
        "to": (day_one + timedelta(days=3)).isoformat()}},
        headers={"Authorization": f"Bearer {ADMIN}", **headers})
    kpis = response.json()["data"]["behaviourKpis"]
    (series,) = kpis["segments"]
    assert series["segment"] == {"name": "Not yet", "state": "ARCHIVED"}
    assert [d["size"] for d in series["days"]] == [0, 1, 2, 0, 0]
