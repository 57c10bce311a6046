"""The GraphQL schema: the committed SDL, its conventions, its limits and its error masking."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    get_named_type,
)

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from api.schema import export_sdl
from domain.metadata import Channel, EventMetadata, Role
from tests.graphql import data, gql, register, token_for

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


# -- the committed SDL ----------------------------------------------------------------------


def test_the_committed_schema_file_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == export_sdl(), (
        "schema.graphql is out of date with the code; regenerate it with "
        "`patron export-schema --output schema.graphql` and commit the result"
    )


# -- conventions, checked on the published schema -------------------------------------------


@pytest.fixture(scope="module")
def sdl_schema() -> GraphQLSchema:
    return build_schema(SCHEMA_FILE.read_text())


def _object_type(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    found = schema.get_type(name)
    assert isinstance(found, GraphQLObjectType), f"{name} is not an object type"
    return found


def _is_non_null_list_of_non_null(type_: object, name: str) -> bool:
    if not isinstance(type_, GraphQLNonNull) or not isinstance(type_.of_type, GraphQLList):
        return False
    item = type_.of_type.of_type
    return isinstance(item, GraphQLNonNull) and get_named_type(item).name == name


def test_every_mutation_takes_one_input_and_returns_user_errors(
    sdl_schema: GraphQLSchema,
) -> None:
    mutation = sdl_schema.mutation_type
    assert mutation is not None and mutation.fields
    for name, field in mutation.fields.items():
        assert list(field.args) == ["input"], f"{name} must take exactly one argument `input`"
        assert isinstance(field.args["input"].type, GraphQLNonNull), f"{name}: input is required"
        payload = get_named_type(field.type)
        assert isinstance(payload, GraphQLObjectType), f"{name} must return an object payload"
        user_errors = payload.fields.get("userErrors")
        assert user_errors is not None, f"{payload.name} has no userErrors field"
        assert _is_non_null_list_of_non_null(user_errors.type, "UserError"), (
            f"{payload.name}.userErrors must be [UserError!]!, not {user_errors.type}"
        )


def test_every_connection_field_pages_with_first_and_after(sdl_schema: GraphQLSchema) -> None:
    connection_fields = []
    for type_ in sdl_schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            if get_named_type(field.type).name.endswith("Connection"):
                connection_fields.append(f"{type_.name}.{name}")
                assert {"first", "after"} <= set(field.args), (
                    f"{type_.name}.{name} returns a connection without `first` and `after`"
                )
    assert "Query.members" in connection_fields
    assert "Query.memberHistory" in connection_fields


def test_connections_have_edges_page_info_and_a_total_count(sdl_schema: GraphQLSchema) -> None:
    for type_ in sdl_schema.type_map.values():
        if isinstance(type_, GraphQLObjectType) and type_.name.endswith("Connection"):
            assert {"edges", "pageInfo", "totalCount"} <= set(type_.fields), type_.name


def test_member_implements_node(sdl_schema: GraphQLSchema) -> None:
    member = _object_type(sdl_schema, "Member")
    assert "Node" in [interface.name for interface in member.interfaces]
    assert isinstance(member.fields["id"].type, GraphQLNonNull)


# -- limits ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(
    database_url: str, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The application over a runtime whose settings differ from the defaults."""
    settings = Settings.from_env(
        database_url, projection_poll_interval=0.05, data_key_cache_seconds=0.0, **overrides
    )
    runtime = Runtime(settings)
    runtime.start_projections()
    try:
        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://patron.test") as http:
            yield http, runtime
    finally:
        runtime.runner.stop()
        if runtime._async_engine is not None:
            await runtime._async_engine.dispose()
        runtime.close()


@pytest.fixture
async def shallow(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    async with serving(database_url, max_query_depth=3) as pair:
        yield pair


DEEP_REGISTRATION = """
mutation Deep {
  registerMember(input: {name: "Ann", email: "ann@example.com"}) {
    member { preferences { delivery { defaultAddress { city } } } }
    userErrors { code }
  }
}
"""


async def test_a_query_deeper_than_the_limit_is_rejected_and_records_nothing(
    shallow: tuple[httpx.AsyncClient, Runtime],
) -> None:
    shallow_client, shallow_runtime = shallow
    head = shallow_runtime.runner.head()
    body = await gql(shallow_client, DEEP_REGISTRATION)
    assert body.get("data") is None
    assert body["errors"], body
    assert "depth" in body["errors"][0]["message"].lower()
    assert shallow_runtime.runner.head() == head


async def test_a_query_within_the_depth_limit_runs(
    shallow: tuple[httpx.AsyncClient, Runtime],
) -> None:
    shallow_client, shallow_runtime = shallow
    body = await gql(
        shallow_client,
        'mutation { registerMember(input: {name: "Ann", email: "ann@example.com"}) '
        "{ member { city } userErrors { code } } }",
    )
    assert data(body)["registerMember"]["userErrors"] == []
    assert shallow_runtime.runner.head() >= 1


async def test_the_default_depth_limit_allows_the_deepest_member_fields(
    client: httpx.AsyncClient,
) -> None:
    payload = await register(client)
    body = await gql(
        client,
        "{ me { preferences { delivery { defaultAddress { city } } } } }",
        token=payload["token"],
    )
    assert data(body) == {"me": {"preferences": {"delivery": {"defaultAddress": None}}}}


async def test_too_many_aliases_are_rejected(client: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(40)) + " }"
    body = await gql(client, query, token=token_for(Role.ADMIN, "admin-1"))
    assert body.get("data") is None
    assert "aliases" in body["errors"][0]["message"].lower()


async def test_aliased_mutations_beyond_the_limit_record_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    head = runtime.runner.head()
    query = "mutation { " + " ".join(
        f'r{i}: registerMember(input: {{name: "M{i}", email: "m{i}@example.com"}}) '
        "{ position }"
        for i in range(31)
    ) + " }"
    body = await gql(client, query)
    assert body.get("data") is None
    assert "aliases" in body["errors"][0]["message"].lower()
    assert runtime.runner.head() == head


async def test_thirty_aliases_are_allowed(client: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(30)) + " }"
    body = await gql(client, query, token=token_for(Role.ADMIN, "admin-1"))
    assert body["data"] == {f"a{i}": None for i in range(30)}


async def test_a_query_with_too_many_tokens_is_rejected(client: httpx.AsyncClient) -> None:
    query = "{ me { " + " ".join(["id"] * 2100) + " } }"
    body = await gql(client, query, token=token_for(Role.ADMIN, "admin-1"))
    assert body.get("data") is None
    assert "token" in body["errors"][0]["message"].lower()


# -- error masking --------------------------------------------------------------------------

UPDATE_CITY = """
mutation Update($input: UpdateMemberProfileInput!) {
  updateMemberProfile(input: $input) { position userErrors { code } }
}
"""


async def test_unexpected_errors_are_masked_logged_and_quote_the_request_id(
    client: httpx.AsyncClient,
    live_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    member = await register(client)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(live_runtime.members, "update_profile", broken)
    head = live_runtime.runner.head()
    with caplog.at_level(logging.ERROR):
        response = await client.post(
            "/graphql",
            json={"query": UPDATE_CITY, "variables": {"input": {"city": "Xi'an"}}},
            headers={"Authorization": f"Bearer {member['token']}", "X-Request-Id": "req-masked"},
        )
    assert response.status_code == 200, response.text
    assert "hunter2" not in response.text
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "INTERNAL", "requestId": "req-masked"}
    assert response.headers["X-Request-Id"] == "req-masked"
    assert "req-masked" in error["message"]
    assert error["path"] == ["updateMemberProfile"]
    assert live_runtime.runner.head() == head
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert logged, "the unexpected error must be logged"
    assert any("hunter2" in str(r.exc_info[1]) for r in logged if r.exc_info)
    assert any("req-masked" in r.getMessage() for r in logged)


async def test_the_generated_request_id_is_quoted_when_the_client_sent_none(
    client: httpx.AsyncClient, live_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await register(client)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(live_runtime.members, "update_profile", broken)
    response = await client.post(
        "/graphql",
        json={"query": UPDATE_CITY, "variables": {"input": {"city": "Xi'an"}}},
        headers={"Authorization": f"Bearer {member['token']}"},
    )
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"] == response.headers["X-Request-Id"]


async def test_expected_errors_are_not_masked(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="patron.api"):
        body = await gql(client, "{ me { id } }")
    error = body["errors"][0]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "sign in" in error["message"]
    assert "requestId" not in error["extensions"]
    assert not [r for r in caplog.records if r.name == "patron.api"]


async def test_a_projection_lag_error_is_typed_not_masked(database_url: str) -> None:
    async with serving(database_url, read_your_writes_timeout=0.2) as (http, runtime):
        # A write the read models cannot catch up with: their runner is stopped.
        runtime.runner.stop()
        written = runtime.members.register(
            {"name": "Lag", "email": "lag@example.com"},
            EventMetadata("anon", Role.ANONYMOUS, Channel.WEB, "c", None, "r")).position
        body = await gql(
            http,
            "{ members { totalCount } }",
            token=token_for(Role.ADMIN, "admin-1"),
            headers={"X-Patron-Min-Position": str(written)},
        )
    error = body["errors"][0]
    assert (error["extensions"]["code"], error["extensions"]["wanted"]) == (
        "PROJECTION_LAG", written)
    assert error["extensions"]["reached"] < written
    assert str(written) in error["message"]


async def test_graphql_validation_errors_are_not_masked(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ me { noSuchField } }")
    assert body.get("data") is None
    assert "noSuchField" in body["errors"][0]["message"]
