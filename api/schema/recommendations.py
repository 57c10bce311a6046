"""Recommendations: ranked lists per placement, trained model versions, retraining.

`member { recommendations(placement: …) }` (the member themself through `me`, staff
through `member`) returns a list with a score and a reason for every item, made by the
active model (or an experiment's variant) from the member's behaviour as it is now.
Admins retrain and switch models; staff and auditors read the model versions, with the
data each was trained on and its offline metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import strawberry
from sqlalchemy import select
from strawberry.scalars import JSON

from api.recommendations import ServedList, check_request
from api.recommender import TrainingReport
from api.schema.common import (
    ApiError,
    EventPosition,
    UserError,
    context,
    history_id,
    run_command,
)
from domain.errors import DomainError, ErrorCode
from domain.metadata import Role
from domain.recommendation.placement import Placement, Strategy
from projections.recommender_tables import recommender_models

PlacementEnum = strawberry.enum(Placement, name="RecommendationPlacement",
                                description="Where a list is shown.")
StrategyEnum = strawberry.enum(Strategy, name="RecommendationStrategy",
                               description="Which model makes a list.")
READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)


@strawberry.type(description="Why an item is in a list.")
class RecommendationReason:
    code: str = strawberry.field(description=(
        "because_you, also_liked, similar_to, bought_with, popular_in_context, "
        "search_order or not_personalised."))
    text: str = strawberry.field(description="In words, e.g. 'because you bought Oolong'.")
    product_id: str | None = strawberry.field(
        description="The product the reason refers to (bought, liked, in the cart).")


@strawberry.type(description="One recommended product.")
class RecommendedProduct:
    product_id: str
    name: str | None
    category: str | None
    score: float = strawberry.field(description="Higher is better; comparable within a list.")
    reason: RecommendationReason


@strawberry.type(description="An experiment a list was served under.")
class ServedExperiment:
    id: str
    variant: str


@strawberry.type(description="A ranked list for one placement.")
class RecommendationList:
    placement: PlacementEnum  # type: ignore[valid-type]
    personalised: bool = strawberry.field(description=(
        "False when the member has not consented to personalisation: the list is the "
        "same as anyone's, and every reason says so."))
    model_version: int
    strategy: StrategyEnum  # type: ignore[valid-type]
    experiment: ServedExperiment | None
    items: list[RecommendedProduct]

    @classmethod
    def of(cls, served: ServedList) -> RecommendationList:
        return cls(
            placement=served.placement, personalised=served.personalised,
            model_version=served.model_version, strategy=served.strategy,
            experiment=(ServedExperiment(id=served.experiment_id, variant=served.variant)
                        if served.experiment_id and served.variant else None),
            items=[RecommendedProduct(
                product_id=item.product_id, name=item.name, category=item.category,
                score=item.score,
                reason=RecommendationReason(code=item.reason_code, text=item.reason_text,
                                            product_id=item.reason_product_id),
            ) for item in served.items],
        )


async def member_recommendations(
    info: strawberry.Info, member_id: str, placement: Placement, first: int,
    product_id: str | None, cart_product_ids: list[str] | None,
    candidate_ids: list[str] | None,
) -> RecommendationList:
    """`Member.recommendations`: the member themself, staff and auditors."""
    ctx = context(info)
    if not ctx.principal.can_read_member(member_id):
        raise ApiError("you may only read your own recommendations", ErrorCode.FORBIDDEN.value)
    try:
        request = check_request(placement, first, product_id, cart_product_ids, candidate_ids)
        served = await ctx.runtime.recommendations.for_member(
            ctx.runtime.async_engine, member_id, request)
    except DomainError as error:
        raise ApiError.from_domain(error) from None
    return RecommendationList.of(served)


@strawberry.type(description="A trained recommender model.")
class RecommenderModel:
    version: int
    state: str = strawberry.field(description="trained, active (serving) or retired.")
    checksum: str = strawberry.field(description="SHA-256 of the stored model file.")
    trained_at: dt.datetime
    trained_by: str
    reason: str | None
    data_position: int = strawberry.field(
        description="The event position the training data reached.")
    interactions: int
    members: int
    products: int
    training_seconds: float
    params: JSON
    metrics: JSON = strawberry.field(description=(
        "Offline metrics on a held-out 25% of the same data: precision, recall, NDCG at "
        "k, coverage and novelty for the hybrid and the popularity baseline (empty with "
        "fewer than 20 members)."))
    activated_at: dt.datetime | None
    activated_by: str | None

    @strawberry.field(description="Auditors: pass to `history(id:)` for this version's "
                      "training, activation and retirement.")
    def history_id(self) -> strawberry.ID:
        return history_id("RecommenderModel", str(self.version))

    @classmethod
    def of(cls, row: dict[str, Any]) -> RecommenderModel:
        return cls(**{name: row[name] for name in (
            "version", "state", "checksum", "trained_at", "trained_by", "reason",
            "data_position", "interactions", "members", "products", "training_seconds",
            "params", "metrics", "activated_at", "activated_by")})


async def _model_rows(info: strawberry.Info, version: int | None = None) -> list[dict[str, Any]]:
    query = select(recommender_models).order_by(recommender_models.c.version.desc())
    if version is not None:
        query = query.where(recommender_models.c.version == version)
    async with context(info).runtime.async_engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


@strawberry.type
class RecommenderQueries:
    @strawberry.field(description="Every trained model, newest first: staff and auditors.")
    async def recommender_models(self, info: strawberry.Info) -> list[RecommenderModel]:
        ctx = context(info)
        try:
            ctx.principal.require_role(*READERS)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        return [RecommenderModel.of(row) for row in await _model_rows(info)]


@strawberry.input
class RetrainRecommenderInput:
    reason: str | None = None
    activate: bool = strawberry.field(
        default=True, description="Serve the new version at once (default true).")
    force: bool = strawberry.field(
        default=False, description="Serve it even if it loses to the popularity baseline "
        "on its own evaluation (the reason is recorded).")


@strawberry.type
class RetrainRecommenderPayload:
    version: int | None
    activated: bool
    note: str | None = strawberry.field(description="Why a trained model was not activated.")
    position: EventPosition | None
    user_errors: list[UserError]


@strawberry.input
class ActivateModelInput:
    version: int
    reason: str | None = None
    force: bool = strawberry.field(
        default=False, description="Serve a version that lost to the popularity baseline.")


@strawberry.type
class ActivateModelPayload:
    version: int | None
    position: EventPosition | None
    user_errors: list[UserError]


@strawberry.type
class RecommenderMutations:
    @strawberry.mutation(description=(
        "Train a new model version on the read models as they are now (admin, with a "
        "reason); it serves at once unless activate is false. Takes seconds to minutes."))
    async def retrain_recommender(self, info: strawberry.Info,
                                  input: RetrainRecommenderInput) -> RetrainRecommenderPayload:
        ctx = context(info)
        try:
            meta = ctx.metadata(input.reason)
            report: TrainingReport = await asyncio.to_thread(
                ctx.runtime.recommender.train, meta, activate=input.activate,
                force=input.force)
        except DomainError as error:
            return RetrainRecommenderPayload(version=None, activated=False, note=None,
                                             position=None,
                                             user_errors=[UserError.for_mutation(info, error)])
        ctx.record_write(report.position)
        return RetrainRecommenderPayload(version=report.version, activated=report.activated,
                                         note=report.note, position=report.position,
                                         user_errors=[])

    @strawberry.mutation(description=(
        "Serve this model version from now on: a newer one, or an older one to roll back "
        "(admin, with a reason)."))
    async def activate_model(self, info: strawberry.Info,
                             input: ActivateModelInput) -> ActivateModelPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.recommender.activate(input.version, meta,
                                                                    input.force),
            input.reason)
        return ActivateModelPayload(version=input.version if result else None,
                                    position=result.position if result else None,
                                    user_errors=errors)
