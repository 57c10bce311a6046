"""EASE, the closed-form item-item model: it is the formula of the paper, it recovers an
item-item structure planted in the data, and it scores any history without retraining."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from domain.recommendation.interactions import Interaction
from domain.recommendation.models import AlsModel, EaseModel, HybridModel, ReasonCode
from domain.recommendation.synthetic import SyntheticConfig, generate

AT = datetime(2026, 1, 1, tzinfo=UTC)


def rows(pairs: list[tuple[str, str]]) -> list[Interaction]:
    return [Interaction(user, item, 1.0, AT) for user, item in pairs]


def planted() -> list[Interaction]:
    """Ten items in five pairs (a0, b0) ... (a4, b4): whoever takes one of a pair mostly
    takes the other; plus noise, one random item per user."""
    rng = np.random.default_rng(7)
    pairs: list[tuple[str, str]] = []
    for n in range(400):
        user = f"u{n:03d}"
        group = rng.integers(5)
        pairs += [(user, f"a{group}"), (user, f"b{group}")]
        pairs.append((user, f"{'ab'[rng.integers(2)]}{rng.integers(5)}"))
    return rows(sorted(set(pairs)))


def test_weights_are_the_closed_form_with_a_zero_diagonal() -> None:
    data = rows([("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u2", "i3"), ("u3", "i1"),
                 ("u3", "i3"), ("u3", "i2")])
    model = EaseModel(l2=0.5).fit(data)
    x = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=float)
    p = np.linalg.inv(x.T @ x + 0.5 * np.eye(3))
    expected = np.eye(3) - p / np.diag(p)
    assert np.allclose(model.weights, expected, atol=1e-6)
    assert np.all(np.diag(model.weights) == 0.0)


def test_recovers_the_planted_pairs() -> None:
    model = EaseModel(l2=10.0).fit(planted())
    for group in range(5):
        a, b = f"a{group}", f"b{group}"
        assert model.similar_items(a, k=1)[0].item == b
        first = model.recommend("new", k=1, history={a: 1.0})[0]
        assert first.item == b
        assert first.reason.code is ReasonCode.ALSO_LIKED and first.reason.item == a


def test_a_cold_history_gets_nothing_and_unknown_items_are_ignored() -> None:
    model = EaseModel().fit(planted())
    assert model.recommend("nobody", k=3) == []
    assert model.recommend("x", k=3, history={"never-seen": 1.0}) == []


def test_refuses_a_catalogue_beyond_its_size_limit() -> None:
    with pytest.raises(ValueError, match="at most 4 items"):
        EaseModel(max_items=4).fit(planted())


def test_als_folds_in_a_history_and_finds_the_planted_pairs() -> None:
    model = AlsModel(factors=5, regularization=1.0, alpha=10.0, iterations=30).fit(planted())
    for group in range(5):
        a, b = f"a{group}", f"b{group}"
        assert model.recommend("new", k=1, history={a: 1.0})[0].item == b
    assert model.recommend("new", k=3, history={"unknown": 1.0}) == []


def test_past_the_ease_limit_the_hybrid_uses_als_and_still_beats_popularity() -> None:
    data = generate(SyntheticConfig(n_users=300, n_items=400, n_interactions=9_000, seed=3))
    hybrid = HybridModel(max_ease_items=50).fit(data.interactions, data.catalogue)
    weights = hybrid.tuning["weights"]
    assert weights["ease"] == 0.0 and hybrid.tuning["ease_l2"] is None
    assert "als" in hybrid.tuning["components_alone"]
    ease, als = hybrid.components[0][0], hybrid.components[4][0]
    assert isinstance(ease, EaseModel) and not ease.fitted
    assert isinstance(als, AlsModel) and als.fitted
    alone = hybrid.tuning["components_alone"]
    assert hybrid.tuning["validation_precision"] >= max(alone.values())
    assert alone["als"] > alone["popularity"]


def test_a_hybrid_pickled_before_tuning_existed_still_serves() -> None:
    import pickle

    data = generate(SyntheticConfig(n_users=60, n_items=40, n_interactions=900, seed=1))
    hybrid = HybridModel(tune=False).fit(data.interactions, data.catalogue)
    state = dict(hybrid.__dict__)
    for name in ("diversity", "_penalty", "tuning"):
        del state[name]
    old = HybridModel.__new__(HybridModel)
    old.__setstate__(state)
    revived = pickle.loads(pickle.dumps(old))
    user = data.interactions[0].user
    assert revived.diversity == 0.0
    assert [r.item for r in revived.recommend(user, 5)] == [
        r.item for r in HybridModel(tune=False, diversity=0.0)
        .fit(data.interactions, data.catalogue).recommend(user, 5)]
