"""From a trained recommender and a member's behaviour *now* to one placement's list.

Pure: the API layer reads the member's signals, the catalogue's availability and the
experiment's strategy, and this module decides the list. It works from the member's
current history rather than from what the model saw at training, so a purchase a second
ago already changes the list (the bought product leaves it, unless consumable; what is
like it moves up) and a member who signed up a second ago gets a cold-start list.

Placements:

- **home**: the strategy's model scores everything from the member's history; a member
  without history gets popularity in their context (tier and city, segments, festival,
  season), which `ContextualPopularity` explains ("popular with Gold members in Shanghai").
- **product**: items like one product, blending "members who liked X also liked" (the
  collaborative factors) with "similar to X" (the content features).
- **cart**: association rules over paid orders ("often bought with X"), filled up with
  items similar to the cart's when the rules run out.
- **search**: the caller's candidates, re-ranked by the member's scores; nothing is
  dropped but unavailable products (bought ones stay: the member searched for them),
  and candidates the model does not know keep the caller's order after the ranked ones.

Members who have not consented to personalisation get the same lists as anyone: nothing
from their history, tier, city or segments is used, and every reason says so.
A diversity cap (at most N items of one category in the top 10) applies to every list;
in search, capped items are moved below the top 10 rather than dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np

from domain.recommendation.context import ContextReason, MemberContext, describe
from domain.recommendation.interactions import SignalKind
from domain.recommendation.models import ReasonCode, Recommendation, diversify
from domain.recommendation.placement import Placement, Strategy
from domain.recommendation.trained import TrainedRecommender

__all__ = [
    "DIVERSITY_WINDOW",
    "ListRequest",
    "MemberState",
    "Pick",
    "PickReason",
    "PickReasonCode",
    "reason_text",
    "recommend_list",
]

DIVERSITY_WINDOW = 10  # the cap holds within the top 10, as the brief asks


class PickReasonCode(StrEnum):
    BECAUSE_YOU = "because_you"  # the member's own behaviour with `item`
    ALSO_LIKED = "also_liked"  # members who liked `item` also liked this
    SIMILAR_TO = "similar_to"  # alike in category, brand, price and words
    BOUGHT_WITH = "bought_with"  # association rule from `item`
    POPULAR_IN_CONTEXT = "popular_in_context"  # popular with members like this one
    SEARCH_ORDER = "search_order"  # unknown to the model: the caller's order is kept
    NOT_PERSONALISED = "not_personalised"  # no consent: popular with everyone


@dataclass(frozen=True, slots=True)
class PickReason:
    code: PickReasonCode
    item: str | None = None
    signal: SignalKind | None = None
    context: ContextReason | None = None


@dataclass(frozen=True, slots=True)
class Pick:
    item: str
    score: float
    reason: PickReason


@dataclass(frozen=True, slots=True)
class MemberState:
    """What serving may know of the member. Without consent, only `personalised=False`."""

    personalised: bool
    history: Mapping[str, float] = field(default_factory=dict)
    bought: frozenset[str] = frozenset()
    # The member's strongest kind of signal per item, for "because you bought X".
    signals: Mapping[str, SignalKind] = field(default_factory=dict)
    context: MemberContext = field(default_factory=MemberContext)


@dataclass(frozen=True, slots=True)
class ListRequest:
    placement: Placement
    first: int = 10
    product_id: str | None = None
    cart: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    strategy: Strategy = Strategy.HYBRID
    max_per_category: int | None = 3


_VERBS = {
    SignalKind.PURCHASE: "bought",
    SignalKind.REVIEW: "reviewed",
    SignalKind.CART_ADD: "added to your cart",
    SignalKind.WISH_LIST: "wished for",
    SignalKind.VIEW: "viewed",
}


NOT_PERSONALISED_NOTE = " (not personalised: you have not agreed to personalisation)"


def reason_text(reason: PickReason, names: Mapping[str, str], personalised: bool = True) -> str:
    """The reason in words, with product names where the catalogue has them.

    A member who has not agreed to personalisation is told so on every item of every
    placement, whatever the reason, so that no list looks personal when it is not.
    """
    text = _reason_words(reason, names)
    if not personalised and not text.endswith(NOT_PERSONALISED_NOTE):
        text += NOT_PERSONALISED_NOTE
    return text


def _reason_words(reason: PickReason, names: Mapping[str, str]) -> str:
    item = names.get(reason.item, reason.item) if reason.item else ""
    match reason.code:
        case PickReasonCode.BECAUSE_YOU:
            verb = _VERBS.get(reason.signal or SignalKind.VIEW, "viewed")
            if reason.signal is SignalKind.CART_ADD:
                return f"because you added {item} to your cart"
            return f"because you {verb} {item}"
        case PickReasonCode.ALSO_LIKED:
            return f"members who liked {item} also liked this"
        case PickReasonCode.SIMILAR_TO:
            return f"similar to {item}"
        case PickReasonCode.BOUGHT_WITH:
            return f"often bought with {item}"
        case PickReasonCode.POPULAR_IN_CONTEXT:
            return describe(reason.context) if reason.context else "popular with members"
        case PickReasonCode.SEARCH_ORDER:
            return "as ranked by the search"
        case PickReasonCode.NOT_PERSONALISED:
            popular = describe(reason.context) if reason.context else "popular with members"
            return f"{popular}{NOT_PERSONALISED_NOTE}"
    return "recommended"  # pragma: no cover - every code is matched above


def recommend_list(
    trained: TrainedRecommender,
    state: MemberState,
    request: ListRequest,
    now: datetime,
    unavailable: Collection[str] = (),
    consumable: Collection[str] = (),
) -> list[Pick]:
    """At most `request.first` picks, never an `unavailable` product (not listed, or
    listed as unavailable) and, except in search, never one the member bought unless it
    is `consumable`. Search keeps bought products: the member asked for them."""
    blocked = set(unavailable)
    if request.placement is Placement.SEARCH:
        return _search(trained, state, request, blocked)
    blocked |= state.bought - set(consumable)
    match request.placement:
        case Placement.HOME:
            ranked = _home(trained, state, request, now, blocked)
        case Placement.PRODUCT:
            ranked = _product(trained, state, request, now, blocked)
        case Placement.CART:
            ranked = _cart(trained, state, request, now, blocked)
    return _capped(trained, ranked, request)


# -- placements -------------------------------------------------------------------------


def _depth(trained: TrainedRecommender, request: ListRequest, blocked: Collection[str]) -> int:
    """How many to ask a model for, so that the diversity cap can still fill the list."""
    deep = request.first * 4 + len(blocked)
    return max(1, min(deep, len(trained.hybrid.items) or 1))


def _home(trained: TrainedRecommender, state: MemberState, request: ListRequest,
          now: datetime, blocked: set[str]) -> list[Pick]:
    if state.personalised and state.history:
        model = trained.model(request.strategy)
        recommendations = model.recommend("", _depth(trained, request, blocked),
                                          exclude=blocked, history=state.history,
                                          exclude_seen=False)
        picks = [_personal(rec, state) for rec in recommendations]
        if picks:
            return picks + _popular(trained, state, request, now, blocked | _items(picks))
    return _popular(trained, state, request, now, blocked)


def _product(trained: TrainedRecommender, state: MemberState, request: ListRequest,
             now: datetime, blocked: set[str]) -> list[Pick]:
    product = request.product_id or ""
    depth = _depth(trained, request, blocked)
    blended: dict[str, tuple[float, PickReason]] = {}
    # The item model's neighbours (EASE, or the collaborative model past EASE's size
    # limit) and content's, equally weighted: a product nobody bought yet still has
    # content neighbours, whatever weight the personal blend gave content.
    parts = ((trained.item_model.similar_items(product, depth), 1.0,
              PickReasonCode.ALSO_LIKED),
             (trained.content.similar_items(product, depth), 1.0,
              PickReasonCode.SIMILAR_TO))
    for recommendations, weight, code in parts:
        for item, score in _rescaled(recommendations):
            if item in blocked or item == product:
                continue
            before, reason = blended.get(item, (0.0, PickReason(code, product)))
            if weight * score > before:  # the reason of the part that adds most
                reason = PickReason(code, product)
            blended[item] = (before + weight * score, reason)
    picks = [Pick(item, score, reason) for item, (score, reason) in blended.items()]
    picks.sort(key=lambda pick: (-pick.score, pick.item))
    return picks + _popular(trained, state, request, now, blocked | _items(picks) | {product})


def _cart(trained: TrainedRecommender, state: MemberState, request: ListRequest,
          now: datetime, blocked: set[str]) -> list[Pick]:
    cart = set(request.cart)
    depth = _depth(trained, request, blocked)
    picks = [Pick(pick.item, pick.score, PickReason(PickReasonCode.BOUGHT_WITH, pick.because))
             for pick in trained.rules.recommend_for_cart(cart, depth, exclude=blocked)
             if pick.item in trained.hybrid.index]
    taken = _items(picks) | cart | blocked
    # Rules cover only products bought together often enough; similar products fill in,
    # round-robin over the cart so each cart item contributes.
    similar = [trained.content.similar_items(item, depth) for item in sorted(cart)]
    for rank in range(depth):
        for recommendations in similar:
            if rank < len(recommendations) and recommendations[rank].item not in taken:
                rec = recommendations[rank]
                taken.add(rec.item)
                picks.append(Pick(rec.item, 0.0,
                                  PickReason(PickReasonCode.SIMILAR_TO, rec.reason.item)))
    return picks + _popular(trained, state, request, now, taken)


def _search(trained: TrainedRecommender, state: MemberState, request: ListRequest,
            blocked: set[str]) -> list[Pick]:
    """Every available candidate, ranked by the member's scores (or popularity)."""
    candidates = [item for item in dict.fromkeys(request.candidates) if item not in blocked]
    index = trained.hybrid.index
    known = [item for item in candidates if item in index]
    scored = None
    if state.personalised and state.history:
        scored = trained.model(request.strategy).scored(state.history)
    personal = scored is not None
    if scored is None:
        scored = trained.model(Strategy.POPULARITY).scored({})
    picks: list[Pick] = []
    if known and scored is not None:
        positions = np.array([index[item] for item in known], dtype=np.int64)
        scores = np.nan_to_num(scored.scores[positions], neginf=-1e9)
        order = np.lexsort((positions, -scores))
        reasons = scored.explain(positions[order])
        for row, reason in zip(order.tolist(), reasons, strict=True):
            code = _pick_reason(reason.code, reason.item, state) if personal else None
            picks.append(Pick(known[row], float(scores[row]),
                              code or _not_personal_or_popular(state)))
    ranked_items = _items(picks)
    picks += [Pick(item, 0.0, PickReason(PickReasonCode.SEARCH_ORDER))
              for item in candidates if item not in ranked_items]
    top = _diversified(trained, picks, request.max_per_category)
    chosen = _items(top)
    return (top + [pick for pick in picks if pick.item not in chosen])[:request.first]


# -- shared pieces ----------------------------------------------------------------------


def _popular(trained: TrainedRecommender, state: MemberState, request: ListRequest,
             now: datetime, blocked: set[str]) -> list[Pick]:
    """Popularity in the member's context (everyone's, without consent)."""
    context = state.context if state.personalised else MemberContext()
    code = (PickReasonCode.POPULAR_IN_CONTEXT if state.personalised
            else PickReasonCode.NOT_PERSONALISED)
    listed = trained.hybrid.index
    picks = trained.context.recommend(context, now, _depth(trained, request, blocked),
                                      exclude=blocked)
    return [Pick(pick.item, pick.score, PickReason(code, context=pick.reason))
            for pick in picks if pick.item in listed]


def _personal(recommendation: Recommendation, state: MemberState) -> Pick:
    reason = _pick_reason(recommendation.reason.code, recommendation.reason.item, state)
    return Pick(recommendation.item, recommendation.score,
                reason or PickReason(PickReasonCode.POPULAR_IN_CONTEXT))


def _pick_reason(code: ReasonCode, item: str | None, state: MemberState) -> PickReason | None:
    if code is ReasonCode.POPULAR or item is None:
        return None
    return PickReason(PickReasonCode.BECAUSE_YOU, item, state.signals.get(item, SignalKind.VIEW))


def _not_personal_or_popular(state: MemberState) -> PickReason:
    return PickReason(PickReasonCode.POPULAR_IN_CONTEXT if state.personalised
                      else PickReasonCode.NOT_PERSONALISED)


def _rescaled(recommendations: Sequence[Recommendation]) -> list[tuple[str, float]]:
    if not recommendations:
        return []
    scores = [rec.score for rec in recommendations]
    low, high = min(scores), max(scores)
    span = high - low if high > low else 1.0
    return [(rec.item, (rec.score - low) / span if high > low else 1.0)
            for rec in recommendations]


def _items(picks: Sequence[Pick]) -> set[str]:
    return {pick.item for pick in picks}


def _category_of(trained: TrainedRecommender) -> Callable[[str], str | None]:
    catalogue = trained.hybrid.catalogue

    def category(item: str) -> str | None:
        product = catalogue.get(item)
        return product.category or None if product is not None else None

    return category


def _diversified(trained: TrainedRecommender, picks: list[Pick],
                 cap: int | None) -> list[Pick]:
    """The top DIVERSITY_WINDOW of `picks` under the cap (all of them without one)."""
    if cap is None:
        return picks[:DIVERSITY_WINDOW]
    as_recs = [Recommendation(pick.item, pick.score, pick.reason) for pick in picks]  # type: ignore[arg-type]
    top = diversify(as_recs, _category_of(trained), cap, DIVERSITY_WINDOW)
    by_item = {pick.item: pick for pick in picks}
    return [by_item[rec.item] for rec in top]


def _capped(trained: TrainedRecommender, ranked: list[Pick], request: ListRequest) -> list[Pick]:
    """Each item once; the diversity cap on the top 10, then the rest in rank order. When
    the cap cannot fill ten places, the list stops there rather than break it."""
    seen: set[str] = set()
    unique: list[Pick] = []
    for pick in ranked:
        if pick.item not in seen:
            seen.add(pick.item)
            unique.append(pick)
    if request.max_per_category is None:
        return unique[:request.first]
    top = _diversified(trained, unique, request.max_per_category)
    if len(top) < DIVERSITY_WINDOW:
        return top[:request.first]
    chosen = _items(top)
    return (top + [pick for pick in unique if pick.item not in chosen])[:request.first]
