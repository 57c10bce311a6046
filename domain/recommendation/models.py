"""Recommenders: popularity, EASE (closed-form item-item), ALS (implicit), collaborative
(surprise), content and their hybrid, tuned on validation (see `HybridModel`).

Every model follows one protocol — `fit(train, catalogue)` then `recommend(user, k,
exclude, history)` — and returns `Recommendation(item, score, reason)` records, so the
evaluation compares them like for like and the serving layer can say why an item is
there ("because you bought X", "popular").

All models share `ScoringModel` (public, so other scorers — a segment's popularity, an
adapter to another library in a benchmark — can join the same path): a fixed item index
(catalogue items and training items, sorted), each user's training history, and one
vectorised path from a score per item to a top-k list (exclusions, already-seen items,
unavailable products, the diversity cap).
A model only has to say how it scores every item for one user (`_scores`) and why it
ranked an item (`_reasons`): ranking a user's unseen items is then one numpy expression,
never a per-item `predict` loop, so 100,000 interactions train and evaluate in seconds.

`history` lets the caller score a user on their behaviour *now* rather than at the last
training (a purchase a minute ago, a member who signed up after it): models that work
from a user's items (content, popularity, the hybrid) use it directly; the collaborative
model folds it into its factor space.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple, Protocol, Self

import numpy as np

from domain.recommendation.catalogue import Catalogue, price_band, price_band_edges
from domain.recommendation.interactions import Interaction

__all__ = [
    "AlsModel",
    "CollaborativeModel",
    "ContentModel",
    "EaseModel",
    "History",
    "HybridModel",
    "PopularityModel",
    "Reason",
    "ReasonCode",
    "Recommendation",
    "Recommender",
    "Scored",
    "ScoringModel",
    "diversify",
]

# What a user did, for scoring: item id -> interaction strength.
History = Mapping[str, float]


class ReasonCode(StrEnum):
    SIMILAR_TO = "similar_to"  # shares category, brand, price band or words with `item`
    ALSO_LIKED = "also_liked"  # members who liked `item` also liked this
    POPULAR = "popular"  # popular overall (no personal reason)


class Reason(NamedTuple):
    """Why an item is recommended: a code and, for personal reasons, the user's item it
    comes from, so a later layer can write "because you bought <name of item>"."""

    code: ReasonCode
    item: str | None = None


class Recommendation(NamedTuple):
    item: str
    score: float
    reason: Reason


class Scored(NamedTuple):
    """A model's answer for one user: a score per item (-inf: cannot be recommended), and
    how to explain any chosen items. Returned together, rather than kept on the model,
    so one fitted model can serve many requests at once."""

    scores: np.ndarray
    explain: Callable[[np.ndarray], list[Reason]]


class Recommender(Protocol):
    """What the evaluation and the serving layer need from any model."""

    name: str

    def fit(self, train: Sequence[Interaction], catalogue: Catalogue | None = None) -> Self:
        """Learn from `train`; `catalogue` adds items (and their features) with no
        interactions yet, and marks unavailable ones."""
        ...

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        history: History | None = None,
        exclude_seen: bool = True,
    ) -> list[Recommendation]:
        """At most k items, best first, never one in `exclude` nor an unavailable one, and
        (unless `exclude_seen` is False, e.g. for consumables) none the user already
        interacted with. `history` replaces the training history of `user`."""
        ...


def diversify(
    ranked: Sequence[Recommendation],
    category_of: Callable[[str], str | None],
    max_per_category: int,
    k: int,
) -> list[Recommendation]:
    """The first k of `ranked` with at most `max_per_category` items of any one category.

    Greedy in rank order: an item whose category is full is skipped and the next one
    tried, so the list stays as relevant as the cap allows. Items without a category are
    not capped (nothing says they are alike). The result is shorter than k when `ranked`
    runs out; give it a deeper list than k.
    """
    if max_per_category < 1:
        raise ValueError("max_per_category must be at least 1")
    taken: Counter[str] = Counter()
    chosen: list[Recommendation] = []
    for recommendation in ranked:
        if len(chosen) == k:
            break
        category = category_of(recommendation.item)
        if category is not None:
            if taken[category] >= max_per_category:
                continue
            taken[category] += 1
        chosen.append(recommendation)
    return chosen


class ScoringModel:
    """The item index, the users' histories and top-k selection shared by every model."""

    name = "model"

    def __init__(self, max_per_category: int | None = None) -> None:
        self.max_per_category = max_per_category
        self.items: list[str] = []
        self.index: dict[str, int] = {}
        self.histories: dict[str, dict[int, float]] = {}
        self.catalogue: Catalogue = {}
        self._unavailable = np.zeros(0, dtype=bool)

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, train: Sequence[Interaction], catalogue: Catalogue | None = None) -> Self:
        self.catalogue = catalogue or {}
        self.items = sorted(set(self.catalogue) | {row.item for row in train})
        self.index = {item: n for n, item in enumerate(self.items)}
        histories: dict[str, dict[int, float]] = defaultdict(dict)
        for row in train:
            seen = histories[row.user]
            position = self.index[row.item]
            seen[position] = seen.get(position, 0.0) + row.weight
        self.histories = dict(histories)
        self._unavailable = np.array(
            [item in self.catalogue and not self.catalogue[item].available
             for item in self.items], dtype=bool,
        )
        self._fit(train)
        return self

    def _fit(self, train: Sequence[Interaction]) -> None:
        """What the model learns beyond the shared index and histories."""

    # -- scoring (what subclasses define) --------------------------------------------------

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        """Scores for every item and their explanation, or None when the model knows
        nothing to score this user with (a cold user, for a personal model).

        `user` is None when the caller gave the history: it is newer than anything the
        model learned about the user, so per-user state from training must not be used.
        """
        raise NotImplementedError

    # -- the shared path from scores to a list ---------------------------------------------

    def user_history(self, user: str, history: History | None) -> tuple[np.ndarray, np.ndarray]:
        """Item positions and strengths of the user's history (given, or from training);
        items the model never heard of are left out."""
        if history is None:
            known = self.histories.get(user, {})
            return (np.fromiter(known.keys(), dtype=np.int64, count=len(known)),
                    np.fromiter(known.values(), dtype=np.float64, count=len(known)))
        pairs = [(self.index[item], weight) for item, weight in history.items()
                 if item in self.index and weight > 0]
        return (np.array([p for p, _ in pairs], dtype=np.int64),
                np.array([w for _, w in pairs], dtype=np.float64))

    def score_items(self, user: str, history: History | None = None) -> np.ndarray | None:
        """Raw scores over `self.items` for the user, None for a user it cannot score."""
        seen, strengths = self.user_history(user, history)
        scored = self._score(user if history is None else None, seen, strengths)
        return None if scored is None else scored.scores

    def scored(self, history: History) -> Scored | None:
        """Scores over `self.items` for a history, with their explanation (for re-ranking
        a list someone else chose, where every item is kept and each needs a reason)."""
        seen, strengths = self.user_history("", history)
        return self._score(None, seen, strengths)

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        history: History | None = None,
        exclude_seen: bool = True,
    ) -> list[Recommendation]:
        if k < 1:
            raise ValueError("k must be at least 1")
        seen, strengths = self.user_history(user, history)
        scored = self._score(user if history is None else None, seen, strengths)
        if scored is None:
            return []
        return self._top(scored, seen if exclude_seen else seen[:0], k, exclude)

    def _top(self, scored: Scored, seen: np.ndarray, k: int,
             exclude: Collection[str]) -> list[Recommendation]:
        """The k best of `scored` outside `seen`, `exclude` and unavailable items, capped
        per category when the model has a cap (deepening the pool until k fit)."""
        scores = np.where(self._unavailable, -np.inf, scored.scores)
        if len(seen):
            scores[seen] = -np.inf
        for item in exclude:
            position = self.index.get(item)
            if position is not None:
                scores[position] = -np.inf
        candidates = np.flatnonzero(np.isfinite(scores))
        depth = k if self.max_per_category is None else k * 4
        while True:
            ranked = self._best(scores, candidates, depth)
            chosen = [Recommendation(self.items[p], float(scores[p]), reason) for p, reason
                      in zip(ranked.tolist(), scored.explain(ranked), strict=True)]
            if self.max_per_category is None:
                return chosen
            capped = diversify(chosen, self._category, self.max_per_category, k)
            if len(capped) == k or depth >= len(candidates):
                return capped
            depth *= 4

    @staticmethod
    def _best(scores: np.ndarray, candidates: np.ndarray, depth: int) -> np.ndarray:
        """The `depth` best candidates, best first; ties go to the smaller item position
        (that is, item id), so equal inputs give equal lists."""
        if depth < len(candidates):
            # Keep everything tied with the depth-th score, so ties at the cut are broken
            # by position below too, not by wherever the partition happened to put them.
            values = scores[candidates]
            threshold = -np.partition(-values, depth - 1)[depth - 1]
            candidates = candidates[values >= threshold]
        order = np.lexsort((candidates, -scores[candidates]))
        return candidates[order][:depth]

    def _category(self, item: str) -> str | None:
        product = self.catalogue.get(item)
        return product.category if product is not None else None


class PopularityModel(ScoringModel):
    """The baseline: items ranked by how many distinct users interacted with them.

    Distinct users rather than summed strengths, so one obsessive user cannot make an item
    popular. It scores every user, so it is also the hybrid's answer for cold users.
    """

    name = "popularity"

    def __setstate__(self, state: dict[str, object]) -> None:
        """A model file trained before validation and diversity existed still serves:
        its fixed blend, without a popularity penalty."""
        self.__dict__.update({"diversity": 0.0, "_penalty": np.zeros(0), "tuning": {}})
        self.__dict__.update(state)

    def _fit(self, train: Sequence[Interaction]) -> None:
        counts = np.zeros(len(self.items))
        for history in self.histories.values():
            counts[list(history)] += 1.0
        self.counts = counts

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored:
        return Scored(self.counts.copy(), _popular)


def confidence(strength: np.ndarray | float, scale: float = 0.1) -> np.ndarray:
    """A strength compressed to a rating: 1 + log(1 + strength / scale).

    Interaction strengths are heavy-tailed (a purchase is 25 views); unscaled, a squared
    error loss spends itself on the few strongest pairs. The log keeps order and keeps
    every positive well above the 0 given to sampled negatives.
    """
    return 1.0 + np.log1p(np.asarray(strength, dtype=np.float64) / scale)


class CollaborativeModel(ScoringModel):
    """Matrix factorisation with surprise's `SVD`, trained for ranking on implicit data.

    surprise learns to predict ratings from observed ones only; on implicit feedback every
    observed value is a positive, so a model fit on them alone ranks nearly at random (on
    the synthetic benchmark precision@10 was 0.008, below popularity's 0.041). The classic
    remedy is negative sampling: for each user, `negatives` unseen items per positive are
    added as rating 0, and positives get a `confidence` rating from their strength. SVD
    then learns to separate what users chose from what they passed over, which is what a
    top-N list needs (precision@10 0.17 on the same split; see the benchmark).

    Item-based KNN from surprise (cosine, pearson, pearson_baseline) was measured too and
    did no better than popularity: its similarities use co-rated users only, and on
    positive-only data those are all alike. The defaults (32 factors, 30 epochs, learning
    rate 0.007, regularisation 0.05, 10 negatives per positive) did best across a small
    grid on both the 100,000-interaction synthetic set and a 9,000-interaction one;
    surprise's own defaults (lr 0.005, 20 epochs) under-train on small data, and fewer
    epochs or stronger regularisation (0.1) collapse towards popularity, so change them
    only with the benchmark at hand.

    Ranking is `Q @ p_u + b_i` over all items at once from the fitted factors. A user
    the model was not trained on, or one whose current `history` is given, is folded in
    (`fold_in`): on the benchmark, folded-in factors rank within a few percent of trained
    ones (precision@10 0.161 against 0.168), so fresh behaviour counts without retraining.
    """

    name = "collaborative"

    def __init__(
        self,
        n_factors: int = 32,
        n_epochs: int = 30,
        reg_all: float = 0.05,
        lr_all: float = 0.007,
        negatives: float = 10.0,
        confidence_scale: float = 0.1,
        seed: int = 0,
        max_per_category: int | None = None,
    ) -> None:
        super().__init__(max_per_category)
        self.n_factors = n_factors
        self.n_epochs = n_epochs
        self.reg_all = reg_all
        self.lr_all = lr_all
        self.negatives = negatives
        self.confidence_scale = confidence_scale
        self.seed = seed

    def _training_ratings(self) -> list[tuple[str, str, float, None]]:
        """Positives with their confidence, then sampled unseen items at 0 (uniformly:
        sampling by popularity was measured and did no better)."""
        rng = np.random.default_rng(self.seed)
        n_items = len(self.items)
        ratings: list[tuple[str, str, float, None]] = []
        for user in sorted(self.histories):
            history = self.histories[user]
            positions = np.fromiter(history.keys(), dtype=np.int64, count=len(history))
            values = confidence(np.fromiter(history.values(), dtype=np.float64,
                                            count=len(history)), self.confidence_scale)
            ratings.extend((user, self.items[p], float(v), None)
                           for p, v in zip(positions.tolist(), values.tolist(), strict=True))
            wanted = min(round(len(history) * self.negatives), n_items - len(history))
            if wanted <= 0:
                continue
            unseen = np.ones(n_items, dtype=bool)
            unseen[positions] = False
            sampled = rng.choice(np.flatnonzero(unseen), size=wanted, replace=False)
            ratings.extend((user, self.items[p], 0.0, None) for p in sampled.tolist())
        return ratings

    def _fit(self, train: Sequence[Interaction]) -> None:
        from surprise import SVD, Dataset, Reader

        ratings = self._training_ratings()
        top = max((r for _, _, r, _ in ratings), default=1.0)
        trainset = Dataset(Reader(rating_scale=(0.0, top))).construct_trainset(ratings)
        algorithm = SVD(n_factors=self.n_factors, n_epochs=self.n_epochs,
                        reg_all=self.reg_all, lr_all=self.lr_all, random_state=self.seed)
        algorithm.fit(trainset)
        # Factors re-indexed by our item positions; items surprise never saw score -inf.
        self.item_factors = np.zeros((len(self.items), self.n_factors))
        self.item_bias = np.full(len(self.items), -np.inf)
        for inner in range(trainset.n_items):
            position = self.index[trainset.to_raw_iid(inner)]
            self.item_factors[position] = algorithm.qi[inner]
            self.item_bias[position] = algorithm.bi[inner]
        self.user_factors = {trainset.to_raw_uid(inner): np.asarray(algorithm.pu[inner])
                             for inner in range(trainset.n_users)}
        self.global_mean = float(trainset.global_mean)
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        self._unit_factors = self.item_factors / np.where(norms > 0, norms, 1.0)
        # Items someone chose. The others have factors too, learnt from sampled negatives
        # alone, which say what an item is not; "members who liked X" needs a liked X.
        self._chosen = np.zeros(len(self.items), dtype=bool)
        for history in self.histories.values():
            self._chosen[list(history)] = True

    def fold_in(self, seen: np.ndarray, strengths: np.ndarray) -> np.ndarray | None:
        """User factors for a history the model was not trained on: the ridge regression
        of the history's residual ratings (confidence minus mean and item bias) on the
        items' factors — one small linear solve, no retraining."""
        known = seen[np.isfinite(self.item_bias[seen])] if len(seen) else seen
        if not len(known):
            return None
        keep = np.isin(seen, known)
        q = self.item_factors[known]
        target = (confidence(strengths[keep], self.confidence_scale) - self.global_mean
                  - self.item_bias[known])
        gram = q.T @ q + self.reg_all * len(known) * np.eye(self.n_factors)
        return np.linalg.solve(gram, q.T @ target)

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        factors = self.user_factors.get(user) if user is not None else None
        if factors is None:
            factors = self.fold_in(seen, strengths)
        if factors is None:
            return None
        return Scored(self.item_factors @ factors + self.item_bias,
                      lambda chosen: self._reasons(seen, strengths, chosen))

    def _reasons(self, seen: np.ndarray, strengths: np.ndarray,
                 chosen: np.ndarray) -> list[Reason]:
        """The user's item closest to each recommended one in factor space, weighted by
        how strongly the user engaged with it."""
        if not len(seen):
            return _popular(chosen)
        closeness = (self._unit_factors[chosen] @ self._unit_factors[seen].T
                     * confidence(strengths, self.confidence_scale))
        best = seen[np.argmax(closeness, axis=1)]
        return [Reason(ReasonCode.ALSO_LIKED, self.items[p]) for p in best.tolist()]

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        """Items closest to `item` in factor space (the product page's "also liked")."""
        position = self.index.get(item)
        if position is None or not self._chosen[position]:
            return []
        scores = self._unit_factors @ self._unit_factors[position]
        scores[~self._chosen] = -np.inf
        because = Reason(ReasonCode.ALSO_LIKED, item)
        return self._top(Scored(scores, lambda chosen: [because] * len(chosen)),
                         np.array([position]), k, ())


class EaseModel(ScoringModel):
    """EASE (Steck 2019): a closed-form item-item model for implicit feedback.

    With X the binary user x item matrix of training interactions and
    P = (XᵀX + λI)⁻¹, the item-item weights are B = I - P·diagMat(1/diag(P)), i.e.
    B[i, j] = -P[i, j] / P[j, j] off the diagonal and 0 on it (an item may not explain
    itself). A user's scores are x_u·B: one row sum over the user's items, so any history
    (a member who signed up after training, a purchase a minute ago) is scored without
    per-user state. λ (`l2`) is the only hyper-parameter; the hybrid chooses it on a
    validation split.

    The inverse is a dense items x items matrix: cubic time and quadratic memory in the
    number of items with interactions. Past `max_items` (default 12,000: a 576 MB
    float32 matrix) the model refuses to fit and the hybrid uses the collaborative model
    (surprise SVD with sampled negatives) instead.
    """

    name = "ease"

    def __init__(self, l2: float = 200.0, max_items: int = 12_000,
                 max_per_category: int | None = None) -> None:
        super().__init__(max_per_category)
        self.l2 = l2
        self.max_items = max_items
        self.fitted = False

    @staticmethod
    def fits(item_count: int, max_items: int) -> bool:
        return item_count <= max_items

    def _fit(self, train: Sequence[Interaction]) -> None:
        chosen = np.zeros(len(self.items), dtype=bool)
        for history in self.histories.values():
            chosen[list(history)] = True
        columns = np.flatnonzero(chosen)
        if len(columns) > self.max_items:
            raise ValueError(f"EASE fits at most {self.max_items} items with interactions, "
                             f"not {len(columns)}")
        from scipy import sparse

        local = np.full(len(self.items), -1, dtype=np.int64)
        local[columns] = np.arange(len(columns))
        rows: list[int] = []
        cols: list[int] = []
        for row, history in enumerate(self.histories.values()):
            rows.extend([row] * len(history))
            cols.extend(local[list(history)].tolist())
        dtype = np.float64 if len(columns) <= 4_000 else np.float32
        x = sparse.csr_matrix((np.ones(len(rows), dtype=dtype), (rows, cols)),
                              shape=(len(self.histories), len(columns)))
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        self.weights = b.astype(np.float32)
        self.columns = columns
        self.local = local
        self._chosen = chosen
        self.fitted = True

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        own = self.local[seen] if len(seen) else seen
        own = own[own >= 0]
        if not len(own):
            return None
        scores = np.full(len(self.items), -np.inf)
        scores[self.columns] = self.weights[own].sum(axis=0)

        def explain(picked: np.ndarray) -> list[Reason]:
            """The user's item whose weight towards each recommended one is largest."""
            targets = self.local[picked]
            reasons = _popular(picked)
            known = np.flatnonzero(targets >= 0)
            if len(known):
                best = own[np.argmax(self.weights[np.ix_(own, targets[known])], axis=0)]
                for row, source in zip(known.tolist(), self.columns[best].tolist(),
                                       strict=True):
                    reasons[row] = Reason(ReasonCode.ALSO_LIKED, self.items[source])
            return reasons

        return Scored(scores, explain)

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        """Items the model weighs most from `item` (the product page's "also liked")."""
        position = self.index.get(item)
        if position is None or not self._chosen[position]:
            return []
        scores = np.full(len(self.items), -np.inf)
        scores[self.columns] = self.weights[self.local[position]]
        because = Reason(ReasonCode.ALSO_LIKED, item)
        return self._top(Scored(scores, lambda chosen: [because] * len(chosen)),
                         np.array([position]), k, ())


def _popular(chosen: np.ndarray) -> list[Reason]:
    return [Reason(ReasonCode.POPULAR)] * len(chosen)


_TOKEN = re.compile(r"[^\W_]+(?:-[^\W_]+)*", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-case words of free text; hyphenated words stay whole ("loose-leaf")."""
    return _TOKEN.findall(text.lower())


class ContentModel(ScoringModel):
    """Items alike in what they are: category, brand, price band and free-text words.

    Each item is a vector of four blocks — one-hot category, one-hot brand, one-hot price
    band (quantile bands over the catalogue) and TF-IDF of its name and attributes — each
    block unit length and scaled by the square root of its weight, so the dot product of
    two items is the weighted sum of the four similarities. A user's profile is the
    strength-weighted sum of their items' vectors; every item is scored against it at once.
    Needs a catalogue: items without a product record have no features and are not scored.

    It knows nothing of other users, so it recommends new products (no interactions yet)
    as readily as old ones, and it works for a member with a single purchase.
    """

    name = "content"

    def __init__(
        self,
        category_weight: float = 1.0,
        brand_weight: float = 1.0,
        price_weight: float = 0.5,
        text_weight: float = 0.5,
        price_bands: int = 5,
        max_per_category: int | None = None,
    ) -> None:
        super().__init__(max_per_category)
        self.weights = {"category": category_weight, "brand": brand_weight,
                        "price": price_weight, "text": text_weight}
        self.price_bands = price_bands

    def _fit(self, train: Sequence[Interaction]) -> None:
        described = [p for p, item in enumerate(self.items) if item in self.catalogue]
        products = [self.catalogue[self.items[p]] for p in described]
        edges = price_band_edges((p.price for p in products), self.price_bands)
        blocks = [
            self._one_hot([p.category for p in products]) * math.sqrt(self.weights["category"]),
            self._one_hot([p.brand for p in products]) * math.sqrt(self.weights["brand"]),
            self._one_hot([price_band(p.price, edges) for p in products])
            * math.sqrt(self.weights["price"]),
            self._tfidf([f"{p.name} {p.attributes}" for p in products])
            * math.sqrt(self.weights["text"]),
        ]
        width = sum(block.shape[1] for block in blocks)
        self.features = np.zeros((len(self.items), width), dtype=np.float32)
        if described:
            self.features[described] = np.hstack(blocks)
        self.described = np.zeros(len(self.items), dtype=bool)
        self.described[described] = True

    @staticmethod
    def _one_hot(values: Sequence[object]) -> np.ndarray:
        levels = {value: n for n, value in enumerate(sorted(set(values), key=str))}
        block = np.zeros((len(values), len(levels)), dtype=np.float32)
        block[np.arange(len(values)), [levels[v] for v in values]] = 1.0
        return block

    @staticmethod
    def _tfidf(texts: Sequence[str]) -> np.ndarray:
        """Rows of TF-IDF weights (smoothed idf, as is usual), unit length. Words found in
        one product only are dropped: they can make no two products alike."""
        documents = [Counter(tokens(text)) for text in texts]
        frequency = Counter(word for document in documents for word in document)
        vocabulary = {w: n for n, w in enumerate(sorted(w for w, f in frequency.items()
                                                        if f > 1))}
        block = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
        for row, document in enumerate(documents):
            for word, count in document.items():
                column = vocabulary.get(word)
                if column is not None:
                    idf = math.log((1 + len(texts)) / (1 + frequency[word])) + 1.0
                    block[row, column] = count * idf
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        return block / np.where(norms > 0, norms, 1.0)

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        mask = self.described[seen]
        own = seen[mask]
        if not len(own):
            return None
        # float32 throughout: a mixed float32/float64 product skips BLAS and is 20x slower.
        weights = confidence(strengths[mask]).astype(np.float32)
        profile = weights @ self.features[own] / weights.sum()

        def explain(chosen: np.ndarray) -> list[Reason]:
            """The user's item most like each recommended one (similarity x strength)."""
            closeness = self.features[chosen] @ self.features[own].T * weights
            best = own[np.argmax(closeness, axis=1)]
            return [Reason(ReasonCode.SIMILAR_TO, self.items[p]) for p in best.tolist()]

        return Scored(np.where(self.described, self.features @ profile, -np.inf), explain)

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        """The product page's "similar items": nearest items by content alone."""
        position = self.index.get(item)
        if position is None or not self.described[position]:
            return []
        scores = np.where(self.described, self.features @ self.features[position], -np.inf)
        because = Reason(ReasonCode.SIMILAR_TO, item)
        return self._top(Scored(scores, lambda chosen: [because] * len(chosen)),
                         np.array([position]), k, ())


class AlsModel(ScoringModel):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) with the
    `implicit` library's ALS: the hybrid's item model past EASE's size limit, where a
    dense items x items inverse no longer fits.

    Preferences are 1 for every item a user chose, with confidence 1 + alpha x
    `confidence(strength)`; unseen items are 0 with confidence 1, so no negatives are
    sampled. The defaults did best of a few tried on the synthetic shop (precision@10
    0.163 against collaborative's 0.168 and EASE's 0.187, in 0.4 s). A history is folded
    in exactly as ALS solves a user row, against the fitted item factors:
    (YᵀY + Yᵀ(C - I)Y + λI) x = YᵀC p, one small solve per request.
    """

    name = "als"

    def __init__(self, factors: int = 32, regularization: float = 5.0, alpha: float = 2.0,
                 iterations: int = 20, seed: int = 0,
                 max_per_category: int | None = None) -> None:
        super().__init__(max_per_category)
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.fitted = False

    def _fit(self, train: Sequence[Interaction]) -> None:
        import warnings

        from implicit.als import AlternatingLeastSquares
        from scipy import sparse
        from threadpoolctl import threadpool_limits

        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        for row, history in enumerate(self.histories.values()):
            rows.extend([row] * len(history))
            cols.extend(history.keys())
            values.extend(history.values())
        strengths = confidence(np.asarray(values, dtype=np.float64)) * self.alpha
        x = sparse.csr_matrix((strengths.astype(np.float32), (rows, cols)),
                              shape=(len(self.histories), len(self.items)))
        # implicit warns when BLAS is multithreaded (it parallelises itself): limit it.
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model = AlternatingLeastSquares(factors=self.factors,
                                            regularization=self.regularization, alpha=1.0,
                                            iterations=self.iterations,
                                            random_state=self.seed)
            model.fit(x, show_progress=False)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)
        self._gram = self.item_factors.T @ self.item_factors
        self._chosen = np.zeros(len(self.items), dtype=bool)
        self._chosen[np.unique(np.asarray(cols, dtype=np.int64))] = True
        norms = np.linalg.norm(self.item_factors, axis=1, keepdims=True)
        self._unit_factors = self.item_factors / np.where(norms > 0, norms, 1.0)
        self.fitted = True

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        keep = self._chosen[seen] if len(seen) else np.zeros(0, dtype=bool)
        own, weights = seen[keep], strengths[keep]
        if not len(own):
            return None
        c = confidence(weights) * self.alpha  # C - I on the user's items
        y = self.item_factors[own]
        a = self._gram + (y.T * c) @ y + self.regularization * np.eye(self.factors)
        factors = np.linalg.solve(a, y.T @ (1.0 + c))
        scores = np.where(self._chosen, self.item_factors @ factors, -np.inf)

        def explain(chosen: np.ndarray) -> list[Reason]:
            closeness = self._unit_factors[chosen] @ self._unit_factors[own].T * c
            best = own[np.argmax(closeness, axis=1)]
            return [Reason(ReasonCode.ALSO_LIKED, self.items[p]) for p in best.tolist()]

        return Scored(scores, explain)

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        position = self.index.get(item)
        if position is None or not self._chosen[position]:
            return []
        scores = np.where(self._chosen, self._unit_factors @ self._unit_factors[position],
                          -np.inf)
        because = Reason(ReasonCode.ALSO_LIKED, item)
        return self._top(Scored(scores, lambda chosen: [because] * len(chosen)),
                         np.array([position]), k, ())


class HybridModel(ScoringModel):
    """A weighted blend of EASE, collaborative, content and popularity scores, with a
    popularity penalty for diversity; the weights, EASE's λ and the penalty are chosen on
    a validation split carved from the training data.

    Each component's scores are rescaled per user to [0, 1] over the items it can score
    (min-max; an item it cannot score gets 0 from it) and summed with the weights, so a
    weight means the same whatever the component's units. From that sum `diversity` times
    the item's rescaled log-popularity (log(1 + users) / log(1 + most users), in [0, 1])
    is subtracted: the stronger the penalty, the more the list leaves the popular head.
    A cold user (no history) gets popularity alone (serving turns to popularity by
    segment, region, season and festival first); a user the item models cannot score
    (all their items new) gets content and popularity. Each item's reason is that of the
    component that contributed most to its score.

    With `tune` (the default), fitting first holds out `validation_share` of each
    user's training interactions, fits every candidate on the rest, and picks:
    - the weights (each of EASE / collaborative / content / popularity in
      `weight_grid`, EASE's λ in `l2_grid`) with the best precision@k on the held-out
      part. Every single component alone is on the grid, so the chosen blend is never
      worse than its best part on validation;
    - then the strongest `diversity_grid` penalty whose validation precision stays
      within `diversity_tolerance` (a share, 0 by default: no precision given up) of
      the unpenalised blend's, unless `diversity` is fixed by the caller.
    With fewer than `min_validation_users` (100) members to validate on, nothing is
    chosen and the given weights (EASE 1, content 0.25) are used: a choice on a handful
    of members follows noise. Then the chosen components are refitted on all the
    training data. What was chosen
    and measured is kept in `tuning`. Without `tune` the given weights are used as they
    are.

    EASE needs a dense items x items inverse, so above `max_ease_items` items with
    interactions it is left out and `implicit`'s ALS (`AlsModel`) is the item model in
    its place. The collaborative model (surprise SVD) is a candidate only with
    `collaborative_with_ease`: surprise's SVD with sampled negatives costs more than
    everything else together (two fits, about 6 s each on 30,000 interactions) and
    EASE alone outranks it on every benchmark here.
    """

    name = "hybrid"

    def __init__(
        self,
        collaborative_weight: float = 0.0,
        content_weight: float = 0.25,
        popularity_weight: float = 0.0,
        collaborative: CollaborativeModel | None = None,
        content: ContentModel | None = None,
        popularity: PopularityModel | None = None,
        max_per_category: int | None = None,
        *,
        ease_weight: float = 1.0,
        ease: EaseModel | None = None,
        als: AlsModel | None = None,
        max_ease_items: int = 12_000,
        diversity: float | None = None,
        tune: bool = True,
        k: int = 10,
        validation_share: float = 0.2,
        validation_users: int = 1_000,
        min_validation_users: int = 100,
        l2_grid: Sequence[float] = (50.0, 200.0, 500.0),
        weight_grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0),
        diversity_grid: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
        diversity_tolerance: float = 0.0,
        collaborative_with_ease: bool = False,
        seed: int = 42,
    ) -> None:
        super().__init__(max_per_category)
        self.components: list[tuple[ScoringModel, float]] = [
            (ease or EaseModel(max_items=max_ease_items), ease_weight),
            (collaborative or CollaborativeModel(), collaborative_weight),
            (content or ContentModel(), content_weight),
            (popularity or PopularityModel(), popularity_weight),
            (als or AlsModel(), 0.0),
        ]
        self.max_ease_items = max_ease_items
        self.diversity = diversity
        self.tune = tune
        self.k = k
        self.validation_share = validation_share
        self.validation_users = validation_users
        self.min_validation_users = min_validation_users
        self.l2_grid = tuple(l2_grid)
        self.weight_grid = tuple(weight_grid)
        self.diversity_grid = tuple(diversity_grid)
        self.diversity_tolerance = diversity_tolerance
        self.collaborative_with_ease = collaborative_with_ease
        self.seed = seed
        self.tuning: dict[str, object] = {}
        self._penalty = np.zeros(0)

    def __setstate__(self, state: dict[str, object]) -> None:
        """A model file trained before validation and diversity existed still serves:
        its fixed blend, without a popularity penalty."""
        self.__dict__.update({"diversity": 0.0, "_penalty": np.zeros(0), "tuning": {}})
        self.__dict__.update(state)

    def _fit(self, train: Sequence[Interaction]) -> None:
        counts = np.zeros(len(self.items))
        for history in self.histories.values():
            counts[list(history)] += 1.0
        top = np.log1p(counts.max()) if len(counts) and counts.max() > 0 else 1.0
        self._penalty = np.log1p(counts) / top
        ease_fits = int((counts > 0).sum()) <= self.max_ease_items
        if not ease_fits:
            self.components[0] = (self.components[0][0], 0.0)
        if self.tune:
            self._choose(train, ease_fits)
        if self.diversity is None:
            self.diversity = 0.0
        for model, weight in self.components:
            # Every part but an unweighted collaborative model (the costly one) is fitted,
            # weighted or not: the product page and the cart use EASE's and content's
            # item-to-item neighbours, and a placement may ask for one part alone.
            item_model = self.components[0 if ease_fits else 4][0]
            if weight > 0 or model is item_model or isinstance(model, ContentModel
                                                                 | PopularityModel):
                model.fit(train, self.catalogue)
                if model.items != self.items:  # pragma: no cover - same inputs, same index
                    raise RuntimeError(f"{model.name} indexed items differently")

    # -- choosing on validation ------------------------------------------------------------

    def _choose(self, train: Sequence[Interaction], ease_fits: bool) -> None:
        from domain.recommendation.split import random_split

        fit_part, held = random_split(train, self.validation_share, self.seed)
        probe = HybridModel(tune=False, ease_weight=0.0, content_weight=0.0)
        probe.fit(fit_part, self.catalogue)
        index = probe.index
        held_by_user: dict[str, list[int]] = defaultdict(list)
        for interaction in held:
            if interaction.user in probe.histories and interaction.item in index:
                held_by_user[interaction.user].append(index[interaction.item])
        users = sorted(held_by_user)
        if len(users) > self.validation_users:
            rng = np.random.default_rng(self.seed)
            users = sorted(rng.choice(users, self.validation_users, replace=False).tolist())
        if len(users) < self.min_validation_users:
            # Too few members to choose between blends: the choice would follow noise
            # (a retrained version flipping to a worse blend). The given weights stand.
            self.tuning = {"validation_users": len(users),
                           "skipped": f"fewer than {self.min_validation_users} "
                                      "validation members; the given weights are used"}
            return
        relevant = np.zeros((len(users), len(index)), dtype=bool)
        for row, user in enumerate(users):
            relevant[row, held_by_user[user]] = True
        blocked = np.zeros_like(relevant)
        for row, user in enumerate(users):
            blocked[row, list(probe.histories[user])] = True
        blocked |= probe._unavailable

        def matrix(model: ScoringModel) -> np.ndarray:
            model.fit(fit_part, self.catalogue)
            rows = np.zeros((len(users), len(index)), dtype=np.float32)
            for row, user in enumerate(users):
                seen, strengths = model.user_history(user, None)
                scored = model._score(user, seen, strengths)
                if scored is not None:
                    rows[row] = self._rescale(scored.scores)
            return rows

        ease, collaborative, content, _, als = (m for m, _ in self.components)
        candidates: dict[str, list[tuple[object, np.ndarray]]] = {}
        if ease_fits:
            candidates["ease"] = [(l2, matrix(EaseModel(l2=l2, max_items=self.max_ease_items)))
                                  for l2 in self.l2_grid]
        if not ease_fits:
            candidates["als"] = [(None, matrix(copy.deepcopy(als)))]
        if self.collaborative_with_ease:
            candidates["collaborative"] = [(None, matrix(copy.deepcopy(collaborative)))]
        if self.catalogue:
            candidates["content"] = [(None, matrix(copy.deepcopy(content)))]
        candidates["popularity"] = [(None, matrix(PopularityModel()))]
        penalty = (probe._penalty if len(probe._penalty) else np.zeros(len(index)))

        def precision(blend: np.ndarray) -> tuple[float, np.ndarray]:
            blend = np.where(blocked, -np.inf, blend)
            k = min(self.k, blend.shape[1])
            top = np.argpartition(-blend, k - 1, axis=1)[:, :k]
            hits = np.take_along_axis(relevant, top, axis=1).sum()
            return float(hits) / (k * len(users)), top

        names = list(candidates)
        alone: dict[str, float] = {}
        for name in names:
            for l2, rows in candidates[name]:
                key = f"ease(l2={l2:g})" if name == "ease" else name
                alone[key] = precision(rows)[0]
        # λ first, on EASE alone (one blend per λ would triple the grid); then the weights.
        l2 = None
        if "ease" in candidates:
            l2 = max(self.l2_grid, key=lambda value: alone[f"ease(l2={value:g})"])
        fixed = {name: (dict(candidates["ease"])[l2] if name == "ease"
                        else candidates[name][0][1]) for name in names}
        best: tuple[float, dict[str, float]] = (-1.0, {})
        seen_directions: set[tuple[float, ...]] = set()
        for combination in itertools.product(self.weight_grid, repeat=len(names)):
            largest = max(combination)
            if largest <= 0:
                continue
            direction = tuple(round(w / largest, 6) for w in combination)
            if direction in seen_directions:
                continue
            seen_directions.add(direction)
            blend = np.zeros(relevant.shape, dtype=np.float32)
            for name, weight in zip(names, combination, strict=True):
                if weight > 0:
                    blend += weight * fixed[name]
            score, _ = precision(blend)
            if score > best[0]:
                best = (score, dict(zip(names, combination, strict=True)))
        score, weights = best
        chosen_blend = np.zeros(relevant.shape, dtype=np.float32)
        for name in names:
            if weights[name] > 0:
                chosen_blend += weights[name] * fixed[name]
        by_diversity: dict[float, tuple[float, float]] = {}
        for strength in self.diversity_grid:
            p, top = precision(chosen_blend - strength * penalty.astype(np.float32))
            by_diversity[strength] = (p, len(np.unique(top)) / len(index))
        if self.diversity is None:
            floor = by_diversity.get(0.0, (score, 0.0))[0] * (1 - self.diversity_tolerance)
            allowed = [s for s, (p, _) in by_diversity.items() if p >= floor - 1e-12]
            self.diversity = max(allowed, default=0.0)
        for position, (model, _weight) in enumerate(self.components):
            self.components[position] = (model, weights.get(model.name, 0.0))
        if l2 is not None and isinstance(ease, EaseModel):
            ease.l2 = l2
        self.tuning = {
            "validation_users": len(users),
            "weights": {n: weights.get(n, 0.0) for n in
                        ("ease", "collaborative", "content", "popularity", "als")},
            "ease_l2": l2,
            "diversity": self.diversity,
            "validation_precision": round(score, 4),
            "components_alone": {n: round(p, 4) for n, p in alone.items()},
            "by_diversity": {f"{s:g}": {"precision": round(p, 4), "coverage": round(c, 4)}
                             for s, (p, c) in by_diversity.items()},
        }

    @staticmethod
    def _rescale(scores: np.ndarray) -> np.ndarray:
        finite = np.isfinite(scores)
        if not finite.any():
            return np.zeros_like(scores)
        low, high = scores[finite].min(), scores[finite].max()
        span = high - low if high > low else 1.0
        return np.where(finite, (scores - low) / span, 0.0)

    def _score(self, user: str | None, seen: np.ndarray, strengths: np.ndarray) -> Scored | None:
        parts: list[tuple[Scored, np.ndarray]] = []
        for model, weight in self.components:
            if weight > 0 and (scored := model._score(user, seen, strengths)) is not None:
                parts.append((scored, weight * self._rescale(scored.scores)))
        if not parts:
            return None
        total = np.sum([part for _, part in parts], axis=0)
        if self.diversity and len(self._penalty) == len(total):
            total = total - self.diversity * self._penalty

        def explain(chosen: np.ndarray) -> list[Reason]:
            """Each item's reason comes from the component that added most to its score."""
            leader = np.argmax(np.stack([part[chosen] for _, part in parts]), axis=0)
            reasons: list[Reason] = _popular(chosen)
            for component, (scored, _) in enumerate(parts):
                rows = np.flatnonzero(leader == component)
                if len(rows):
                    for row, reason in zip(rows.tolist(), scored.explain(chosen[rows]),
                                           strict=True):
                        reasons[row] = reason
            return reasons

        return Scored(total, explain)
