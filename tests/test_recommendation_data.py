"""Where interactions come from: typed signals with weights and decay, and the synthetic
shop with planted tastes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from domain.recommendation.interactions import (
    InteractionWeights,
    Signal,
    SignalKind,
    decay,
    derive_interactions,
    signal_strength,
)
from domain.recommendation.synthetic import SyntheticConfig, generate

NOW = datetime(2025, 1, 1, tzinfo=UTC)
WEIGHTS = InteractionWeights(half_life_days=None)


def signal(kind: SignalKind, item: str = "p1", days_ago: float = 0, **extra: object) -> Signal:
    return Signal("u1", item, kind, NOW - timedelta(days=days_ago), **extra)  # type: ignore[arg-type]


def test_each_kind_of_signal_has_its_documented_default_weight() -> None:
    assert signal_strength(signal(SignalKind.PURCHASE), NOW, WEIGHTS) == 5.0
    assert signal_strength(signal(SignalKind.PURCHASE, quantity=3), NOW, WEIGHTS) == 6.0
    assert signal_strength(signal(SignalKind.PURCHASE, quantity=99), NOW, WEIGHTS) == 7.0
    assert signal_strength(signal(SignalKind.REVIEW, stars=5), NOW, WEIGHTS) == 3.0
    assert signal_strength(signal(SignalKind.REVIEW, stars=1), NOW, WEIGHTS) == -3.0
    assert signal_strength(signal(SignalKind.CART_ADD), NOW, WEIGHTS) == 2.0
    assert signal_strength(signal(SignalKind.WISH_LIST), NOW, WEIGHTS) == 1.5
    assert signal_strength(signal(SignalKind.VIEW), NOW, WEIGHTS) == pytest.approx(0.2)
    assert signal_strength(signal(SignalKind.VIEW, dwell_seconds=60), NOW,
                           WEIGHTS) == pytest.approx(0.6)
    assert signal_strength(signal(SignalKind.VIEW, dwell_seconds=600), NOW,
                           WEIGHTS) == pytest.approx(1.0)
    assert signal_strength(signal(SignalKind.VIEW, dwell_seconds=1), NOW, WEIGHTS) == 0.0
    with pytest.raises(ValueError, match="stars"):
        signal_strength(signal(SignalKind.REVIEW), NOW, WEIGHTS)


def test_signals_decay_with_a_half_life() -> None:
    assert decay(0, 90) == 1.0
    assert decay(90, 90) == pytest.approx(0.5)
    assert decay(180, 90) == pytest.approx(0.25)
    assert decay(-5, 90) == 1.0  # from the future: counted as new, not more
    assert decay(1000, None) == 1.0
    old = signal(SignalKind.PURCHASE, days_ago=90)
    assert signal_strength(old, NOW) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        InteractionWeights(half_life_days=0)


def test_signals_add_up_per_user_and_item_capped_and_positive_only() -> None:
    signals = [
        signal(SignalKind.VIEW, "p1", days_ago=2),
        signal(SignalKind.CART_ADD, "p1", days_ago=1),
        signal(SignalKind.PURCHASE, "p2", quantity=5),
        signal(SignalKind.REVIEW, "p2", stars=5),
        signal(SignalKind.PURCHASE, "p3"),
        signal(SignalKind.REVIEW, "p3", stars=1),
        signal(SignalKind.REVIEW, "p4", stars=1),  # a pan without a purchase
        signal(SignalKind.VIEW, "p5", dwell_seconds=1),  # a bounce
    ]
    derived = {row.item: row for row in derive_interactions(signals, NOW, WEIGHTS)}
    assert set(derived) == {"p1", "p2", "p3"}
    assert derived["p1"].weight == pytest.approx(2.2)
    assert derived["p1"].timestamp == NOW - timedelta(days=1)  # the latest signal
    assert derived["p2"].weight == 10.0  # 7 + 3, at the cap
    assert derived["p3"].weight == pytest.approx(2.0)
    reordered = derive_interactions(reversed(signals), NOW, WEIGHTS)
    assert reordered == derive_interactions(signals, NOW, WEIGHTS)


SMALL = SyntheticConfig(n_users=120, n_items=400, n_interactions=3_000, seed=11)


def test_the_generator_is_deterministic_and_exact() -> None:
    first, second = generate(SMALL), generate(SMALL)
    assert first == second
    assert len(first.interactions) == 3_000
    assert len({(r.user, r.item) for r in first.interactions}) == 3_000
    assert generate(SyntheticConfig(n_users=120, n_items=400, n_interactions=3_000,
                                    seed=12)).interactions != first.interactions
    counts = Counter(r.user for r in first.interactions)
    assert len(counts) == 120 and min(counts.values()) >= 2
    assert max(counts.values()) <= 200  # at most half the catalogue


def test_the_generator_plants_tastes_a_model_can_find() -> None:
    data = generate(SMALL)
    in_taste = sum(
        data.catalogue[r.item].category in data.users[r.user].categories
        for r in data.interactions
    )
    # Two favourite categories of 16 would be 1/8 by chance; active users exhaust their
    # favourites and spill over, so the share stays below taste_share (0.8).
    assert in_taste / len(data.interactions) > 0.5
    for row in data.interactions:
        product = data.catalogue[row.item]
        assert product.released is not None and row.timestamp.date() >= product.released
        assert row.weight > 0 and row.timestamp <= SMALL.end


def test_the_generator_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="n_interactions"):
        SyntheticConfig(n_users=10, n_items=10, n_interactions=100)
    with pytest.raises(ValueError, match="n_categories"):
        SyntheticConfig(n_categories=99)
