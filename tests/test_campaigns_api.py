"""Campaigns through the GraphQL API: an admin launches and stops them, staff and auditors
watch what they achieved, and members find the reward in their wallet or points.

Driven over HTTP as the back office and the shop would drive it. Members register and
consent through the API; who is in the segment comes from the stand-in in
tests/segment_stand_in.py. "Nothing recorded" is checked against the event store's head.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from strawberry.relay import GlobalID

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, token_for
from tests.payments import pay_through_provider
from tests.segment_stand_in import define_segment, seed_segment
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    AUDITOR,
    Shopper,
    head,
    line,
    loyalty,
    mutate,
    ok,
    place,
    shopper,
    tick,
    wallet,
)

OTHER_ADMIN = token_for(Role.ADMIN, "admin-2")
USER_ERRORS = "userErrors { field message code }"
CAMPAIGN_FIELDS = """
  id campaignId name segmentId segment { id }
  reward { kind coupon { kind value minSpend { amount currency } validDays } points }
  budget remaining startsAt endsAt state launchedAt launchedBy launchReason
  stoppedAt stoppedBy stopReason issued pointsIssued lastIssuedAt redeemed redemptionRate
  spend { amount currency } refunded { amount } netSpend { amount } version
"""
LAUNCH = f"""
mutation L($input: LaunchCampaignInput!) {{ launchCampaign(input: $input) {{
  position campaign {{ {CAMPAIGN_FIELDS} }} {USER_ERRORS} }} }}
"""
STOP = f"""
mutation S($input: StopCampaignInput!) {{ stopCampaign(input: $input) {{
  position campaign {{ {CAMPAIGN_FIELDS} }} {USER_ERRORS} }} }}
"""
CAMPAIGN = f"""
query C($id: ID!) {{ campaign(id: $id) {{ {CAMPAIGN_FIELDS}
  rewards(first: 10) {{ totalCount edges {{ node {{
    memberId member {{ id }} issuedAt couponId points redeemableUntil redeemedAt orderId
    spend {{ amount }} refunded {{ amount }} }} }} }}
}} }}
"""
REDEEMED = """
query R($id: ID!) { campaign(id: $id) { rewards(redeemed: true) {
  totalCount edges { node { memberId orderId spend { amount } } } } } }
"""
CAMPAIGNS = """
query L($first: Int, $after: String, $state: CampaignState) {
  campaigns(first: $first, after: $after, state: $state) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
    edges { cursor node { id name state } }
  }
}
"""
NODE = "query N($id: ID!) { node(id: $id) { id ... on Campaign { name issued } } }"
SET_CONSENT = f"""
mutation S($input: SetConsentInput!) {{ setConsent(input: $input) {{ position {USER_ERRORS} }} }}
"""
COUPON = {"coupon": {"kind": "FIXED", "value": 1_500, "minSpend": 5_000, "validDays": 10}}


# -- helpers ----------------------------------------------------------------------------------


async def consenting(client: httpx.AsyncClient, name: str,
                     channel: str | None = "EMAIL") -> Shopper:
    who = await shopper(client, name)
    if channel:
        ok(await mutate(client, SET_CONSENT, {"purpose": "MARKETING", "channel": channel,
                                              "granted": True}, who.token))
    return who


async def segment_of(runtime: Runtime, *members: Shopper) -> str:
    """A defined segment with these members in it; its global id."""
    segment_id = await asyncio.to_thread(define_segment, runtime)
    # Let the real projection (where it runs) record the segment first, then say who is in.
    await runtime.wait_for_read_models(runtime.runner.head())
    await asyncio.to_thread(seed_segment, runtime, segment_id, [m.member_id for m in members])
    return str(GlobalID("Segment", str(segment_id)))


def launch_input(segment: str, clock: AdjustableClock, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "Spring welcome back", "segmentId": segment, "reward": COUPON, "budget": 10,
        "endsAt": (clock.now() + timedelta(days=7)).isoformat(),
        "idempotencyKey": uuid.uuid4().hex, "reason": "win back lapsed buyers",
    }
    values.update(changes)
    return values


async def launch(client: httpx.AsyncClient, segment: str, clock: AdjustableClock,
                 token: str = ADMIN, **changes: Any) -> dict[str, Any]:
    payload = await mutate(client, LAUNCH, launch_input(segment, clock, **changes), token)
    campaign: dict[str, Any] = ok(payload)["campaign"]
    return campaign


def error_of(payload: dict[str, Any]) -> dict[str, Any]:
    assert len(payload["userErrors"]) == 1, payload["userErrors"]
    assert payload["campaign"] is None and payload["position"] is None
    error: dict[str, Any] = payload["userErrors"][0]
    return error


async def read(client: httpx.AsyncClient, campaign_id: str, token: str = AGENT,
               headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    body = await gql(client, CAMPAIGN, {"id": campaign_id}, token=token, headers=headers)
    found: dict[str, Any] | None = data(body)["campaign"]
    return found


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- launching --------------------------------------------------------------------------------


async def test_a_coupon_campaign_reaches_consenting_members_and_counts_what_they_spend(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    bob = await consenting(client, "Bob Ng", "SMS")
    cai = await consenting(client, "Cai Wu", None)  # no marketing consent
    segment = await segment_of(live_runtime, ann, bob, cai)
    campaign = await launch(client, segment, clock)
    assert campaign["name"] == "Spring welcome back"
    assert (campaign["segmentId"], campaign["segment"]["id"]) == (segment, segment)
    assert campaign["reward"] == {"kind": "COUPON", "points": None, "coupon": {
        "kind": "FIXED", "value": 1_500, "minSpend": {"amount": 5_000, "currency": "CNY"},
        "validDays": 10}}
    assert (campaign["state"], campaign["issued"], campaign["remaining"]) == ("RUNNING", 2, 8)
    assert (campaign["launchedBy"], campaign["launchReason"]) == ("admin-1",
                                                                  "win back lapsed buyers")
    assert (campaign["redeemed"], campaign["redemptionRate"], campaign["spend"]) == (
        0, 0.0, {"amount": 0, "currency": "CNY"})
    assert moment(campaign["startsAt"]) == clock.now()

    coupons = [c for c in await wallet(client, ann) if c["source"] == "CAMPAIGN"]
    assert [(c["kind"], c["value"], c["status"], c["usable"]) for c in coupons] == [
        ("FIXED", 1_500, "AVAILABLE", True)]
    assert [c for c in await wallet(client, cai) if c["source"] == "CAMPAIGN"] == []

    order = await place(client, ann, [line("tent-2p", 1, 9_000)], couponId=coupons[0]["id"])
    paid = await pay_through_provider(client, order["id"], ann.token)
    after_payment = {"X-Patron-Min-Position": str(paid["position"])}
    found = await read(client, campaign["id"], headers=after_payment)
    assert found is not None
    total = order["pricing"]["total"]["amount"]
    assert (found["redeemed"], found["redemptionRate"], found["spend"]["amount"]) == (
        1, 0.5, total)
    assert found["netSpend"]["amount"] == total
    rewards = {e["node"]["memberId"]: e["node"] for e in found["rewards"]["edges"]}
    assert set(rewards) == {ann.id, bob.id} and found["rewards"]["totalCount"] == 2
    assert rewards[ann.id]["orderId"] == order["id"]
    assert rewards[ann.id]["couponId"] == coupons[0]["id"]
    assert rewards[ann.id]["member"] == {"id": ann.id}
    assert rewards[bob.id]["redeemedAt"] is None and rewards[bob.id]["spend"]["amount"] == 0
    redeemed = data(await gql(client, REDEEMED, {"id": campaign["id"]}, token=AUDITOR))
    assert redeemed["campaign"]["rewards"]["totalCount"] == 1
    assert redeemed["campaign"]["rewards"]["edges"][0]["node"]["memberId"] == ann.id


async def test_a_points_campaign_credits_the_bonus(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee", "APP_PUSH")
    segment = await segment_of(live_runtime, ann)
    before = (await loyalty(client, ann))["available"]
    campaign = await launch(client, segment, clock, reward={"points": 300}, budget=1)
    assert campaign["reward"] == {"kind": "POINTS", "coupon": None, "points": 300}
    assert (campaign["issued"], campaign["pointsIssued"], campaign["remaining"]) == (1, 300, 0)
    account = await loyalty(client, ann)
    assert account["available"] == before + 300
    assert [(lot["source"], lot["points"]) for lot in account["lots"]
            if lot["source"] == "campaign"] == [("campaign", 300)]


async def test_a_scheduled_campaign_issues_when_its_window_opens(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    segment = await segment_of(live_runtime, ann)
    starts = clock.now() + timedelta(days=2)
    campaign = await launch(client, segment, clock, startsAt=starts.isoformat(),
                            endsAt=(starts + timedelta(days=1)).isoformat())
    assert (campaign["state"], campaign["issued"]) == ("SCHEDULED", 0)
    assert moment(campaign["startsAt"]) == starts
    headers = await tick(live_runtime)
    assert (await read(client, campaign["id"], headers=headers) or {})["issued"] == 0
    clock.advance(timedelta(days=2))
    headers = await tick(live_runtime)
    found = await read(client, campaign["id"], headers=headers)
    assert found is not None and (found["state"], found["issued"]) == ("RUNNING", 1)
    clock.advance(timedelta(days=1))
    assert (await read(client, campaign["id"]) or {})["state"] == "ENDED"


async def test_a_retried_launch_returns_the_first_campaign_and_records_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    segment = await segment_of(live_runtime, await consenting(client, "Ann Lee"))
    values = launch_input(segment, clock)
    first = ok(await mutate(client, LAUNCH, values, ADMIN))
    before = head(live_runtime)
    again = ok(await mutate(client, LAUNCH, values, ADMIN))
    assert again["position"] is None and again["campaign"]["id"] == first["campaign"]["id"]
    assert again["campaign"]["issued"] == 1
    conflict = error_of(await mutate(client, LAUNCH, {**values, "budget": 3}, ADMIN))
    assert (conflict["code"], conflict["field"]) == ("IDEMPOTENCY_CONFLICT", "idempotencyKey")
    assert head(live_runtime) == before


async def test_only_admins_launch_and_stop(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    segment = await segment_of(live_runtime, ann)
    before = head(live_runtime)
    for token, code in ((AGENT, "FORBIDDEN"), (AUDITOR, "FORBIDDEN"), (ann.token, "FORBIDDEN"),
                        (None, "UNAUTHENTICATED")):
        payload = await mutate(client, LAUNCH, launch_input(segment, clock), token)
        assert error_of(payload)["code"] == code
    assert head(live_runtime) == before
    campaign = await launch(client, segment, clock)
    before = head(live_runtime)
    for token, code in ((AGENT, "FORBIDDEN"), (ann.token, "FORBIDDEN"),
                        (None, "UNAUTHENTICATED")):
        payload = await mutate(client, STOP, {"campaignId": campaign["id"], "reason": "x"},
                               token)
        assert error_of(payload)["code"] == code
    assert head(live_runtime) == before


async def test_a_missing_reason_or_bad_input_is_a_typed_error_that_records_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    segment = await segment_of(live_runtime, await consenting(client, "Ann Lee"))
    now = clock.now()
    member = str(GlobalID("Member", str(uuid.uuid4())))
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({"reason": None}, "REASON_REQUIRED", "reason"),
        ({"reason": "   "}, "REASON_REQUIRED", "reason"),
        ({"name": " "}, "VALIDATION", "name"),
        ({"budget": 0}, "VALIDATION", "budget"),
        ({"reward": {}}, "VALIDATION", "reward"),
        ({"reward": {**COUPON, "points": 10}}, "VALIDATION", "reward"),
        ({"reward": {"points": 0}}, "VALIDATION", "reward.points"),
        ({"reward": {"coupon": {**COUPON["coupon"], "kind": "PERCENT", "value": 20_000}}},
         "VALIDATION", "reward.coupon.value"),
        ({"reward": {"coupon": {**COUPON["coupon"], "validDays": 0}}}, "VALIDATION",
         "reward.coupon.validDays"),
        ({"startsAt": (now + timedelta(days=3)).isoformat(),
          "endsAt": (now + timedelta(days=2)).isoformat()}, "VALIDATION", "endsAt"),
        ({"endsAt": (now - timedelta(hours=1)).isoformat()}, "VALIDATION", "endsAt"),
        ({"endsAt": (now + timedelta(days=400)).isoformat()}, "VALIDATION", "endsAt"),
        ({"idempotencyKey": ""}, "VALIDATION", "idempotencyKey"),
        ({"segmentId": "nonsense"}, "VALIDATION", "segmentId"),
        ({"segmentId": member}, "VALIDATION", "segmentId"),
        ({"segmentId": str(GlobalID("Segment", str(uuid.uuid4())))}, "NOT_FOUND", "segmentId"),
    ]
    before = head(live_runtime)
    for changes, code, field in cases:
        payload = await mutate(client, LAUNCH, launch_input(segment, clock, **changes), ADMIN)
        error = error_of(payload)
        assert (error["code"], error["field"]) == (code, field), (changes, error)
    assert head(live_runtime) == before
    listed = data(await gql(client, CAMPAIGNS, token=ADMIN))["campaigns"]
    assert listed["totalCount"] == 0


# -- stopping ---------------------------------------------------------------------------------


async def test_stopping_ends_issuing_and_shows_who_stopped_it_and_why(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    segment = await segment_of(live_runtime, ann)
    campaign = await launch(client, segment, clock)
    before = head(live_runtime)
    missing = error_of(await mutate(client, STOP, {"campaignId": campaign["id"]}, ADMIN))
    assert (missing["code"], missing["field"]) == ("REASON_REQUIRED", "reason")
    unknown = error_of(await mutate(client, STOP, {
        "campaignId": str(GlobalID("Campaign", str(uuid.uuid4()))), "reason": "x"}, ADMIN))
    assert (unknown["code"], unknown["field"]) == ("NOT_FOUND", "campaignId")
    wrong = error_of(await mutate(client, STOP, {"campaignId": ann.id, "reason": "x"}, ADMIN))
    assert (wrong["code"], wrong["field"]) == ("VALIDATION", "campaignId")
    assert head(live_runtime) == before

    stopped = ok(await mutate(client, STOP, {"campaignId": campaign["id"],
                                             "reason": "budget moved"}, OTHER_ADMIN))
    assert stopped["position"] == head(live_runtime)
    found = stopped["campaign"]
    assert (found["state"], found["stoppedBy"], found["stopReason"]) == (
        "STOPPED", "admin-2", "budget moved")
    assert moment(found["stoppedAt"]) == clock.now() and found["issued"] == 1
    again = error_of(await mutate(client, STOP, {"campaignId": campaign["id"],
                                                 "reason": "again"}, ADMIN))
    assert again["code"] == "INVALID_TRANSITION"
    # A member who joins now gets nothing.
    bob = await consenting(client, "Bob Ng")
    await asyncio.to_thread(seed_segment, live_runtime,
                            UUID(GlobalID.from_id(segment).node_id), [bob.member_id])
    headers = await tick(live_runtime)
    assert (await read(client, campaign["id"], headers=headers) or {})["issued"] == 1
    assert [c for c in await wallet(client, bob) if c["source"] == "CAMPAIGN"] == []


# -- reading ----------------------------------------------------------------------------------


async def test_campaigns_are_listed_newest_first_by_state_for_staff_and_auditors(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    segment = await segment_of(live_runtime, ann)
    running = await launch(client, segment, clock, name="Running")
    clock.advance(timedelta(seconds=1))
    later = clock.now() + timedelta(days=1)
    scheduled = await launch(client, segment, clock, name="Scheduled",
                             startsAt=later.isoformat(),
                             endsAt=(later + timedelta(days=1)).isoformat())
    clock.advance(timedelta(seconds=1))
    stopped = await launch(client, segment, clock, name="Stopped")
    ok(await mutate(client, STOP, {"campaignId": stopped["id"], "reason": "test"}, ADMIN))

    listed = data(await gql(client, CAMPAIGNS, token=AUDITOR))["campaigns"]
    assert [e["node"]["name"] for e in listed["edges"]] == ["Stopped", "Scheduled", "Running"]
    assert listed["totalCount"] == 3
    for state, name in (("RUNNING", "Running"), ("SCHEDULED", "Scheduled"),
                        ("STOPPED", "Stopped")):
        only = data(await gql(client, CAMPAIGNS, {"state": state}, token=AGENT))["campaigns"]
        assert [(e["node"]["name"], e["node"]["state"]) for e in only["edges"]] == [
            (name, state)]
    assert data(await gql(client, CAMPAIGNS, {"state": "ENDED"}, token=AGENT))[
        "campaigns"]["totalCount"] == 0

    first = data(await gql(client, CAMPAIGNS, {"first": 2}, token=ADMIN))["campaigns"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = data(await gql(client, CAMPAIGNS, {"first": 2,
                                              "after": first["pageInfo"]["endCursor"]},
                          token=ADMIN))["campaigns"]
    assert [e["node"]["id"] for e in first["edges"] + rest["edges"]] == [
        stopped["id"], scheduled["id"], running["id"]]
    assert rest["pageInfo"] == {"hasNextPage": False, "hasPreviousPage": True,
                                "endCursor": rest["edges"][-1]["cursor"]}
    bad = await gql(client, CAMPAIGNS, {"after": "not-a-cursor"}, token=ADMIN)
    assert bad["errors"][0]["extensions"]["code"] == "VALIDATION"

    clock.advance(timedelta(days=8))
    assert [e["node"]["name"] for e in data(await gql(
        client, CAMPAIGNS, {"state": "ENDED"}, token=AGENT))["campaigns"]["edges"]] == [
        "Scheduled", "Running"]

    node = data(await gql(client, NODE, {"id": running["id"]}, token=AUDITOR))["node"]
    assert node == {"id": running["id"], "name": "Running", "issued": 1}
    assert data(await gql(client, NODE, {"id": running["id"]}, token=ann.token))["node"] is None


async def test_members_and_anonymous_callers_cannot_read_campaigns(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
) -> None:
    ann = await consenting(client, "Ann Lee")
    campaign = await launch(client, await segment_of(live_runtime, ann), clock)
    for token, code in ((ann.token, "FORBIDDEN"), (None, "UNAUTHENTICATED")):
        for query, variables in ((CAMPAIGN, {"id": campaign["id"]}), (CAMPAIGNS, {})):
            body = await gql(client, query, variables, token=token)
            assert body["errors"][0]["extensions"]["code"] == code
    assert await read(client, str(GlobalID("Campaign", str(uuid.uuid4())))) is None
    body = await gql(client, CAMPAIGN, {"id": ann.id}, token=AGENT)
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION"
