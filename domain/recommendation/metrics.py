"""Offline ranking metrics for top-k recommendation lists.

Relevance is binary: an item is relevant to a user when it is in that user's test set.
Per-user metrics are averaged over the users who have at least one test item; a user the
model recommended nothing to still counts, with zeros (leaving them out would reward a
model for giving up on hard users).

- precision@k: relevant items among the first k, divided by k (not by the list's
  length: a list shorter than k is not rewarded for being short).
- recall@k: relevant items among the first k, divided by the user's test items.
- NDCG@k: DCG = sum of 1 / log2(rank + 1) over relevant ranks 1..k, divided by the ideal
  DCG, that of a list with min(k, |test items|) relevant items first.
- catalogue coverage: distinct items recommended to anyone, divided by the catalogue's
  size — a model that shows everyone the same ten products scores low.
- novelty: the share of recommended items that are new. With release dates, "new" means
  released within `recent_days` before the reference time (the latest training
  interaction); without release dates (MovieLens), it means outside the popular head,
  the `head_share` (20%) most-interacted-with items in training, i.e. the long tail.
  Averaged per user like the ranking metrics.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "ListMetrics",
    "catalogue_coverage",
    "dcg_at_k",
    "evaluate_lists",
    "long_tail_items",
    "ndcg_at_k",
    "new_items",
    "novelty",
    "precision_at_k",
    "recall_at_k",
]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError("k must be at least 1")


def _hits(recommended: Sequence[str], relevant: Collection[str], k: int) -> int:
    return sum(1 for item in recommended[:k] if item in relevant)


def precision_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    _check_k(k)
    return _hits(recommended, relevant, k) / k


def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    _check_k(k)
    if not relevant:
        return 0.0
    return _hits(recommended, relevant, k) / len(relevant)


def dcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    _check_k(k)
    return sum(
        1.0 / math.log2(rank + 1)
        for rank, item in enumerate(recommended[:k], start=1)
        if item in relevant
    )


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int) -> float:
    _check_k(k)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg_at_k(recommended, relevant, k) / ideal if ideal else 0.0


def catalogue_coverage(lists: Iterable[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Distinct items among everyone's first k, over the catalogue's size."""
    _check_k(k)
    if catalogue_size < 1:
        return 0.0
    shown = {item for recommended in lists for item in recommended[:k]}
    return len(shown) / catalogue_size


def new_items(released: Mapping[str, date | None], reference: date, recent_days: int) -> set[str]:
    """Items released in the `recent_days` up to and including `reference`."""
    since = reference - timedelta(days=recent_days)
    return {item for item, day in released.items() if day is not None and since < day <= reference}


def long_tail_items(
    train_items: Iterable[str], catalogue: Iterable[str], head_share: float = 0.2
) -> set[str]:
    """Catalogue items outside the `head_share` most frequent in training (ties broken by
    item id, so the head has exactly that many items); never-seen items are tail."""
    if not 0.0 <= head_share < 1.0:
        raise ValueError("head_share must be in [0, 1)")
    counts = Counter(train_items)
    everything = set(catalogue) | set(counts)
    ranked = sorted(everything, key=lambda item: (-counts.get(item, 0), item))
    head = set(ranked[: int(len(ranked) * head_share)])
    return everything - head


def novelty(recommended: Sequence[str], new: Collection[str], k: int) -> float:
    """Share of the first k that are new, over the list's length (a short list of new
    items is all new); 0 for an empty list."""
    _check_k(k)
    shown = recommended[:k]
    if not shown:
        return 0.0
    return sum(1 for item in shown if item in new) / len(shown)


@dataclass(frozen=True, slots=True)
class ListMetrics:
    precision: float
    recall: float
    ndcg: float
    coverage: float
    novelty: float
    users: int


def evaluate_lists(
    lists: Mapping[str, Sequence[str]],
    relevant: Mapping[str, Collection[str]],
    k: int,
    catalogue_size: int,
    new: Collection[str],
) -> ListMetrics:
    """All metrics for recommendation `lists` against each user's `relevant` (test) items.

    Ranking metrics and novelty are averaged over users with relevant items; a user with
    no list counts as an empty list. Coverage counts every list given.
    """
    _check_k(k)
    users = [user for user, items in relevant.items() if items]
    if not users:
        return ListMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0)
    totals = [0.0, 0.0, 0.0, 0.0]
    for user in users:
        recommended = lists.get(user, ())
        items = relevant[user]
        totals[0] += precision_at_k(recommended, items, k)
        totals[1] += recall_at_k(recommended, items, k)
        totals[2] += ndcg_at_k(recommended, items, k)
        totals[3] += novelty(recommended, new, k)
    n = len(users)
    return ListMetrics(
        precision=totals[0] / n,
        recall=totals[1] / n,
        ndcg=totals[2] / n,
        coverage=catalogue_coverage(lists.values(), catalogue_size, k),
        novelty=totals[3] / n,
        users=n,
    )
