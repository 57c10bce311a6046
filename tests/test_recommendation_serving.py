"""Serving rules on the synthetic shop, for every placement and many members at once:
what may never appear, the diversity cap, reasons, consent, and the model file's checksum.

The database-backed path is in tests/test_recommendations.py; here the pure core is
checked over hundreds of lists, which the API tests cannot afford.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from domain.recommendation.context import MemberContext
from domain.recommendation.interactions import SignalKind
from domain.recommendation.placement import Placement, Strategy
from domain.recommendation.serving import (
    DIVERSITY_WINDOW,
    ListRequest,
    MemberState,
    PickReasonCode,
    reason_text,
    recommend_list,
)
from domain.recommendation.synthetic import SyntheticConfig, generate
from domain.recommendation.trained import (
    ChecksumMismatchError,
    TrainedRecommender,
    checksum,
    load_trained,
    train_recommender,
)

DATA = generate(SyntheticConfig(n_users=150, n_items=200, n_interactions=6_000, seed=3))


@pytest.fixture(scope="module")
def trained() -> TrainedRecommender:
    from domain.recommendation.interactions import Signal

    signals = [Signal(row.user, row.item, SignalKind.PURCHASE if row.weight >= 4
                      else SignalKind.VIEW, row.timestamp, dwell_seconds=60)
               for row in DATA.interactions]
    baskets = [{row.item for row in DATA.interactions[n:n + 3]}
               for n in range(0, len(DATA.interactions), 3)]
    outcome = train_recommender(signals, DATA.catalogue, DATA.interactions[-1].timestamp,
                                baskets=baskets)
    hybrid, popularity = outcome.metrics["hybrid"], outcome.metrics["popularity"]
    # Measured: 0.367 against 0.231 on this small shop (the 100,000-interaction benchmark
    # shows a wider gap); the training job's own metrics must show the margin.
    assert hybrid["precision"] >= 1.4 * popularity["precision"]
    return outcome.model


def state_of(user: str) -> MemberState:
    history = {row.item: row.weight for row in DATA.interactions if row.user == user}
    # Their three strongest interactions count as purchases (the synthetic set's
    # strengths are already decayed, so no fixed threshold marks purchases).
    bought = frozenset(sorted(history, key=lambda item: (-history[item], item))[:3])
    kinds = {item: SignalKind.PURCHASE if item in bought else SignalKind.VIEW
             for item in history}
    return MemberState(personalised=True, history=history, bought=bought, signals=kinds,
                       context=MemberContext(tier="gold", city="Shanghai"))


def requests_for(rng: random.Random) -> list[ListRequest]:
    items = sorted(DATA.catalogue)
    return [
        ListRequest(Placement.HOME, first=10),
        ListRequest(Placement.PRODUCT, first=10, product_id=rng.choice(items)),
        ListRequest(Placement.CART, first=10, cart=tuple(rng.sample(items, 2))),
        ListRequest(Placement.SEARCH, first=30, candidates=tuple(rng.sample(items, 30))),
    ]


def test_no_list_holds_an_unavailable_or_bought_product_and_every_item_has_a_reason(
    trained: TrainedRecommender,
) -> None:
    rng = random.Random(11)
    users = sorted(DATA.users)
    unavailable = set(rng.sample(sorted(DATA.catalogue), 40))
    now = DATA.interactions[-1].timestamp + timedelta(days=1)
    names = {item: product.name for item, product in DATA.catalogue.items()}
    for user in rng.sample(users, 40):
        state = state_of(user)
        for request in requests_for(rng):
            picks = recommend_list(trained, state, request, now, unavailable)
            items = [pick.item for pick in picks]
            assert picks and len(items) == len(set(items))
            assert not set(items) & unavailable
            if request.placement is Placement.SEARCH:
                assert set(items) == set(request.candidates) - unavailable
            else:
                assert not set(items) & state.bought
                assert request.product_id not in items and not set(request.cart) & set(items)
            for pick in picks:
                text = reason_text(pick.reason, names)
                assert text and "None" not in text
            category = Counter(DATA.catalogue[item].category
                               for item in items[:DIVERSITY_WINDOW])
            assert max(category.values()) <= 3, (request.placement, category)


def test_consumables_come_back_and_strategies_use_their_own_model(
    trained: TrainedRecommender,
) -> None:
    """With every product consumable, the member's purchases rank again (they are what
    the member likes most); each strategy ranks with its own model."""
    user = sorted(DATA.users)[5]
    state = state_of(user)
    now = DATA.interactions[-1].timestamp
    home = ListRequest(Placement.HOME, first=30, max_per_category=None)
    everything = frozenset(DATA.catalogue)
    with_consumables = recommend_list(trained, state, home, now, consumable=everything)
    assert {pick.item for pick in with_consumables} & state.bought
    by_strategy = {strategy: [pick.item for pick in recommend_list(
        trained, state, ListRequest(Placement.HOME, first=10, strategy=strategy), now)]
        for strategy in Strategy}
    assert len({tuple(items) for items in by_strategy.values()}) >= 3


def test_without_consent_everyone_gets_the_same_list_and_is_told_why(
    trained: TrainedRecommender,
) -> None:
    now = DATA.interactions[-1].timestamp
    request = ListRequest(Placement.HOME, first=10)
    lists = {tuple(recommend_list(trained, MemberState(personalised=False), request, now))
             for _ in range(3)}
    (picks,) = lists
    assert picks
    for pick in picks:
        assert pick.reason.code is PickReasonCode.NOT_PERSONALISED
        assert "not personalised" in reason_text(pick.reason, {})


def test_a_model_file_loads_only_with_its_own_checksum(trained: TrainedRecommender) -> None:
    payload = trained.to_bytes()
    digest = checksum(payload)
    loaded = load_trained(payload, digest)
    assert loaded.hybrid.items == trained.hybrid.items
    with pytest.raises(ChecksumMismatchError):
        load_trained(payload[:-1] + bytes([payload[-1] ^ 1]), digest)
