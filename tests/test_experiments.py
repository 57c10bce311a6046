"""A/B experiments on recommendations: defining and stopping them, deterministic
assignment, impressions and clicks stamped by the server, and results with confidence
intervals. Both backends.

Three layers are specified here:

- the pure rules (domain/experiments.py): variants, assignment, feedback validation,
  stamping and the interval formulas, without a database;
- the service and the "experiment_results" read model: commands through the real
  services (orders placed and paid through the order service), the business clock set
  before each step, and a runner of our own that projects only this projection; "nothing
  recorded" is checked against the event store's head;
- the GraphQL API over HTTP, as the back office and a shop frontend drive it.

Members are registered with random ids, so which variant a member lands in is not chosen
by the test: `Lab.recruit` registers members until one is assigned the variant wanted
(assignment is the function under test elsewhere), and the API test computes what each
variant should count from `assign_variant` of its shoppers.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from alembic import command
from scipy.stats import binomtest
from sqlalchemy import func, insert, inspect, select

from api.config import Settings
from api.experiment_readmodels import Assignment, running_assignment
from api.experiments import FeedbackResult
from api.runtime import Runtime, alembic_config
from domain.clock import AdjustableClock
from domain.errors import (
    DomainError,
    ErasedError,
    ErrorCode,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
    ReasonRequiredError,
    ValidationError,
)
from domain.experiments import (
    BUCKETS,
    Experiment,
    ExperimentSlot,
    Interval,
    Variant,
    assign_variant,
    bucket_of,
    difference_interval,
    stamp,
    validate_clicks,
    validate_impressions,
    validate_variants,
    wilson_interval,
)
from domain.metadata import Channel, EventMetadata, Role
from domain.recommendation.placement import Placement, Strategy
from projections.engine import ReadModelRunner
from projections.experiment_results import ExperimentResultsProjection
from projections.experiment_tables import (
    EXPERIMENT_TABLES,
    experiment_clicks,
    experiment_exposures,
    experiment_orders,
    experiment_variant_results,
    experiments,
)
from projections.recommender_tables import recommender_models
from tests.graphql import data, gql
from tests.shop import stocked
from tests.test_after_sales_projections import _differences
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    AUDITOR,
    Shopper,
    eventually,
    head,
    line,
    mutate,
    pay,
    place,
    shopper,
)

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
NAME = "experiment_results"
TABLE_NAMES = {t.name for t in EXPERIMENT_TABLES}

HYBRID_VS_POPULAR: list[dict[str, Any]] = [
    {"name": "control", "share": 50, "strategy": "hybrid"},
    {"name": "popular", "share": 50, "strategy": "popularity"},
]


def meta(actor: str, role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    channel = Channel.ADMIN if role.is_staff else Channel.WEB
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


def admin(reason: str | None = "compare hybrid with popularity") -> EventMetadata:
    return meta("admin-1", Role.ADMIN, reason)


def variants_of(*shares: int, strategy: str = "hybrid") -> list[dict[str, Any]]:
    return [{"name": f"v{i}", "share": share, "strategy": strategy}
            for i, share in enumerate(shares)]


def refused(action: Callable[[], Any], error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as raised:
        action()
    return raised.value


# == the pure rules ===========================================================================


@pytest.mark.parametrize(("variants", "field"), [
    (variants_of(60, 30), "variants"),
    (variants_of(50, 40, 20), "variants"),
    (variants_of(100), "variants"),
    (variants_of(*[10] * 9, 5, 5), "variants"),
    ([{"name": "a", "share": 50, "strategy": "hybrid"},
      {"name": "A", "share": 50, "strategy": "content"}], "variants.1.name"),
    ([{"name": " ", "share": 50, "strategy": "hybrid"}, *variants_of(50)], "variants.0.name"),
    ([{"name": "x" * 41, "share": 50, "strategy": "hybrid"}, *variants_of(50)],
     "variants.0.name"),
    ([{"name": "a", "share": 0, "strategy": "hybrid"}, *variants_of(100)], "variants.0.share"),
    ([{"name": "a", "share": 50.0, "strategy": "hybrid"}, *variants_of(50)],
     "variants.0.share"),
    ([{"name": "a", "share": True, "strategy": "hybrid"}, *variants_of(99)],
     "variants.0.share"),
    ([{"name": "a", "share": 50, "strategy": "magic"}, *variants_of(50)],
     "variants.0.strategy"),
    ([*variants_of(50), {"name": "b", "share": 50, "strategy": "hybrid",
                         "model_version": 0}], "variants.1.model_version"),
    ([*variants_of(50), "not a variant"], "variants.1"),
    ("hybrid", "variants"),
])
def test_variants_are_2_to_10_named_arms_whose_whole_shares_add_up_to_100(
        variants: Any, field: str) -> None:
    error = refused(lambda: validate_variants(variants), ValidationError)
    assert error.field == field


def test_valid_variants_keep_their_order_strategy_and_model_version() -> None:
    checked = validate_variants([
        {"name": " control ", "share": 34, "strategy": "hybrid"},
        {"name": "cf-v3", "share": 33, "strategy": "collaborative", "model_version": 3},
        {"name": "content", "share": 33, "strategy": Strategy.CONTENT},
    ])
    assert checked == [Variant("control", 34, Strategy.HYBRID),
                       Variant("cf-v3", 33, Strategy.COLLABORATIVE, 3),
                       Variant("content", 33, Strategy.CONTENT)]
    assert len(validate_variants(variants_of(*[10] * 10))) == 10


def test_only_an_admin_with_a_reason_defines_or_stops_and_stopping_twice_is_refused() -> None:
    experiment_id = uuid.uuid4()
    assert refused(lambda: Experiment.define(experiment_id, "AB", "home", HYBRID_VS_POPULAR,
                                             T0, meta("agent-1", Role.AGENT, "why")),
                   ForbiddenError).code is ErrorCode.FORBIDDEN
    refused(lambda: Experiment.define(experiment_id, "AB", "home", HYBRID_VS_POPULAR, T0,
                                      admin(reason=None)), ReasonRequiredError)
    assert refused(lambda: Experiment.define(experiment_id, "AB", "footer", HYBRID_VS_POPULAR,
                                             T0, admin()), ValidationError).field == "placement"
    assert refused(lambda: Experiment.define(experiment_id, " ", "home", HYBRID_VS_POPULAR,
                                             T0, admin()), ValidationError).field == "name"

    experiment = Experiment.define(experiment_id, " AB ", "home", HYBRID_VS_POPULAR, T0,
                                   admin())
    assert (experiment.name, experiment.placement, experiment.is_running) == ("AB", "home", True)
    refused(lambda: experiment.stop(None, T0 + HOUR, admin(reason=None)), ReasonRequiredError)
    experiment.stop("popularity wins", T0 + HOUR, admin(reason=None))
    again = refused(lambda: experiment.stop("again", T0 + 2 * HOUR, admin()),
                    InvalidTransitionError)
    assert again.code is ErrorCode.INVALID_TRANSITION
    assert isinstance(again, InvalidTransitionError) and again.current_state == "stopped"
    assert (experiment.stop_reason, experiment.version) == ("popularity wins", 2)


def test_a_placement_slot_runs_one_experiment_at_a_time_and_remembers_when() -> None:
    slot = ExperimentSlot.open(Placement.HOME, T0, admin())
    assert slot.id == ExperimentSlot.id_for("home") != ExperimentSlot.id_for("cart")
    first, second = uuid.uuid4(), uuid.uuid4()
    slot.occupy(first, T0 + HOUR, admin())
    taken = refused(lambda: slot.occupy(second, T0 + 2 * HOUR, admin()), InvalidTransitionError)
    assert taken.field == "placement" and str(first) in taken.message
    refused(lambda: slot.free(second, T0 + 2 * HOUR, admin()), InvalidTransitionError)
    slot.free(first, T0 + 3 * HOUR, admin())
    slot.occupy(second, T0 + 5 * HOUR, admin())
    assert slot.experiment_at(T0) is None
    assert slot.experiment_at(T0 + HOUR) == str(first)
    assert slot.experiment_at(T0 + 3 * HOUR - timedelta(seconds=1)) == str(first)
    assert slot.experiment_at(T0 + 4 * HOUR) is None
    assert slot.experiment_at(T0 + 30 * DAY) == str(second)


def test_assignment_is_stable_for_a_member_and_follows_the_sha256_bucket() -> None:
    variants = validate_variants(variants_of(20, 30, 50))
    experiment_id, member_id = str(uuid.uuid4()), str(uuid.uuid4())
    chosen = {assign_variant(experiment_id, member_id, variants).name for _ in range(20)}
    assert len(chosen) == 1
    bucket = bucket_of(experiment_id, member_id)
    assert 0 <= bucket < BUCKETS
    expected = "v0" if bucket < 2_000 else "v1" if bucket < 5_000 else "v2"
    assert chosen == {expected}
    # The order of the variants defines the bucket ranges.
    assert assign_variant(experiment_id, member_id, list(reversed(variants))).name == (
        "v2" if bucket < 5_000 else "v1" if bucket < 8_000 else "v0")


@pytest.mark.parametrize("shares", [(50, 50), (10, 90), (20, 30, 50), (1, 4, 15, 80)])
def test_over_10000_members_each_variant_gets_its_share_within_2_points(
        shares: tuple[int, ...]) -> None:
    variants = validate_variants(variants_of(*shares))
    experiment_id = str(uuid.UUID(int=sum(shares) * 7919 + len(shares)))
    members = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"member-{i}")) for i in range(10_000)]
    counts = Counter(assign_variant(experiment_id, m, variants).name for m in members)
    for variant in variants:
        assert abs(counts[variant.name] / 100 - variant.share) <= 2, (variant, counts)


def test_two_experiments_assign_independently() -> None:
    variants = validate_variants(HYBRID_VS_POPULAR)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    members = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"member-{i}")) for i in range(10_000)]
    in_first = [m for m in members if assign_variant(first, m, variants).name == "popular"]
    both = [m for m in in_first if assign_variant(second, m, variants).name == "popular"]
    # Being in one experiment's treatment says nothing of the other: about half again.
    assert abs(len(both) / len(in_first) - 0.5) <= 0.03
    differ = sum(assign_variant(first, m, variants) != assign_variant(second, m, variants)
                 for m in members)
    assert abs(differ / len(members) - 0.5) <= 0.02


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    # Wilson (1927) score interval, z = 1.96: textbook values.
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_intervals_match_known_values(successes: int, trials: int, low: float,
                                             high: float) -> None:
    interval = wilson_interval(successes, trials)
    assert interval is not None
    assert interval.value == pytest.approx(successes / trials)
    assert (interval.low, interval.high) == (pytest.approx(low, abs=5e-5),
                                             pytest.approx(high, abs=5e-5))
    reference = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    assert (interval.low, interval.high) == (pytest.approx(reference.low, abs=1e-9),
                                             pytest.approx(reference.high, abs=1e-9))


def test_a_rate_without_trials_has_no_interval_and_excess_successes_are_capped() -> None:
    assert wilson_interval(0, 0) is None
    capped = wilson_interval(12, 10)
    assert capped is not None and capped.value == pytest.approx(1.2)
    assert (capped.low, capped.high) == (pytest.approx(0.7225, abs=5e-5), pytest.approx(1.0))


def test_the_difference_from_the_control_uses_the_normal_approximation() -> None:
    # p1 = 0.1, p2 = 0.2: se = sqrt(.1*.9/100 + .2*.8/100) = 0.05; 1.96 * 0.05 = 0.098.
    lift = difference_interval(10, 100, 20, 100)
    assert lift is not None
    assert (lift.value, lift.low, lift.high) == (pytest.approx(0.1), pytest.approx(0.002, abs=1e-4),
                                                 pytest.approx(0.198, abs=1e-4))
    worse = difference_interval(30, 200, 15, 200)
    assert worse is not None and worse.value == pytest.approx(-0.075) and worse.high < 0
    assert difference_interval(0, 0, 3, 10) is None
    assert difference_interval(3, 10, 0, 0) is None


NOW = T0 + 10 * DAY


def impression(**fields: Any) -> dict[str, Any]:
    return {"placement": "home", "product_id": "tent", "position": 1, "shown_at": NOW,
            **fields}


@pytest.mark.parametrize(("items", "field"), [
    ([], "impressions"),
    ([impression()] * 501, "impressions"),
    ("tent", "impressions"),
    ([impression(), "tent"], "impressions.1"),
    ([impression(), impression(placement="footer")], "impressions.1.placement"),
    ([impression(product_id="")], "impressions.0.product_id"),
    ([impression(product_id="p" * 101)], "impressions.0.product_id"),
    ([impression(product_id=7)], "impressions.0.product_id"),
    ([impression(), impression(), impression(position=0)], "impressions.2.position"),
    ([impression(position=101)], "impressions.0.position"),
    ([impression(position="1")], "impressions.0.position"),
    ([impression(shown_at=NOW - 7 * DAY - timedelta(seconds=1))], "impressions.0.shown_at"),
    ([impression(shown_at=NOW + timedelta(minutes=6))], "impressions.0.shown_at"),
    ([impression(shown_at=NOW.replace(tzinfo=None))], "impressions.0.shown_at"),
])
def test_bad_impressions_name_the_item_and_field(items: Any, field: str) -> None:
    assert refused(lambda: validate_impressions(items, NOW), ValidationError).field == field


def test_feedback_times_allow_a_week_of_buffering_and_five_minutes_of_skew() -> None:
    items = validate_impressions([
        impression(shown_at=NOW - 7 * DAY), impression(shown_at=NOW + timedelta(minutes=5)),
        impression(shown_at=None, product_id=" lamp ", position=100)], NOW)
    assert [i["shown_at"] for i in items] == [
        (NOW - 7 * DAY).isoformat(), (NOW + timedelta(minutes=5)).isoformat(), NOW.isoformat()]
    assert items[2]["product_id"] == "lamp"
    clicks = validate_clicks([{"placement": "cart", "product_id": "lamp", "clicked_at": NOW}],
                             NOW)
    assert clicks == [{"placement": "cart", "product_id": "lamp",
                       "clicked_at": NOW.isoformat(), "experiment_id": None, "variant": None}]
    late = [{"placement": "cart", "product_id": "lamp", "clicked_at": NOW + HOUR}]
    assert refused(lambda: validate_clicks(late, NOW), ValidationError).field == \
        "clicks.0.clicked_at"


def test_stamping_ignores_what_the_client_claims_about_experiments() -> None:
    variants = validate_variants(HYBRID_VS_POPULAR)
    experiment_id, member_id = str(uuid.uuid4()), str(uuid.uuid4())
    forged = [{**impression(), "experiment_id": "forged", "variant": "popular"},
              {**impression(placement="cart"), "experiment_id": "forged",
               "variant": "popular"}]
    checked = validate_impressions(forged, NOW)
    assert all(i["experiment_id"] is None and i["variant"] is None for i in checked)

    def running(placement: str, moment: datetime) -> tuple[str, list[Variant]] | None:
        return (experiment_id, variants) if placement == "home" else None

    stamped = stamp(checked, "shown_at", member_id, running)
    assert [(i["experiment_id"], i["variant"]) for i in stamped] == [
        (experiment_id, assign_variant(experiment_id, member_id, variants).name), (None, None)]


# == the service and the read model ===========================================================


class Lab:
    """Members, experiments, feedback and orders, on a clock the test moves."""

    def __init__(self, runtime: Runtime, clock: AdjustableClock) -> None:
        self.rt = runtime
        self.clock = clock
        clock.set(T0)
        self.runner = ReadModelRunner(
            runtime.sync_engine, runtime.app.recorder,  # type: ignore[arg-type]
            runtime.app.mapper, [ExperimentResultsProjection()], batch_size=3)

    def at(self, offset: timedelta) -> None:
        self.clock.set(T0 + offset)

    def head(self) -> int:
        return self.rt.runner.head()

    def project(self) -> None:
        self.runner.catch_up(NAME)

    def define(self, placement: str = "home", variants: Any = None, key: str | None = None,
               name: str = "Hybrid vs popular") -> UUID:
        return self.rt.experiments.define(
            name, placement, HYBRID_VS_POPULAR if variants is None else variants,
            key or uuid.uuid4().hex, admin()).aggregate_id

    def stop(self, experiment_id: UUID, reason: str = "popularity wins") -> None:
        self.rt.experiments.stop(experiment_id, admin(reason))

    def member(self, name: str = "Mia") -> str:
        return str(self.rt.members.register(
            {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"},
            meta("anon", Role.ANONYMOUS)).aggregate_id)

    def recruit(self, experiment_id: UUID, variant: str) -> str:
        """A new member whom assignment puts in `variant`."""
        variants = self.rt.experiments.get(experiment_id).variants
        for attempt in range(200):
            member_id = self.member(f"M{attempt}")
            if assign_variant(str(experiment_id), member_id, variants).name == variant:
                return member_id
        raise AssertionError(f"no member landed in {variant}")

    def show(self, member_id: str, *products: str, placement: str = "home",
             key: str | None = None, shown_at: datetime | None = None) -> FeedbackResult:
        items = [{"placement": placement, "product_id": p, "position": i + 1,
                  "shown_at": shown_at} for i, p in enumerate(products)]
        return self.rt.experiments.record_impressions(UUID(member_id), key or uuid.uuid4().hex,
                                                      items, meta(member_id))

    def click(self, member_id: str, *products: str, placement: str = "home",
              key: str | None = None, clicked_at: datetime | None = None) -> FeedbackResult:
        items = [{"placement": placement, "product_id": p, "clicked_at": clicked_at}
                 for p in products]
        return self.rt.experiments.record_clicks(UUID(member_id), key or uuid.uuid4().hex,
                                                 items, meta(member_id))

    def place(self, member_id: str, *lines: tuple[str, int, int]) -> UUID:
        order_lines = [{"product_id": p, "sku": p.upper(), "name": p, "quantity": q,
                        "unit_price": price} for p, q, price in lines]
        return self.rt.orders.place(UUID(member_id), stocked(self.rt, order_lines), None, 0,
                                    uuid.uuid4().hex, meta(member_id)).aggregate_id

    def pay(self, member_id: str, order_id: UUID) -> None:
        total = self.rt.orders.get(order_id).total
        self.rt.orders.pay(order_id, "card", total, None, uuid.uuid4().hex, meta(member_id))

    def buy(self, member_id: str, *lines: tuple[str, int, int]) -> UUID:
        order_id = self.place(member_id, *lines)
        self.pay(member_id, order_id)
        return order_id

    def stamped(self, result: FeedbackResult) -> list[tuple[str | None, str | None]]:
        (event,) = list(self.rt.app.events.get(result.aggregate_id))
        return [(i["experiment_id"], i["variant"]) for i in event.items]

    def results(self, experiment_id: UUID) -> dict[str, dict[str, Any]]:
        counted = ("impressions", "clicks", "exposed_members", "clicking_members",
                   "converted_members", "conversions", "revenue")
        with self.rt.sync_engine.connect() as conn:
            rows = conn.execute(select(experiment_variant_results).where(
                experiment_variant_results.c.experiment_id == str(experiment_id))).all()
        return {r.variant: {k: getattr(r, k) for k in counted} for r in rows}

    def rows(self, table: Any, member_id: str) -> list[Any]:
        with self.rt.sync_engine.connect() as conn:
            return list(conn.execute(select(table).where(table.c.member_id == member_id)))

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.rt.sync_engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key))]
                    for t in EXPERIMENT_TABLES}

    def train(self, version: int) -> None:
        """Stand-in for the "recommender_models" projection: the read model lists a trained
        model version (training itself is not what these tests are about)."""
        with self.rt.sync_engine.begin() as conn:
            conn.execute(insert(recommender_models).values(
                version=version, state="trained", checksum="0" * 64, trained_at=T0,
                trained_by="system", reason=None, data_position=0, interactions=0,
                members=0, products=0, training_seconds=0.0, params={}, metrics={},
                activated_at=None, activated_by=None, position=0))


@pytest.fixture
def lab(runtime: Runtime, clock: AdjustableClock) -> Iterator[Lab]:
    yield Lab(runtime, clock)


def slots(lab: Lab) -> dict[str, ExperimentSlot | None]:
    found = {}
    for placement in Placement:
        try:
            found[placement.value] = lab.rt.uow.get(ExperimentSlot,
                                                    ExperimentSlot.id_for(placement))
        except NotFoundError:
            found[placement.value] = None
    return found


# -- defining and stopping --------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "error", "field"), [
    ({"variants": variants_of(60, 30)}, ValidationError, "variants"),
    ({"variants": [*variants_of(50), {"name": "v0", "share": 50, "strategy": "content"}]},
     ValidationError, "variants.1.name"),
    ({"variants": [*variants_of(50), {"name": "cf", "share": 50, "strategy": "collaborative",
                                      "model_version": 7}]},
     ValidationError, "variants.1.model_version"),
    ({"placement": "checkout"}, ValidationError, "placement"),
    ({"name": ""}, ValidationError, "name"),
    ({"key": " "}, ValidationError, "idempotency_key"),
    ({"meta": meta("agent-1", Role.AGENT, "why")}, ForbiddenError, None),
    ({"meta": meta("member-1")}, ForbiddenError, None),
    ({"meta": admin(reason=None)}, ReasonRequiredError, "meta.reason"),
])
def test_a_refused_define_names_the_field_and_records_nothing(
        lab: Lab, arguments: dict[str, Any], error: type[DomainError], field: str | None
) -> None:
    lab.train(3)  # version 3 exists; 7 does not
    before = lab.head()
    given = {"name": "Hybrid vs popular", "placement": "home",
             "variants": HYBRID_VS_POPULAR, "key": "ab-1", "meta": admin(), **arguments}
    refusal = refused(lambda: lab.rt.experiments.define(
        given["name"], given["placement"], given["variants"], given["key"], given["meta"]),
        error)
    assert refusal.field == field
    assert lab.head() == before
    assert slots(lab) == dict.fromkeys(("home", "product", "cart", "search"))


def test_a_variant_may_serve_a_trained_model_version(lab: Lab) -> None:
    lab.train(3)
    experiment_id = lab.define(variants=[
        {"name": "active", "share": 50, "strategy": "collaborative"},
        {"name": "v3", "share": 50, "strategy": "collaborative", "model_version": 3}])
    assert lab.rt.experiments.get(experiment_id).variants == [
        Variant("active", 50, Strategy.COLLABORATIVE),
        Variant("v3", 50, Strategy.COLLABORATIVE, 3)]


def test_a_retried_define_returns_the_first_experiment_and_other_input_conflicts(
        lab: Lab) -> None:
    first = lab.rt.experiments.define("AB", "home", HYBRID_VS_POPULAR, "ab-1", admin())
    before = lab.head()
    retry = lab.rt.experiments.define("AB", "home", HYBRID_VS_POPULAR, "ab-1", admin())
    assert (retry.aggregate_id, retry.version, retry.position) == (
        first.aggregate_id, first.version, None)
    conflict = refused(lambda: lab.rt.experiments.define(
        "AB", "home", variants_of(50, 50), "ab-1", admin()), IdempotencyConflictError)
    assert conflict.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert lab.head() == before
    # Another admin's key is another key.
    other = meta("admin-2", Role.ADMIN, "cart test")
    assert lab.rt.experiments.define("AB", "cart", HYBRID_VS_POPULAR, "ab-1",
                                     other).aggregate_id != first.aggregate_id


def test_one_experiment_runs_per_placement_until_it_is_stopped(lab: Lab) -> None:
    home = lab.define("home")
    before = lab.head()
    taken = refused(lambda: lab.define("home", name="Another"), InvalidTransitionError)
    assert (taken.code, taken.field) == (ErrorCode.INVALID_TRANSITION, "placement")
    assert str(home) in taken.message
    assert lab.head() == before
    cart = lab.define("cart")
    before = lab.head()
    for who, error in ((meta("agent-1", Role.AGENT, "why"), ForbiddenError),
                       (admin(reason=None), ReasonRequiredError)):
        refused(lambda w=who: lab.rt.experiments.stop(home, w), error)
    assert refused(lambda: lab.rt.experiments.stop(uuid.uuid4(), admin()),
                   NotFoundError).field == "experiment_id"
    assert lab.head() == before

    lab.at(HOUR)
    lab.stop(home)
    again = refused(lambda: lab.stop(home), InvalidTransitionError)
    assert again.code is ErrorCode.INVALID_TRANSITION and "already stopped" in again.message
    successor = lab.define("home", name="Round two")
    running = slots(lab)
    assert running["home"] is not None and running["home"].running == str(successor)
    assert running["cart"] is not None and running["cart"].running == str(cart)
    assert lab.rt.experiments.get(home).stop_reason == "popularity wins"


def test_concurrent_defines_on_one_placement_start_exactly_one(
        lab: Lab, settings: Settings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers (two runtimes on one database), two admins' threads each, at once.

    Each thread's first decision waits until all four have read the (still free)
    placement, so every one of them decides on the same state and the race is certain;
    retries then run freely.
    """
    caplog.set_level(logging.INFO, logger="patron.service")
    occupy = ExperimentSlot.occupy
    all_decided = threading.Barrier(4, timeout=30)
    first_decision = threading.local()

    def occupy_together(slot: ExperimentSlot, *args: Any, **kwargs: Any) -> None:
        if not getattr(first_decision, "taken", False):
            first_decision.taken = True
            all_decided.wait()
        occupy(slot, *args, **kwargs)

    monkeypatch.setattr(ExperimentSlot, "occupy", occupy_together)
    other = Runtime(settings, clock=lab.clock)
    started: list[UUID] = []
    refusals: list[DomainError] = []
    failures: list[BaseException] = []
    try:
        barrier = threading.Barrier(4)

        def define(runtime: Runtime, n: int) -> None:
            barrier.wait()
            try:
                started.append(runtime.experiments.define(
                    f"Experiment {n}", "search", HYBRID_VS_POPULAR, f"key-{n}",
                    admin()).aggregate_id)
            except DomainError as error:
                refusals.append(error)
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=define, args=(rt, n))
                   for n, rt in enumerate((lab.rt, other, lab.rt, other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert failures == []
    # The defines did collide (and the losers decided again): the race was real.
    assert any("version clash" in r.getMessage() for r in caplog.records)
    assert len(started) == 1 and len(refusals) == 3
    assert {(e.code, e.field) for e in refusals} == {(ErrorCode.INVALID_TRANSITION, "placement")}
    slot = slots(lab)["search"]
    assert slot is not None and slot.running == str(started[0]) and len(slot.runs) == 1
    lab.project()
    with lab.rt.sync_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(experiments)) == 1


# -- feedback ---------------------------------------------------------------------------------


def test_each_item_is_stamped_by_the_server_with_its_experiment_and_the_members_variant(
        lab: Lab) -> None:
    home = lab.define("home")
    member = lab.member()
    variant = assign_variant(str(home), member, lab.rt.experiments.get(home).variants).name
    forged = [{"placement": "home", "product_id": "tent", "position": 1,
               "experiment_id": str(uuid.uuid4()), "variant": "forged"},
              {"placement": "cart", "product_id": "tent", "position": 2,
               "experiment_id": str(home), "variant": "control"}]
    shown = lab.rt.experiments.record_impressions(UUID(member), "b-1", forged, meta(member))
    assert (shown.recorded, shown.in_experiments) == (2, 1)
    assert lab.stamped(shown) == [(str(home), variant), (None, None)]
    clicked = lab.click(member, "tent", "stove")
    assert (clicked.recorded, clicked.in_experiments) == (2, 2)
    assert lab.stamped(clicked) == [(str(home), variant)] * 2


def test_a_resent_batch_records_once_and_a_reused_key_with_other_items_conflicts(
        lab: Lab) -> None:
    experiment_id = lab.define("home")
    ann, bob = lab.member("Ann"), lab.member("Bob")
    first = lab.show(ann, "tent", "stove", key="batch-1", shown_at=T0)
    before = lab.head()
    resent = lab.show(ann, "tent", "stove", key="batch-1", shown_at=T0)
    assert (resent.aggregate_id, resent.recorded, resent.position) == (
        first.aggregate_id, 2, None)
    conflict = refused(lambda: lab.show(ann, "tent", key="batch-1", shown_at=T0),
                       IdempotencyConflictError)
    assert (conflict.code, conflict.field) == (ErrorCode.IDEMPOTENCY_CONFLICT, "batch_key")
    assert lab.head() == before
    # Keys are per member, and clicks have their own.
    assert lab.show(bob, "tent", key="batch-1").aggregate_id != first.aggregate_id
    assert lab.click(ann, "tent", key="batch-1").position is not None
    lab.project()
    assert sum(r["impressions"] for r in lab.results(experiment_id).values()) == 3


@pytest.mark.parametrize(("kind", "items", "key", "field"), [
    ("impressions", [], "k", "impressions"),
    ("impressions", [{"placement": "home", "product_id": "tent", "position": 1}] * 501, "k",
     "impressions"),
    ("impressions", [{"placement": "home", "product_id": "tent", "position": 1},
                     {"placement": "home", "product_id": "tent", "position": 0}], "k",
     "impressions.1.position"),
    ("impressions", [{"placement": "home", "product_id": "tent", "position": 1,
                      "shown_at": T0 - 8 * DAY}], "k", "impressions.0.shown_at"),
    ("impressions", [{"placement": "home", "product_id": "tent", "position": 1}], "",
     "batch_key"),
    ("clicks", [{"placement": "home", "product_id": "", "clicked_at": T0}], "k",
     "clicks.0.product_id"),
    ("clicks", [{"placement": "banner", "product_id": "tent"}], "k", "clicks.0.placement"),
    ("clicks", [{"placement": "home", "product_id": "tent", "clicked_at": T0 + HOUR}], "k",
     "clicks.0.clicked_at"),
])
def test_bad_feedback_names_the_item_and_field_and_records_nothing(
        lab: Lab, kind: str, items: list[dict[str, Any]], key: str, field: str) -> None:
    lab.define("home")
    member = lab.member()
    before = lab.head()
    record = (lab.rt.experiments.record_impressions if kind == "impressions"
              else lab.rt.experiments.record_clicks)
    error = refused(lambda: record(UUID(member), key, items, meta(member)), ValidationError)
    assert error.field == field
    assert lab.head() == before


def test_an_erased_member_records_no_feedback(lab: Lab) -> None:
    lab.define("home")
    member = lab.member()
    lab.rt.members.erase(UUID(member), admin("GDPR request"))
    before = lab.head()
    refused(lambda: lab.show(member, "tent"), ErasedError)
    refused(lambda: lab.click(member, "tent"), ErasedError)
    assert lab.head() == before


def test_stopping_ends_stamping_but_items_shown_while_it_ran_still_count(lab: Lab) -> None:
    first = lab.define("home")
    member = lab.member()
    lab.at(HOUR)
    during = lab.show(member, "tent")
    lab.at(2 * HOUR)
    lab.stop(first)
    lab.at(3 * HOUR)
    # A frontend's buffer: one item shown while the experiment ran, one after its stop.
    buffered = lab.show(member, "stove", "lamp", shown_at=T0 + 90 * timedelta(minutes=1))
    after = lab.show(member, "stove")
    clicked_after = lab.click(member, "stove")
    variant = assign_variant(str(first), member, lab.rt.experiments.get(first).variants).name
    assert lab.stamped(during) == [(str(first), variant)]
    assert lab.stamped(buffered) == [(str(first), variant)] * 2
    assert lab.stamped(after) == [(None, None)]
    assert lab.stamped(clicked_after) == [(None, None)]
    assert (after.in_experiments, clicked_after.in_experiments) == (0, 0)

    lab.at(4 * HOUR)
    second = lab.define("home", name="Round two")
    lab.at(5 * HOUR)
    assert lab.stamped(lab.show(member, "tent"))[0][0] == str(second)
    lab.project()
    assert sum(r["impressions"] for r in lab.results(first).values()) == 3
    assert sum(r["impressions"] for r in lab.results(second).values()) == 1


# -- the read model ---------------------------------------------------------------------------


def build_history(lab: Lab) -> tuple[UUID, dict[str, str]]:
    """A home experiment, its members' impressions, clicks and orders, over ten days."""
    experiment_id = lab.define("home")
    m = {"ann": lab.recruit(experiment_id, "control"),
         "bob": lab.recruit(experiment_id, "control"),
         "cai": lab.recruit(experiment_id, "popular"),
         "dan": lab.recruit(experiment_id, "popular")}
    lab.project()
    lab.at(HOUR)
    lab.show(m["ann"], "tent", "stove")
    lab.click(m["ann"], "tent")
    lab.show(m["bob"], "tent")
    lab.show(m["cai"], "tent", "stove", "lamp")
    lab.click(m["cai"], "stove", "lamp")
    lab.click(m["cai"], "lamp")
    # Dan clicked without a recorded impression (his frontend lost it): still exposed.
    lab.click(m["dan"], "tent")
    lab.show(m["ann"], "mug", placement="cart")  # no experiment on the cart
    lab.project()
    lab.at(2 * DAY)
    # Ann buys the tent she clicked (2 x 3,000) and a lamp she did not click.
    lab.buy(m["ann"], ("tent", 2, 3_000), ("lamp", 1, 500))
    # Bob buys a tent he was shown but never clicked: no conversion.
    lab.buy(m["bob"], ("tent", 1, 3_000))
    # Ann's cancelled order counts for nothing.
    cancelled = lab.place(m["ann"], ("tent", 1, 3_000))
    lab.rt.orders.cancel(cancelled, "member_request", None, meta(m["ann"]))
    lab.project()
    lab.at(3 * DAY)
    # Ann buys a tent again within 7 days of her click: a second conversion, same member.
    lab.buy(m["ann"], ("tent", 1, 3_000))
    # Cai orders now and pays 7 days and 2 hours after her last click: too late.
    late = lab.place(m["cai"], ("stove", 1, 4_000))
    lab.project()
    lab.at(7 * DAY + 3 * HOUR)
    lab.pay(m["cai"], late)
    lab.project()
    return experiment_id, m


def test_ctr_and_conversion_are_counted_per_variant(lab: Lab) -> None:
    experiment_id, m = build_history(lab)
    assert lab.results(experiment_id) == {
        "control": {"impressions": 3, "clicks": 1, "exposed_members": 2,
                    "clicking_members": 1, "converted_members": 1, "conversions": 2,
                    "revenue": 6_000 + 3_000},
        "popular": {"impressions": 3, "clicks": 4, "exposed_members": 2,
                    "clicking_members": 2, "converted_members": 0, "conversions": 0,
                    "revenue": 0},
    }
    (ann,) = lab.rows(experiment_exposures, m["ann"])
    assert ann.variant == "control" and ann.converted_at is not None
    # Paid or cancelled orders are no longer pending.
    assert lab.rows(experiment_orders, m["cai"]) == lab.rows(experiment_orders, m["ann"]) == []
    lab.at(8 * DAY)
    # Dan, who clicked a tent 8 days ago, buys one: outside the window too.
    lab.buy(m["dan"], ("tent", 1, 3_000))
    lab.project()
    assert lab.results(experiment_id)["popular"]["conversions"] == 0


def test_a_payment_in_the_window_converts_for_the_variant_that_was_clicked(lab: Lab) -> None:
    experiment_id = lab.define("home")
    eve = lab.recruit(experiment_id, "popular")
    lab.at(HOUR)
    lab.show(eve, "tent")
    lab.click(eve, "tent")
    order = lab.place(eve, ("tent", 3, 2_000), ("mug", 1, 800))
    lab.project()
    lab.at(7 * DAY)  # exactly 7 days minus an hour after the click
    lab.pay(eve, order)
    lab.project()
    popular = lab.results(experiment_id)["popular"]
    assert (popular["converted_members"], popular["conversions"], popular["revenue"]) == (
        1, 1, 6_000)


def test_erasure_deletes_the_members_rows_and_keeps_the_counts(lab: Lab) -> None:
    experiment_id, m = build_history(lab)
    pending = lab.place(m["bob"], ("tent", 1, 3_000))
    lab.project()
    assert lab.rows(experiment_orders, m["bob"]) != []
    counts = lab.results(experiment_id)
    for name in ("ann", "bob"):
        lab.rt.members.erase(UUID(m[name]), admin("GDPR request"))
    lab.pay(m["bob"], pending)  # an order placed before the erasure, paid after it
    lab.project()
    for name in ("ann", "bob"):
        for table in (experiment_exposures, experiment_clicks, experiment_orders):
            assert lab.rows(table, m[name]) == [], (name, table.name)
    assert lab.rows(experiment_exposures, m["cai"]) != []
    assert lab.results(experiment_id) == counts


def test_a_rebuild_reproduces_every_row(lab: Lab) -> None:
    experiment_id, m = build_history(lab)
    lab.stop(experiment_id)
    lab.rt.members.erase(UUID(m["bob"]), admin("GDPR request"))
    lab.project()
    live = lab.snapshot()
    assert all(live[name] for name in TABLE_NAMES if name != "experiment_orders")
    assert lab.runner.rebuild(NAME) == lab.runner.head()
    assert lab.snapshot() == live
    # The server's runner knows the projection too.
    assert NAME in lab.rt.runner.projections


async def test_the_recommender_reads_the_running_assignment_in_one_query(lab: Lab) -> None:
    lab.train(4)
    experiment_id = lab.define("product", variants=[
        {"name": "control", "share": 30, "strategy": "hybrid"},
        {"name": "content-v4", "share": 70, "strategy": "content", "model_version": 4}])
    members = [lab.member(f"R{i}") for i in range(6)]
    lab.project()
    engine = lab.rt.async_engine
    variants = lab.rt.experiments.get(experiment_id).variants
    for member in members:
        expected = assign_variant(str(experiment_id), member, variants)
        assert await running_assignment(engine, "product", member) == Assignment(
            str(experiment_id), expected.name, expected.strategy, expected.model_version)
    assert await running_assignment(engine, Placement.HOME, members[0]) is None
    with pytest.raises(ValueError):
        await running_assignment(engine, "footer", members[0])
    lab.stop(experiment_id)
    lab.project()
    assert await running_assignment(engine, "product", members[0]) is None
    await engine.dispose()
    with lab.rt.sync_engine.connect() as conn:
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("experiments")}
    assert indexes["ix_experiments_placement_status"] == ["placement", "status"]


# -- the migration ----------------------------------------------------------------------------


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime, TABLE_NAMES) == []


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0009")
    with runtime.sync_engine.connect() as conn:
        assert not TABLE_NAMES & set(inspect(conn).get_table_names())
    command.upgrade(config, "head")
    assert _differences(runtime, TABLE_NAMES) == []


# == the GraphQL API ==========================================================================

USER_ERRORS = "userErrors { field message code }"
EXPERIMENT_FIELDS = """
  id experimentId name placement status definedAt definedBy defineReason
  stoppedAt stoppedBy stopReason version
  variants { name share strategy modelVersion }
"""
RESULT_FIELDS = """
  variant isControl share strategy modelVersion impressions clicks
  ctr { value low high } exposedMembers clickingMembers convertedMembers conversions
  conversionRate { value low high } revenue { amount currency }
  liftVsControl { value low high }
"""
DEFINE = f"""
mutation D($input: DefineExperimentInput!) {{ defineExperiment(input: $input) {{
  position experiment {{ {EXPERIMENT_FIELDS} }} {USER_ERRORS} }} }}
"""
STOP = f"""
mutation S($input: StopExperimentInput!) {{ stopExperiment(input: $input) {{
  position experiment {{ {EXPERIMENT_FIELDS} }} {USER_ERRORS} }} }}
"""
IMPRESSIONS = f"""
mutation I($input: RecordImpressionsInput!) {{ recordImpressions(input: $input) {{
  recorded inExperiments position {USER_ERRORS} }} }}
"""
CLICKS = f"""
mutation C($input: RecordClickInput!) {{ recordClick(input: $input) {{
  recorded inExperiments position {USER_ERRORS} }} }}
"""
RESULTS = f"""
query R($id: ID!) {{ experimentResults(id: $id) {{
  experiment {{ {EXPERIMENT_FIELDS} }} variants {{ {RESULT_FIELDS} }} }} }}
"""
LIST = f"""
query L($status: ExperimentStatus, $first: Int, $after: String) {{
  experiments(status: $status, first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }}
    edges {{ node {{ {EXPERIMENT_FIELDS} }} }} }} }}
"""
API_VARIANTS = [{"name": "control", "share": 50, "strategy": "HYBRID"},
                {"name": "popular", "share": 50, "strategy": "POPULARITY"}]


async def define_over_api(client: httpx.AsyncClient, placement: str = "HOME",
                          variants: list[dict[str, Any]] | None = None,
                          token: str = ADMIN, key: str | None = None) -> dict[str, Any]:
    return await mutate(client, DEFINE, {
        "name": "Hybrid vs popular", "placement": placement,
        "variants": API_VARIANTS if variants is None else variants,
        "idempotencyKey": key or uuid.uuid4().hex, "reason": "which list sells more"}, token)


async def show_over_api(client: httpx.AsyncClient, who: Shopper, *products: str,
                        placement: str = "HOME") -> dict[str, Any]:
    return await mutate(client, IMPRESSIONS, {"batchKey": uuid.uuid4().hex, "impressions": [
        {"placement": placement, "productId": p, "position": i + 1}
        for i, p in enumerate(products)]}, who.token)


async def click_over_api(client: httpx.AsyncClient, who: Shopper, *products: str,
                         placement: str = "HOME") -> dict[str, Any]:
    return await mutate(client, CLICKS, {"batchKey": uuid.uuid4().hex, "clicks": [
        {"placement": placement, "productId": p} for p in products]}, who.token)


async def results_over_api(client: httpx.AsyncClient, experiment_id: str,
                           token: str = AGENT) -> dict[str, Any] | None:
    body = await gql(client, RESULTS, {"id": experiment_id}, token=token)
    found: dict[str, Any] | None = data(body)["experimentResults"]
    return found


def estimate(interval: Interval | None) -> dict[str, float] | None:
    if interval is None:
        return None
    return {"value": pytest.approx(interval.value), "low": pytest.approx(interval.low),
            "high": pytest.approx(interval.high)}  # type: ignore[dict-item]


async def test_an_experiment_from_definition_to_results_over_graphql(
        client: httpx.AsyncClient, live_runtime: Runtime) -> None:
    defined = await define_over_api(client)
    assert defined["userErrors"] == []
    experiment = defined["experiment"]
    assert (experiment["status"], experiment["placement"], experiment["definedBy"],
            experiment["defineReason"]) == ("RUNNING", "HOME", "admin-1",
                                            "which list sells more")
    assert experiment["variants"] == [{**v, "modelVersion": None} for v in API_VARIANTS]
    variants = [Variant("control", 50, Strategy.HYBRID), Variant("popular", 50,
                                                                 Strategy.POPULARITY)]
    people = [await shopper(client, name) for name in ("Ann Lee", "Bo Chen", "Cai Wu",
                                                        "Dee Ma", "Eli Xu")]
    variant_of = {p.member_id: assign_variant(experiment["experimentId"], p.member_id,
                                              variants).name for p in people}
    expected = {v.name: Counter[str]() for v in variants}
    for n, who in enumerate(people):
        shown = await show_over_api(client, who, "tent-2p", "stove", "lamp")
        assert (shown["recorded"], shown["inExperiments"], shown["userErrors"]) == (3, 3, [])
        counts = expected[variant_of[who.member_id]]
        counts["impressions"] += 3
        counts["exposed"] += 1
        if n % 2 == 0:  # Ann, Cai and Eli click the tent
            clicked = await click_over_api(client, who, "tent-2p")
            assert (clicked["recorded"], clicked["inExperiments"]) == (1, 1)
            counts["clicks"] += 1
            counts["clicking"] += 1
    # Ann buys the tent she clicked, with a mug she did not.
    ann = people[0]
    order = await place(client, ann, [line("tent-2p", 2, 6_500), line("mug", 1, 900)])
    await pay(client, ann, order)
    ann_counts = expected[variant_of[ann.member_id]]
    ann_counts.update({"converted": 1, "conversions": 1, "revenue": 13_000})

    def caught_up(found: dict[str, Any] | None) -> bool:
        return found is not None and sum(
            v["conversions"] for v in found["variants"]) == 1
    found = await eventually(lambda: results_over_api(client, experiment["id"]), caught_up)
    assert found is not None
    assert found["experiment"]["experimentId"] == experiment["experimentId"]
    control = expected["control"]
    by_name = {v["variant"]: v for v in found["variants"]}
    assert [v["variant"] for v in found["variants"]] == ["control", "popular"]
    for variant in variants:
        got, want = by_name[variant.name], expected[variant.name]
        assert got["isControl"] is (variant.name == "control")
        assert (got["share"], got["strategy"]) == (50, variant.strategy.name)
        assert (got["impressions"], got["clicks"], got["exposedMembers"],
                got["clickingMembers"], got["convertedMembers"], got["conversions"],
                got["revenue"]) == (
            want["impressions"], want["clicks"], want["exposed"], want["clicking"],
            want["converted"], want["conversions"],
            {"amount": want["revenue"], "currency": live_runtime.rules.currency})
        assert got["ctr"] == estimate(wilson_interval(want["clicks"], want["impressions"]))
        assert got["conversionRate"] == estimate(wilson_interval(want["converted"],
                                                                 want["exposed"]))
        lift = None if variant.name == "control" else difference_interval(
            control["converted"], control["exposed"], want["converted"], want["exposed"])
        assert got["liftVsControl"] == estimate(lift)


async def test_feedback_is_recorded_for_the_signed_in_member_only(
        client: httpx.AsyncClient, live_runtime: Runtime) -> None:
    assert (await define_over_api(client))["userErrors"] == []
    before = head(live_runtime)
    impressions = {"batchKey": "b-1", "impressions": [
        {"placement": "HOME", "productId": "tent-2p", "position": 1}]}
    clicks = {"batchKey": "b-1", "clicks": [{"placement": "HOME", "productId": "tent-2p"}]}
    for token, code in ((None, "UNAUTHENTICATED"), (AGENT, "FORBIDDEN"),
                        (ADMIN, "FORBIDDEN"), (AUDITOR, "FORBIDDEN")):
        for document, input in ((IMPRESSIONS, impressions), (CLICKS, clicks)):
            payload = await mutate(client, document, input, token)
            assert payload["recorded"] is None and payload["position"] is None
            assert [e["code"] for e in payload["userErrors"]] == [code]
    assert head(live_runtime) == before


async def test_the_client_cannot_say_which_experiment_or_variant_an_item_counts_for(
        client: httpx.AsyncClient, live_runtime: Runtime) -> None:
    assert (await define_over_api(client))["userErrors"] == []
    ann = await shopper(client)
    before = head(live_runtime)
    for extra in ({"experimentId": "forged"}, {"variant": "popular"}):
        body = await gql(client, IMPRESSIONS, {"input": {"batchKey": "b-1", "impressions": [
            {"placement": "HOME", "productId": "tent-2p", "position": 1, **extra}]}},
            token=ann.token)
        assert body.get("data") is None and body["errors"], body
    assert head(live_runtime) == before


async def test_a_bad_definition_over_graphql_names_the_field_and_records_nothing(
        client: httpx.AsyncClient, live_runtime: Runtime) -> None:
    before = head(live_runtime)
    cases = [
        ([*API_VARIANTS[:1], {**API_VARIANTS[1], "modelVersion": 99}], ADMIN,
         ("variants.1.modelVersion", "VALIDATION")),
        ([{**API_VARIANTS[0], "share": 70}, API_VARIANTS[1]], ADMIN, ("variants", "VALIDATION")),
        (API_VARIANTS, AGENT, (None, "FORBIDDEN")),
        (API_VARIANTS, AUDITOR, (None, "FORBIDDEN")),
    ]
    for variants, token, error in cases:
        payload = await define_over_api(client, variants=variants, token=token)
        assert payload["experiment"] is None and payload["position"] is None
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [error]
    anonymous = await mutate(client, DEFINE, {
        "name": "AB", "placement": "HOME", "variants": API_VARIANTS, "idempotencyKey": "k",
        "reason": "r"}, None)
    assert [e["code"] for e in anonymous["userErrors"]] == ["UNAUTHENTICATED"]
    assert head(live_runtime) == before


async def test_admins_stop_experiments_and_staff_and_auditors_list_them(
        client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock) -> None:
    home = (await define_over_api(client, "HOME"))["experiment"]
    clock.advance(timedelta(seconds=1))
    cart = (await define_over_api(client, "CART"))["experiment"]
    taken = await define_over_api(client, "HOME")
    assert [(e["field"], e["code"]) for e in taken["userErrors"]] == [
        ("placement", "INVALID_TRANSITION")]

    refused_stop = await mutate(client, STOP, {"experimentId": home["id"], "reason": "r"}, AGENT)
    assert [e["code"] for e in refused_stop["userErrors"]] == ["FORBIDDEN"]
    stopped = await mutate(client, STOP, {"experimentId": home["id"],
                                          "reason": "hybrid wins"}, ADMIN)
    assert stopped["userErrors"] == []
    assert (stopped["experiment"]["status"], stopped["experiment"]["stopReason"],
            stopped["experiment"]["stoppedBy"]) == ("STOPPED", "hybrid wins", "admin-1")
    again = await mutate(client, STOP, {"experimentId": home["id"], "reason": "again"}, ADMIN)
    assert [e["code"] for e in again["userErrors"]] == ["INVALID_TRANSITION"]

    ann = await shopper(client)
    after = await show_over_api(client, ann, "tent-2p", "stove")
    assert (after["recorded"], after["inExperiments"]) == (2, 0)
    on_cart = await show_over_api(client, ann, "mug", placement="CART")
    assert on_cart["inExperiments"] == 1

    headers = {"X-Patron-Min-Position": str(head(live_runtime))}
    for token in (AGENT, ADMIN, AUDITOR):
        body = await gql(client, LIST, {"first": 1}, token=token, headers=headers)
        page = data(body)["experiments"]
        assert page["totalCount"] == 2 and page["pageInfo"]["hasNextPage"] is True
        assert [e["node"]["id"] for e in page["edges"]] == [cart["id"]]
        rest = data(await gql(client, LIST, {"first": 1,
                                             "after": page["pageInfo"]["endCursor"]},
                              token=token))["experiments"]
        assert [e["node"]["id"] for e in rest["edges"]] == [home["id"]]
        running = data(await gql(client, LIST, {"status": "RUNNING"}, token=token))
        assert [e["node"]["id"] for e in running["experiments"]["edges"]] == [cart["id"]]
    results = await results_over_api(client, home["id"], token=AUDITOR)
    assert results is not None and results["experiment"]["status"] == "STOPPED"
    for token, code in ((ann.token, "FORBIDDEN"), (None, "UNAUTHENTICATED")):
        for document, variables in ((LIST, {}), (RESULTS, {"id": home["id"]})):
            body = await gql(client, document, variables, token=token)
            assert [e["extensions"]["code"] for e in body["errors"]] == [code]
    malformed = await gql(client, LIST, {"after": "nonsense"}, token=AGENT)
    assert malformed["errors"][0]["extensions"]["code"] == "VALIDATION"


def test_every_results_interval_is_reproducible_from_the_counts() -> None:
    """The read side computes intervals from the stored counts alone (no hidden state)."""
    from api.experiment_readmodels import variant_results

    variants = [Variant("control", 50, Strategy.HYBRID).as_dict(),
                Variant("popular", 50, Strategy.POPULARITY).as_dict()]
    rows = [{"variant": "popular", "impressions": 400, "clicks": 36, "exposed_members": 120,
             "clicking_members": 30, "converted_members": 18, "conversions": 21,
             "revenue": 99_000, "updated_at": T0},
            {"variant": "control", "impressions": 380, "clicks": 19, "exposed_members": 118,
             "clicking_members": 15, "converted_members": 9, "conversions": 9,
             "revenue": 41_000, "updated_at": T0}]
    control, popular = variant_results(variants, rows)
    assert (control.variant.name, control.is_control, control.lift_vs_control) == (
        "control", True, None)
    assert popular.ctr == wilson_interval(36, 400)
    assert popular.conversion_rate == wilson_interval(18, 120)
    assert popular.lift_vs_control == difference_interval(9, 118, 18, 120)
    assert popular.lift_vs_control is not None and popular.lift_vs_control.value == \
        pytest.approx(18 / 120 - 9 / 118)

