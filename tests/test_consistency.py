"""Read-your-writes and concurrent writers."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from domain.errors import ConcurrencyConflictError
from domain.metadata import Channel, EventMetadata, Role
from tests.graphql import data, gql, register, token_for


@pytest.fixture
def stalled_runtime(settings: Settings) -> Iterator[Runtime]:
    """Projections are not running unless a test runs them: reads lag behind writes."""
    rt = Runtime(dataclasses.replace(settings, read_your_writes_timeout=0.3))
    yield rt
    rt.close()


@pytest.fixture
async def stalled_client(stalled_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=stalled_runtime, migrate_on_start=False, run_projections=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://patron.test"
    ) as http:
        yield http
    if stalled_runtime._async_engine is not None:
        await stalled_runtime._async_engine.dispose()


REGISTER = """mutation { registerMember(input: {name: "Ann", email: "ann@example.com"})
  { token position member { name } userErrors { code } } }"""


async def test_a_query_waits_for_the_clients_own_writes_then_fails_typed_when_they_lag(
    stalled_client: httpx.AsyncClient, stalled_runtime: Runtime
) -> None:
    payload = data(await gql(stalled_client, REGISTER))["registerMember"]
    # Registration records the member, their email's reservation, their loyalty account
    # and a welcome coupon.
    assert payload["position"] == stalled_runtime.runner.head() == 4
    assert payload["member"] is None  # the write happened; the read model has not caught up
    token = payload["token"]

    body = await gql(stalled_client, "{ me { name } }", token=token)
    assert body["errors"][0]["extensions"]["code"] == "PROJECTION_LAG"
    assert body["errors"][0]["extensions"]["wanted"] == payload["position"]

    stalled_runtime.runner.run_once()
    assert data(await gql(stalled_client, "{ me { name } }", token=token))["me"] == {
        "name": "Ann"
    }


async def test_the_min_position_header_carries_read_your_writes_across_servers(
    stalled_client: httpx.AsyncClient, stalled_runtime: Runtime
) -> None:
    payload = data(await gql(stalled_client, REGISTER))["registerMember"]
    stalled_runtime.runner.run_once()
    admin = token_for(Role.ADMIN)
    # A write through another server, which this server's read models have not seen yet.
    elsewhere = stalled_runtime.members.register(
        {"name": "Bo", "email": "bo@example.com"}, _meta("admin")).position
    body = await gql(stalled_client, "{ members { totalCount } }", token=admin,
                     headers={"X-Patron-Min-Position": str(elsewhere)})
    assert body["errors"][0]["extensions"]["code"] == "PROJECTION_LAG"
    body = await gql(stalled_client, "{ members { totalCount } }", token=admin,
                     headers={"X-Patron-Min-Position": str(payload["position"])})
    assert data(body)["members"]["totalCount"] == 1


async def test_with_projections_running_the_next_query_sees_the_write(
    client: httpx.AsyncClient,
) -> None:
    token = (await register(client))["token"]
    for city in ("Suzhou", "Wuxi", "Ningbo"):
        response = await client.post(
            "/graphql",
            json={"query": "mutation($c: String) { updateMemberProfile(input: {city: $c}) "
                           "{ position userErrors { code } } }", "variables": {"c": city}},
            headers={"Authorization": f"Bearer {token}"},
        )
        position = response.json()["data"]["updateMemberProfile"]["position"]
        assert response.headers["X-Patron-Position"] == str(position)
        me = data(await gql(client, "{ me { city } }", token=token))
        assert me["me"]["city"] == city


def _meta(actor: str) -> EventMetadata:
    return EventMetadata(actor, Role.ADMIN, Channel.ADMIN, "c", None, uuid.uuid4().hex, "load")


def test_concurrent_commands_on_one_member_lose_no_update(runtime: Runtime) -> None:
    member_id = runtime.members.register(
        {"name": "Busy", "email": "busy@example.com"}, _meta("admin")
    ).aggregate_id
    writers = 8
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []
    landed: list[str] = []

    def tag(index: int) -> None:
        barrier.wait()
        for round_ in range(3):
            name = f"t{index}-{round_}"
            try:
                runtime.members.tag(member_id, name, _meta(f"admin-{index}"))
                landed.append(name)
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Retries resolve the clashes; if a writer ever gives up, it says so with a typed error,
    # and what it reported as done is exactly what was recorded.
    assert all(isinstance(e, ConcurrencyConflictError) for e in errors), errors
    assert len(landed) + len(errors) == writers * 3
    member = runtime.members.get(member_id)
    assert sorted(member.tags) == sorted(landed)
    assert member.version == 1 + len(landed)
    events = list(runtime.app.events.get(member_id))
    assert [e.originator_version for e in events] == list(range(1, len(landed) + 2))


async def test_concurrent_http_updates_of_one_member_all_land(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    registered = await register(client)
    token = registered["token"]
    mutation = """mutation($cats: [String!]) { setMemberPreferences(input: {categories: $cats})
      { position userErrors { code } } }"""
    consent = """mutation($ch: ConsentChannel!) { setConsent(input:
      {purpose: MARKETING, channel: $ch, granted: true}) { position userErrors { code } } }"""
    calls = [gql(client, mutation, {"cats": [f"c{i}"]}, token=token) for i in range(6)]
    calls += [gql(client, consent, {"ch": ch}, token=token) for ch in ("SMS", "EMAIL", "APP_PUSH")]
    results = await asyncio.gather(*calls)
    positions = []
    for body in results:
        (payload,) = data(body).values()
        assert payload["userErrors"] == []
        positions.append(payload["position"])
    assert len(set(positions)) == len(calls)
    me = data(await gql(client, "{ me { version consents { channel granted } } }", token=token))
    assert me["me"]["version"] == 1 + len(calls)
    assert {c["channel"] for c in me["me"]["consents"]} == {"SMS", "EMAIL", "APP_PUSH"}


async def test_a_min_position_no_event_has_yet_is_refused_at_once(
    stalled_client: httpx.AsyncClient, stalled_runtime: Runtime
) -> None:
    data(await gql(stalled_client, REGISTER))
    beyond = stalled_runtime.runner.head() + 1
    # Answered before any read: waiting would end in PROJECTION_LAG, not a 400.
    response = await stalled_client.post(
        "/graphql", json={"query": "{ caseReasons }"},
        headers={"X-Patron-Min-Position": str(beyond)})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION"
    assert f"{beyond} is beyond the last recorded event" in error["message"]
