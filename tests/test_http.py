"""The HTTP surface: health and readiness, the request gate, GET, GraphiQL and headers."""

from __future__ import annotations

from datetime import timedelta

import httpx
from asgi_lifespan import LifespanManager

from api.app import create_app
from api.auth import mint_token
from api.runtime import Runtime
from domain.metadata import Role
from tests.conftest import TEST_SECRET
from tests.graphql import REGISTER, data, gql, token_for

REGISTER_ANN = (
    'mutation { registerMember(input: {name: "Ann Lee", email: "ann@example.com"}) '
    "{ position userErrors { code } } }"
)
READINESS = {
    "status": "ready",
    "checks": {"database": "ok", "migrations": "current", "projections": "running"},
}
NOT_READY = {
    "status": "unavailable",
    "checks": {"database": "ok", "migrations": "current", "projections": "not running"},
}


# -- health and readiness -------------------------------------------------------------------


async def test_healthz_answers_ok_without_touching_anything(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_database_migrations_and_projections(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == READINESS


async def test_readyz_is_unavailable_once_the_projections_stop(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    live_runtime.runner.stop()
    response = await client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json() == NOT_READY


async def test_readyz_after_a_full_application_startup_follows_the_projection_runner(
    live_runtime: Runtime,
) -> None:
    app = create_app(runtime=live_runtime, migrate_on_start=False, run_projections=False)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://patron.test") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == READINESS
            live_runtime.runner.stop()
            stopped = await http.get("/readyz")
            assert stopped.status_code == 503, stopped.text
            assert stopped.json() == NOT_READY


# -- the request gate -----------------------------------------------------------------------


async def _refused(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], status: int, code: str
) -> dict[str, object]:
    head = runtime.runner.head()
    response = await client.post("/graphql", json={"query": REGISTER_ANN}, headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errors"][0]["extensions"]["code"] == code
    assert body["errors"][0]["message"]
    assert response.headers.get("X-Request-Id")
    assert body["errors"][0]["extensions"]["requestId"] == response.headers["X-Request-Id"]
    assert "data" not in body
    assert runtime.runner.head() == head, "a refused request must record nothing"
    return dict(body)


async def test_a_malformed_authorization_header_is_refused_with_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for header in ("Token abc", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz"):
        await _refused(client, runtime, {"Authorization": header}, 401, "UNAUTHENTICATED")


async def test_a_token_signed_with_another_key_is_refused_with_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    forged = mint_token("another-secret-key-that-is-also-long-enough-for-hs256", Role.ADMIN)
    body = await _refused(
        client, runtime, {"Authorization": f"Bearer {forged}"}, 401, "UNAUTHENTICATED"
    )
    assert "invalid" in str(body["errors"])


async def test_an_expired_token_is_refused_with_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    expired = mint_token(TEST_SECRET, Role.ADMIN, "admin-1", expires_in=timedelta(seconds=-1))
    body = await _refused(
        client, runtime, {"Authorization": f"Bearer {expired}"}, 401, "UNAUTHENTICATED"
    )
    assert "expired" in str(body["errors"])


async def test_a_min_position_that_is_not_a_non_negative_integer_is_a_400(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    for value in ("-1", "abc", "1.5", "", " 3", "1e3", "9" * 19):
        await _refused(client, runtime, {"X-Patron-Min-Position": value}, 400, "VALIDATION")


async def test_a_min_position_of_non_ascii_digits_is_a_400_not_a_crash(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # Header values are Latin-1: "\xb2" is SUPERSCRIPT TWO, for which str.isdigit() is true
    # but int() fails.
    for value in (b"\xb2", b"1\xb9"):
        head = runtime.runner.head()
        response = await client.post(
            "/graphql", json={"query": REGISTER_ANN}, headers={"X-Patron-Min-Position": value}
        )
        assert response.status_code == 400, response.text
        assert response.json()["errors"][0]["extensions"]["code"] == "VALIDATION"
        assert runtime.runner.head() == head


async def test_a_valid_min_position_is_accepted(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ me { id } }", headers={"X-Patron-Min-Position": "0"})
    assert body["data"] == {"me": None}


# -- GET and GraphiQL -----------------------------------------------------------------------


async def test_queries_can_be_sent_with_get(client: httpx.AsyncClient) -> None:
    admin = token_for(Role.ADMIN, "admin-1")
    response = await client.get(
        "/graphql",
        params={"query": "{ members(first: 5) { totalCount } }"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert response.status_code == 200, response.text
    assert data(response.json()) == {"members": {"totalCount": 0}}


async def test_mutations_sent_with_get_are_refused_and_record_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    head = runtime.runner.head()
    response = await client.get("/graphql", params={"query": REGISTER_ANN})
    assert response.status_code == 400
    assert "mutations are not allowed when using GET" in response.text
    assert runtime.runner.head() == head


async def test_a_browser_gets_graphiql(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


# -- headers --------------------------------------------------------------------------------


async def test_the_client_request_id_is_echoed_back(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ me { id } }"}, headers={"X-Request-Id": "web-req-42"}
    )
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "web-req-42"


async def test_without_a_request_id_the_server_generates_one(client: httpx.AsyncClient) -> None:
    first = await client.post("/graphql", json={"query": "{ me { id } }"})
    second = await client.post("/graphql", json={"query": "{ me { id } }"})
    assert first.headers["X-Request-Id"]
    assert second.headers["X-Request-Id"]
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


async def test_an_unsafe_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ me { id } }"}, headers={"X-Request-Id": "bad id; drop"}
    )
    assert response.headers["X-Request-Id"]
    assert response.headers["X-Request-Id"] != "bad id; drop"


async def test_a_mutation_response_carries_the_position_it_wrote(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": REGISTER, "variables": {"input": {"name": "Ann", "email": "a@example.com"}}},
    )
    assert response.status_code == 200, response.text
    payload = data(response.json())["registerMember"]
    assert payload["userErrors"] == []
    assert response.headers["X-Patron-Position"] == str(payload["position"])
    assert payload["position"] == runtime.runner.head()


async def test_a_query_response_carries_no_position(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ me { id } }"})
    assert "X-Patron-Position" not in response.headers
