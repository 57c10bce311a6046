"""Serving recommendation lists: the member's behaviour now, the active model, the list.

Each request reads the member's signals (so a purchase a moment ago counts), their
consent, the catalogue's available products and — for an experiment's variant — which
strategy and model version to use; `domain.recommendation.serving` decides the list.
Model files are loaded once per process and kept (see `ModelStore`); everything else is
read per request from read models, in one database round trip through `run_sync`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.experiment_readmodels import Assignment, running_assignment
from api.recommender import RecommenderService, member_contexts, signal_of
from domain.clock import Clock
from domain.errors import InvalidTransitionError, NotFoundError, ValidationError
from domain.recommendation.context import MemberContext
from domain.recommendation.interactions import (
    InteractionWeights,
    SignalKind,
    derive_interactions,
)
from domain.recommendation.placement import Placement, Strategy
from domain.recommendation.serving import (
    ListRequest,
    MemberState,
    Pick,
    reason_text,
    recommend_list,
)
from projections.catalogue_tables import products
from projections.recommender_tables import (
    recommendation_consents,
    recommendation_signals,
    recommender_models,
)

MAX_FIRST = 50
MAX_CART = 50
MAX_CANDIDATES = 200
# Which of a member's signals names the reason: the strongest kind they had with an item.
_PRECEDENCE = (SignalKind.PURCHASE, SignalKind.REVIEW, SignalKind.CART_ADD,
               SignalKind.WISH_LIST, SignalKind.VIEW)


@dataclass(frozen=True, slots=True)
class ServedItem:
    product_id: str
    name: str | None
    category: str | None
    score: float
    reason_code: str
    reason_text: str
    reason_product_id: str | None


@dataclass(frozen=True, slots=True)
class ServedList:
    placement: Placement
    personalised: bool
    model_version: int
    strategy: Strategy
    experiment_id: str | None
    variant: str | None
    items: list[ServedItem]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one request reads from the database."""

    version: int | None
    checksum: str | None
    personalised: bool
    signals: list[Any]
    available: dict[str, bool]  # listed products: id -> consumable
    context: MemberContext
    # False when the request names a product the catalogue has never listed.
    product_listed: bool = True


def check_request(placement: Placement, first: int, product_id: str | None,
                  cart: list[str] | None, candidates: list[str] | None) -> ListRequest:
    """The request, or a typed error naming the argument a placement needs or forbids."""
    limit = MAX_CANDIDATES if placement is Placement.SEARCH else MAX_FIRST
    if not 1 <= first <= limit:
        raise ValidationError(f"first must be between 1 and {limit}", "first")
    if placement is Placement.PRODUCT and not (product_id and product_id.strip()):
        raise ValidationError("the product placement needs productId", "productId")
    if placement is Placement.CART:
        if not cart:
            raise ValidationError("the cart placement needs cartProductIds", "cartProductIds")
        if len(cart) > MAX_CART:
            raise ValidationError(f"at most {MAX_CART} cart products", "cartProductIds")
    if placement is Placement.SEARCH:
        if not candidates:
            raise ValidationError("the search placement needs candidateIds", "candidateIds")
        if len(candidates) > MAX_CANDIDATES:
            raise ValidationError(f"at most {MAX_CANDIDATES} candidates", "candidateIds")
    for name, values in (("cartProductIds", cart or []), ("candidateIds", candidates or [])):
        if any(not value.strip() or len(value) > 200 for value in values):
            raise ValidationError(f"{name} must be product ids of 1 to 200 characters", name)
    return ListRequest(placement=placement, first=first,
                       product_id=product_id.strip() if product_id else None,
                       cart=tuple(cart or ()), candidates=tuple(candidates or ()))


class RecommendationService:
    def __init__(self, recommender: RecommenderService, clock: Clock,
                 weights: InteractionWeights, max_per_category: int) -> None:
        self.recommender = recommender
        self.clock = clock
        self.weights = weights
        self.max_per_category = max_per_category or None

    async def for_member(self, engine: AsyncEngine, member_id: str,
                         request: ListRequest) -> ServedList:
        assignment: Assignment | None = await running_assignment(
            engine, request.placement.value, member_id)
        pinned = assignment.model_version if assignment is not None else None
        async with engine.connect() as conn:
            snapshot = await conn.run_sync(self._read, member_id, pinned, request.product_id)
        version, digest = snapshot.version, snapshot.checksum
        if request.product_id is not None and not snapshot.product_listed:
            # A product page for a product the shop never listed: say so rather than
            # filling the page with popular items.
            raise NotFoundError(f"product {request.product_id!r} is not in the catalogue",
                                "productId")
        if version is None or digest is None:
            raise InvalidTransitionError(
                "no recommender model is serving yet: train one with `patron recommend "
                "train` or the retrainRecommender mutation", "no_model")
        trained = await asyncio.to_thread(self.recommender.store.load, digest)
        strategy = assignment.strategy if assignment is not None else Strategy.HYBRID
        now = self.clock.now()
        # Only what the catalogue lists as available now may be recommended.
        unavailable = [item for item in trained.hybrid.items if item not in snapshot.available]
        consumable = [item for item, flag in snapshot.available.items() if flag]
        picks = recommend_list(
            trained, self._state(snapshot, now),
            ListRequest(request.placement, request.first, request.product_id, request.cart,
                        request.candidates, strategy, self.max_per_category),
            now, unavailable, consumable)
        items = await self._described(engine, picks, snapshot.personalised)
        return ServedList(request.placement, snapshot.personalised, version, strategy,
                          assignment.experiment_id if assignment else None,
                          assignment.variant if assignment else None, items)

    def _read(self, conn: Connection, member_id: str, pinned: int | None = None,
              product_id: str | None = None) -> _Snapshot:
        """Everything a list needs from the database; `pinned` is an experiment's model
        version (the active one otherwise)."""
        which = (recommender_models.c.version == pinned if pinned is not None
                 else recommender_models.c.state == "active")
        model = conn.execute(select(recommender_models.c.version, recommender_models.c.checksum)
                             .where(which)).first()
        personalised = bool(conn.scalar(select(recommendation_consents.c.personalisation)
                                        .where(recommendation_consents.c.member_id == member_id)))
        signals = []
        context = MemberContext()
        if personalised:
            signals = [signal_of(row._mapping) for row in conn.execute(
                select(recommendation_signals).where(
                    recommendation_signals.c.member_id == member_id))]
            context = member_contexts(conn, {member_id}).get(member_id, MemberContext())
        available = {row.product_id: bool(row.consumable) for row in conn.execute(
            select(products.c.product_id, products.c.consumable)
            .where(products.c.available.is_(True)))}
        listed = product_id is None or product_id in available or conn.scalar(
            select(products.c.product_id).where(products.c.product_id == product_id)
        ) is not None
        return _Snapshot(model.version if model else None, model.checksum if model else None,
                         personalised, signals, available, context, listed)

    def _state(self, snapshot: _Snapshot, now: datetime) -> MemberState:
        """The member as serving may see them: nothing at all without consent."""
        if not snapshot.personalised:
            return MemberState(personalised=False)
        interactions = derive_interactions(snapshot.signals, now, self.weights)
        kinds: dict[str, SignalKind] = {}
        for signal in snapshot.signals:
            current = kinds.get(signal.item)
            if current is None or _PRECEDENCE.index(signal.kind) < _PRECEDENCE.index(current):
                kinds[signal.item] = signal.kind
        bought = frozenset(item for item, kind in kinds.items() if kind is SignalKind.PURCHASE)
        return MemberState(personalised=True,
                           history={row.item: row.weight for row in interactions},
                           bought=bought, signals=kinds, context=snapshot.context)

    async def _described(self, engine: AsyncEngine, picks: list[Pick],
                         personalised: bool) -> list[ServedItem]:
        """Names for the picks and for the products their reasons mention."""
        wanted = {pick.item for pick in picks} | {pick.reason.item for pick in picks
                                                   if pick.reason.item}
        rows: dict[str, Any] = {}
        if wanted:
            async with engine.connect() as conn:
                result = await conn.execute(
                    select(products.c.product_id, products.c.name, products.c.category)
                    .where(products.c.product_id.in_(sorted(wanted))))
                rows = {row.product_id: row for row in result}
        names = {product_id: row.name for product_id, row in rows.items()}
        return [ServedItem(
            product_id=pick.item,
            name=rows[pick.item].name if pick.item in rows else None,
            category=rows[pick.item].category if pick.item in rows else None,
            score=round(pick.score, 6), reason_code=pick.reason.code.value,
            reason_text=reason_text(pick.reason, names, personalised),
            reason_product_id=pick.reason.item,
        ) for pick in picks]
