"""The demo year: real commands over a simulated year, deterministic from its seed.

Seeded as the CLI seeds: a Runtime whose AdjustableClock starts at `demo_runtime_clock()`,
so the year ends at midnight today. The checks read the read models, as a demo audience
would see them, after the projections have caught up.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select

from api.config import Settings
from api.demo import CATALOGUE, SOLD_OUT, demo_runtime_clock, seed_demo
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.loyalty import account_id_for
from projections.after_sales_tables import case_queue
from projections.behaviour_tables import behaviour_daily, member_activity
from projections.catalogue_tables import products
from projections.commerce_tables import coupons, loyalty_accounts, loyalty_ledger, orders, rewards
from projections.recommender_tables import recommendation_signals, recommender_models
from projections.segment_tables import segment_membership_changes, segments
from projections.shipping_tables import notifications, shipment_tracking
from projections.tables import member_profiles

MEMBERS = 8
SEED = 7
COMMERCE = ("member_profiles", "orders", "loyalty", "coupons")


def demo_runtime(database_url: str, start: datetime) -> Runtime:
    # The demo's members pay through the simulator provider, as `patron seed demo` sets up.
    runtime = Runtime(Settings.from_env(database_url, payment_simulator=True),
                      clock=AdjustableClock(start))
    assert set(COMMERCE) <= set(runtime.runner.projections)
    return runtime


def seeded(database_url: str, start: datetime, seed: int = SEED) -> Runtime:
    runtime = demo_runtime(database_url, start)
    seed_demo(runtime, members=MEMBERS, seed=seed)
    for name in runtime.runner.projections:
        runtime.runner.catch_up(name)
    return runtime


@pytest.fixture
def demo(database_url: str) -> Iterator[Runtime]:
    runtime = seeded(database_url, demo_runtime_clock())
    yield runtime
    runtime.close()


def rows(runtime: Runtime, table: Table) -> list[tuple[Any, ...]]:
    keys = [column for column in table.primary_key.columns]
    with runtime.sync_engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(table).order_by(*keys))]


def test_a_demo_year_fills_every_read_model(demo: Runtime) -> None:
    # The clock ran to midnight today, never into the future.
    end = demo.clock.now()
    assert end == demo_runtime_clock(days=0) and end <= datetime.now(UTC)
    assert all(demo.runner.position(name) == demo.runner.head() for name in COMMERCE)

    with demo.sync_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(member_profiles)) == MEMBERS
        # Members joined on the moving clock: founders a year ago, the rest over the year.
        joined = sorted(conn.execute(select(member_profiles.c.registered_at)).scalars())
        assert joined[0] <= end - timedelta(days=300) < joined[-1] < end
        states = Counter(conn.execute(select(orders.c.state)).scalars())
        assert {"paid", "delivered", "completed", "cancelled"} <= set(states), states
        assert states["completed"] > states["delivered"]  # a year of return windows closed
        refunded = conn.execute(
            select(orders.c.refunded_amount, orders.c.paid_amount)
            .where(orders.c.refunded_amount > 0)
        ).all()
        assert any(r.refunded_amount < r.paid_amount for r in refunded), "no partial refund"
        assert any(r.refunded_amount == r.paid_amount for r in refunded), "no full refund"
        assert conn.scalar(select(func.sum(orders.c.failed_payments))) > 0
        assert conn.scalar(
            select(func.count()).where(orders.c.coupon_id.is_not(None))
            .where(orders.c.state == "completed")
        ) > 0

        accounts = conn.execute(select(loyalty_accounts)).all()
        assert len(accounts) == MEMBERS
        assert sum(1 for a in accounts if a.available > 0) >= MEMBERS // 2
        assert any(a.lifetime_redeemed > 0 for a in accounts)
        assert {a.tier for a in accounts} - {"regular"}, "nobody was promoted in a year"

        # Orders shipped with carrier timelines; some parcels were rated.
        parcels = conn.execute(select(shipment_tracking)).all()
        assert parcels and all(p.timeline for p in parcels if p.status != "label_created")
        assert {"delivered", "collected"} & {p.status for p in parcels}
        assert any(p.rated for p in parcels)
        assert conn.scalar(select(func.count()).select_from(notifications)) > 0

        ledger = Counter(conn.execute(select(loyalty_ledger.c.kind)).scalars())
        assert {"earned", "released", "debited"} <= set(ledger), ledger
        causes = set(conn.execute(select(loyalty_ledger.c.cause).distinct()).scalars())
        assert {"order", "review", "reward", "adjustment"} <= causes, causes

        wallet = Counter(conn.execute(select(coupons.c.source, coupons.c.status)).all())
        assert wallet[("redemption", "used")] + wallet[("redemption", "available")] > 0, wallet
        assert wallet[("welcome", "used")] > 0, wallet
        catalogue = conn.execute(select(rewards)).all()
        assert len(catalogue) >= 3 and sum(r.redeemed_count for r in catalogue) > 0

        # The product catalogue lists every demo product; one sold out during the year.
        listed = conn.execute(select(products.c.product_id, products.c.name,
                                     products.c.price, products.c.available)).all()
        assert sorted((p.product_id, p.name, p.price, p.product_id != SOLD_OUT[0])
                      for p in CATALOGUE) == sorted(tuple(row) for row in listed)

        # Browsing: sessions that led to orders and sessions that did not, by members who
        # consented (attached to them) and by anonymous visitors (counted only in totals).
        daily = Counter(dict(conn.execute(
            select(behaviour_daily.c.kind, func.sum(behaviour_daily.c.events))
            .group_by(behaviour_daily.c.kind)).all()))
        assert {"product_viewed", "searched", "added_to_cart"} <= set(daily), daily
        activity = conn.execute(select(member_activity)).all()
        assert any(a.views > 0 for a in activity)
        attached = sum(a.views for a in activity)
        assert 0 < attached < daily["product_viewed"], "anonymous views are not attached"

        # After-sales cases went through their whole life.
        cases = conn.execute(select(case_queue)).all()
        assert cases and {c.state for c in cases} & {"closed", "resolved"}, cases

        # Segments kept their members live all year: people joined and left them.
        defined = conn.execute(select(segments)).all()
        assert len(defined) == 4 and any(s.size > 0 for s in defined), defined
        moves = Counter(conn.execute(select(segment_membership_changes.c.change)).scalars())
        assert moves["joined"] > 0 and moves["left"] > 0, moves
        assert sum(s.size for s in defined) == moves["joined"] - moves["left"]

        # The recommender learnt from the year, trained mid-year and at the end.
        kinds = Counter(conn.execute(select(recommendation_signals.c.kind)).scalars())
        assert {"purchase", "view", "cart_add"} <= set(kinds), kinds
        models = conn.execute(select(recommender_models.c.version, recommender_models.c.state)
                              .order_by(recommender_models.c.version)).all()
        assert [tuple(m) for m in models] == [(1, "retired"), (2, "active")]

    # The read model agrees with the aggregates it was projected from.
    for account in accounts:
        aggregate = demo.loyalty.account(account.member_id)
        assert aggregate.id == account_id_for(account.member_id)
        assert (account.available, account.pending, account.debt, account.tier) == (
            aggregate.available, aggregate.pending, aggregate.debt, aggregate.tier
        )


def test_rebuilding_every_projection_reproduces_the_demo_tables(demo: Runtime) -> None:
    tables = [t for name in demo.runner.projections for t in demo.runner.projections[name].tables]
    live = {table.name: rows(demo, table) for table in tables}
    assert live["orders"] and live["loyalty_ledger"] and live["coupons"]

    for name in demo.runner.projections:
        assert demo.runner.rebuild(name) == demo.runner.head()

    assert {table.name: rows(demo, table) for table in tables} == live


def summary(runtime: Runtime) -> tuple[Counter[tuple[str, int]], int, Counter[str]]:
    with runtime.sync_engine.connect() as conn:
        return (
            Counter(
                (state, pricing["total"])
                for state, pricing in conn.execute(select(orders.c.state, orders.c.pricing))
            ),
            int(conn.scalar(select(func.sum(loyalty_accounts.c.available))) or 0),
            Counter(conn.execute(select(loyalty_ledger.c.kind)).scalars()),
        )


def test_the_same_seed_gives_the_same_year(sqlite_template: Path, tmp_path: Path) -> None:
    start = demo_runtime_clock()
    results = []
    for name, seed in (("a", SEED), ("b", SEED), ("c", SEED + 1)):
        target = tmp_path / f"{name}.db"
        shutil.copyfile(sqlite_template, target)
        runtime = seeded(f"sqlite:///{target}", start, seed)
        try:
            results.append(summary(runtime))
        finally:
            runtime.close()
    first, second, other = results
    assert first == second
    assert first[0] != other[0]


def test_a_demo_year_refuses_to_run_without_a_payment_provider(database_url: str) -> None:
    """Orders are paid only by a provider's signed callback: with none configured the
    seed says so at once instead of simulating a year of unpaid orders."""
    runtime = Runtime(Settings.from_env(database_url, payment_simulator=False),
                      clock=AdjustableClock(demo_runtime_clock(5)))
    try:
        with pytest.raises(ValueError, match="payment provider"):
            seed_demo(runtime, members=1, seed=1, days=5)
        assert runtime.runner.head() == 0
    finally:
        runtime.close()
