"""Members through the GraphQL API: what frontends and staff can do, and what they cannot."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, register, token_for

MEMBER_FIELDS = """
  id memberId name email phone birthday gender occupation education incomeBand city region
  preferredChannel language status statusReason tier erased profileComplete
  registrationChannel version personalDataVisible
  channelActivity { channel events }
  preferences {
    categories brands priceSensitivity
    ui { layoutDensity theme fontSize }
    delivery { pickupPoint timeWindow packaging defaultAddress { recipient line1 city country } }
  }
  consents { purpose channel granted source actorId at }
  tags { tag reason taggedBy }
"""

UPDATE_PROFILE = f"""
mutation Update($input: UpdateMemberProfileInput!) {{
  updateMemberProfile(input: $input) {{
    position member {{ {MEMBER_FIELDS} }} userErrors {{ field message code }}
  }}
}}
"""

SET_PREFERENCES = f"""
mutation Prefs($input: SetMemberPreferencesInput!) {{
  setMemberPreferences(input: $input) {{
    position member {{ {MEMBER_FIELDS} }} userErrors {{ field message code }}
  }}
}}
"""

SET_CONSENT = """
mutation Consent($input: SetConsentInput!) {
  setConsent(input: $input) {
    position member { consents { purpose channel granted source } }
    userErrors { field message code }
  }
}
"""

TAG = """
mutation Tag($input: TagMemberInput!) {
  tagMember(input: $input) {
    position member { tags { tag reason taggedBy } }
    userErrors { field message code }
  }
}
"""

UNTAG = """
mutation Untag($input: TagMemberInput!) {
  untagMember(input: $input) {
    position member { tags { tag } }
    userErrors { field message code }
  }
}
"""

SET_STATUS = """
mutation Status($input: SetMemberStatusInput!) {
  setMemberStatus(input: $input) {
    position member { status statusReason }
    userErrors { field message code }
  }
}
"""

MEMBER = f"query Member($id: ID!) {{ member(id: $id) {{ {MEMBER_FIELDS} }} }}"

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-7")
AUDITOR = token_for(Role.AUDITOR, "auditor-3")


def payload_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = data(body)[name]
    return result


async def test_registration_is_open_and_returns_a_member_token(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    payload = await register(
        client,
        name="  Mei   Chen ",
        email="Mei.Chen@Example.com",
        phone="+86 13800000000",
        gender="FEMALE",
        birthday="1991-04-05",
        city="Hangzhou",
        region="Zhejiang",
        preferredChannel="APP",
        language="zh-CN",
    )
    member = payload["member"]
    assert member["name"] == "Mei Chen"
    assert member["email"] == "Mei.Chen@example.com"
    assert member["status"] == "ACTIVE"
    assert member["tier"] == "REGULAR"
    assert member["version"] == 1
    assert payload["token"]
    me = data(await gql(client, f"{{ me {{ {MEMBER_FIELDS} }} }}", token=payload["token"]))["me"]
    assert me["memberId"] == member["memberId"]
    assert me["birthday"] == "1991-04-05"
    assert me["registrationChannel"] == "WEB"
    assert me["channelActivity"] == [{"channel": "WEB", "events": 1}]
    assert runtime.runner.head() == payload["position"]


async def test_the_channel_header_is_recorded_and_unified_into_one_profile(
    client: httpx.AsyncClient,
) -> None:
    payload = await gql(
        client,
        "mutation { registerMember(input: {name: \"Jun\", email: \"jun@example.com\"}) "
        "{ token member { registrationChannel } userErrors { code } } }",
        headers={"X-Patron-Channel": "mini_program"},
    )
    registered = data(payload)["registerMember"]
    assert registered["member"]["registrationChannel"] == "MINI_PROGRAM"
    token = registered["token"]
    await gql(
        client, UPDATE_PROFILE, {"input": {"city": "Chengdu"}}, token=token,
        headers={"X-Patron-Channel": "store"},
    )
    me = data(await gql(client, "{ me { city channelActivity { channel events } } }", token=token))
    assert me["me"]["city"] == "Chengdu"
    assert me["me"]["channelActivity"] == [
        {"channel": "MINI_PROGRAM", "events": 1},
        {"channel": "STORE", "events": 1},
    ]


async def test_an_unknown_channel_header_is_a_typed_error(client: httpx.AsyncClient) -> None:
    body = await gql(
        client,
        "mutation { registerMember(input: {name: \"Jun\", email: \"jun@example.com\"}) "
        "{ member { id } userErrors { field code } } }",
        headers={"X-Patron-Channel": "carrier-pigeon"},
    )
    errors = data(body)["registerMember"]["userErrors"]
    assert errors == [{"field": None, "code": "VALIDATION"}]  # a header, no input field


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"name": "   ", "email": "a@example.com"}, "name", "VALIDATION"),
        ({"name": "Ann", "email": "not-an-email"}, "email", "VALIDATION"),
        ({"name": "Ann", "email": "a@example.com", "birthday": "2199-01-01"}, "birthday",
         "VALIDATION"),
        ({"name": "Ann", "email": "a@example.com", "phone": "call me"}, "phone", "VALIDATION"),
        ({"name": "Ann", "email": "a@example.com", "language": "English!"}, "language",
         "VALIDATION"),
    ],
)
async def test_invalid_registrations_get_user_errors_and_record_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    fields: dict[str, Any],
    field: str,
    code: str,
) -> None:
    body = await gql(
        client,
        "mutation R($input: RegisterMemberInput!) { registerMember(input: $input) "
        "{ member { id } token position userErrors { field message code } } }",
        {"input": fields},
    )
    payload = payload_of(body, "registerMember")
    assert payload["member"] is None and payload["token"] is None and payload["position"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [(field, code)]
    assert runtime.runner.head() == 0


async def test_unknown_enum_values_are_rejected_by_the_schema(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = await gql(
        client,
        "mutation { registerMember(input: {name: \"A\", email: \"a@example.com\", "
        "gender: MARTIAN}) { member { id } } }",
    )
    assert body["errors"] and "MARTIAN" in body["errors"][0]["message"]
    assert runtime.runner.head() == 0


async def test_a_member_updates_their_profile_and_can_clear_optional_fields(
    client: httpx.AsyncClient,
) -> None:
    payload = await register(client, phone="+8613800000000", city="Beijing")
    token = payload["token"]
    body = await gql(
        client,
        UPDATE_PROFILE,
        {"input": {"city": "Shanghai", "phone": None, "occupation": "nurse",
                   "education": "MASTER", "incomeBand": "UPPER_MIDDLE"}},
        token=token,
    )
    update = payload_of(body, "updateMemberProfile")
    assert update["userErrors"] == []
    member = update["member"]
    assert (member["city"], member["phone"], member["occupation"]) == ("Shanghai", None, "nurse")
    assert member["education"] == "MASTER" and member["incomeBand"] == "UPPER_MIDDLE"
    assert member["version"] == 2
    assert update["position"] > payload["position"]


async def test_required_fields_cannot_be_cleared(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    payload = await register(client)
    head = runtime.runner.head()
    body = await gql(client, UPDATE_PROFILE, {"input": {"email": None}}, token=payload["token"])
    errors = payload_of(body, "updateMemberProfile")["userErrors"]
    assert errors == [
        {"field": "email", "message": "email cannot be removed", "code": "VALIDATION"}
    ]
    assert runtime.runner.head() == head


async def test_preferences_sections_replace_and_the_address_is_personal_data(
    client: httpx.AsyncClient,
) -> None:
    token = (await register(client))["token"]
    body = await gql(
        client,
        SET_PREFERENCES,
        {"input": {
            "categories": ["Outdoor", "books", "outdoor"],
            "brands": ["NorthPeak"],
            "priceSensitivity": "HIGH",
            "ui": {"layoutDensity": "COMPACT", "theme": "DARK", "fontSize": "LARGE"},
            "delivery": {
                "timeWindow": "EVENING",
                "packaging": ["ECO", "GIFT_WRAP"],
                "pickupPoint": "PP-17",
                "defaultAddress": {"recipient": "Ann Lee", "line1": "1 Lake Rd",
                                   "city": "Hangzhou", "country": "CN"},
            },
        }},
        token=token,
    )
    prefs = payload_of(body, "setMemberPreferences")["member"]["preferences"]
    assert prefs["categories"] == ["outdoor", "books"]
    assert prefs["brands"] == ["northpeak"]
    assert prefs["priceSensitivity"] == "HIGH"
    assert prefs["ui"] == {"layoutDensity": "COMPACT", "theme": "DARK", "fontSize": "LARGE"}
    assert prefs["delivery"]["packaging"] == ["ECO", "GIFT_WRAP"]
    assert prefs["delivery"]["defaultAddress"]["line1"] == "1 Lake Rd"
    body = await gql(client, SET_PREFERENCES, {"input": {"brands": []}}, token=token)
    prefs = payload_of(body, "setMemberPreferences")["member"]["preferences"]
    assert prefs["brands"] == [] and prefs["categories"] == ["outdoor", "books"]

    masked = data(await gql(client, MEMBER, {"id": (await _id_of(client, token))}, token=AUDITOR))
    assert masked["member"]["preferences"]["delivery"]["defaultAddress"] is None
    assert masked["member"]["name"] is None and masked["member"]["personalDataVisible"] is False


async def _id_of(client: httpx.AsyncClient, token: str) -> str:
    me = data(await gql(client, "{ me { id } }", token=token))
    return str(me["me"]["id"])


async def test_consent_is_given_per_purpose_and_channel_with_its_source(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    token = (await register(client))["token"]
    body = await gql(
        client, SET_CONSENT,
        {"input": {"purpose": "MARKETING", "channel": "SMS", "granted": True}},
        token=token, headers={"X-Patron-Channel": "app"},
    )
    consents = payload_of(body, "setConsent")["member"]["consents"]
    assert consents == [{"purpose": "MARKETING", "channel": "SMS", "granted": True,
                         "source": "APP"}]
    head = runtime.runner.head()
    body = await gql(
        client, SET_CONSENT,
        {"input": {"purpose": "MARKETING", "channel": "ALL", "granted": True}}, token=token,
    )
    assert payload_of(body, "setConsent")["userErrors"][0]["code"] == "VALIDATION"
    assert runtime.runner.head() == head


async def test_staff_tag_and_untag_with_a_reason(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member_id = (await register(client))["member"]["id"]
    body = await gql(
        client, TAG, {"input": {"memberId": member_id, "tag": "VIP", "reason": "top spender"}},
        token=AGENT,
    )
    assert payload_of(body, "tagMember")["member"]["tags"] == [
        {"tag": "vip", "reason": "top spender", "taggedBy": "agent-7"}
    ]
    listed = data(await gql(
        client, "{ members(filter: {tag: \"vip\"}) { totalCount edges { node { id } } } }",
        token=ADMIN,
    ))
    assert listed["members"]["totalCount"] == 1

    head = runtime.runner.head()
    for reason in ("", "   "):
        body = await gql(
            client, TAG, {"input": {"memberId": member_id, "tag": "other", "reason": reason}},
            token=ADMIN,
        )
        assert payload_of(body, "tagMember")["userErrors"] == [
            {"field": "reason", "message": "a reason is required for this action",
             "code": "REASON_REQUIRED"}
        ]
    body = await gql(
        client, TAG, {"input": {"memberId": member_id, "tag": "vip", "reason": "again"}},
        token=ADMIN,
    )
    assert payload_of(body, "tagMember")["userErrors"][0]["code"] == "INVALID_TRANSITION"
    assert runtime.runner.head() == head

    body = await gql(
        client, UNTAG, {"input": {"memberId": member_id, "tag": "vip", "reason": "downgraded"}},
        token=ADMIN,
    )
    assert payload_of(body, "untagMember")["member"]["tags"] == []


async def test_status_changes_need_an_admin_and_closed_is_final(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    registered = await register(client)
    member_id, token = registered["member"]["id"], registered["token"]
    body = await gql(
        client, SET_STATUS,
        {"input": {"memberId": member_id, "status": "BLOCKED", "reason": "fraud"}}, token=AGENT,
    )
    assert payload_of(body, "setMemberStatus")["userErrors"][0]["code"] == "FORBIDDEN"
    body = await gql(
        client, SET_STATUS,
        {"input": {"memberId": member_id, "status": "BLOCKED", "reason": "chargebacks"}},
        token=ADMIN,
    )
    assert payload_of(body, "setMemberStatus")["member"] == {
        "status": "BLOCKED", "statusReason": "chargebacks"
    }
    # A blocked member cannot change their profile, but may still withdraw consent.
    body = await gql(client, UPDATE_PROFILE, {"input": {"city": "Lhasa"}}, token=token)
    error = payload_of(body, "updateMemberProfile")["userErrors"][0]
    assert error["code"] == "INVALID_TRANSITION" and "blocked" in error["message"]
    body = await gql(
        client, SET_CONSENT,
        {"input": {"purpose": "PERSONALISATION", "channel": "ALL", "granted": False}}, token=token,
    )
    assert payload_of(body, "setConsent")["userErrors"] == []

    await gql(client, SET_STATUS, {"input": {"memberId": member_id, "status": "CLOSED",
                                             "reason": "member asked"}}, token=ADMIN)
    head = runtime.runner.head()
    body = await gql(client, SET_STATUS, {"input": {"memberId": member_id, "status": "ACTIVE",
                                                    "reason": "oops"}}, token=ADMIN)
    error = payload_of(body, "setMemberStatus")["userErrors"][0]
    assert error["code"] == "INVALID_TRANSITION" and "closed" in error["message"]
    assert runtime.runner.head() == head


async def test_a_member_cannot_read_or_change_another_member(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    alice = await register(client, name="Alice", email="alice@example.com")
    bob = await register(client, name="Bob", email="bob@example.com")
    head = runtime.runner.head()
    body = await gql(
        client, UPDATE_PROFILE, {"input": {"memberId": alice["member"]["id"], "city": "X"}},
        token=bob["token"],
    )
    assert payload_of(body, "updateMemberProfile")["userErrors"][0]["code"] == "FORBIDDEN"
    body = await gql(client, MEMBER, {"id": alice["member"]["id"]}, token=bob["token"])
    assert body["data"] is None or body["data"]["member"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    body = await gql(client, "{ members { totalCount } }", token=bob["token"])
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await gql(client, TAG, {"input": {"memberId": alice["member"]["id"], "tag": "x",
                                             "reason": "r"}}, token=bob["token"])
    assert payload_of(body, "tagMember")["userErrors"][0]["code"] == "FORBIDDEN"
    node = await gql(
        client, "query N($id: ID!) { node(id: $id) { id ... on Member { name } } }",
        {"id": alice["member"]["id"]}, token=bob["token"],
    )
    assert node["data"]["node"] is None
    assert runtime.runner.head() == head


async def test_anonymous_callers_only_register(client: httpx.AsyncClient, runtime: Runtime) -> None:
    member_id = (await register(client))["member"]["id"]
    head = runtime.runner.head()
    body = await gql(client, "{ me { id } }")
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    body = await gql(client, UPDATE_PROFILE, {"input": {"memberId": member_id, "city": "X"}})
    assert payload_of(body, "updateMemberProfile")["userErrors"][0]["code"] == "UNAUTHENTICATED"
    assert runtime.runner.head() == head


async def test_staff_acting_for_a_member_must_give_a_reason(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member_id = (await register(client))["member"]["id"]
    head = runtime.runner.head()
    body = await gql(client, UPDATE_PROFILE, {"input": {"memberId": member_id, "city": "Xi'an"}},
                     token=AGENT)
    assert payload_of(body, "updateMemberProfile")["userErrors"][0]["code"] == "REASON_REQUIRED"
    assert runtime.runner.head() == head
    body = await gql(
        client, UPDATE_PROFILE,
        {"input": {"memberId": member_id, "city": "Xi'an", "reason": "phoned support"}},
        token=AGENT,
    )
    assert payload_of(body, "updateMemberProfile")["member"]["city"] == "Xi'an"


@pytest.mark.parametrize(
    "bad_id", ["not-base64!", "TWVtYmVyOm5vdC1hLXV1aWQ=", "T3JkZXI6MTIz", ""]
)
async def test_malformed_or_foreign_ids_are_typed_errors(
    client: httpx.AsyncClient, runtime: Runtime, bad_id: str
) -> None:
    body = await gql(client, TAG, {"input": {"memberId": bad_id, "tag": "x", "reason": "r"}},
                     token=ADMIN)
    errors = payload_of(body, "tagMember")["userErrors"]
    assert errors[0]["field"] == "memberId"
    assert errors[0]["code"] in ("VALIDATION", "NOT_FOUND")
    body = await gql(client, MEMBER, {"id": bad_id}, token=ADMIN)
    assert body["errors"][0]["extensions"]["code"] in ("VALIDATION", "NOT_FOUND")
    assert runtime.runner.head() == 0


async def test_unknown_member_is_not_found(client: httpx.AsyncClient) -> None:
    ghost = "TWVtYmVyOjAwMDAwMDAwLTAwMDAtNDAwMC04MDAwLTAwMDAwMDAwMDAwMA=="
    body = await gql(client, TAG, {"input": {"memberId": ghost, "tag": "x", "reason": "r"}},
                     token=ADMIN)
    assert payload_of(body, "tagMember")["userErrors"][0]["code"] == "NOT_FOUND"
    assert data(await gql(client, MEMBER, {"id": ghost}, token=ADMIN))["member"] is None


async def test_staff_list_members_with_filters_and_relay_pagination(
    client: httpx.AsyncClient, clock: AdjustableClock
) -> None:
    for index in range(5):
        clock.advance(timedelta(seconds=1))  # members are listed by when they joined
        await register(
            client, name=f"Member {index}", email=f"m{index}@example.com",
            city="Hangzhou" if index % 2 else "Beijing",
        )
    query = """
    query List($first: Int, $after: String, $filter: MemberFilterInput) {
      members(first: $first, after: $after, filter: $filter) {
        totalCount
        pageInfo { hasNextPage hasPreviousPage endCursor }
        edges { cursor node { name city } }
      }
    }"""
    first = data(await gql(client, query, {"first": 2}, token=AGENT))["members"]
    assert first["totalCount"] == 5
    assert [e["node"]["name"] for e in first["edges"]] == ["Member 0", "Member 1"]
    assert first["pageInfo"]["hasNextPage"] is True
    second = data(await gql(client, query, {"first": 2, "after": first["pageInfo"]["endCursor"]},
                            token=AGENT))["members"]
    assert [e["node"]["name"] for e in second["edges"]] == ["Member 2", "Member 3"]
    assert second["pageInfo"]["hasPreviousPage"] is True
    third = data(await gql(client, query, {"first": 2, "after": second["pageInfo"]["endCursor"]},
                           token=AGENT))["members"]
    assert [e["node"]["name"] for e in third["edges"]] == ["Member 4"]
    assert third["pageInfo"]["hasNextPage"] is False

    hz = data(await gql(client, query, {"filter": {"city": "hangzhou"}}, token=AGENT))["members"]
    assert {e["node"]["city"] for e in hz["edges"]} == {"Hangzhou"} and hz["totalCount"] == 2
    found = data(await gql(client, query, {"filter": {"search": "M3@EXAMPLE"}}, token=ADMIN))
    assert [e["node"]["name"] for e in found["members"]["edges"]] == ["Member 3"]

    too_many = await gql(client, query, {"first": 1000}, token=ADMIN)
    assert too_many["errors"][0]["extensions"]["code"] == "VALIDATION"
    bad_cursor = await gql(client, query, {"after": "garbage"}, token=ADMIN)
    assert bad_cursor["errors"][0]["extensions"]["code"] == "VALIDATION"
