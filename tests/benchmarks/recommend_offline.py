"""Offline recommender quality and training time, on the synthetic shop or a MovieLens file.

Generates the deterministic synthetic set (100,000 interactions by default: 2,000 users,
2,000 products with planted tastes), splits it per user 75/25 with a fixed seed, trains
popularity, collaborative (surprise SVD with sampled negatives), content and hybrid models
on the training side and prints precision@k, recall@k, NDCG@k, catalogue coverage,
novelty and training time side by side, with each model's precision lift over popularity.

`--ratings PATH` evaluates a MovieLens `u.data` file instead (no catalogue: content drops
out, novelty means the long tail). When the `implicit` library is importable, its ALS is
measured too, through the same split and metrics (it is not a project dependency: the
comparison is what decides whether it should become one).

No database and no server: this measures the pure computational core only. Progress goes
to stderr; the last line of stdout is one JSON object with every figure.

    python -m tests.benchmarks.recommend_offline [--interactions 100000] [--users 2000]
        [--items 2000] [--k 10] [--split random|temporal] [--seed 42] [--ratings PATH]
        [--relevance-threshold 4] [--no-implicit]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from domain.recommendation.catalogue import Catalogue
from domain.recommendation.evaluation import ModelFactory, default_models, evaluate
from domain.recommendation.interactions import Interaction
from domain.recommendation.models import Reason, ReasonCode, Scored, ScoringModel
from domain.recommendation.movielens import read_movielens
from domain.recommendation.synthetic import SyntheticConfig, generate
from tests.benchmarks.common import emit, log


class ImplicitALSModel(ScoringModel):
    """`implicit`'s ALS behind the project's protocol, for comparison only.

    Binary preferences with confidence 1 + alpha; 32 factors, regularisation 1.0, alpha
    2.0, 15 iterations: the best of a small grid on the synthetic set. One thread, like
    surprise, so training times compare like for like.
    """

    name = "implicit_als"

    def _fit(self, train: Sequence[Interaction]) -> None:
        import threadpoolctl
        from implicit.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix

        users = sorted(self.histories)
        self.user_row = {user: n for n, user in enumerate(users)}
        rows = [self.user_row[user] for user in users for _ in self.histories[user]]
        columns = [p for user in users for p in self.histories[user]]
        matrix = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)),
                            shape=(len(users), len(self.items)))
        with threadpoolctl.threadpool_limits(1, "blas"):  # as implicit asks
            model = AlternatingLeastSquares(factors=32, regularization=1.0, alpha=2.0,
                                            iterations=15, random_state=0, num_threads=1)
            model.fit(matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def _score(self, user: str | None, seen: np.ndarray,
               strengths: np.ndarray) -> Scored | None:
        row = self.user_row.get(user) if user is not None else None
        if row is None:
            return None
        # Comparison only: no reasons worth computing.
        return Scored(self.item_factors @ self.user_factors[row],
                      lambda chosen: [Reason(ReasonCode.POPULAR)] * len(chosen))


def implicit_available() -> str | None:
    """The implicit library's version, or None when it is not installed."""
    try:
        import implicit
    except ImportError:
        return None
    return str(implicit.__version__)


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
    version = None if args.no_implicit else implicit_available()
    if version is not None:
        models["implicit_als"] = ImplicitALSModel
    elif not args.no_implicit:
        log("implicit is not installed: its ALS is left out")
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
        "implicit_version": version,
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
    parser.add_argument("--no-implicit", action="store_true",
                        help="leave the implicit library out even when it is installed")
    args = parser.parse_args(argv)
    emit(run(args))


if __name__ == "__main__":
    main()
