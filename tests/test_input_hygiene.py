"""Input hygiene (issue 14): every argument passes one layer before any resolver runs.

A NUL, another control character or a lone surrogate in any text, a text longer than the
limit, a date outside 1900-2200 or a time without a zone, an integer out of its scalar's
range or sent as text: each is answered with a typed VALIDATION error naming the field as
the client wrote it (argument or variable, then input fields and list indexes), and nothing
is recorded — checked against the event store's head position. Behind the API, the event
store refuses such text too, whichever path a command came by.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.errors import DomainError, ValidationError
from domain.metadata import Channel, EventMetadata, Role
from domain.validation import refuse_unstorable
from tests.graphql import data, gql, register, token_for

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-1")

REGISTER = """
mutation R($input: RegisterMemberInput!) {
  registerMember(input: $input) { position member { memberId name } userErrors { field code } }
}"""
UPSERT = """
mutation U($input: ProductInput!) {
  upsertProduct(input: $input) { position product { productId name } userErrors { field code } }
}"""
PLACE_ORDER = """
mutation P($input: PlaceOrderInput!) {
  placeOrder(input: $input) { position order { orderId } userErrors { field code } }
}"""


def head(runtime: Runtime) -> int:
    return int(runtime.app.recorder.max_notification_id() or 0)


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The one error of a request refused before anything ran: typed, with a field."""
    assert body.get("data") is None, body
    errors = body["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    assert error["extensions"]["code"] == "VALIDATION", error
    return error


async def gql_ascii(client: httpx.AsyncClient, query: str, variables: dict[str, Any],
                    token: str | None = None) -> dict[str, Any]:
    """As `gql`, with the body JSON-escaped to ASCII: the only way to send a lone
    surrogate (\\ud800), which UTF-8 cannot encode."""
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.post("/graphql", headers=headers, content=json.dumps(
        {"query": query, "variables": variables}))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def product(**fields: Any) -> dict[str, Any]:
    return {"productId": "tea-1", "name": "Green tea", "price": 1200, "currency": "CNY",
            **fields}


def meta(role: Role = Role.ADMIN) -> EventMetadata:
    return EventMetadata(f"{role.value}-1", role, Channel.ADMIN, "c", None, "r")


# -- issue 14, reproduction 2: one NUL byte stopped the read models ------------------------


@pytest.mark.parametrize("name", ["x\u0000y", "x\u0007y", "x\ud800y", "a\u009bb"])
async def test_control_characters_in_a_members_name_are_refused_and_nothing_is_recorded(
    client: httpx.AsyncClient, live_runtime: Runtime, name: str
) -> None:
    before = head(live_runtime)
    body = await gql_ascii(client, REGISTER, {"input": {"name": name,
                                                         "email": "ann@example.com"}})
    error = only_error(body)
    assert error["extensions"]["field"] == "input.name"
    assert "control characters" in error["message"]
    assert head(live_runtime) == before
    # The read models go on: the next member registers and reads herself at once.
    member = await register(client, name="Ann Lee", email="ann@example.com")
    me = data(await gql(client, "{ me { name } }", token=member["token"]))
    assert me["me"]["name"] == "Ann Lee"


async def test_a_nul_written_into_the_document_is_refused_naming_the_field(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    before = head(live_runtime)
    body = await gql(client, 'mutation { registerMember(input: {name: "x\\u0000y", '
                             'email: "a@example.com"}) { position } }')
    assert only_error(body)["extensions"]["field"] == "input.name"
    assert head(live_runtime) == before


async def test_newline_and_tab_pass(client: httpx.AsyncClient) -> None:
    """They are text like any other (the member's rules then tidy the blanks of a name)."""
    member = await register(client, name="Ann\tLee", email="ann@example.com",
                            city="Shang\nhai")
    assert member["member"]["name"] == "Ann Lee"


async def test_a_nul_in_an_order_lines_product_is_refused_with_its_index(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    member = await register(client)
    lines = [{"productId": "ok" if i != 2 else "a\u0000", "quantity": 1} for i in range(3)]
    before = head(live_runtime)
    body = await gql(client, PLACE_ORDER, {"input": {"lines": lines, "idempotencyKey": "k1"}},
                     token=member["token"])
    assert only_error(body)["extensions"]["field"] == "input.lines.2.productId"
    assert head(live_runtime) == before


async def test_a_nul_in_a_product_name_is_refused(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    before = head(live_runtime)
    body = await gql(client, UPSERT, {"input": product(name="Green\u0000tea")}, token=ADMIN)
    assert only_error(body)["extensions"]["field"] == "input.name"
    assert head(live_runtime) == before


# -- lengths --------------------------------------------------------------------------------


async def test_texts_are_bounded_by_the_configured_length(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    limit = live_runtime.settings.max_input_length
    assert limit == 10_000
    before = head(live_runtime)
    body = await gql(client, UPSERT, {"input": product(attributes="x" * (limit + 1))},
                     token=ADMIN)
    error = only_error(body)
    assert error["extensions"]["field"] == "input.attributes"
    assert f"at most {limit} characters" in error["message"]
    body = await gql(client, "{ products(search: \"" + "y" * (limit + 1) + "\") { totalCount } }")
    assert only_error(body)["extensions"]["field"] == "search"
    assert head(live_runtime) == before


@pytest.fixture
async def short_client(settings: Settings, clock: AdjustableClock
                       ) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A server whose inputs may be at most 20 characters, and whose projections do not run
    (so its read models lag behind every write, within 0.3 s)."""
    runtime = Runtime(dataclasses.replace(settings, max_input_length=20,
                                          read_your_writes_timeout=0.3), clock=clock)
    app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://patron.test") as http:
        yield http, runtime
    runtime.close()


async def test_the_length_limit_is_configurable(
    short_client: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, _runtime = short_client
    body = await gql(client, "query Q($id: String!) { product(productId: $id) { name } }",
                     {"id": "p" * 21})
    error = only_error(body)
    assert error["extensions"]["field"] == "id"
    assert "at most 20 characters" in error["message"]


# -- issue 14, reproduction 6: client mistakes answered as INTERNAL -------------------------


@pytest.mark.parametrize(("document", "field"), [
    ('{ product(productId: "a\\u0000") { name } }', "productId"),
    ('{ products(search: "a\\u0000") { totalCount } }', "search"),
    ("{ products(first: 3000000000) { totalCount } }", "first"),
    ('{ products(first: "3") { totalCount } }', "first"),
])
async def test_bad_literals_in_queries_are_validation_errors(
    client: httpx.AsyncClient, document: str, field: str
) -> None:
    assert only_error(await gql(client, document))["extensions"]["field"] == field


@pytest.mark.parametrize(("variables", "field"), [
    ({"id": "a\u0000"}, "id"),
    ({"id": ["a"]}, "id"),
    ({"id": "ok", "first": "3"}, "first"),
    ({"id": "ok", "first": 2**31}, "first"),
    ({"id": "ok", "first": 1.5}, "first"),
])
async def test_bad_variables_in_queries_are_validation_errors(
    client: httpx.AsyncClient, variables: dict[str, Any], field: str
) -> None:
    document = ("query Q($id: String!, $first: Int) { product(productId: $id) { name } "
                "products(first: $first) { totalCount } }")
    assert only_error(await gql(client, document, variables))["extensions"]["field"] == field


@pytest.mark.parametrize("price", ["9223372036854775808", '"100"', "-9223372036854775809",
                                   "1.5"])
async def test_an_unrepresentable_price_literal_is_a_validation_error(
    client: httpx.AsyncClient, live_runtime: Runtime, price: str
) -> None:
    before = head(live_runtime)
    body = await gql(client, 'mutation { upsertProduct(input: {productId: "p1", name: "n", '
                             f'price: {price}, currency: "CNY"}}) {{ position }} }}',
                     token=ADMIN)
    assert only_error(body)["extensions"]["field"] == "input.price"
    assert head(live_runtime) == before


@pytest.mark.parametrize("price", [2**63, "100", -(2**63) - 1, True])
async def test_an_unrepresentable_price_variable_is_a_validation_error(
    client: httpx.AsyncClient, live_runtime: Runtime, price: Any
) -> None:
    before = head(live_runtime)
    body = await gql(client, UPSERT, {"input": product(price=price)}, token=ADMIN)
    assert only_error(body)["extensions"]["field"] == "input.price"
    # Prices come from the catalogue; the one price a client (staff) may send is an override.
    body = await gql(client, PLACE_ORDER, {"input": {
        "idempotencyKey": "k", "lines": [{"productId": "p", "quantity": 1}],
        "priceOverrides": [{"line": 0, "unitPrice": price, "reason": "damaged box"}]}},
        token=ADMIN)
    assert only_error(body)["extensions"]["field"] == "input.priceOverrides.0.unitPrice"
    assert head(live_runtime) == before


@pytest.mark.parametrize(("dates", "field"), [
    ({"from": "9999-12-31", "to": "9999-12-31"}, "from"),
    ({"from": "2024-01-01", "to": "2201-01-01"}, "to"),
    ({"from": "1899-12-31", "to": "2024-01-01"}, "from"),
    ({"from": "2024-02-30", "to": "2024-03-01"}, "from"),
])
async def test_business_dates_are_within_1900_to_2200(
    client: httpx.AsyncClient, dates: dict[str, str], field: str
) -> None:
    literal = (f'{{ behaviourKpis(from: "{dates["from"]}", to: "{dates["to"]}") '
               "{ __typename } }")
    variables = ("query K($from: Date!, $to: Date!) { behaviourKpis(from: $from, to: $to) "
                 "{ __typename } }")
    for body in (await gql(client, literal, token=AGENT),
                 await gql(client, variables, dates, token=AGENT)):
        assert body["data"] is None
        assert {e["extensions"]["code"] for e in body["errors"]} == {"VALIDATION"}
        assert field in {e["extensions"]["field"] for e in body["errors"]}


@pytest.mark.parametrize("moment", ["2024-05-01T09:00:00", "9999-12-31T23:59:59-23:59",
                                    "0001-01-01T00:00:00+14:00", "2024-05-01T09:00:00\u0000"])
async def test_times_need_a_zone_and_a_sane_year(client: httpx.AsyncClient,
                                                 moment: str) -> None:
    document = ("query S($from: DateTime!) { serviceKpis(from: $from, "
                'to: "2024-06-01T00:00:00Z") { __typename } }')
    error = only_error(await gql(client, document, {"from": moment}, token=AGENT))
    assert error["extensions"]["field"] == "from"


@pytest.mark.parametrize(("node_id", "code"), [
    ("Tm9wZTox", "NOT_FOUND"),  # "Nope:1": a well-formed id of a type that does not exist
    ("foo:bar", "VALIDATION"), ("", "VALIDATION"),
])
async def test_a_node_id_that_names_no_type_is_a_typed_error(
    client: httpx.AsyncClient, node_id: str, code: str
) -> None:
    body = await gql(client, "query N($id: ID!) { node(id: $id) { id } }", {"id": node_id})
    assert body["data"] == {"node": None}
    [error] = body["errors"]
    assert (error["extensions"]["code"], error["extensions"]["field"]) == (code, "id")


async def test_every_mistake_is_named(client: httpx.AsyncClient) -> None:
    """Several mistakes in one request: each is reported with its own path."""
    body = await gql(client, UPSERT, {"input": product(name="a\u0000", currency="C\u0001Y",
                                                       releasedOn="3000-01-01")},
                     token=ADMIN)
    fields = {e["extensions"]["field"] for e in body["errors"]}
    assert {e["extensions"]["code"] for e in body["errors"]} == {"VALIDATION"}
    assert "input.releasedOn" in fields


async def test_client_mistakes_are_logged_at_info_without_what_was_sent(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="patron.api"):
        body = await gql(client, REGISTER, {"input": {"name": "Secret\u0000Name",
                                                      "email": "ann@example.com"}},
                         headers={"X-Request-Id": "req-nul"})
    only_error(body)
    records = [r for r in caplog.records if r.name == "patron.api"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert records[0].exc_info is None
    assert "VALIDATION" in records[0].getMessage()
    assert "input.name" in records[0].getMessage() and "req-nul" in records[0].getMessage()
    assert "Secret" not in caplog.text


async def test_graphql_validation_errors_are_typed_too(client: httpx.AsyncClient) -> None:
    for document in ("{ nope }", "{ products(first: 1) { totalCount }", "query Q($x: Int!) "
                     "{ products(first: $x) { totalCount } }"):
        body = await gql(client, document)
        assert body["errors"], body
        assert {e["extensions"]["code"] for e in body["errors"]} == {"VALIDATION"}


# -- issue 14: an admin's upsertProduct answered INTERNAL although its event was committed -


async def test_a_lagging_read_model_does_not_turn_a_recorded_upsert_into_an_error(
    short_client: tuple[httpx.AsyncClient, Runtime]
) -> None:
    client, runtime = short_client
    before = head(runtime)
    payload = data(await gql(client, UPSERT, {"input": product(name="Tea")},
                             token=ADMIN))["upsertProduct"]
    assert payload["userErrors"] == []
    assert payload["position"] == head(runtime) > before  # it says what it recorded
    assert payload["product"] is None  # not readable yet
    # A query that must see the write is refused with a typed error, not INTERNAL.
    body = await gql(client, '{ product(productId: "tea-1") { name } }', token=ADMIN,
                     headers={"X-Patron-Min-Position": str(payload["position"])})
    assert body["errors"][0]["extensions"]["code"] == "PROJECTION_LAG"


# -- defence in depth: the event store refuses what the API would have ----------------------


def test_a_nul_via_the_service_layer_is_refused_and_nothing_is_recorded(
    runtime: Runtime
) -> None:
    before = head(runtime)
    with pytest.raises(ValidationError) as refused:
        runtime.members.register({"name": "x\u0000y", "email": "ann@example.com"},
                                 meta(Role.SYSTEM))
    assert refused.value.field == "name"
    with pytest.raises(ValidationError) as refused:
        runtime.catalogue.upsert({"product_id": "tea-1", "name": "Tea", "price": 1,
                                  "currency": "CNY", "attributes": "\u0000"}, meta())
    assert refused.value.field == "attributes"
    assert head(runtime) == before


def test_a_nul_in_an_order_line_via_the_service_layer_is_refused(runtime: Runtime) -> None:
    member = runtime.members.register({"name": "Ann Lee", "email": "ann@example.com"},
                                      meta(Role.SYSTEM)).aggregate_id
    # A line names only a product and a quantity (the catalogue gives the rest), so the
    # product id is the text a caller of the service can get wrong.
    runtime.catalogue.upsert({"product_id": "tea", "name": "Tea", "price": 100,
                              "currency": "CNY"}, meta())
    lines = [{"product_id": "tea", "quantity": 1}, {"product_id": "c\u0000up", "quantity": 1}]
    own = EventMetadata(str(member), Role.MEMBER, Channel.WEB, "c", None, "r")
    before = head(runtime)
    with pytest.raises(DomainError) as refused:
        runtime.orders.place(member, lines, None, 0, "k-1", own)
    assert refused.value.field == "lines.1.product_id"
    assert head(runtime) == before


def test_the_event_store_refuses_control_characters_in_any_event(runtime: Runtime) -> None:
    """Even a rule that forgot to check: the event store's mapper is the last line."""
    listed = runtime.catalogue.upsert({"product_id": "tea-1", "name": "Tea", "price": 1,
                                       "currency": "CNY"}, meta())
    before = head(runtime)
    with pytest.raises(ValidationError) as refused:
        runtime.catalogue.set_availability("tea-1", False, "sold\u0000out", meta())
    assert refused.value.field == "reason"
    assert head(runtime) == before == listed.position


def test_the_event_stores_rules_refuse_absurd_moments() -> None:
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59)))
    with pytest.raises(ValidationError) as refused:
        refuse_unstorable({"eta": far, "id": str(uuid.uuid4())})
    assert refused.value.field == "eta"
    refuse_unstorable({"text": "tab\tand\nnewline", "at": datetime.now().astimezone()})
