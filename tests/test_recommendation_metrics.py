"""Offline metrics, checked against examples worked out by hand."""

from __future__ import annotations

import math
from datetime import date

import pytest

from domain.recommendation.metrics import (
    catalogue_coverage,
    evaluate_lists,
    long_tail_items,
    ndcg_at_k,
    new_items,
    novelty,
    precision_at_k,
    recall_at_k,
)

RECOMMENDED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "x"}  # hits at ranks 2 and 4; "x" was never recommended


def test_precision_counts_hits_in_the_first_k_over_k() -> None:
    assert precision_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RECOMMENDED, RELEVANT, 3) == pytest.approx(1 / 3)
    # A list shorter than k is not rewarded for being short.
    assert precision_at_k(["b"], RELEVANT, 10) == pytest.approx(1 / 10)


def test_recall_counts_hits_over_all_relevant_items() -> None:
    assert recall_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RECOMMENDED, set(), 5) == 0.0


def test_ndcg_discounts_by_log2_of_rank_against_the_ideal_list() -> None:
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # hits at ranks 2 and 4
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # three relevant items
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 5) == pytest.approx(dcg / ideal)
    # With k = 2 the ideal list holds only two relevant items.
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )
    assert ndcg_at_k(["b", "d", "x"], RELEVANT, 3) == pytest.approx(1.0)
    assert ndcg_at_k(RECOMMENDED, set(), 5) == 0.0


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(RECOMMENDED, RELEVANT, 0)


def test_coverage_is_distinct_items_in_everyones_first_k_over_the_catalogue() -> None:
    lists = [["a", "b", "c"], ["a", "d", "e"]]
    assert catalogue_coverage(lists, 10, 2) == pytest.approx(3 / 10)  # a, b, d
    assert catalogue_coverage(lists, 10, 3) == pytest.approx(5 / 10)
    assert catalogue_coverage([], 0, 3) == 0.0


def test_new_items_are_those_released_in_the_recent_period() -> None:
    released = {"old": date(2024, 1, 1), "edge": date(2024, 10, 3), "new": date(2024, 12, 1),
                "future": date(2025, 2, 1), "unknown": None}
    # 90 days before 2025-01-01 is 2024-10-03: released after that day counts as new.
    assert new_items(released, date(2025, 1, 1), 90) == {"new"}
    assert novelty(["new", "old", "new2"], {"new", "new2"}, 3) == pytest.approx(2 / 3)
    assert novelty([], {"new"}, 3) == 0.0


def test_long_tail_is_everything_outside_the_most_popular_share() -> None:
    train = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    catalogue = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    # 20% of ten items: the head is a and b; never-seen items belong to the tail.
    assert long_tail_items(train, catalogue, 0.2) == set(catalogue) - {"a", "b"}


def test_evaluate_lists_averages_over_users_with_test_items() -> None:
    lists = {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["a", "c"]}
    relevant = {"u1": {"a"}, "u2": {"x", "y"}, "u4": {"a"}, "u5": set()}
    metrics = evaluate_lists(lists, relevant, k=2, catalogue_size=8, new={"a"})
    # u1: P 1/2, R 1, NDCG 1; u2: all 0; u4 (no list): all 0; u5 has nothing to find.
    assert metrics.users == 3
    assert metrics.precision == pytest.approx((0.5 + 0 + 0) / 3)
    assert metrics.recall == pytest.approx(1 / 3)
    assert metrics.ndcg == pytest.approx(1 / 3)
    assert metrics.novelty == pytest.approx((0.5 + 0 + 0) / 3)
    assert metrics.coverage == pytest.approx(4 / 8)  # a, b, c, d across all lists
