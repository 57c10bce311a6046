"""A trained recommender: everything serving needs, fitted together, stored as one file.

Training turns raw signals into interactions (weights and decay as of the training
moment), fits the hybrid (whose collaborative, content and popularity parts also serve
the strategies an experiment may pick), mines association rules from the baskets of paid
orders, counts popularity per context for cold start, and evaluates the hybrid against
popularity on a held-out split of the same data, so each version carries its own offline
metrics.

The file is a pickle of `TrainedRecommender`, addressed by its SHA-256. Pickle, because
the fitted parts are numpy arrays and plain dicts that pickle exactly and fast; it is
only ever read back from this project's own database, and `load_trained` refuses any
payload whose checksum differs from the one the training event recorded.
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from domain.recommendation.baskets import AssociationRules, mine_rules
from domain.recommendation.catalogue import Catalogue
from domain.recommendation.context import ContextualPopularity, MemberContext
from domain.recommendation.evaluation import evaluate
from domain.recommendation.interactions import (
    Interaction,
    InteractionWeights,
    Signal,
    derive_interactions,
)
from domain.recommendation.models import (
    AlsModel,
    CollaborativeModel,
    ContentModel,
    EaseModel,
    HybridModel,
    PopularityModel,
    ScoringModel,
)
from domain.recommendation.placement import Strategy

__all__ = [
    "ChecksumMismatchError",
    "TrainedRecommender",
    "TrainingParams",
    "checksum",
    "load_trained",
    "train_recommender",
]

_Part = TypeVar("_Part")

# Below this many members with interactions a held-out split says nothing; the metrics
# are left empty rather than computed on a handful of people.
MIN_MEMBERS_TO_EVALUATE = 20


@dataclass(frozen=True, slots=True)
class TrainingParams:
    """What a training run is configured with; recorded with every version."""

    weights: InteractionWeights = field(default_factory=InteractionWeights)
    # The blend's weights are chosen on a validation split (`tune_blend`); these are used
    # only when it is switched off. `diversity` None: chosen on validation too.
    tune_blend: bool = True
    ease_weight: float = 1.0
    collaborative_weight: float = 0.0
    content_weight: float = 0.25
    popularity_weight: float = 0.0
    diversity: float | None = None
    diversity_tolerance: float = 0.0
    max_ease_items: int = 12_000
    n_factors: int = 32
    n_epochs: int = 30
    seed: int = 42
    min_support_count: int = 2
    min_context_members: int = 5
    evaluate_k: int = 10

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TrainedRecommender:
    hybrid: HybridModel
    rules: AssociationRules
    context: ContextualPopularity
    params: TrainingParams
    trained_at: datetime

    def model(self, strategy: Strategy) -> ScoringModel:
        """The model a strategy names: the hybrid, or one of its fitted parts
        ("collaborative" is the item model: EASE, or surprise's SVD past EASE's limit)."""
        if strategy is Strategy.HYBRID:
            return self.hybrid
        if strategy is Strategy.COLLABORATIVE:
            model: ScoringModel = self.item_model
            weighted = dict((id(m), w) for m, w in self.hybrid.components)
            if isinstance(model, EaseModel | AlsModel) or weighted[id(model)] > 0:
                return model
            return self.hybrid  # never fitted: the blend stands in
        return self.content if strategy is Strategy.CONTENT else self._part(PopularityModel)

    @property
    def collaborative(self) -> CollaborativeModel:
        return self._part(CollaborativeModel)

    @property
    def item_model(self) -> EaseModel | AlsModel | CollaborativeModel:
        """The fitted item-to-item model: EASE, or ALS past EASE's size limit (and
        surprise's SVD for a model trained before either existed)."""
        for part, _weight in self.hybrid.components:
            if isinstance(part, EaseModel | AlsModel) and part.fitted:
                return part
        return self.collaborative

    @property
    def content(self) -> ContentModel:
        return self._part(ContentModel)

    def _part(self, kind: type[_Part]) -> _Part:
        for component, _weight in self.hybrid.components:
            if isinstance(component, kind):
                return component
        raise LookupError(kind.__name__)  # pragma: no cover - the hybrid has all three

    def forget_members(self) -> None:
        """Drop what fitting kept per member (histories, the members' own factors).

        Serving always scores a member from their history as it is now, never from what
        training saw, so the stored file needs no member ids — and erasing a member
        leaves nothing of them in any model file, with no retraining.
        """
        for model in (self.hybrid, *(part for part, _weight in self.hybrid.components)):
            model.histories = {}
        self.collaborative.user_factors = {}

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


class ChecksumMismatchError(Exception):
    """A stored model file is not the one its training recorded (corrupt or altered)."""


def checksum(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def load_trained(payload: bytes, expected_checksum: str) -> TrainedRecommender:
    actual = checksum(payload)
    if actual != expected_checksum:
        raise ChecksumMismatchError(
            f"model file checksum {actual[:12]}… differs from the recorded "
            f"{expected_checksum[:12]}…; refusing to load it")
    model = pickle.loads(payload)
    if not isinstance(model, TrainedRecommender):
        raise ChecksumMismatchError("the model file does not hold a trained recommender")
    return model


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    model: TrainedRecommender
    metrics: dict[str, Any]
    interactions: int
    members: int
    products: int
    seconds: float


def train_recommender(
    signals: Sequence[Signal],
    catalogue: Catalogue,
    now: datetime,
    *,
    baskets: Iterable[Collection[str]] = (),
    contexts: Mapping[str, MemberContext] | None = None,
    segment_names: Mapping[str, str] | None = None,
    params: TrainingParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Fit everything serving needs. `baskets` are the products of each paid order (for
    the association rules); `contexts` give members' tier, city and segments (for
    popularity in context)."""
    params = params or TrainingParams()
    say = progress or (lambda _message: None)
    begun = time.perf_counter()
    say(f"deriving interactions from {len(signals)} signals")
    interactions = derive_interactions(signals, now, params.weights)
    # Interactions with products the catalogue does not list still teach the models who
    # is alike; they are never recommended (serving excludes what the catalogue lacks).
    say(f"fitting the hybrid on {len(interactions)} interactions")
    hybrid = _hybrid(params).fit(interactions, catalogue)
    say("mining association rules from paid orders")
    rules = mine_rules(baskets,
                       min_support_count=params.min_support_count)
    say("counting popularity by context")
    context = ContextualPopularity.fit(
        [(row.user, row.item, row.weight, row.timestamp) for row in interactions],
        contexts or {}, segment_names or {}, min_members=params.min_context_members)
    model = TrainedRecommender(hybrid, rules, context, params, now)
    model.forget_members()
    metrics = _metrics(interactions, catalogue, params, say)
    if hybrid.tuning:
        metrics["chosen_on_validation"] = hybrid.tuning
    members = len({row.user for row in interactions})
    products = len({row.item for row in interactions} | set(catalogue))
    return TrainingOutcome(model, metrics, len(interactions), members, products,
                           time.perf_counter() - begun)


def _hybrid(params: TrainingParams) -> HybridModel:
    return HybridModel(
        collaborative_weight=params.collaborative_weight,
        content_weight=params.content_weight,
        popularity_weight=params.popularity_weight,
        collaborative=CollaborativeModel(n_factors=params.n_factors,
                                         n_epochs=params.n_epochs, seed=params.seed),
        ease_weight=params.ease_weight, max_ease_items=params.max_ease_items,
        diversity=params.diversity, diversity_tolerance=params.diversity_tolerance,
        tune=params.tune_blend, k=params.evaluate_k,
        seed=params.seed,
    )


def _metrics(interactions: Sequence[Interaction], catalogue: Catalogue,
             params: TrainingParams, say: Callable[[str], None]) -> dict[str, Any]:
    """The hybrid against popularity on a random 75/25 split of the same interactions."""
    if len({row.user for row in interactions}) < MIN_MEMBERS_TO_EVALUATE:
        say(f"fewer than {MIN_MEMBERS_TO_EVALUATE} members: not evaluated")
        return {}
    say("evaluating against the popularity baseline")
    report = evaluate(interactions, catalogue,
                      {"popularity": PopularityModel, "hybrid": lambda: _hybrid(params)},
                      k=params.evaluate_k, seed=params.seed, progress=say)
    return {"k": report.k, "split": report.split, "seed": report.seed,
            "test_interactions": report.test_interactions,
            **{name: result.figures() for name, result in report.results.items()}}
