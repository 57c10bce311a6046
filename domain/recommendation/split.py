"""Train/test splits for offline evaluation, reproducible from a seed.

Per user, not over all interactions: a global random split leaves some users with
nothing to test and others with nothing to learn from, and the metrics then measure the
split as much as the model. Every user with at least two interactions gets at least one
on each side; users with one stay in training (they can still be recommended to, but
there is nothing to check them against).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from domain.recommendation.interactions import Interaction

__all__ = ["Split", "SplitKind", "held_out_count", "random_split", "split", "temporal_split"]


class SplitKind(StrEnum):
    RANDOM = "random"
    TEMPORAL = "temporal"


class Split(NamedTuple):
    train: list[Interaction]
    test: list[Interaction]


def held_out_count(count: int, test_share: float) -> int:
    """How many of a user's `count` interactions go to test: the share rounded, but at
    least one and never all of them (zero when the user has fewer than two)."""
    if count < 2:
        return 0
    return max(1, min(count - 1, round(count * test_share)))


def _by_user(interactions: Iterable[Interaction]) -> dict[str, list[Interaction]]:
    users: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in interactions:
        users[interaction.user].append(interaction)
    return users


def _check_share(test_share: float) -> None:
    if not 0.0 < test_share < 1.0:
        raise ValueError("test_share must be strictly between 0 and 1")


def random_split(
    interactions: Iterable[Interaction], test_share: float = 0.25, seed: int = 42
) -> Split:
    """Per-user stratified random split: each user's interactions are shuffled and
    `held_out_count` of them go to test.

    Users and their interactions are put in a canonical order (user id; item id, time)
    before shuffling, so the split depends on the seed and the data only, not on the
    order the data arrived in.
    """
    _check_share(test_share)
    rng = np.random.default_rng(seed)
    train: list[Interaction] = []
    test: list[Interaction] = []
    for _user, rows in sorted(_by_user(interactions).items()):
        rows.sort(key=lambda r: (r.item, r.timestamp, r.weight))
        n_test = held_out_count(len(rows), test_share)
        chosen = set(rng.permutation(len(rows))[:n_test].tolist()) if n_test else set()
        for index, row in enumerate(rows):
            (test if index in chosen else train).append(row)
    return Split(train, test)


def temporal_split(interactions: Iterable[Interaction], test_share: float = 0.25) -> Split:
    """Each user's latest `held_out_count` interactions go to test: "train on the past,
    predict what comes next", closer to production than a random split (ties in time are
    broken by item id, so the split is deterministic)."""
    _check_share(test_share)
    train: list[Interaction] = []
    test: list[Interaction] = []
    for _user, rows in sorted(_by_user(interactions).items()):
        rows.sort(key=lambda r: (r.timestamp, r.item))
        cut = len(rows) - held_out_count(len(rows), test_share)
        train.extend(rows[:cut])
        test.extend(rows[cut:])
    return Split(train, test)


def split(
    interactions: Iterable[Interaction],
    kind: SplitKind | str = SplitKind.RANDOM,
    test_share: float = 0.25,
    seed: int = 42,
) -> Split:
    """The split named by `kind` ("random" or "temporal"; the seed matters for random)."""
    match SplitKind(kind):
        case SplitKind.RANDOM:
            return random_split(interactions, test_share, seed)
        case SplitKind.TEMPORAL:
            return temporal_split(interactions, test_share)
    raise ValueError(f"unknown split {kind!r}")  # pragma: no cover
