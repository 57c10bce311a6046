"""Recommendations as frontends and admins use them: lists per placement through GraphQL,
model versions, retraining, and the signals the recommender learns from.

The shop has three kinds of members with planted tastes — outdoor, tea and books — who
buy through the real order service; outdoor members always buy the tent with the stove.
Its catalogue is listed through the catalogue service; tea is consumable. Both backends.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from api.recommender import ModelStore
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Channel, EventMetadata, Role
from domain.recommendation.trained import ChecksumMismatchError
from domain.recommender import REGISTRY_ID, RecommenderRegistry, loses_to_baseline
from projections.recommender_tables import (
    recommendation_signals,
    recommender_artifacts,
)
from tests.graphql import gql, token_for
from tests.test_after_sales_projections import _differences
from tests.test_member_behaviour import Shop, act, meta, product

ADMIN = token_for(Role.ADMIN, "admin-1")
AGENT = token_for(Role.AGENT, "agent-7")
CATALOGUE = {
    "outdoor": ["tent", "stove", "lamp", "bag", "mat", "chair", "rope"],
    "tea": ["oolong", "puer", "green", "black", "white", "jasmine", "chai"],
    "books": ["novel", "atlas", "poems", "cookbook", "travel", "history", "essays"],
}
TASTES = tuple(CATALOGUE)
CATEGORY = {item: category for category, items in CATALOGUE.items() for item in items}
MEMBERS_PER_TASTE = 7

LIST = """
query List($placement: RecommendationPlacement!, $first: Int, $productId: String,
           $cart: [String!], $candidates: [String!]) {
  me {
    recommendations(placement: $placement, first: $first, productId: $productId,
                    cartProductIds: $cart, candidateIds: $candidates) {
      placement personalised modelVersion strategy experiment { id variant }
      items { productId name category score reason { code text productId } }
    }
  }
}
"""
MEMBER_LIST = """
query List($id: ID!) {
  member(id: $id) { recommendations(placement: HOME) { personalised items { productId } } }
}
"""
RETRAIN = """
mutation Retrain($input: RetrainRecommenderInput!) {
  retrainRecommender(input: $input) {
    version activated note position userErrors { field message code }
  }
}
"""
ACTIVATE = """
mutation Activate($input: ActivateModelInput!) {
  activateModel(input: $input) {
    version position userErrors { field message code }
  }
}
"""
MODELS = """
{ recommenderModels { version state checksum dataPosition interactions members products
                      trainingSeconds params metrics activatedBy reason } }
"""


def admin_meta(reason: str = "catalogue set-up") -> EventMetadata:
    return meta("admin-1", Role.ADMIN, Channel.ADMIN, reason=reason)


def purchases_of(taste: str, n: int) -> set[str]:
    """What `Store.populate` has member n of a taste buy."""
    items = CATALOGUE[taste]
    first = {"tent", "stove"} if taste == "outdoor" else {items[n % 3]}
    return first | {items[3 + n % 4]}


def bought(item: str) -> dict[str, Any]:
    return product(item, CATEGORY[item], "acme", 1_000)


class Store:
    """The shop with its catalogue, its members by taste and a trained model."""

    def __init__(self, runtime: Runtime, clock: AdjustableClock) -> None:
        self.runtime = runtime
        self.shop = Shop(runtime, clock)
        self.members: dict[str, list[str]] = {taste: [] for taste in TASTES}

    def list_catalogue(self) -> None:
        for category, items in CATALOGUE.items():
            for item in items:
                self.runtime.catalogue.upsert({
                    "product_id": item, "name": item.title(), "category": category,
                    "brand": "leafy" if category == "tea" else "acme", "price": 1_000,
                    "currency": "CNY", "consumable": category == "tea",
                    "attributes": f"{category} {item}",
                }, admin_meta())

    def populate(self) -> None:
        for taste in TASTES:
            items = CATALOGUE[taste]
            for n in range(MEMBERS_PER_TASTE):
                member = self.shop.member(f"{taste}{n}")
                self.members[taste].append(member)
                purchases = sorted(purchases_of(taste, n) - {items[3 + n % 4]})
                self.shop.buy(member, [bought(item) for item in purchases])
                self.shop.buy(member, [bought(items[3 + n % 4])])

    def train(self, reason: str = "first model") -> int:
        self.runtime.runner.run_once()
        report = self.runtime.recommender.train(admin_meta(reason))
        self.runtime.runner.run_once()
        return report.version

    def set_available(self, item: str, available: bool) -> None:
        self.runtime.catalogue.set_availability(item, available, "stock", admin_meta("stock"))


@pytest.fixture
async def store(runtime: Runtime, clock: AdjustableClock) -> AsyncIterator[Store]:
    shop = Store(runtime, clock)
    shop.list_catalogue()
    shop.populate()
    shop.train()
    yield shop


def caught_up(runtime: Runtime) -> dict[str, str]:
    """Makes a query wait until the read models include everything recorded so far."""
    return {"X-Patron-Min-Position": str(runtime.runner.head())}


async def recommendations(client: httpx.AsyncClient, runtime: Runtime, member: str,
                          placement: str = "HOME", **arguments: Any) -> dict[str, Any]:
    body = await gql(client, LIST, {"placement": placement, **arguments},
                     token=token_for(Role.MEMBER, member), headers=caught_up(runtime))
    assert not body.get("errors"), body["errors"]
    return body["data"]["me"]["recommendations"]  # type: ignore[no-any-return]


async def list_error(client: httpx.AsyncClient, runtime: Runtime, member: str,
                     **arguments: Any) -> dict[str, Any]:
    body = await gql(client, LIST, {"placement": "HOME", **arguments},
                     token=token_for(Role.MEMBER, member), headers=caught_up(runtime))
    assert body["errors"], body
    return body["errors"][0]["extensions"]  # type: ignore[no-any-return]


def items_of(listing: dict[str, Any]) -> list[str]:
    return [item["productId"] for item in listing["items"]]


# -- lists ----------------------------------------------------------------------------------


async def test_a_member_gets_a_home_list_of_their_taste_with_reasons_never_what_they_bought(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["outdoor"][0]
    listing = await recommendations(client, runtime, member, first=3)
    assert listing["personalised"] is True
    assert listing["modelVersion"] == 1
    assert listing["strategy"] == "HYBRID"
    assert len(listing["items"]) == 3
    assert {CATEGORY[item] for item in items_of(listing)} == {"outdoor"}
    purchased = purchases_of("outdoor", 0)
    assert not purchased & set(items_of(listing))  # bought, not consumable
    for item in listing["items"]:
        assert item["reason"]["code"] == "because_you"
        assert item["reason"]["text"].startswith("because you bought ")
        assert item["reason"]["productId"] in purchased
        assert item["name"] == item["productId"].title()
    scores = [item["score"] for item in listing["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_a_purchase_changes_the_next_list_without_retraining(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["outdoor"][1]
    before = await recommendations(client, runtime, member, first=3)
    top = items_of(before)[0]
    store.shop.buy(member, [bought(top)])
    after = await recommendations(client, runtime, member, first=3)
    assert after["modelVersion"] == before["modelVersion"] == 1
    assert top not in items_of(after)
    # A consumable comes back after it is bought: tea lovers see their tea again.
    tea_lover = store.members["tea"][0]
    tea = await recommendations(client, runtime, tea_lover, first=10)
    first_tea = next(item for item in items_of(tea) if CATEGORY[item] == "tea")
    store.shop.buy(tea_lover, [bought(first_tea)])
    again = await recommendations(client, runtime, tea_lover, first=10)
    assert first_tea in items_of(again)
    reasons = {item["productId"]: item["reason"]["text"] for item in again["items"]}
    assert any(text.startswith("because you bought") for text in reasons.values())


async def test_unavailable_products_never_appear_in_any_placement(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["outdoor"][2]
    listing = await recommendations(client, runtime, member, first=10)
    gone = items_of(listing)[0]
    store.set_available(gone, False)
    store.set_available("stove", False)
    lists = [
        await recommendations(client, runtime, member, first=20),
        await recommendations(client, runtime, member, "PRODUCT", productId="tent", first=20),
        await recommendations(client, runtime, member, "CART", cart=["tent"], first=20),
        await recommendations(client, runtime, member, "SEARCH", first=20,
                              candidates=[gone, "stove", "lamp", "novel"]),
    ]
    for each in lists:
        assert each["items"]
        assert not {gone, "stove"} & set(items_of(each))
    store.set_available(gone, True)
    back = await recommendations(client, runtime, member, "SEARCH", first=20,
                                 candidates=[gone, "lamp"])
    assert gone in items_of(back)


async def test_a_new_member_gets_a_cold_start_list_at_once(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    newcomer = store.shop.member("Newcomer")
    listing = await recommendations(client, runtime, newcomer, first=5)
    assert listing["personalised"] is True
    assert len(listing["items"]) == 5
    for item in listing["items"]:
        assert item["reason"]["code"] == "popular_in_context"
        assert item["reason"]["text"].startswith("popular")
    # Their first purchase makes the next list personal, with no retraining.
    store.shop.buy(newcomer, [bought("novel")])
    personal = await recommendations(client, runtime, newcomer, first=3)
    assert "novel" not in items_of(personal)
    assert personal["items"][0]["reason"]["code"] == "because_you"
    assert personal["modelVersion"] == 1


async def test_members_without_consent_get_the_same_list_as_anyone_and_are_told_why(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    outdoor = store.shop.member("Hiker", consent=False)
    store.shop.buy(outdoor, [bought("tent")])
    reader = store.shop.member("Reader", consent=False)
    store.shop.buy(reader, [bought("atlas")])
    first = await recommendations(client, runtime, outdoor, first=6)
    second = await recommendations(client, runtime, reader, first=6)
    assert first["personalised"] is second["personalised"] is False
    assert first["items"] == second["items"]
    for item in first["items"]:
        assert item["reason"]["code"] == "not_personalised"
        assert "not personalised" in item["reason"]["text"]
    # Every placement says so, the product page included.
    page = await recommendations(client, runtime, outdoor, "PRODUCT", productId="lamp", first=3)
    assert page["items"] and all(
        item["reason"]["text"].endswith(
            "(not personalised: you have not agreed to personalisation)")
        and item["reason"]["text"].count("not personalised") == 1
        for item in page["items"])
    # Consent makes it personal at once.
    store.shop.consent(outdoor, True)
    consented = await recommendations(client, runtime, outdoor, first=6)
    assert consented["personalised"] is True


async def test_the_product_page_lists_items_like_the_product(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["books"][0]
    # Nobody bought the lamp yet: only what it is like counts.
    listing = await recommendations(client, runtime, member, "PRODUCT", productId="lamp",
                                    first=3)
    assert "lamp" not in items_of(listing)
    assert {CATEGORY[item] for item in items_of(listing)} == {"outdoor"}
    for item in listing["items"]:
        assert item["reason"]["productId"] == "lamp"
        assert item["reason"] == {"code": "similar_to", "productId": "lamp",
                                  "text": "similar to Lamp"}
    # The tent was bought with the stove by every outdoor member: they liked it alike.
    listing = await recommendations(client, runtime, member, "PRODUCT", productId="tent",
                                    first=3)
    assert listing["items"][0]["productId"] == "stove"
    assert {CATEGORY[item] for item in items_of(listing)} == {"outdoor"}
    assert {item["reason"]["code"] for item in listing["items"]} <= {"also_liked",
                                                                     "similar_to"}


async def test_the_cart_suggests_what_is_often_bought_with_it(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["books"][1]
    listing = await recommendations(client, runtime, member, "CART", cart=["tent"], first=4)
    best = listing["items"][0]
    assert best["productId"] == "stove"
    assert best["reason"] == {"code": "bought_with", "productId": "tent",
                              "text": "often bought with Tent"}
    assert "tent" not in items_of(listing)
    assert len(listing["items"]) == 4  # similar products fill what the rules do not cover


async def test_search_re_ranks_the_candidates_and_keeps_unknown_ones_last(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["tea"][1]
    candidates = ["novel", "unknown-1", "lamp", "green", "unknown-2", "black"]
    listing = await recommendations(client, runtime, member, "SEARCH", first=10,
                                    candidates=candidates)
    ranked = items_of(listing)
    assert sorted(ranked) == sorted(candidates)  # nothing dropped, nothing added
    assert {CATEGORY[item] for item in ranked[:2]} == {"tea"}
    assert ranked[-2:] == ["unknown-1", "unknown-2"]
    assert listing["items"][-1]["reason"]["code"] == "search_order"


async def test_no_category_fills_more_than_its_share_of_the_top_ten(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert runtime.settings.recommender_max_per_category == 3
    for taste in TASTES:
        for placement, arguments in (("HOME", {}), ("PRODUCT", {"productId": "tent"}),
                                     ("CART", {"cart": ["oolong"]})):
            listing = await recommendations(client, runtime, store.members[taste][3],
                                            placement, first=10, **arguments)
            counts = Counter(CATEGORY[item] for item in items_of(listing))
            assert counts and max(counts.values()) <= 3, (placement, counts)


async def test_bad_arguments_are_typed_errors_naming_the_argument(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["tea"][2]
    cases = [
        ({"placement": "PRODUCT"}, "productId"),
        ({"placement": "CART"}, "cartProductIds"),
        ({"placement": "CART", "cart": [f"p{n}" for n in range(51)]}, "cartProductIds"),
        ({"placement": "SEARCH"}, "candidateIds"),
        ({"placement": "SEARCH", "candidates": [" "]}, "candidateIds"),
        ({"first": 0}, "first"),
        ({"first": 51}, "first"),
    ]
    for arguments, field in cases:
        error = await list_error(client, runtime, member, **arguments)
        assert (error["code"], error["field"]) == ("VALIDATION", field), arguments
    body = await gql(client, LIST, {"placement": "SIDEBAR"},
                     token=token_for(Role.MEMBER, member))
    assert "SIDEBAR" in body["errors"][0]["message"]
    # A product page for a product the shop never listed is not found, not filled with
    # popular items; a listed product that sold out still has its page.
    error = await list_error(client, runtime, member, placement="PRODUCT",
                             productId="no-such-product")
    assert (error["code"], error["field"]) == ("NOT_FOUND", "productId")
    store.set_available("lamp", False)
    assert await recommendations(client, runtime, member, "PRODUCT", productId="lamp")


async def test_members_read_only_their_own_lists_and_staff_read_any(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    owner, other = store.members["books"][4], store.members["tea"][4]
    from api.schema.common import encode_id

    member_id = encode_id("Member", owner)
    body = await gql(client, MEMBER_LIST, {"id": member_id},
                     token=token_for(Role.MEMBER, other), headers=caught_up(runtime))
    assert (body["data"] or {}).get("member") is None or body["errors"][0]["extensions"][
        "code"] == "FORBIDDEN"
    body = await gql(client, MEMBER_LIST, {"id": member_id}, token=AGENT,
                     headers=caught_up(runtime))
    assert not body.get("errors"), body
    assert body["data"]["member"]["recommendations"]["personalised"] is True
    assert body["data"]["member"]["recommendations"]["items"]


async def test_without_a_trained_model_the_error_says_how_to_train_one(
    runtime: Runtime, clock: AdjustableClock, client: httpx.AsyncClient
) -> None:
    member = Shop(runtime, clock).member("Early")
    error = await list_error(client, runtime, member)
    assert error["code"] == "INVALID_TRANSITION"
    body = await gql(client, LIST, {"placement": "HOME"}, token=token_for(Role.MEMBER, member))
    assert "patron recommend train" in body["errors"][0]["message"]


async def test_an_experiment_serves_each_member_their_variants_strategy_and_model(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    from domain.experiments import assign_variant

    second = runtime.recommender.train(admin_meta("challenger"), activate=False).version
    await runtime.wait_for_read_models(runtime.runner.head())  # define checks the version
    result = runtime.experiments.define("home popularity test", "home", [
        {"name": "control", "share": 50, "strategy": "hybrid"},
        {"name": "challenger", "share": 50, "strategy": "popularity",
         "model_version": second},
    ], "home-test", admin_meta("does popularity do as well?"))
    experiment = str(result.aggregate_id)
    members = [member for taste in TASTES for member in store.members[taste]]
    served = {}
    for member in members:
        listing = await recommendations(client, runtime, member, first=5)
        variant = assign_variant(experiment, member, runtime.experiments.get(
            result.aggregate_id).variants)
        assert listing["experiment"] == {"id": experiment, "variant": variant.name}
        assert (listing["strategy"], listing["modelVersion"]) == (
            ("HYBRID", 1) if variant.name == "control" else ("POPULARITY", second))
        served[variant.name] = listing
    assert set(served) == {"control", "challenger"}  # 21 members: both variants drawn
    # Other placements are not in the experiment.
    product = await recommendations(client, runtime, members[0], "PRODUCT", productId="tent")
    assert product["experiment"] is None and product["modelVersion"] == 1


# -- model versions ---------------------------------------------------------------------------


async def test_admins_retrain_and_roll_back_and_lists_follow_the_active_version(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    member = store.members["outdoor"][3]
    for token, variables, code in ((AGENT, {"reason": "try"}, "FORBIDDEN"),
                                   (ADMIN, {}, "REASON_REQUIRED")):
        body = await gql(client, RETRAIN, {"input": variables}, token=token)
        assert body["data"]["retrainRecommender"]["userErrors"][0]["code"] == code
    body = await gql(client, RETRAIN, {"input": {"reason": "weekly", "activate": False}},
                     token=ADMIN)
    payload = body["data"]["retrainRecommender"]
    assert (payload["version"], payload["activated"], payload["userErrors"]) == (2, False, [])
    assert (await recommendations(client, runtime, member))["modelVersion"] == 1

    body = await gql(client, ACTIVATE, {"input": {"version": 2, "reason": "better"}},
                     token=ADMIN)
    assert body["data"]["activateModel"]["userErrors"] == []
    assert (await recommendations(client, runtime, member))["modelVersion"] == 2

    body = await gql(client, MODELS, token=AGENT, headers=caught_up(runtime))
    models = body["data"]["recommenderModels"]
    assert [(m["version"], m["state"]) for m in models] == [(2, "active"), (1, "retired")]
    newest = models[0]
    assert newest["reason"] == "weekly" and newest["activatedBy"] == "admin-1"
    assert newest["members"] == 3 * MEMBERS_PER_TASTE
    assert newest["dataPosition"] > 0 and len(newest["checksum"]) == 64
    assert newest["params"]["weights"]["purchase"] == 5.0
    hybrid, baseline = newest["metrics"]["hybrid"], newest["metrics"]["popularity"]
    assert hybrid["precision"] > baseline["precision"]

    body = await gql(client, ACTIVATE, {"input": {"version": 1, "reason": "roll back"}},
                     token=ADMIN)
    assert body["data"]["activateModel"]["userErrors"] == []
    assert (await recommendations(client, runtime, member))["modelVersion"] == 1
    for variables, code in (({"version": 9, "reason": "x"}, "NOT_FOUND"),
                            ({"version": 2}, "REASON_REQUIRED")):
        body = await gql(client, ACTIVATE, {"input": variables}, token=ADMIN)
        assert body["data"]["activateModel"]["userErrors"][0]["code"] == code
    body = await gql(client, ACTIVATE, {"input": {"version": 2, "reason": "x"}}, token=AGENT)
    assert body["data"]["activateModel"]["userErrors"][0]["code"] == "FORBIDDEN"
    body = await gql(client, MODELS, token=token_for(Role.MEMBER, member))
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_tampered_model_file_is_refused(store: Store, runtime: Runtime) -> None:
    registry = runtime.recommender.registry()
    assert registry is not None
    digest = registry.checksum_of(1)
    with runtime.sync_engine.begin() as conn:
        payload = conn.scalar(select(recommender_artifacts.c.payload).where(
            recommender_artifacts.c.checksum == digest))
        conn.execute(update(recommender_artifacts)
                     .where(recommender_artifacts.c.checksum == digest)
                     .values(payload=bytes(payload)[:-1] + b"\x00"))
    with pytest.raises(ChecksumMismatchError):
        ModelStore(runtime.sync_engine).load(digest)


async def test_a_model_file_holds_no_member_ids(store: Store, runtime: Runtime) -> None:
    """Serving scores members from their current history, so erasure needs no retrain."""
    with runtime.sync_engine.connect() as conn:
        payload = bytes(conn.scalar(select(recommender_artifacts.c.payload)))
    members = [member for taste in TASTES for member in store.members[taste]]
    assert not [member for member in members if member.encode() in payload]
    assert b"tent" in payload  # the products are there


async def test_two_trainings_at_once_get_two_versions(store: Store, runtime: Runtime,
                                                      settings: Any, clock: Any) -> None:
    other = Runtime(settings, clock=clock)
    try:
        reports: list[Any] = []
        barrier = threading.Barrier(2)

        def train(rt: Runtime) -> None:
            barrier.wait()
            reports.append(rt.recommender.train(admin_meta("race")))

        threads = [threading.Thread(target=train, args=(rt,)) for rt in (runtime, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(report.version for report in reports) == [2, 3]
        registry = runtime.recommender.registry()
        assert registry is not None and list(registry.versions) == [1, 2, 3]
        assert registry.active in (2, 3)
    finally:
        other.close()


async def test_the_registry_restores_from_snapshots_as_it_was(
    runtime: Runtime, settings: Any, clock: AdjustableClock
) -> None:
    """The registry gains events forever (a training, an activation, a scheduled
    interval), so it is snapshotted; a snapshot must restore every version's checksum."""
    from dataclasses import replace

    snapshotting = Runtime(replace(settings, snapshot_interval=2), clock=clock)
    try:
        store = Store(snapshotting, clock)
        store.list_catalogue()
        store.populate()
        versions = [store.train(f"round {n}") for n in range(3)]
        snapshotting.recommender.activate(1, admin_meta("roll back"))
        expected = snapshotting.recommender.registry()
        assert expected is not None
    finally:
        snapshotting.close()
    assert runtime.app.snapshots is not None
    assert list(runtime.app.snapshots.get(REGISTRY_ID))  # it was snapshotted
    restored = runtime.recommender
    registry = restored.registry()
    assert registry is not None and versions == [1, 2, 3]
    assert (list(registry.versions), registry.checksums, registry.active) == (
        [1, 2, 3], expected.checksums, 1)
    assert restored.model_exists(3) and not restored.model_exists(4)
    restored.trained(2)  # the file of a version loads by its recorded checksum


async def test_the_scheduler_trains_once_per_interval_and_only_after_new_behaviour(
    store: Store, runtime: Runtime, clock: AdjustableClock
) -> None:
    runtime.recommender.retrain_hours = 24
    # Nothing new since the fixture trained version 1.
    assert (await asyncio.to_thread(runtime.scheduler.tick)).models_trained == 0
    store.shop.buy(store.members["tea"][5], [bought("chai")])
    runtime.runner.run_once()
    report = await asyncio.to_thread(runtime.scheduler.tick)
    assert (report.models_trained, report.errors) == (1, [])
    store.shop.buy(store.members["tea"][6], [bought("chai")])
    runtime.runner.run_once()
    # Once per interval, however many servers tick and whatever happened meanwhile.
    assert (await asyncio.to_thread(runtime.scheduler.tick)).models_trained == 0
    clock.advance(timedelta(days=1))
    assert (await asyncio.to_thread(runtime.scheduler.tick)).models_trained == 1
    runtime.runner.run_once()
    clock.advance(timedelta(days=1))
    assert (await asyncio.to_thread(runtime.scheduler.tick)).models_trained == 0  # no news
    registry = runtime.recommender.registry()
    assert registry is not None and registry.latest == 3 and registry.active == 3


def test_the_command_line_trains_lists_switches_and_evaluates(
    store: Store, runtime: Runtime, tmp_path: Any
) -> None:
    import json

    from tests.test_cli import failed_cleanly, run, run_catching

    url = runtime.settings.database.url
    trained = json.loads(run(url, "recommend", "train", "--reason", "from cron",
                             "--json").stdout.splitlines()[-1])
    assert (trained["version"], trained["activated"]) == (2, True)
    assert trained["members"] == 3 * MEMBERS_PER_TASTE and trained["metrics"]["hybrid"]
    listing = run(url, "recommend", "models").output
    assert "v2    active" in listing and "v1    retired" in listing
    assert "version 1 serves now" in run(url, "recommend", "activate", "1", "--reason",
                                         "roll back").output
    missing = run_catching(url, "recommend", "activate", "9", "--reason", "typo")
    assert failed_cleanly(missing) and "no model version 9" in missing.output

    shop = json.loads(run(url, "recommend", "evaluate", "--json").stdout.splitlines()[-1])
    assert shop["k"] == 10 and shop["hybrid"]["users"] > 0
    ratings = tmp_path / "u.data"
    ratings.write_text("".join(f"{user}\t{(user * 7 + n) % 40}\t{1 + n % 5}\t{n}\n"
                               for user in range(30) for n in range(12)))
    movielens = json.loads(run(url, "recommend", "evaluate", "--ratings", str(ratings),
                               "--k", "5", "--json").stdout.splitlines()[-1])
    assert movielens["k"] == 5 and set(movielens) >= {"popularity", "collaborative", "hybrid"}
    broken = tmp_path / "broken.data"
    broken.write_text("1\t2\t5\t100\nnot a rating line\n")
    failure = run_catching(url, "recommend", "evaluate", "--ratings", str(broken))
    assert failed_cleanly(failure) and "line 2" in failure.output
    both = run_catching(url, "recommend", "evaluate", "--ratings", str(ratings), "--synthetic")
    assert failed_cleanly(both)


# -- signals ----------------------------------------------------------------------------------


def signal_rows(runtime: Runtime, member: str) -> list[tuple[str, str, int | None]]:
    runtime.runner.run_once()
    with runtime.sync_engine.connect() as conn:
        return sorted((row.kind, row.product_id, row.stars) for row in conn.execute(
            select(recommendation_signals).where(recommendation_signals.c.member_id == member)))


async def test_signals_follow_behaviour_orders_reviews_consent_and_erasure(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    shop = Shop(runtime, clock)
    member = shop.member("Signals")
    shop.behave([act("product_viewed", "lamp", dwell_seconds=30), act("added_to_cart", "lamp"),
                 act("wish_listed", "rope"), act("searched", keywords="rope", name=None)],
                member=member)
    order = shop.buy(member, [bought("lamp"), bought("lamp") | {"sku": "LAMP-2"}])
    shop.place(member, [bought("bag")])  # placed, never paid: not a purchase
    review = shop.review(member, order, "L1", 2)
    assert signal_rows(runtime, member) == [
        ("cart_add", "lamp", None), ("purchase", "lamp", None), ("review", "lamp", 2),
        ("view", "lamp", None), ("wish_list", "rope", None)]
    with runtime.sync_engine.connect() as conn:
        quantity = conn.scalar(select(recommendation_signals.c.quantity).where(
            recommendation_signals.c.kind == "purchase"))
    assert quantity == 2  # two lines of one product are one purchase of two
    shop.revise(review, 5)
    assert ("review", "lamp", 5) in signal_rows(runtime, member)

    shop.consent(member, False)  # behaviour goes, transactions stay
    assert signal_rows(runtime, member) == [("purchase", "lamp", None), ("review", "lamp", 5)]
    before = runtime.runner.head()
    assert runtime.runner.rebuild("recommendation_signals") == before
    assert signal_rows(runtime, member) == [("purchase", "lamp", None), ("review", "lamp", 5)]
    shop.erase(member)
    assert signal_rows(runtime, member) == []


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    from projections.recommender_tables import (
        recommendation_consents,
        recommendation_orders,
        recommender_models,
    )

    names = {table.name for table in (recommendation_signals, recommendation_orders,
                                      recommendation_consents, recommender_models,
                                      recommender_artifacts)}
    assert _differences(runtime, names) == []



LOSING = {"k": 10, "hybrid": {"precision": 0.371}, "popularity": {"precision": 0.388}}


def record_losing_version(runtime: Runtime) -> int:
    """A version whose own evaluation shows it losing to popularity (the v1 model file)."""

    def record(session: Any) -> int:
        registry = session.get(RecommenderRegistry, REGISTRY_ID)
        return int(registry.record_trained(
            registry.checksum_of(1), runtime.runner.head(), 1, 1, 1, 0.1, {}, LOSING,
            runtime.clock.now(), admin_meta("losing")))

    return int(runtime.recommender.uow.run(record).value)


def test_a_model_that_loses_to_popularity_is_named_so() -> None:
    assert loses_to_baseline(LOSING) == (
        "its offline precision@10 (0.371) is below the popularity baseline's (0.388)")
    assert loses_to_baseline({"hybrid": {"precision": 0.4},
                              "popularity": {"precision": 0.388}}) is None
    assert loses_to_baseline({}) is None  # too little data to evaluate: nothing to compare


async def test_a_version_that_loses_to_popularity_serves_only_when_forced_with_a_reason(
    store: Store, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    losing = await asyncio.to_thread(record_losing_version, runtime)
    head = runtime.runner.head()
    body = await gql(client, ACTIVATE, {"input": {"version": losing, "reason": "try it"}},
                     token=ADMIN)
    (error,) = body["data"]["activateModel"]["userErrors"]
    assert (error["code"], error["field"]) == ("VALIDATION", "force")
    assert "popularity baseline" in error["message"]
    assert runtime.runner.head() == head

    body = await gql(client, ACTIVATE, {"input": {"version": losing, "force": True,
                                                  "reason": "A/B holdout needs it"}},
                     token=ADMIN)
    assert body["data"]["activateModel"]["userErrors"] == []
    member = store.members["outdoor"][0]
    assert (await recommendations(client, runtime, member))["modelVersion"] == losing
    registry = await asyncio.to_thread(runtime.recommender.registry)
    assert registry is not None and registry.active == losing
