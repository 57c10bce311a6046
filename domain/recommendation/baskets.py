"""Frequently bought together: pairwise association rules mined from order baskets.

A basket is the set of distinct product ids of one order. `mine_rules` counts, over all
baskets, how often each product and each pair of products occur, and keeps the rules
`A -> B` ("members who buy A also buy B") that are frequent, reliable and better than
chance:

- support    = baskets with A and B / all baskets      (how common the pair is);
- confidence = baskets with A and B / baskets with A   (P(B | A));
- lift       = confidence / P(B)                       (> 1: A makes B likelier).

Only single-item antecedents are mined. A cart widget asks "what goes with what is in this
cart", which per cart item is exactly a pairwise rule, and `recommend_for_cart` combines
the rules of all cart items (see `AssociationRules.recommend_for_cart`). Rules with
itemset antecedents ({A, B} -> C) would need support counts for every itemset, which is
exponential in basket size and needs far more orders than a shop has for each itemset to
be trustworthy; pairs keep mining at O(sum of basket size squared) time and memory.

Hand-written rather than taken from a library: for pairs, apriori is one `Counter` over
each basket's pairs. The usual Python implementation (mlxtend's `apriori` and
`association_rules`) needs a one-hot pandas DataFrame of every basket by every product —
pandas as a dependency, and a dense matrix of orders x catalogue — for the same numbers.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["AssociationRule", "AssociationRules", "CartPick", "mine_rules"]


class AssociationRule(NamedTuple):
    """`antecedent -> consequent`: members who bought the antecedent also bought the
    consequent.

    `strength` is what rules are ranked and combined by (the evidence that the antecedent
    makes the consequent likelier, in [0, 1]); see `mine_rules` for how it is computed
    and why it is not the raw confidence or lift.
    """

    antecedent: str
    consequent: str
    pair_count: int  # baskets holding both
    support: float
    confidence: float
    lift: float
    strength: float


class CartPick(NamedTuple):
    """A product suggested for a cart, with the cart item whose rule contributed most
    (for "often bought with <because>") and that rule."""

    item: str
    score: float
    because: str
    rule: AssociationRule


def _rank_key(rule: AssociationRule) -> tuple[float, float, str]:
    """Best first: strongest, then most confident, then by consequent id (determinism)."""
    return (-rule.strength, -rule.confidence, rule.consequent)


@dataclass(frozen=True)
class AssociationRules:
    """The mined rules, indexed by antecedent; immutable and picklable, so it can be stored
    in a trained model file and shared by concurrent requests.

    `rules` holds every rule, grouped by antecedent (in id order) and best first within a
    group; `n_baskets` is how many baskets were counted and `skipped_baskets` how many
    were left out for being larger than `max_basket`. The thresholds mined with are kept
    so a model version can report its parameters.
    """

    rules: tuple[AssociationRule, ...]
    n_baskets: int
    skipped_baskets: int = 0
    min_support_count: int = 2
    min_confidence: float = 0.05
    min_lift: float = 1.0
    max_basket: int = 50
    prior_baskets: float = 5.0
    _by_antecedent: dict[str, tuple[AssociationRule, ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        grouped: dict[str, list[AssociationRule]] = {}
        for rule in self.rules:
            grouped.setdefault(rule.antecedent, []).append(rule)
        # Frozen: the derived index is set once here, never afterwards.
        object.__setattr__(self, "_by_antecedent", {
            antecedent: tuple(sorted(group, key=_rank_key))
            for antecedent, group in grouped.items()
        })

    def __len__(self) -> int:
        return len(self.rules)

    def rules_for(self, item: str) -> list[AssociationRule]:
        """The rules `item -> X`, best first (by strength, then confidence, then X's id)."""
        return list(self._by_antecedent.get(item, ()))

    def recommend_for_cart(
        self, cart: Collection[str], k: int, exclude: Collection[str] = ()
    ) -> list[CartPick]:
        """At most k products that go with `cart`, best first; never a cart item nor one
        in `exclude` (the serving layer passes unavailable and already-bought products).

        Score: a noisy-OR of the rules' strengths, 1 - prod(1 - strength) over the cart
        items that have a rule to the product. Each rule is read as an independent chance
        that its cart item "pulls in" the product; the score is the chance that at least
        one does. So a product several cart items point to beats one only a single item
        points to at equal strength (a cart with a phone and a laptop makes a USB-C
        charger more fitting than either alone), the score stays in [0, 1] whatever the
        cart's size (comparable with other rescaled scores), and one weak rule can never
        outrank one strong rule (unlike a sum). `because` is the cart item whose rule is
        the strongest (ties: smallest id). Products with a score of 0 (independent of the
        whole cart) are not suggested: nothing says they go with it.

        Ties are broken by product id, and the cart is read in id order, so equal inputs
        give equal lists whatever the order of `cart`.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        in_cart = set(cart)
        blocked = in_cart | set(exclude)
        missing: dict[str, float] = {}  # product -> prod(1 - strength)
        best: dict[str, AssociationRule] = {}
        for antecedent in sorted(in_cart):
            for rule in self._by_antecedent.get(antecedent, ()):
                product = rule.consequent
                if product in blocked or rule.strength <= 0.0:
                    continue
                missing[product] = missing.get(product, 1.0) * (1.0 - rule.strength)
                leader = best.get(product)
                # Antecedents come in id order, so on equal strength the first one stays.
                if leader is None or rule.strength > leader.strength:
                    best[product] = rule
        ranked = sorted(((1.0 - rest, product) for product, rest in missing.items()),
                        key=lambda pair: (-pair[0], pair[1]))
        return [CartPick(product, score, best[product].antecedent, best[product])
                for score, product in ranked[:k]]


def mine_rules(
    baskets: Iterable[Collection[str]],
    min_support_count: int = 2,
    min_confidence: float = 0.05,
    min_lift: float = 1.0,
    max_basket: int = 50,
    *,
    prior_baskets: float = 5.0,
) -> AssociationRules:
    """Pairwise rules `A -> B` with at least `min_support_count` baskets holding both,
    confidence >= `min_confidence` and lift >= `min_lift` (each threshold inclusive).

    A basket is deduplicated (order lines of one product in two sizes are one item) and
    baskets with fewer than two items still count towards every item's frequency and the
    total, since they are part of what "how often is B bought" means.

    Baskets with more than `max_basket` distinct items are *skipped*, not truncated: such
    orders (a reseller's bulk purchase, an office restocking, a test account buying the
    catalogue) say little about which products complement each other, yet would add
    max_basket² pair counts each and swamp real pairs. Truncating would keep an arbitrary
    subset (the smallest ids, to be deterministic) and plant pairs that mean nothing. A
    skipped basket is left out of every count, the total included, so support and lift
    are computed over one consistent population; `skipped_baskets` says how many.

    `strength`, the ranking score of a rule, is the *added value* of the antecedent,
    P(B | A) - P(B), with P(B | A) smoothed towards P(B) by `prior_baskets` imaginary
    baskets: (pair_count + prior_baskets * P(B)) / (count(A) + prior_baskets).
    Why not confidence or lift alone:
    - confidence favours bestsellers: a product in 30% of all orders has confidence near
      0.3 from every antecedent, though the cart says nothing about it (lift about 1);
    - lift favours rare products: two products bought twice, both times together, have
      lift n_baskets / 2 from two orders of evidence;
    - added value is 0 for independent products and at most 1, and smoothing discounts
      rules resting on few baskets (a pair seen 2 out of 2 times gets about 0.29 with
      the default prior; one seen in 200 of A's 500 baskets, for a B in 2% of all
      baskets, keeps about 0.38).
    It is never negative here: rules below lift 1 are dropped unless `min_lift` allows
    them, and those then get strength 0 (they argue against the product).
    """
    if min_support_count < 1:
        raise ValueError("min_support_count must be at least 1")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError("min_confidence must be between 0 and 1")
    if min_lift < 0.0:
        raise ValueError("min_lift must not be negative")
    if max_basket < 2:
        raise ValueError("max_basket must be at least 2 (a pair)")
    if prior_baskets < 0.0:
        raise ValueError("prior_baskets must not be negative")

    item_counts: Counter[str] = Counter()
    pair_counts: Counter[tuple[str, str]] = Counter()
    n_baskets = 0
    skipped = 0
    for basket in baskets:
        items = sorted(set(basket))
        if len(items) > max_basket:
            skipped += 1
            continue
        n_baskets += 1
        item_counts.update(items)
        if len(items) > 1:
            # Sorted items give each unordered pair once, as (smaller id, larger id).
            pair_counts.update(itertools.combinations(items, 2))

    rules: list[AssociationRule] = []
    for (first, second), together in pair_counts.items():
        if together < min_support_count:
            continue
        support = together / n_baskets
        for antecedent, consequent in ((first, second), (second, first)):
            confidence = together / item_counts[antecedent]
            base_rate = item_counts[consequent] / n_baskets
            # One division of exact integers, so an independent pair's lift is exactly 1.
            lift = together * n_baskets / (item_counts[antecedent] * item_counts[consequent])
            if confidence < min_confidence or lift < min_lift:
                continue
            smoothed = ((together + prior_baskets * base_rate)
                        / (item_counts[antecedent] + prior_baskets))
            strength = min(max(smoothed - base_rate, 0.0), 1.0)
            rules.append(AssociationRule(antecedent, consequent, together, support,
                                         confidence, lift, strength))
    rules.sort(key=lambda rule: (rule.antecedent, *_rank_key(rule)))
    return AssociationRules(
        tuple(rules), n_baskets, skipped, min_support_count, min_confidence, min_lift,
        max_basket, prior_baskets,
    )
