"""The GraphQL edge under hostile requests (issue 14): linear-time limits, query cost, body
and rate limits, malformed bodies and transport-level mistakes answered with typed errors.

Every test drives the application over real ASGI HTTP on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from domain.metadata import Role
from tests.conftest import TEST_SECRET
from tests.graphql import data, gql, register, token_for
from tests.hostile_queries import COSTLY, fragment_bomb


@contextlib.asynccontextmanager
async def serving(
    database_url: str, client_address: str = "127.0.0.1", **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, Starlette]]:
    """The application over a runtime whose settings differ from the defaults."""
    settings = Settings.from_env(
        database_url, projection_poll_interval=0.05, data_key_cache_seconds=0.0,
        recommender_retrain_hours=0.0, **overrides,
    )
    runtime = Runtime(settings)
    runtime.start_projections()
    try:
        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://patron.test") as http:
            yield http, runtime, app
    finally:
        runtime.runner.stop()
        if runtime._async_engine is not None:
            await runtime._async_engine.dispose()
        runtime.close()


def error_code(body: dict[str, Any]) -> str:
    codes = {e.get("extensions", {}).get("code") for e in body["errors"]}
    assert len(codes) == 1, body
    return str(codes.pop())


# -- linear-time validation and query cost ---------------------------------------------------


async def test_the_fragment_bomb_is_refused_as_too_costly_before_validation(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    head = runtime.runner.head()
    body = await gql(client, fragment_bomb())
    assert body.get("data") is None
    assert error_code(body) == "QUERY_TOO_COSTLY"
    # L0 costs 10 (pickupPoints: a list of about 10 objects); each level multiplies by 10.
    assert body["errors"][0]["extensions"]["cost"] == 10 * 10**8
    assert body["errors"][0]["extensions"]["maximumCost"] == runtime.settings.max_query_cost
    assert runtime.runner.head() == head
    health = await client.get("/healthz")
    assert health.status_code == 200


async def test_a_small_fragment_fan_out_is_measured_through_every_spread(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(client, fragment_bomb(levels=3, fan_out=2))
    assert data(body)["caseReasons"]
    # 2 x 2 x 2 expansions of L0's cost of 10: memoised, still exactly what runs.
    assert body["extensions"]["cost"] == {"requested": 80, "maximum": 50_000}


async def test_aliases_are_counted_through_fragment_spreads(client: httpx.AsyncClient) -> None:
    query = (
        "query { ...F ...F ...F ...F ...F ...F ...F ...F } "
        "fragment F on Query { a: caseReasons b: caseReasons c: caseReasons d: caseReasons }"
    )
    body = await gql(client, query)
    assert body.get("data") is None
    assert error_code(body) == "TOO_MANY_ALIASES"
    assert body["errors"][0]["extensions"]["aliases"] == 32


async def test_depth_is_measured_through_fragments(database_url: str) -> None:
    async with serving(database_url, max_query_depth=2) as (http, _, _app):
        query = (
            "{ me { ...P } } fragment P on Member { preferences { delivery { channels } } }"
        )
        body = await gql(http, query, token=token_for(Role.MEMBER, str(uuid.uuid4())))
        assert error_code(body) == "QUERY_TOO_DEEP"
        assert body["errors"][0]["extensions"] == {
            "code": "QUERY_TOO_DEEP", "depth": 3, "maximumDepth": 2}


async def test_a_cyclic_fragment_is_reported_by_validation_not_looped_over(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(client, "{ ...A } fragment A on Query { caseReasons ...A }")
    assert body.get("data") is None
    assert "cannot spread fragment" in body["errors"][0]["message"].lower()


async def test_the_nested_members_query_thirty_times_is_refused_with_its_cost(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    body = await gql(client, COSTLY, token=token_for(Role.ADMIN, "admin-1"))
    assert body.get("data") is None
    assert error_code(body) == "QUERY_TOO_COSTLY"
    # timeline 10, shipments 10 x (1 + 10), orders 100 x (1 + 110), members 100 x (1 + 11,100).
    assert body["errors"][0]["extensions"]["cost"] == 30 * 1_110_100


async def test_first_from_variables_prices_the_connection(client: httpx.AsyncClient) -> None:
    query = (
        "query Q($n: Int, $m: Int) { members(first: $n) { edges { node { "
        "orders(first: $m) { edges { node { shipments { id } } } } } } } }"
    )
    admin = token_for(Role.ADMIN, "admin-1")
    small = await gql(client, query, {"n": 2, "m": 3}, token=admin)
    assert data(small)["members"]["edges"] == []
    # Each order with its shipments (a list, about 10) costs 1 + 10.
    assert small["extensions"]["cost"]["requested"] == 2 * (1 + 3 * 11)
    defaults = await gql(client, query, {}, token=admin)
    # Without `first` the default page size (20) is what the server would return.
    assert defaults["extensions"]["cost"]["requested"] == 20 * (1 + 20 * 11)
    costly = await gql(client, query, {"n": 100, "m": 100}, token=admin)
    assert error_code(costly) == "QUERY_TOO_COSTLY"
    assert costly["errors"][0]["extensions"]["cost"] == 100 * (1 + 100 * 11)


async def test_a_first_above_the_page_size_is_a_validation_error_not_a_cost(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(client, "{ members(first: 100000) { totalCount } }",
                     token=token_for(Role.ADMIN, "admin-1"))
    assert error_code(body) == "VALIDATION"
    assert body["errors"][0]["extensions"]["field"] == "first"
    # Priced at the most a page can hold.
    assert body["extensions"]["cost"]["requested"] == 100


async def test_the_cost_limit_is_a_setting(database_url: str) -> None:
    async with serving(database_url, max_query_cost=5) as (http, runtime, _app):
        head = runtime.runner.head()
        ok = await gql(http, "{ caseReasons }")
        assert ok["extensions"]["cost"] == {"requested": 0, "maximum": 5}
        listed = await gql(http, "{ pickupPoints { pointId } }")
        assert error_code(listed) == "QUERY_TOO_COSTLY"
        assert listed["errors"][0]["extensions"]["cost"] == 10
        refused = await gql(
            http, 'mutation { registerMember(input: {name: "A", email: "a@example.com"}) '
            "{ member { city } userErrors { code } } }")
        # registerMember 1 + member 1 + userErrors (a list, about 10) 10.
        assert error_code(refused) == "QUERY_TOO_COSTLY"
        assert refused["errors"][0]["extensions"]["cost"] == 12
        assert runtime.runner.head() == head


async def test_the_token_limit_refuses_a_long_document_while_parsing(
    client: httpx.AsyncClient,
) -> None:
    query = "{ " + " ".join(["caseReasons"] * 3000) + " }"
    body = await gql(client, query)
    assert body.get("data") is None
    assert "tokens" in body["errors"][0]["message"]


# -- the body limit and malformed bodies -----------------------------------------------------


async def test_a_declared_body_above_the_limit_is_refused_with_413_unread(
    database_url: str,
) -> None:
    async with serving(database_url, max_body_bytes=1000) as (http, _, _app):
        big = b'{"query": "{ caseReasons }", "padding": "' + b"x" * 2000 + b'"}'
        response = await http.post("/graphql", content=big,
                                    headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert response.json()["errors"][0]["extensions"]["maximumBytes"] == 1000


async def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(
    database_url: str,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ caseReasons }", "padding": "'
        for _ in range(10_000):
            sent += 1
            yield b"x" * 500
        yield b'"}'

    async with serving(database_url, max_body_bytes=4096) as (http, _, _app):
        response = await http.post("/graphql", content=chunks(),
                                   headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        # The server stopped reading after about 4 KiB, not after 5 MB.
        assert sent < 20


async def test_a_body_within_the_limit_is_served(database_url: str) -> None:
    async with serving(database_url, max_body_bytes=1000) as (http, _, _app):
        body = await gql(http, "{ caseReasons }")
        assert data(body)["caseReasons"]


MALFORMED_BODIES = [
    pytest.param(b"null", "not null", id="null"),
    pytest.param(b"1", "not a JSON int", id="number"),
    pytest.param(b'"{ caseReasons }"', "not a JSON str", id="bare-string"),
    pytest.param(b'{"query":"\xff"}', "not valid UTF-8", id="invalid-utf8"),
    pytest.param(b"[" * 100_000, "nested too deeply", id="deep-nesting"),
    pytest.param(b'\xef\xbb\xbf{"query":"{ caseReasons }"}', "byte-order mark", id="bom"),
    pytest.param(b"{", "not valid JSON", id="truncated"),
    pytest.param(b"[]", "batching", id="batch"),
    pytest.param(b'{"query": 5}', "`query` must be a string", id="query-not-string"),
    pytest.param(b'{"query": "{ caseReasons }", "variables": [1]}', "`variables` must be",
                 id="variables-not-object"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_BODIES)
async def test_a_malformed_body_is_a_400_with_a_graphql_error(
    client: httpx.AsyncClient, runtime: Runtime, body: bytes, message: str
) -> None:
    head = runtime.runner.head()
    response = await client.post("/graphql", content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert message in error["message"]
    assert runtime.runner.head() == head


async def test_an_unsupported_content_type_is_a_400_with_a_graphql_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/graphql", content=b"{ caseReasons }",
                                 headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


# -- transport-level mistakes are typed errors -----------------------------------------------


async def test_a_subscription_sent_as_a_post_is_a_typed_error(
    client: httpx.AsyncClient,
) -> None:
    body = await gql(client, 'subscription { caseUpdated(caseId: "x") { state } }',
                     token=token_for(Role.ADMIN, "admin-1"))
    assert body.get("data") is None
    assert error_code(body) == "BAD_REQUEST"
    assert "websocket" in body["errors"][0]["message"]


@pytest.mark.parametrize(("global_id", "code"), [
    ("Tm9wZTox", "NOT_FOUND"),  # base64 of "Nope:1": a type that does not exist
    ("TWVtYmVyRWRnZTox", "NOT_FOUND"),  # "MemberEdge:1": a type that is not a Node
    ("foo:bar", "VALIDATION"),  # not base64 at all
])
async def test_node_with_an_id_of_an_unknown_type_is_a_typed_error(
    client: httpx.AsyncClient, global_id: str, code: str
) -> None:
    body = await gql(client, "query N($id: ID!) { node(id: $id) { id } }", {"id": global_id},
                     token=token_for(Role.ADMIN, "admin-1"))
    assert error_code(body) == code
    assert body["errors"][0]["extensions"]["field"] == "id"
    assert body["data"] == {"node": None}


async def test_node_still_finds_a_member(client: httpx.AsyncClient) -> None:
    payload = await register(client)
    member = payload["member"]
    body = await gql(client, "query N($id: ID!) { node(id: $id) { id ... on Member { name } } }",
                     {"id": member["id"]}, token=payload["token"])
    assert data(body)["node"] == {"id": member["id"], "name": "Ann Lee"}


async def test_a_signed_member_token_whose_subject_is_not_a_uuid_is_refused_with_401(
    client: httpx.AsyncClient,
) -> None:
    now = datetime.now(UTC)
    for subject in ("not-a-uuid", "12345678123456781234567812345678"):
        token = jwt.encode({"iss": "patron", "sub": subject, "role": "member",
                            "exp": now + timedelta(hours=1)}, TEST_SECRET, algorithm="HS256")
        response = await client.post("/graphql", json={"query": "{ me { id } }"},
                                     headers={"authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_client_mistakes_are_logged_at_info_without_tracebacks(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await gql(client, '{ node(id: "Tm9wZTox") { id } }')
    await gql(client, fragment_bomb())
    await client.post("/graphql", content=b"null", headers={"content-type": "application/json"})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    messages = [r.getMessage() for r in caplog.records]
    assert any("client error NOT_FOUND" in m and "path node" in m for m in messages), messages
    assert any("QUERY_TOO_COSTLY" in m for m in messages), messages


# -- rate limits -----------------------------------------------------------------------------


async def test_anonymous_calls_are_limited_per_client_address(database_url: str) -> None:
    limits = {"rate_limit_anonymous": "3/minute", "rate_limit_signed_in": "100/minute"}
    async with serving(database_url, client_address="10.0.0.1", **limits) as (http, runtime, app):
        for _ in range(3):
            assert data(await gql(http, "{ caseReasons }"))["caseReasons"]
        head = runtime.runner.head()
        response = await http.post("/graphql", json={"query": (
            'mutation { registerMember(input: {name: "A", email: "a@example.com"}) '
            "{ position } }")})
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 60
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] == int(response.headers["retry-after"])
        assert runtime.runner.head() == head
        # A signed-in caller from the same address has their own budget.
        signed_in = await gql(http, "{ caseReasons }", token=token_for(Role.ADMIN, "admin-1"))
        assert data(signed_in)["caseReasons"]
        # So has another address, on another connection to the same server.
        other = httpx.ASGITransport(app=app, client=("10.0.0.2", 40000))
        async with httpx.AsyncClient(transport=other, base_url="http://patron.test") as second:
            assert data(await gql(second, "{ caseReasons }"))["caseReasons"]


async def test_signed_in_calls_are_limited_per_subject(database_url: str) -> None:
    limits = {"rate_limit_anonymous": "100/minute", "rate_limit_signed_in": "2/minute"}
    async with serving(database_url, **limits) as (http, _, _app):
        ann, bob = token_for(Role.ADMIN, "admin-ann"), token_for(Role.ADMIN, "admin-bob")
        for _ in range(2):
            assert data(await gql(http, "{ caseReasons }", token=ann))
        await gql(http, "{ caseReasons }", token=ann, expect_status=429)
        # Another token of the same subject shares the budget; another subject does not.
        await gql(http, "{ caseReasons }", token=token_for(Role.ADMIN, "admin-ann"),
                  expect_status=429)
        assert data(await gql(http, "{ caseReasons }", token=bob))


async def test_concurrent_calls_beyond_the_limit_are_refused_exactly(
    database_url: str,
) -> None:
    limits = {"rate_limit_anonymous": "5/minute"}
    async with serving(database_url, client_address="10.0.0.3", **limits) as (http, _, _app):
        responses = await asyncio.gather(*(
            http.post("/graphql", json={"query": "{ caseReasons }"}) for _ in range(12)))
        assert sorted(r.status_code for r in responses) == [200] * 5 + [429] * 7


async def test_servers_sharing_redis_share_the_limit(database_url: str) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379", socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis is not reachable on 127.0.0.1:6379: {error}")
    # A fresh address per run, so counters left by other runs do not interfere.
    octets = uuid.uuid4().bytes
    address = f"10.{octets[0]}.{octets[1]}.{octets[2]}"
    limits = {"rate_limit_anonymous": "3/minute", "rate_limit_storage": "redis://127.0.0.1:6379"}
    async with serving(database_url, client_address=address, **limits) as (first, runtime, _):
        # A second server: its own application and limiter, the same Redis.
        second_app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        transport = httpx.ASGITransport(app=second_app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://patron.test") as two:
            responses = await asyncio.gather(*(
                (first if i % 2 else two).post("/graphql", json={"query": "{ caseReasons }"})
                for i in range(10)))
            assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 7
            refused = await gql(two, "{ caseReasons }", expect_status=429)
            assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        await gql(first, "{ caseReasons }", expect_status=429)
