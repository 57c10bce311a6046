"""Train/test splits: reproducible, stratified per user, and temporal when asked."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from domain.recommendation.interactions import Interaction
from domain.recommendation.split import (
    held_out_count,
    random_split,
    split,
    temporal_split,
)

START = datetime(2024, 1, 1, tzinfo=UTC)


def interactions() -> list[Interaction]:
    """Users with 1 to 12 interactions, at distinct times."""
    rows = []
    for user in range(12):
        for n in range(user + 1):
            rows.append(Interaction(f"u{user}", f"i{(user * 7 + n) % 40}", 1.0 + n,
                                    START + timedelta(days=user + 3 * n)))
    return rows


def per_user(rows: list[Interaction]) -> Counter[str]:
    return Counter(row.user for row in rows)


def test_held_out_count_is_a_quarter_but_leaves_both_sides_non_empty() -> None:
    assert held_out_count(1, 0.25) == 0
    assert held_out_count(2, 0.25) == 1
    assert held_out_count(4, 0.25) == 1
    assert held_out_count(8, 0.25) == 2
    assert held_out_count(100, 0.25) == 25
    assert held_out_count(3, 0.9) == 2


def test_random_split_is_stratified_per_user() -> None:
    rows = interactions()
    train, test = random_split(rows, 0.25, seed=1)
    assert sorted(train + test, key=repr) == sorted(rows, key=repr)
    totals, held = per_user(rows), per_user(test)
    for user, count in totals.items():
        assert held[user] == held_out_count(count, 0.25)
        if count >= 2:
            assert 0 < held[user] < count
    assert held["u0"] == 0  # one interaction: training only


def test_random_split_depends_on_seed_and_data_not_input_order() -> None:
    rows = interactions()
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    first = random_split(rows, seed=3)
    assert set(random_split(shuffled, seed=3).test) == set(first.test)
    assert random_split(rows, seed=3) == first
    assert set(random_split(rows, seed=4).test) != set(first.test)


def test_temporal_split_puts_each_users_latest_interactions_in_test() -> None:
    rows = interactions()
    train, test = temporal_split(rows, 0.25)
    latest_train: dict[str, datetime] = defaultdict(lambda: datetime.min.replace(tzinfo=UTC))
    for row in train:
        latest_train[row.user] = max(latest_train[row.user], row.timestamp)
    for row in test:
        assert row.timestamp > latest_train[row.user]
    held = per_user(test)
    for user, count in per_user(rows).items():
        assert held[user] == held_out_count(count, 0.25)


def test_split_by_name_and_bad_shares() -> None:
    rows = interactions()
    assert split(rows, "temporal") == temporal_split(rows)
    assert split(rows, "random", seed=9) == random_split(rows, seed=9)
    with pytest.raises(ValueError):
        split(rows, "sideways")
    with pytest.raises(ValueError, match="test_share"):
        random_split(rows, test_share=1.0)
