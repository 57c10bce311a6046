"""The product catalogue: admins list, revise and (un)make available products; anyone reads
them; the recommender reads the whole table. Both backends.

Writes go through GraphQL over HTTP as an admin's tools would send them, or through the
service where the test is about the service (validation of every field, concurrency).
What was recorded is read back from the event store, what is shown from the read model.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from api.catalogue_readmodels import (
    consumable_product_ids,
    load_catalogue,
    unavailable_product_ids,
)
from api.runtime import Runtime, alembic_config
from domain.catalogue import CatalogueProduct, product_aggregate_id, validate_product
from domain.clock import AdjustableClock
from domain.errors import ErrorCode, ForbiddenError, NotFoundError, ValidationError
from domain.metadata import Channel, EventMetadata, Role
from domain.order import validate_lines
from domain.recommendation.catalogue import Product
from projections.catalogue_tables import CATALOGUE_TABLES, products
from projections.tables import metadata
from tests.graphql import data, gql, token_for
from tests.test_orders_api import eventually, shopper

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-1")
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)

PRODUCT = """id productId name category brand price currency releasedOn isNew attributes
             consumable available availabilityReason listedAt updatedAt version position"""
PAYLOAD = f"product {{ {PRODUCT} }} position userErrors {{ field code message }}"
UPSERT = f"mutation U($input: ProductInput!) {{ upsertProduct(input: $input) {{ {PAYLOAD} }} }}"
SET_AVAILABILITY = f"""
mutation A($input: SetProductAvailabilityInput!) {{
  setProductAvailability(input: $input) {{ {PAYLOAD} }}
}}"""
ONE = f"query P($id: String!) {{ product(productId: $id) {{ {PRODUCT} }} }}"
PAGE = """
query L($category: String, $available: Boolean, $search: String, $first: Int, $after: String) {
  products(category: $category, available: $available, search: $search, first: $first,
           after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { productId name available } }
  }
}"""


def admin_meta(reason: str | None = None) -> EventMetadata:
    return EventMetadata("admin-1", Role.ADMIN, Channel.ADMIN, "c", None, "r", reason)


def meta_of(role: Role) -> EventMetadata:
    return EventMetadata(f"{role.value}-1", role, Channel.ADMIN if role.is_staff else Channel.WEB,
                         "c", None, "r", "because")


def tea(**changes: Any) -> dict[str, Any]:
    """Input for one product, as the GraphQL API takes it."""
    return {"productId": "TEA-001", "name": "Green tea 250 g", "category": "Tea",
            "brand": "Greenleaf", "price": 6_800, "currency": "CNY",
            "releasedOn": "2027-02-20", "attributes": "loose leaf; spring harvest",
            "consumable": True, **changes}


def fields(**changes: Any) -> dict[str, Any]:
    """The same product, as the service takes it."""
    return {"product_id": "TEA-001", "name": "Green tea 250 g", "category": "Tea",
            "brand": "Greenleaf", "price": 6_800, "currency": "CNY",
            "released_on": date(2027, 2, 20), "attributes": "loose leaf; spring harvest",
            "consumable": True, **changes}


async def upsert(client: httpx.AsyncClient, input: dict[str, Any],
                 token: str | None = ADMIN) -> dict[str, Any]:
    body = await gql(client, UPSERT, {"input": input}, token=token)
    payload: dict[str, Any] = data(body)["upsertProduct"]
    return payload


async def set_availability(client: httpx.AsyncClient, product_id: str, available: bool,
                           reason: str | None = None, token: str | None = ADMIN
                           ) -> dict[str, Any]:
    body = await gql(client, SET_AVAILABILITY, {"input": {
        "productId": product_id, "available": available, "reason": reason}}, token=token)
    payload: dict[str, Any] = data(body)["setProductAvailability"]
    return payload


async def read(client: httpx.AsyncClient, product_id: str,
               token: str | None = None) -> dict[str, Any] | None:
    product: dict[str, Any] | None = data(await gql(client, ONE, {"id": product_id},
                                                    token=token))["product"]
    return product


def ok(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["userErrors"] == [], payload["userErrors"]
    product: dict[str, Any] = payload["product"]
    return product


def events_of(runtime: Runtime, product_id: str) -> list[Any]:
    return list(runtime.app.repository.event_store.get(product_aggregate_id(product_id)))


def table(runtime: Runtime) -> list[tuple[Any, ...]]:
    with runtime.sync_engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(products).order_by(
            products.c.product_id))]


@pytest.fixture
def at_t0(clock: AdjustableClock) -> AdjustableClock:
    clock.set(T0)
    return clock


# -- listing and revising -------------------------------------------------------------------


async def test_an_admin_lists_a_product_and_anyone_reads_it_as_listed(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    payload = await upsert(client, tea(reason="spring range"))
    product = ok(payload)
    assert payload["position"] is not None
    assert product == {
        "id": product["id"], "productId": "TEA-001", "name": "Green tea 250 g",
        "category": "tea", "brand": "greenleaf", "price": 6_800, "currency": "CNY",
        "releasedOn": "2027-02-20", "isNew": True,
        "attributes": "loose leaf; spring harvest", "consumable": True, "available": True,
        "availabilityReason": None, "listedAt": "2027-03-01T09:00:00+00:00",
        "updatedAt": "2027-03-01T09:00:00+00:00", "version": 1,
        "position": payload["position"],
    }
    (listed,) = events_of(live_runtime, "TEA-001")
    assert isinstance(listed, CatalogueProduct.Listed)
    assert (listed.meta["actor_id"], listed.meta["reason"]) == ("admin-1", "spring range")

    # The public catalogue: no token, and by global id too.
    assert await read(client, "TEA-001") == product
    body = await gql(client, "query N($id: ID!) { node(id: $id) { ... on Product { name } } }",
                     {"id": product["id"]})
    assert data(body)["node"] == {"name": "Green tea 250 g"}
    assert await read(client, "NOT-LISTED") is None


async def test_an_upsert_records_only_the_fields_that_changed_and_nothing_when_none_did(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    listed = ok(await upsert(client, tea()))
    head = live_runtime.runner.head()

    again = await upsert(client, tea(category="  TEA "))  # the same, spelt differently
    assert again["position"] is None and again["userErrors"] == []
    assert again["product"] == listed
    assert live_runtime.runner.head() == head

    at_t0.advance(timedelta(days=1))
    payload = await upsert(client, tea(price=7_200, brand="Hearth"))
    revised = ok(payload)
    assert payload["position"] > head
    assert (revised["price"], revised["brand"], revised["version"]) == (7_200, "hearth", 2)
    assert revised["listedAt"] == listed["listedAt"]
    assert revised["updatedAt"] == "2027-03-02T09:00:00+00:00"
    last = events_of(live_runtime, "TEA-001")[-1]
    assert isinstance(last, CatalogueProduct.Revised)
    assert last.changes == {"price": 7_200, "brand": "hearth"}

    # An upsert describes the whole product: what it leaves out is none.
    bare = ok(await upsert(client, {"productId": "TEA-001", "name": "Green tea 250 g",
                                    "price": 7_200, "currency": "CNY"}))
    assert (bare["category"], bare["brand"], bare["releasedOn"], bare["attributes"],
            bare["consumable"]) == (None, None, None, "", False)
    assert events_of(live_runtime, "TEA-001")[-1].changes == {
        "category": None, "brand": None, "released_on": None, "attributes": "",
        "consumable": False}


async def test_availability_changes_are_recorded_with_their_reason_once(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    ok(await upsert(client, tea()))
    payload = await set_availability(client, "TEA-001", False, "sold out")
    gone = ok(payload)
    assert (gone["available"], gone["availabilityReason"], gone["version"]) == (
        False, "sold out", 2)
    last = events_of(live_runtime, "TEA-001")[-1]
    assert isinstance(last, CatalogueProduct.AvailabilityChanged)
    assert (last.available, last.reason) == (False, "sold out")

    head = live_runtime.runner.head()
    again = await set_availability(client, "TEA-001", False, "still sold out")
    assert again["position"] is None and again["product"]["availabilityReason"] == "sold out"
    # An upsert that does not mention availability leaves it as it is.
    assert (await upsert(client, tea()))["position"] is None
    assert live_runtime.runner.head() == head

    back = ok(await upsert(client, tea(available=True, reason="restocked")))
    assert (back["available"], back["availabilityReason"], back["version"]) == (
        True, "restocked", 3)

    missing = await set_availability(client, "NOPE-1", False, "recall")
    assert missing["product"] is None and missing["position"] is None
    assert [(e["field"], e["code"]) for e in missing["userErrors"]] == [
        ("productId", "NOT_FOUND")]
    assert live_runtime.runner.head() == back["position"]

    # A product may be listed unavailable (announced before it can be bought).
    soon = ok(await upsert(client, tea(productId="TEA-002", available=False,
                                       reason="pre-order opens in April")))
    assert (soon["available"], soon["availabilityReason"]) == (False,
                                                               "pre-order opens in April")


# -- bad input ------------------------------------------------------------------------------

# (what is wrong, the fields as given, the field the error names)
BAD_PRODUCTS: list[tuple[str, dict[str, Any], str]] = [
    ("blank product id", fields(product_id="  "), "product_id"),
    ("product id with a space", fields(product_id="TEA 001"), "product_id"),
    ("product id with a non-ASCII letter", fields(product_id="茶-1"), "product_id"),
    ("product id of 101 characters", fields(product_id="P" * 101), "product_id"),
    ("product id not text", fields(product_id=1001), "product_id"),
    ("blank name", fields(name=" "), "name"),
    ("name of 201 characters", fields(name="n" * 201), "name"),
    ("category not text", fields(category=7), "category"),
    ("brand not text", fields(brand=["a"]), "brand"),
    ("negative price", fields(price=-1), "price"),
    ("price as a float", fields(price=68.0), "price"),
    ("price as a bool", fields(price=True), "price"),
    ("price missing", {k: v for k, v in fields().items() if k != "price"}, "price"),
    ("lower-case currency", fields(currency="cny"), "currency"),
    ("currency of four letters", fields(currency="CNYY"), "currency"),
    ("release date that is not a date", fields(released_on="next spring"), "released_on"),
    ("release date as a datetime", fields(released_on=T0), "released_on"),
    ("release date more than a year ahead", fields(released_on=date(2028, 3, 2)),
     "released_on"),
    ("attributes of 2001 characters", fields(attributes="a" * 2001), "attributes"),
    ("attributes not text", fields(attributes={"colour": "green"}), "attributes"),
    ("consumable not a bool", fields(consumable="yes"), "consumable"),
    ("available not a bool", fields(available=1), "available"),
    ("an unknown field", fields(colour="green"), "colour"),
]


def test_every_bad_field_is_a_validation_error_on_that_field_and_records_nothing(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    runtime.catalogue.upsert(fields(product_id="LISTED-1"), admin_meta())
    head = runtime.runner.head()
    for what, given, field in BAD_PRODUCTS:
        # Each bad field on a new product and on a listed one (a bad id names neither).
        attempts = [given] if field == "product_id" else [
            {**given, "product_id": product_id} for product_id in ("TEA-001", "LISTED-1")]
        for attempt in attempts:
            with pytest.raises(ValidationError) as raised:
                runtime.catalogue.upsert(attempt, admin_meta())
            assert (raised.value.field, raised.value.code) == (field, ErrorCode.VALIDATION), what
    assert runtime.runner.head() == head


def test_the_first_bad_field_is_the_one_reported() -> None:
    with pytest.raises(ValidationError) as raised:
        validate_product(fields(name="", price=-1, currency="x"), today=T0.date())
    assert raised.value.field == "name"


def test_limits_are_inclusive() -> None:
    checked = validate_product(fields(product_id="a.b-c_d:e/F" + "9" * 89, name="n" * 200,
                                      attributes="a" * 2000, price=0,
                                      released_on="2028-03-01"), today=T0.date())
    assert (len(checked["product_id"]), checked["released_on"], checked["price"]) == (
        100, date(2028, 3, 1), 0)


def test_category_and_brand_are_kept_exactly_as_order_lines_keep_them() -> None:
    for spelling in ("  Green Tea ", "TEA", "x" * 80, "", "   "):
        (line,) = validate_lines([{"product_id": "TEA-001", "sku": "T", "name": "tea",
                                   "quantity": 1, "unit_price": 100,
                                   "category": spelling, "brand": spelling}])
        product = validate_product(fields(category=spelling, brand=spelling), today=T0.date())
        assert (product["category"], product["brand"]) == (line["category"], line["brand"])
    assert validate_product(fields(category=None), today=T0.date())["category"] is None


async def test_bad_input_over_graphql_names_the_input_field_and_records_nothing(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    head = live_runtime.runner.head()
    for given, field in ((tea(productId="tea 1"), "productId"),
                         (tea(releasedOn="2030-01-01"), "releasedOn"),
                         (tea(currency="yuan"), "currency")):
        payload = await upsert(client, given)
        assert payload["product"] is None and payload["position"] is None
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
            (field, "VALIDATION")]
    # A price that is not a whole number never reaches the service.
    body = await gql(client, UPSERT, {"input": tea(price=68.5)}, token=ADMIN)
    assert body["errors"] and body.get("data") is None
    assert live_runtime.runner.head() == head


# -- who may -------------------------------------------------------------------------------


async def test_only_admins_change_the_catalogue(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    ok(await upsert(client, tea()))
    member = await shopper(client, "Ann Lee")
    head = live_runtime.runner.head()
    for token in (AGENT, member.token, None):
        payload = await upsert(client, tea(price=1), token=token)
        assert payload["product"] is None and payload["position"] is None
        assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"]
        payload = await set_availability(client, "TEA-001", False, "no", token=token)
        assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"]
    assert live_runtime.runner.head() == head
    assert (await read(client, "TEA-001", token=member.token) or {})["price"] == 6_800


def test_the_service_refuses_non_admins_before_looking_at_the_input(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    for role in (Role.AGENT, Role.MEMBER, Role.SYSTEM, Role.AUDITOR, Role.ANONYMOUS):
        with pytest.raises(ForbiddenError):
            runtime.catalogue.upsert(fields(price=-1), meta_of(role))
        with pytest.raises(ForbiddenError):
            runtime.catalogue.set_availability("TEA-001", False, None, meta_of(role))
    with pytest.raises(NotFoundError) as raised:
        runtime.catalogue.set_availability("TEA-001", False, None, admin_meta())
    assert raised.value.field == "product_id"
    assert runtime.runner.head() == 0


# -- reading the catalogue ------------------------------------------------------------------


async def test_anyone_pages_through_the_catalogue_by_category_availability_and_name(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    for product_id, name, category in (("C-1", "Coffee beans 500 g", "grocery"),
                                       ("T-2", "Oolong tea", "grocery"),
                                       ("T-1", "Green tea 250 g", "Grocery"),
                                       ("K-1", "Tea kettle", "home"),
                                       ("M-1", "100% cotton tea towel", "home")):
        ok(await upsert(client, tea(productId=product_id, name=name, category=category)))
    ok(await set_availability(client, "T-2", False, "harvest failed"))

    async def page(**variables: Any) -> dict[str, Any]:
        result: dict[str, Any] = data(await gql(client, PAGE, variables))["products"]
        return result

    def ids(result: dict[str, Any]) -> list[str]:
        return [edge["node"]["productId"] for edge in result["edges"]]

    everything = await page()
    assert ids(everything) == ["C-1", "K-1", "M-1", "T-1", "T-2"]
    assert everything["totalCount"] == 5

    first = await page(category=" GROCERY", first=2)
    assert (ids(first), first["totalCount"], first["pageInfo"]["hasNextPage"]) == (
        ["C-1", "T-1"], 3, True)
    rest = await page(category="grocery", first=2, after=first["pageInfo"]["endCursor"])
    assert (ids(rest), rest["pageInfo"]["hasNextPage"]) == (["T-2"], False)

    assert ids(await page(search="TEA", available=True)) == ["K-1", "M-1", "T-1"]
    assert ids(await page(available=False)) == ["T-2"]
    assert ids(await page(search="100%")) == ["M-1"]  # a wildcard character is literal
    assert ids(await page(search="0%")) == ["M-1"]
    assert ids(await page(search="0_")) == []  # `_` too: as a wildcard it would match "00"
    assert ids(await page(search="tea/")) == []  # and the escape character itself
    assert ids(await page(category="toys")) == []

    body = await gql(client, PAGE, {"after": "not-a-cursor"})
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION"
    body = await gql(client, PAGE, {"search": "x" * 201})
    assert body["errors"][0]["extensions"]["field"] == "search"


async def test_a_product_is_new_for_thirty_days_from_its_release(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    ok(await upsert(client, tea(releasedOn="2027-03-10")))  # announced, not yet out
    ok(await upsert(client, tea(productId="OLD-1", releasedOn="2027-01-30")))  # 30 days ago
    ok(await upsert(client, tea(productId="NONE-1", releasedOn=None)))

    async def new() -> dict[str, bool]:
        body = await gql(client, "{ products { edges { node { productId isNew } } } }")
        return {e["node"]["productId"]: e["node"]["isNew"]
                for e in data(body)["products"]["edges"]}

    assert await new() == {"TEA-001": False, "OLD-1": True, "NONE-1": False}
    at_t0.set(T0 + timedelta(days=9))
    assert await new() == {"TEA-001": True, "OLD-1": False, "NONE-1": False}
    at_t0.set(T0 + timedelta(days=40))
    assert await new() == {"TEA-001": False, "OLD-1": False, "NONE-1": False}


def test_the_recommender_reads_the_whole_catalogue_with_consumables_and_unavailable_items(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    runtime.catalogue.upsert(fields(), admin_meta())
    runtime.catalogue.upsert(fields(product_id="PAN-1", name="Cast-iron pan", category="Home",
                                    brand=None, price=23_900, released_on=None,
                                    attributes=None, consumable=False), admin_meta())
    runtime.catalogue.set_availability("PAN-1", False, "recalled", admin_meta())
    runtime.runner.run_once()
    with runtime.sync_engine.connect() as conn:
        catalogue = load_catalogue(conn)
        consumables = consumable_product_ids(conn)
        unavailable = unavailable_product_ids(conn)
    assert catalogue == {
        "TEA-001": Product("TEA-001", "Green tea 250 g", "tea", "greenleaf", 6_800,
                           date(2027, 2, 20), "loose leaf; spring harvest", True),
        "PAN-1": Product("PAN-1", "Cast-iron pan", "home", "", 23_900, None, "", False),
    }
    assert (consumables, unavailable) == ({"TEA-001"}, {"PAN-1"})


# -- concurrency ----------------------------------------------------------------------------


def _race(count: int, act: Any) -> list[Any]:
    """Run `act(i)` in `count` threads released at once; their results or exceptions."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = act(index)
        except Exception as error:  # reported by the assertions below
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_upserts_of_one_new_product_list_it_once(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    outcomes = _race(6, lambda _i: runtime.catalogue.upsert(fields(), admin_meta()))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert {o.aggregate_id for o in outcomes} == {product_aggregate_id("TEA-001")}
    assert len([o for o in outcomes if o.position is not None]) == 1
    (listed,) = events_of(runtime, "TEA-001")
    assert isinstance(listed, CatalogueProduct.Listed)


def test_concurrent_revisions_lose_no_update_and_the_read_model_ends_as_the_aggregate(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    prices = [1_000 * (i + 1) for i in range(6)]
    outcomes = _race(6, lambda i: runtime.catalogue.upsert(fields(price=prices[i]),
                                                          admin_meta()))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    events = events_of(runtime, "TEA-001")
    assert isinstance(events[0], CatalogueProduct.Listed)
    assert all(isinstance(e, CatalogueProduct.Revised) for e in events[1:])
    # Each write that recorded something is one version; none overwrote another unseen.
    recorded = [o for o in outcomes if o.position is not None]
    assert len(events) == len(recorded) and sorted(o.version for o in recorded) == list(
        range(1, len(events) + 1))
    aggregate = runtime.catalogue.find("TEA-001")
    assert aggregate is not None and aggregate.price in prices
    runtime.runner.run_once()
    ((price, version),) = [(row[4], row[13]) for row in table(runtime)]
    assert (price, version) == (aggregate.price, aggregate.version)


# -- the read model -------------------------------------------------------------------------


def test_rebuilding_the_projection_reproduces_the_table(
        runtime: Runtime, at_t0: AdjustableClock) -> None:
    catalogue = runtime.catalogue
    catalogue.upsert(fields(), admin_meta())
    catalogue.upsert(fields(product_id="PAN-1", name="Pan", category=None, price=100,
                            released_on=None, available=False), admin_meta("coming soon"))
    at_t0.advance(timedelta(hours=5))
    catalogue.upsert(fields(price=7_000, released_on=date(2027, 1, 1)), admin_meta())
    catalogue.set_availability("TEA-001", False, "sold out", admin_meta())
    catalogue.set_availability("PAN-1", True, None, admin_meta())
    runtime.runner.run_once()
    live = table(runtime)
    assert [(row[0], row[4], row[6], row[9], row[10], row[13]) for row in live] == [
        ("PAN-1", 100, None, True, None, 2),
        ("TEA-001", 7_000, date(2027, 1, 1), False, "sold out", 3),
    ]
    assert runtime.runner.rebuild("products") == runtime.runner.head()
    assert table(runtime) == live


def _differences(runtime: Runtime) -> list[Any]:
    names = {t.name for t in CATALOGUE_TABLES}
    with runtime.sync_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff  # modify_* come as lists
        kind = item[0]
        if kind in ("add_table", "remove_table"):
            return str(item[1].name)
        if kind in ("add_column", "remove_column") or kind.startswith("modify_"):
            return str(item[2])
        named = getattr(item[1], "table", None)  # indexes and constraints
        return str(named.name) if named is not None else None

    return [diff for diff in differences if table_of(diff) in names]


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime) == []
    with runtime.sync_engine.connect() as conn:
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("products")}
    assert indexes == {"ix_products_category": ["category"],
                       "ix_products_available": ["available"]}


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0008")
    with runtime.sync_engine.connect() as conn:
        assert "products" not in inspect(conn).get_table_names()
    command.upgrade(config, "head")
    assert _differences(runtime) == []


def test_a_products_aggregate_id_is_the_same_for_the_same_shop_id() -> None:
    assert product_aggregate_id("TEA-001") == product_aggregate_id("TEA-001")
    assert product_aggregate_id("TEA-001") != product_aggregate_id("tea-001")
    assert isinstance(product_aggregate_id("TEA-001"), UUID)


async def test_read_your_writes_shows_a_listing_at_once(
        client: httpx.AsyncClient, live_runtime: Runtime, at_t0: AdjustableClock) -> None:
    payload = await upsert(client, tea())
    # The admin's next query waits for its own write; a stranger sees it shortly after.
    assert (await read(client, "TEA-001", token=ADMIN) or {})["position"] == payload["position"]
    seen = await eventually(lambda: read(client, "TEA-001"), lambda p: p is not None)
    assert seen is not None and seen["version"] == 1
