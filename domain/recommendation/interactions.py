"""Implicit feedback: how much a member's behaviour says they like a product.

Members rarely rate products; they buy, review, put in carts, wish for and look at them.
Each kind of signal says something different about taste, so each gets a weight
(`InteractionWeights`), and old behaviour says less about today's taste than new, so every
signal is decayed by its age with a half-life. The strengths of one member's signals for
one product add up to one `Interaction`, the record every model and metric works on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "Interaction",
    "InteractionWeights",
    "Signal",
    "SignalKind",
    "decay",
    "derive_interactions",
    "signal_strength",
]

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Interaction:
    """What one user did with one item, summed up: a strength (an explicit rating for
    MovieLens data, an implicit-feedback strength otherwise) and when it last happened."""

    user: str
    item: str
    weight: float
    timestamp: datetime


class SignalKind(StrEnum):
    PURCHASE = "purchase"
    REVIEW = "review"
    CART_ADD = "cart_add"
    WISH_LIST = "wish_list"
    VIEW = "view"


@dataclass(frozen=True, slots=True)
class Signal:
    """One piece of behaviour, as projections will read it from events.

    `stars` (1-5) is required for reviews; `dwell_seconds` is how long a view lasted (None
    when the frontend did not measure it); `quantity` scales a purchase.
    """

    user: str
    item: str
    kind: SignalKind
    at: datetime
    stars: int | None = None
    dwell_seconds: float | None = None
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class InteractionWeights:
    """How strongly each signal counts. The defaults, and why:

    - `purchase` 5.0: money spent is the strongest evidence of taste. Further units of the
      same order add `purchase_extra_unit` each (0.5), capped at `purchase_max_units` (5):
      ten packs of tea say "consumable" more than "ten times the taste".
    - `review_per_star` 1.5 around `review_neutral_stars` 3: a 5-star review adds 3.0, a
      1-star review subtracts 3.0, cancelling much of the purchase it follows; a product
      a member bought and hated should not pull similar products up.
    - `cart_add` 2.0: intent, but carts are abandoned more often than not.
    - `wish_list` 1.5: intent without urgency.
    - `view` 0.2 plus up to `view_dwell_bonus` 0.8 growing linearly with dwell time up to
      `view_dwell_cap_seconds` (120 s); views shorter than `view_min_dwell_seconds` (3 s)
      are bounces and count nothing. A view without a measured dwell counts its base.
    - `half_life_days` 90: a signal a season old counts half, a year old about a sixteenth;
      tastes drift, and seasonal products come back with the season's new behaviour.
      None disables decay (MovieLens-style ratings, or tests).
    - `max_strength` 10.0: one product viewed every day for a year should not outweigh
      everything else a member did.
    """

    purchase: float = 5.0
    purchase_extra_unit: float = 0.5
    purchase_max_units: int = 5
    review_per_star: float = 1.5
    review_neutral_stars: float = 3.0
    cart_add: float = 2.0
    wish_list: float = 1.5
    view: float = 0.2
    view_dwell_bonus: float = 0.8
    view_dwell_cap_seconds: float = 120.0
    view_min_dwell_seconds: float = 3.0
    half_life_days: float | None = 90.0
    max_strength: float = 10.0

    def __post_init__(self) -> None:
        if self.half_life_days is not None and self.half_life_days <= 0:
            raise ValueError("half_life_days must be positive (or None for no decay)")
        if self.max_strength <= 0:
            raise ValueError("max_strength must be positive")
        if self.view_dwell_cap_seconds <= 0:
            raise ValueError("view_dwell_cap_seconds must be positive")


DEFAULT_WEIGHTS = InteractionWeights()


def decay(age_days: float, half_life_days: float | None) -> float:
    """The factor a signal `age_days` old is worth: 1 now, 1/2 after one half-life.

    Signals from the future (clock skew between frontends and the server) count as new
    rather than more than new.
    """
    if half_life_days is None:
        return 1.0
    return math.pow(0.5, max(age_days, 0.0) / half_life_days)


def _base_strength(signal: Signal, weights: InteractionWeights) -> float:
    match signal.kind:
        case SignalKind.PURCHASE:
            units = min(max(signal.quantity, 1), weights.purchase_max_units)
            return weights.purchase + weights.purchase_extra_unit * (units - 1)
        case SignalKind.REVIEW:
            if signal.stars is None or not 1 <= signal.stars <= 5:
                raise ValueError(f"a review needs 1 to 5 stars, got {signal.stars!r}")
            return weights.review_per_star * (signal.stars - weights.review_neutral_stars)
        case SignalKind.CART_ADD:
            return weights.cart_add
        case SignalKind.WISH_LIST:
            return weights.wish_list
        case SignalKind.VIEW:
            if signal.dwell_seconds is None:
                return weights.view
            if signal.dwell_seconds < weights.view_min_dwell_seconds:
                return 0.0
            share = min(signal.dwell_seconds / weights.view_dwell_cap_seconds, 1.0)
            return weights.view + weights.view_dwell_bonus * share
    raise ValueError(f"unknown signal kind {signal.kind!r}")  # pragma: no cover


def signal_strength(
    signal: Signal, now: datetime, weights: InteractionWeights = DEFAULT_WEIGHTS
) -> float:
    """What one signal is worth at `now`: its kind's weight, decayed by its age."""
    age_days = (now - signal.at).total_seconds() / _SECONDS_PER_DAY
    return _base_strength(signal, weights) * decay(age_days, weights.half_life_days)


def derive_interactions(
    signals: Iterable[Signal],
    now: datetime,
    weights: InteractionWeights = DEFAULT_WEIGHTS,
) -> list[Interaction]:
    """One `Interaction` per (user, item) that ends up with a positive strength.

    Strengths add up (a view, a cart add and a purchase of the same product are stronger
    together than alone), are capped at `max_strength`, and pairs whose sum is zero or
    negative (only bounces, or a purchase followed by a 1-star review) are left out:
    implicit-feedback models read every interaction as a positive. The timestamp is the
    latest signal's, so a temporal split puts recent behaviour in the test side. The
    result is sorted by (user, item) so that equal input gives equal output whatever
    order the signals came in.
    """
    totals: dict[tuple[str, str], float] = {}
    latest: dict[tuple[str, str], datetime] = {}
    for signal in signals:
        key = (signal.user, signal.item)
        totals[key] = totals.get(key, 0.0) + signal_strength(signal, now, weights)
        if key not in latest or signal.at > latest[key]:
            latest[key] = signal.at
    return [
        Interaction(user, item, min(total, weights.max_strength), latest[(user, item)])
        for (user, item), total in sorted(totals.items())
        if total > 1e-9
    ]
