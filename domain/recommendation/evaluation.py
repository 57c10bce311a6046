"""Offline evaluation: split, fit every model on the same training side, score each
model's top-k lists against the held-out side, and compare with the popularity baseline.

Comparing against popularity matters because on shop data it is a strong baseline: a
model that does not clearly beat "what everyone buys" is not worth its training cost.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from domain.recommendation.catalogue import Catalogue
from domain.recommendation.interactions import Interaction
from domain.recommendation.metrics import evaluate_lists, long_tail_items, new_items
from domain.recommendation.models import (
    CollaborativeModel,
    ContentModel,
    EaseModel,
    HybridModel,
    PopularityModel,
    Recommender,
)
from domain.recommendation.split import SplitKind, split

__all__ = ["EvaluationReport", "ModelFactory", "ModelResult", "default_models", "evaluate"]

ModelFactory = Callable[[], Recommender]


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's figures. `lift` is its precision over the baseline's (None when the
    baseline scored zero); times are wall-clock seconds on this machine."""

    name: str
    precision: float
    recall: float
    ndcg: float
    coverage: float
    novelty: float
    train_seconds: float
    recommend_seconds: float
    users: int
    lift: float | None

    def figures(self) -> dict[str, float | int | None]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "ndcg": round(self.ndcg, 4),
            "coverage": round(self.coverage, 4),
            "novelty": round(self.novelty, 4),
            "train_s": round(self.train_seconds, 3),
            "recommend_s": round(self.recommend_seconds, 3),
            "users": self.users,
            "lift": None if self.lift is None else round(self.lift, 3),
        }


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    k: int
    split: str
    seed: int
    test_share: float
    train_interactions: int
    test_interactions: int
    items: int
    novelty_definition: str
    baseline: str
    results: dict[str, ModelResult]

    def table(self) -> str:
        """A plain-text table, one model a row, for a terminal."""
        k = self.k
        header = (f"{'model':<14}{'P@' + str(k):>9}{'R@' + str(k):>9}{'NDCG@' + str(k):>9}"
                  f"{'cover':>8}{'novel':>8}{'lift':>7}{'train s':>9}{'rec s':>8}")
        rows = [header]
        for result in self.results.values():
            lift = "-" if result.lift is None else f"{result.lift:.2f}"
            rows.append(
                f"{result.name:<14}{result.precision:>9.4f}{result.recall:>9.4f}"
                f"{result.ndcg:>9.4f}{result.coverage:>8.3f}{result.novelty:>8.3f}{lift:>7}"
                f"{result.train_seconds:>9.2f}{result.recommend_seconds:>8.2f}"
            )
        return "\n".join(rows)


def default_models(catalogue: Catalogue | None = None) -> dict[str, ModelFactory]:
    """Popularity, EASE, collaborative and hybrid; content too when there is a catalogue (it
    has nothing to compare items by without one)."""
    models: dict[str, ModelFactory] = {
        "popularity": PopularityModel,
        "ease": EaseModel,
        "collaborative": CollaborativeModel,
    }
    if catalogue:
        models["content"] = ContentModel
    models["hybrid"] = HybridModel
    return models


def evaluate(
    interactions: Sequence[Interaction],
    catalogue: Catalogue | None = None,
    models: Mapping[str, ModelFactory] | None = None,
    *,
    k: int = 10,
    split_kind: SplitKind | str = SplitKind.RANDOM,
    seed: int = 42,
    test_share: float = 0.25,
    recent_days: int = 90,
    head_share: float = 0.2,
    relevance_threshold: float | None = None,
    baseline: str = "popularity",
    progress: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Evaluate each model (a factory, so each run gets a fresh, unfitted model).

    The baseline (popularity unless named otherwise) is added when `models` lacks it.
    `relevance_threshold` counts only test interactions at least that strong as relevant
    (e.g. 4 for MovieLens ratings); every test interaction by default. Novelty uses
    release dates when the catalogue has any, the long tail otherwise (see `metrics`).
    """
    chosen: dict[str, ModelFactory] = dict(models or default_models(catalogue))
    if baseline not in chosen:
        chosen = {baseline: PopularityModel, **chosen}
    say = progress or (lambda _message: None)
    train, test = split(interactions, split_kind, test_share, seed)
    relevant: dict[str, set[str]] = defaultdict(set)
    for row in test:
        if relevance_threshold is None or row.weight >= relevance_threshold:
            relevant[row.user].add(row.item)
    all_items = set(catalogue or ()) | {row.item for row in interactions}

    released = {item: p.released for item, p in (catalogue or {}).items()}
    if any(day is not None for day in released.values()) and train:
        reference = max(row.timestamp for row in train).date()
        new = new_items(released, reference, recent_days)
        novelty_definition = f"released within {recent_days} days before {reference}"
    else:
        new = long_tail_items((row.item for row in train), all_items, head_share)
        novelty_definition = f"outside the {head_share:.0%} most popular items in training"

    results: dict[str, ModelResult] = {}
    for name, factory in chosen.items():
        say(f"{name}: training on {len(train)} interactions")
        begun = time.perf_counter()
        model = factory().fit(train, catalogue)
        trained = time.perf_counter() - begun
        begun = time.perf_counter()
        lists = {user: [r.item for r in model.recommend(user, k)] for user in relevant}
        recommended = time.perf_counter() - begun
        metrics = evaluate_lists(lists, relevant, k, len(all_items), new)
        say(f"{name}: precision@{k} {metrics.precision:.4f} in {trained:.2f}s + "
            f"{recommended:.2f}s")
        results[name] = ModelResult(name, metrics.precision, metrics.recall, metrics.ndcg,
                                    metrics.coverage, metrics.novelty, trained, recommended,
                                    metrics.users, None)
    base = results[baseline].precision
    for name, result in results.items():
        results[name] = ModelResult(**{
            **{field: getattr(result, field) for field in ModelResult.__slots__},
            "lift": result.precision / base if base else None,
        })
    return EvaluationReport(
        k=k, split=str(SplitKind(split_kind)), seed=seed, test_share=test_share,
        train_interactions=len(train), test_interactions=len(test), items=len(all_items),
        novelty_definition=novelty_definition, baseline=baseline, results=results,
    )
