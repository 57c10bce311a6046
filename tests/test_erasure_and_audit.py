"""Auditors see every event with who/why/where; erasure makes personal data unreadable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text

from api.auth import PII_SCOPE
from api.runtime import Runtime
from domain.metadata import Role
from projections.tables import member_data_keys
from tests.graphql import data, gql, register, token_for

ADMIN = token_for(Role.ADMIN, "admin-9")
AUDITOR = token_for(Role.AUDITOR, "auditor-1")
AUDITOR_WITH_PII = token_for(Role.AUDITOR, "auditor-2", scopes=(PII_SCOPE,))

HISTORY = """
query History($id: ID!, $first: Int, $after: String) {
  memberHistory(id: $id, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node {
      version type timestamp actorId actorRole channel correlationId causationId requestId
      reason personalData data
    } }
  }
}
"""

AS_OF = """
query AsOf($id: ID!, $version: Int, $at: DateTime) {
  memberAsOf(id: $id, version: $version, at: $at) {
    version name email city status erased tags { tag reason } consents { channel granted }
  }
}
"""

ERASE = """
mutation Erase($input: EraseMemberInput!) {
  eraseMember(input: $input) {
    position member { name email phone birthday erased erasedAt
      preferences { delivery { defaultAddress { line1 } } } }
    userErrors { field code message }
  }
}
"""


async def _member_with_history(client: httpx.AsyncClient) -> tuple[str, str]:
    registered = await register(
        client, name="Erin Park", email="erin.park@example.com", phone="+8613911112222",
        birthday="1988-08-08", city="Osaka",
    )
    member_id, token = registered["member"]["id"], registered["token"]
    await gql(
        client,
        "mutation { setMemberPreferences(input: {delivery: {defaultAddress: "
        "{recipient: \"Erin Park\", line1: \"9 Secret Lane\", city: \"Osaka\", country: \"JP\"}}})"
        " { userErrors { code } } }",
        token=token, headers={"X-Correlation-Id": "checkout-42", "X-Request-Id": "req-abc"},
    )
    await gql(
        client,
        "mutation($id: ID!) { tagMember(input: {memberId: $id, tag: \"vip\", "
        "reason: \"loyal since 2019\"}) { userErrors { code } } }",
        {"id": member_id}, token=ADMIN,
    )
    return member_id, token


def _stored_states(runtime: Runtime) -> bytes:
    with runtime.sync_engine.connect() as conn:
        table = runtime.app.recorder.events_table_name  # type: ignore[attr-defined]
        states = conn.execute(text(f"SELECT state FROM {table}")).scalars().all()
    return b"".join(bytes(s) for s in states)


async def test_history_shows_every_event_with_its_metadata(
    client: httpx.AsyncClient,
) -> None:
    member_id, _ = await _member_with_history(client)
    history = data(await gql(client, HISTORY, {"id": member_id}, token=AUDITOR_WITH_PII))
    connection = history["memberHistory"]
    assert connection["totalCount"] == 3
    events = [edge["node"] for edge in connection["edges"]]
    assert [e["type"] for e in events] == [
        "Member.Registered", "Member.PreferencesSet", "Member.Tagged"
    ]
    registered, preferences, tagged = events
    assert registered["actorRole"] == "anonymous" and registered["channel"] == "web"
    assert registered["data"]["personal"]["email"] == "erin.park@example.com"
    assert registered["personalData"] == "visible"
    assert preferences["correlationId"] == "checkout-42"
    assert preferences["requestId"] == "req-abc"
    assert preferences["actorRole"] == "member"
    assert tagged["actorId"] == "admin-9" and tagged["actorRole"] == "admin"
    assert tagged["reason"] == "loyal since 2019" and tagged["channel"] == "admin"
    assert datetime.fromisoformat(tagged["timestamp"]) >= datetime.fromisoformat(
        registered["timestamp"]
    )

    page = data(await gql(client, HISTORY, {"id": member_id, "first": 2}, token=AUDITOR))
    assert page["memberHistory"]["pageInfo"]["hasNextPage"] is True
    rest = data(await gql(
        client, HISTORY,
        {"id": member_id, "first": 2, "after": page["memberHistory"]["pageInfo"]["endCursor"]},
        token=AUDITOR,
    ))
    assert [e["node"]["version"] for e in rest["memberHistory"]["edges"]] == [3]


async def test_auditors_see_personal_data_masked_unless_granted(
    client: httpx.AsyncClient,
) -> None:
    member_id, _ = await _member_with_history(client)
    history = data(await gql(client, HISTORY, {"id": member_id}, token=AUDITOR))
    registered = history["memberHistory"]["edges"][0]["node"]
    assert registered["personalData"] == "masked"
    assert "erin" not in str(registered["data"]).lower()
    member = data(await gql(client, "query($id: ID!) { member(id: $id) { name email city } }",
                            {"id": member_id}, token=AUDITOR))["member"]
    assert member == {"name": None, "email": None, "city": None}  # city is personal too


async def test_members_and_agents_cannot_read_the_audit_trail(client: httpx.AsyncClient) -> None:
    member_id, token = await _member_with_history(client)
    for who in (token, token_for(Role.AGENT)):
        body = await gql(client, HISTORY, {"id": member_id}, token=who)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_state_as_of_a_version_or_a_moment(client: httpx.AsyncClient) -> None:
    member_id, token = await _member_with_history(client)
    before_move = datetime.now(UTC)
    await gql(client, "mutation { updateMemberProfile(input: {city: \"Kyoto\"}) "
                      "{ userErrors { code } } }", token=token)

    v1 = data(await gql(client, AS_OF, {"id": member_id, "version": 1}, token=AUDITOR_WITH_PII))
    assert v1["memberAsOf"] == {
        "version": 1, "name": "Erin Park", "email": "erin.park@example.com", "city": "Osaka",
        "status": "ACTIVE", "erased": False, "tags": [], "consents": [],
    }
    v3 = data(await gql(client, AS_OF, {"id": member_id, "version": 3}, token=AUDITOR))
    assert v3["memberAsOf"]["tags"] == [{"tag": "vip", "reason": "loyal since 2019"}]
    assert v3["memberAsOf"]["name"] is None  # masked for an auditor without the pii scope

    then = data(await gql(client, AS_OF, {"id": member_id, "at": before_move.isoformat()},
                          token=AUDITOR_WITH_PII))
    assert then["memberAsOf"]["version"] == 3 and then["memberAsOf"]["city"] == "Osaka"
    now = data(await gql(client, AS_OF, {"id": member_id,
                                         "at": datetime.now(UTC).isoformat()},
                      token=AUDITOR_WITH_PII))
    assert now["memberAsOf"]["city"] == "Kyoto"

    too_early = (before_move - timedelta(days=365)).isoformat()
    errors: list[Any] = [
        (await gql(client, AS_OF, {"id": member_id, "at": too_early}, token=AUDITOR))["errors"],
        (await gql(client, AS_OF, {"id": member_id, "version": 99}, token=AUDITOR))["errors"],
        (await gql(client, AS_OF, {"id": member_id}, token=AUDITOR))["errors"],
        (await gql(client, AS_OF, {"id": member_id, "version": 0}, token=AUDITOR))["errors"],
    ]
    codes = [e[0]["extensions"]["code"] for e in errors]
    assert codes == ["NOT_FOUND", "NOT_FOUND", "VALIDATION", "VALIDATION"]


async def test_personal_data_is_encrypted_at_rest(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    await _member_with_history(client)
    stored = _stored_states(live_runtime)
    for secret in (b"erin.park@example.com", b"Erin Park", b"9 Secret Lane", b"13911112222"):
        assert secret not in stored
    assert b"Osaka" not in stored  # the city is personal data too


async def test_erasure_makes_personal_data_unreadable_everywhere(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    member_id, token = await _member_with_history(client)
    head = live_runtime.runner.head()
    missing_reason = data(await gql(client, ERASE, {"input": {"memberId": member_id,
                                                              "reason": " "}}, token=ADMIN))
    assert missing_reason["eraseMember"]["userErrors"][0]["code"] == "REASON_REQUIRED"
    forbidden = data(await gql(client, ERASE, {"input": {"memberId": member_id,
                                                         "reason": "gdpr"}}, token=token))
    assert forbidden["eraseMember"]["userErrors"][0]["code"] == "FORBIDDEN"
    assert live_runtime.runner.head() == head

    erased = data(await gql(
        client, ERASE, {"input": {"memberId": member_id, "reason": "GDPR request #881"}},
        token=ADMIN,
    ))["eraseMember"]
    assert erased["userErrors"] == []
    member = erased["member"]
    assert member["erased"] is True and member["erasedAt"]
    assert (member["name"], member["email"], member["phone"], member["birthday"]) == (
        None, None, None, None
    )
    assert member["preferences"]["delivery"]["defaultAddress"] is None

    # History stays complete and in order, but the personal part is gone.
    history = data(await gql(client, HISTORY, {"id": member_id}, token=AUDITOR_WITH_PII))
    events = [e["node"] for e in history["memberHistory"]["edges"]]
    assert [e["type"] for e in events][-1] == "Member.Erased"
    assert events[-1]["reason"] == "GDPR request #881"
    # Every event that held personal data says it was erased, not that it had none.
    assert [(e["type"], e["personalData"]) for e in events[:3]] == [
        ("Member.Registered", "erased"), ("Member.PreferencesSet", "erased"),
        ("Member.Tagged", "none"),
    ]
    assert "erin" not in str(events).lower() and "secret lane" not in str(events).lower()
    as_of = data(await gql(client, AS_OF, {"id": member_id, "version": 1},
                           token=AUDITOR_WITH_PII))["memberAsOf"]
    assert as_of["name"] is None and as_of["email"] is None and as_of["city"] is None

    with live_runtime.sync_engine.connect() as conn:
        key = conn.execute(select(member_data_keys)).one()
    assert key.data_key is None and key.destroyed_at is not None

    # A rebuild from the immutable events cannot bring the personal data back.
    live_runtime.runner.stop()
    live_runtime.runner.rebuild("member_profiles")
    live_runtime.start_projections()
    again = data(await gql(client, "query($id: ID!) { member(id: $id) { name email erased } }",
                           {"id": member_id}, token=ADMIN))
    assert again["member"] == {"name": None, "email": None, "erased": True}

    # Nothing more can be recorded for an erased member.
    head = live_runtime.runner.head()
    body = await gql(client, "mutation($id: ID!) { updateMemberProfile(input: {memberId: $id, "
                             "city: \"Nara\", reason: \"test\"}) { userErrors { code } } }",
                     {"id": member_id}, token=ADMIN)
    assert data(body)["updateMemberProfile"]["userErrors"][0]["code"] == "ERASED"
    body = await gql(client, ERASE, {"input": {"memberId": member_id, "reason": "again"}},
                     token=ADMIN)
    assert data(body)["eraseMember"]["userErrors"][0]["code"] == "ERASED"
    assert live_runtime.runner.head() == head


async def test_one_failing_alias_of_member_as_of_leaves_the_others_answering(
    client: httpx.AsyncClient,
) -> None:
    member_id, _ = await _member_with_history(client)
    body = await gql(client, """query($id: ID!) {
        before: memberAsOf(id: $id, at: "2000-01-01T00:00:00Z") { name }
        first: memberAsOf(id: $id, version: 1) { city }
        missing: memberAsOf(id: $id, version: 99) { city }
    }""", {"id": member_id}, token=AUDITOR_WITH_PII)
    assert body["data"] == {"before": None, "first": {"city": "Osaka"}, "missing": None}
    codes = {e["path"][0]: (e["extensions"]["code"], e["extensions"]["field"])
             for e in body["errors"]}
    assert codes == {"before": ("NOT_FOUND", "at"), "missing": ("NOT_FOUND", "version")}


async def test_a_changed_byte_of_personal_data_is_reported_as_tampered_never_internal(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    member_id, _ = await _member_with_history(client)
    table = live_runtime.app.recorder.events_table_name  # type: ignore[attr-defined]
    with live_runtime.sync_engine.begin() as conn:
        old = bytes(conn.execute(text(
            f"SELECT state FROM {table} WHERE originator_version = 1 "
            "AND topic = 'domain.member:Member.Registered'")).scalar_one())
        start = old.index(b'"data":"') + len(b'"data":"') + 30
        flipped = b"A" if old[start:start + 1] != b"A" else b"B"
        new = old[:start] + flipped + old[start + 1:]
        conn.execute(text(f"UPDATE {table} SET state = :new WHERE state = :old"),
                     {"new": new, "old": old})

    history = data(await gql(client, HISTORY, {"id": member_id}, token=AUDITOR_WITH_PII))
    registered, preferences, _ = (e["node"] for e in history["memberHistory"]["edges"])
    assert (registered["personalData"], registered["data"]["personal"]) == ("tampered", None)
    assert registered["actorRole"] == "anonymous"  # the rest of the event still reads
    assert preferences["personalData"] == "visible"
    as_of = await gql(client, AS_OF, {"id": member_id, "version": 1}, token=AUDITOR_WITH_PII)
    assert "errors" not in as_of, as_of
    assert as_of["data"]["memberAsOf"]["name"] is None
    # Commands that do not need that event's personal data still work.
    tagged = await gql(client, """mutation($id: ID!) { tagMember(input: {memberId: $id,
        tag: "checked", reason: "audit"}) { userErrors { code message } } }""",
        {"id": member_id}, token=ADMIN)
    assert tagged["data"]["tagMember"]["userErrors"] == []
