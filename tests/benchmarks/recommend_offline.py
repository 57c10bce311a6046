"""Offline recommender quality and training time, on the synthetic shop or a MovieLens file.

Generates the deterministic synthetic set (100,000 interactions by default: 2,000 users,
2,000 products with planted tastes), splits it per user 75/25 with a fixed seed, trains
popularity, EASE, collaborative (surprise SVD with sampled negatives), content and hybrid
on the training side and prints precision@k, recall@k, NDCG@k, catalogue coverage,
novelty and training time side by side, with each model's precision lift over popularity.

`--ratings PATH` evaluates a MovieLens `u.data` file instead (no catalogue: content drops
out, novelty means the long tail).

No database and no server: this measures the pure computational core only. Progress goes
to stderr; the last line of stdout is one JSON object with every figure.

    python -m tests.benchmarks.recommend_offline [--interactions 100000] [--users 2000]
        [--items 2000] [--k 10] [--split random|temporal] [--seed 42] [--ratings PATH]
        [--relevance-threshold 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

from domain.recommendation.catalogue import Catalogue
from domain.recommendation.evaluation import ModelFactory, default_models, evaluate
from domain.recommendation.interactions import Interaction
from domain.recommendation.models import ReasonCode
from domain.recommendation.movielens import read_movielens
from domain.recommendation.synthetic import SyntheticConfig, generate
from tests.benchmarks.common import emit, log


def load(args: argparse.Namespace) -> tuple[list[Interaction], Catalogue | None, dict[str, Any]]:
    begun = time.perf_counter()
    if args.ratings:
        interactions = read_movielens(args.ratings)
        catalogue: Catalogue | None = None
        source = {"data": "movielens", "ratings_file": os.path.basename(args.ratings)}
    else:
        config = SyntheticConfig(n_users=args.users, n_items=args.items,
                                 n_interactions=args.interactions, seed=args.data_seed)
        data = generate(config)
        interactions, catalogue = data.interactions, data.catalogue
        source = {"data": "synthetic", "data_seed": args.data_seed}
    elapsed = time.perf_counter() - begun
    users = len({row.user for row in interactions})
    items = len(set(catalogue or ()) | {row.item for row in interactions})
    log(f"{len(interactions)} interactions, {users} users, {items} items "
        f"loaded in {elapsed:.2f}s")
    return interactions, catalogue, {
        **source, "interactions": len(interactions), "users": users, "items": items,
        "load_s": round(elapsed, 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    interactions, catalogue, figures = load(args)
    models: dict[str, ModelFactory] = default_models(catalogue)
    report = evaluate(
        interactions, catalogue, models, k=args.k, split_kind=args.split, seed=args.seed,
        relevance_threshold=args.relevance_threshold, progress=log,
    )
    log(f"split {report.split} (seed {report.seed}): {report.train_interactions} train, "
        f"{report.test_interactions} test; novelty = {report.novelty_definition}")
    for line in report.table().splitlines():
        log(line)
    figures.update({
        "benchmark": "recommend_offline",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "k": report.k,
        "split": report.split,
        "seed": report.seed,
        "train_interactions": report.train_interactions,
        "test_interactions": report.test_interactions,
        "novelty_definition": report.novelty_definition,
        "reason_codes": [code.value for code in ReasonCode],
    })
    for name, result in report.results.items():
        figures.update({f"{name}_{key}": value for key, value in result.figures().items()})
    return {"benchmark": figures.pop("benchmark"), **figures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--interactions", type=int, default=100_000,
                        help="synthetic interactions (default 100000)")
    parser.add_argument("--users", type=int, default=2_000, help="synthetic users (2000)")
    parser.add_argument("--items", type=int, default=2_000, help="synthetic products (2000)")
    parser.add_argument("--data-seed", type=int, default=7, help="generator seed (7)")
    parser.add_argument("--ratings", default=None,
                        help="a MovieLens u.data file to evaluate instead of synthetic data")
    parser.add_argument("--relevance-threshold", type=float, default=None,
                        help="count only test ratings at least this high as relevant")
    parser.add_argument("--k", type=int, default=10, help="list length (default 10)")
    parser.add_argument("--split", choices=("random", "temporal"), default="random")
    parser.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    args = parser.parse_args(argv)
    emit(run(args))


if __name__ == "__main__":
    main()
