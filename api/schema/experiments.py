"""A/B experiments on recommendations: admins define and stop them, members' frontends
report what was shown and clicked, and staff and auditors read the results.

`defineExperiment` and `stopExperiment` are admin mutations with a reason.
`recordImpressions` and `recordClick` are for the signed-in member only (staff browsing
the shop on the job would skew what shoppers do): each item is stamped by the server with
the experiment that ran on its placement and the member's variant, so the input has no
such fields. Like `trackBehaviour`, they do not move the caller's read-your-writes
position: nobody reads feedback back at once, and making the member's next queries wait
for it would tax browsing. Readers (`experiment`, `experiments`, `experimentResults`) are
agents, admins and auditors; everything they show comes from the "experiment_results"
read model (see projections/experiment_results.py for what the counts mean).

Placements and strategies are the enums api/schema/recommendations.py gives
domain.recommendation.placement (`RecommendationPlacement`, `RecommendationStrategy`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry import relay

from api import experiment_readmodels as readmodels
from api.context import RequestContext
from api.experiments import FeedbackResult
from api.readmodels import InvalidCursorError, instant, required_instant
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Long,
    UserError,
    context,
    make_connection,
    page_size,
    run_command,
    run_mutation,
)
from api.schema.orders import Money, decode_uuid, money
from api.schema.recommendations import PlacementEnum, StrategyEnum
from api.service import CommandResult
from domain import experiments as model
from domain.errors import DomainError, ErrorCode
from domain.metadata import EventMetadata, Role
from domain.recommendation import placement as vocabulary

# The GraphQL faces of domain.recommendation.placement, shared with recommendations.
Placement = PlacementEnum
Strategy = StrategyEnum
ExperimentStatus = strawberry.enum(
    model.ExperimentStatus, name="ExperimentStatus",
    description="RUNNING from its definition until an admin stops it; STOPPED for good.")

READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)
NODE = "Experiment"
POLL_SECONDS = 0.25




# -- output types ---------------------------------------------------------------------------


@strawberry.type(description="One arm of an experiment.")
class ExperimentVariant:
    name: str
    share: int = strawberry.field(description="Percent of the members (all shares add up "
                                              "to 100).")
    strategy: Strategy  # type: ignore[valid-type]
    model_version: int | None = strawberry.field(
        description="The trained model version it serves with; null: the active one.")

    @classmethod
    def of(cls, variant: model.Variant) -> ExperimentVariant:
        return cls(name=variant.name, share=variant.share, strategy=variant.strategy,
                   model_version=variant.model_version)


@strawberry.type(description="A rate (or a difference of rates) and its 95% confidence "
                             "interval.")
class RateEstimate:
    value: float
    low: float
    high: float

    @classmethod
    def of(cls, interval: model.Interval | None) -> RateEstimate | None:
        if interval is None:
            return None
        return cls(value=interval.value, low=interval.low, high=interval.high)


@strawberry.type(description="What one variant of an experiment achieved so far.")
class ExperimentVariantResult:
    result: strawberry.Private[readmodels.VariantResult]

    @strawberry.field(description="The variant's name.")
    def variant(self) -> str:
        return self.result.variant.name

    @strawberry.field(description="The first variant defined: what the others are compared "
                                  "with.")
    def is_control(self) -> bool:
        return self.result.is_control

    @strawberry.field
    def share(self) -> int:
        return self.result.variant.share

    @strawberry.field
    def strategy(self) -> Strategy:  # type: ignore[valid-type]
        return self.result.variant.strategy

    @strawberry.field
    def model_version(self) -> int | None:
        return self.result.variant.model_version

    @strawberry.field(description="Recommended products shown.")
    def impressions(self) -> Long:  # type: ignore[valid-type]
        return self.result.impressions

    @strawberry.field(description="Recommended products clicked.")
    def clicks(self) -> Long:  # type: ignore[valid-type]
        return self.result.clicks

    @strawberry.field(description="clicks / impressions with its 95% Wilson interval; null "
                                  "before any impression.")
    def ctr(self) -> RateEstimate | None:
        return RateEstimate.of(self.result.ctr)

    @strawberry.field(description="Members shown (or who clicked) at least one of the "
                                  "variant's lists.")
    def exposed_members(self) -> int:
        return self.result.exposed_members

    @strawberry.field(description="Exposed members who clicked at least once.")
    def clicking_members(self) -> int:
        return self.result.clicking_members

    @strawberry.field(description="Exposed members who paid for an order containing a "
                                  "product they clicked in the experiment in the 7 days "
                                  "before.")
    def converted_members(self) -> int:
        return self.result.converted_members

    @strawberry.field(description="Paid orders that converted a click (a member may convert "
                                  "several times).")
    def conversions(self) -> int:
        return self.result.conversions

    @strawberry.field(description="convertedMembers / exposedMembers with its 95% Wilson "
                                  "interval; null before anyone is exposed.")
    def conversion_rate(self) -> RateEstimate | None:
        return RateEstimate.of(self.result.conversion_rate)

    @strawberry.field(description="What the clicked products cost in the converting orders "
                                  "(quantity x unit price).")
    def revenue(self, info: strawberry.Info) -> Money:
        return money(self.result.revenue, context(info).runtime.rules.currency)

    @strawberry.field(description="This variant's conversion rate minus the control's, "
                                  "with a 95% interval (normal approximation); an interval "
                                  "that excludes 0 is a significant difference. Null for "
                                  "the control and while either has no exposed members.")
    def lift_vs_control(self) -> RateEstimate | None:
        return RateEstimate.of(self.result.lift_vs_control)

    @strawberry.field(description="When these figures last changed.")
    def updated_at(self) -> dt.datetime:
        return self.result.updated_at


@strawberry.type(name="Experiment",
                 description="An A/B test of recommendation strategies or model versions "
                             "on one placement.")
class ExperimentNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[ExperimentNode | None]:
        ctx = context(info)
        ids = [str(i) for i in node_ids]
        if ctx.principal.role not in READERS:
            return [None for _ in ids]
        rows = await readmodels.get_experiments(ctx.runtime.async_engine, ids)
        return [cls.of(rows[i]) if i in rows else None for i in ids]

    @classmethod
    def of(cls, row: dict[str, Any]) -> ExperimentNode:
        return cls(key=row["experiment_id"], row=row)

    @strawberry.field(description="The experiment's UUID (the id inside the global id).")
    def experiment_id(self) -> str:
        return self.key

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field
    def placement(self) -> Placement:  # type: ignore[valid-type]
        return vocabulary.Placement(self.row["placement"])

    @strawberry.field(description="In the order defined; the first is the control.")
    def variants(self) -> list[ExperimentVariant]:
        return [ExperimentVariant.of(model.Variant.from_dict(v)) for v in self.row["variants"]]

    @strawberry.field
    def status(self) -> ExperimentStatus:  # type: ignore[valid-type]
        return model.ExperimentStatus(self.row["status"])

    @strawberry.field
    def defined_at(self) -> dt.datetime:
        return required_instant(self.row["defined_at"])

    @strawberry.field(description="The admin who defined it.")
    def defined_by(self) -> str:
        return str(self.row["defined_by"])

    @strawberry.field(description="Why it was defined.")
    def define_reason(self) -> str | None:
        return self.row["define_reason"]

    @strawberry.field
    def stopped_at(self) -> dt.datetime | None:
        return instant(self.row["stopped_at"])

    @strawberry.field
    def stopped_by(self) -> str | None:
        return self.row["stopped_by"]

    @strawberry.field(description="Why it was stopped.")
    def stop_reason(self) -> str | None:
        return self.row["stop_reason"]

    @strawberry.field(description="Version of the experiment (definition, stop).")
    def version(self) -> int:
        return int(self.row["version"])

    @strawberry.field(description="Each variant's results, control first.")
    async def results(self, info: strawberry.Info) -> list[ExperimentVariantResult]:
        rows = await readmodels.experiment_results(context(info).runtime.async_engine,
                                                   self.key, self.row["variants"])
        return [ExperimentVariantResult(result=r) for r in rows]


@strawberry.type(description="An experiment and what each of its variants achieved.")
class ExperimentResults:
    experiment: ExperimentNode
    variants: list[ExperimentVariantResult] = strawberry.field(
        description="Control first, then the others in the order defined.")


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input
class ExperimentVariantInput:
    name: str = strawberry.field(description="1-40 characters, unique in the experiment.")
    share: int = strawberry.field(description="Whole percent of the members (1-100); the "
                                              "shares must add up to exactly 100.")
    strategy: Strategy  # type: ignore[valid-type]
    model_version: int | None = strawberry.field(
        default=None, description="Serve with this trained model version instead of the "
                                  "active one.")


@strawberry.input
class DefineExperimentInput:
    name: str
    placement: Placement  # type: ignore[valid-type]
    variants: list[ExperimentVariantInput] = strawberry.field(
        description="2 to 10; the first is the control.")
    idempotency_key: str = strawberry.field(
        description="A retry with the same key and input returns the first experiment.")
    reason: str | None = strawberry.field(default=None, description="Required: why.")


@strawberry.input
class StopExperimentInput:
    experiment_id: strawberry.ID
    reason: str | None = strawberry.field(default=None, description="Required: why.")


@strawberry.input(description="A recommended product the member was shown.")
class ImpressionInput:
    placement: Placement  # type: ignore[valid-type]
    product_id: str = strawberry.field(description="1-100 characters.")
    position: int = strawberry.field(description="1-based place in the list (1-100).")
    shown_at: dt.datetime | None = strawberry.field(
        default=None, description="With a time zone: at most 7 days ago, not in the "
                                  "future. Defaults to when the batch arrives.")


@strawberry.input
class RecordImpressionsInput:
    batch_key: str = strawberry.field(
        description="Unique per batch of this member: a resent batch with the same key and "
                    "items is recorded once.")
    impressions: list[ImpressionInput] = strawberry.field(
        description="1 to 500, recorded together or not at all.")


@strawberry.input(description="A recommended product the member clicked.")
class ClickInput:
    placement: Placement  # type: ignore[valid-type]
    product_id: str = strawberry.field(description="1-100 characters.")
    clicked_at: dt.datetime | None = strawberry.field(
        default=None, description="With a time zone: at most 7 days ago, not in the "
                                  "future. Defaults to when the batch arrives.")


@strawberry.input
class RecordClickInput:
    batch_key: str = strawberry.field(
        description="Unique per batch of this member: a resent batch with the same key and "
                    "items is recorded once.")
    clicks: list[ClickInput] = strawberry.field(
        description="1 to 500, recorded together or not at all.")


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class ExperimentPayload:
    experiment: ExperimentNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; null when nothing was recorded.")
    user_errors: list[UserError]


@strawberry.type
class DefineExperimentPayload(ExperimentPayload):
    pass


@strawberry.type
class StopExperimentPayload(ExperimentPayload):
    pass


@strawberry.type
class FeedbackPayload:
    recorded: int | None = strawberry.field(description="Items the batch holds.")
    in_experiments: int | None = strawberry.field(
        description="Of those, the items that count for a running experiment.")
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class RecordImpressionsPayload(FeedbackPayload):
    pass


@strawberry.type
class RecordClickPayload(FeedbackPayload):
    pass


# -- helpers --------------------------------------------------------------------------------

P = TypeVar("P", bound=ExperimentPayload)
F = TypeVar("F", bound=FeedbackPayload)


def decode_experiment_id(global_id: strawberry.ID, field: str = "experiment_id") -> uuid.UUID:
    return decode_uuid(global_id, NODE, field)


async def load_experiment(ctx: RequestContext, result: CommandResult) -> ExperimentNode | None:
    """The experiment as the read model shows it once it includes this write (a retried
    define recorded nothing, so its row is awaited by the version the command saw)."""
    try:
        await ctx.runtime.wait_for_read_models(result.position)
    except Exception:
        return None
    engine = ctx.runtime.async_engine
    experiment_id = str(result.aggregate_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.runtime.settings.read_your_writes_timeout
    while True:
        row = (await readmodels.get_experiments(engine, [experiment_id])).get(experiment_id)
        if row is not None and int(row["version"]) >= result.version:
            return ExperimentNode.of(row)
        if loop.time() > deadline:
            return ExperimentNode.of(row) if row else None
        await ctx.runtime.changes.wait(POLL_SECONDS)


async def experiment_mutation(
    info: strawberry.Info, payload: type[P],
    act: Callable[[RequestContext, EventMetadata], CommandResult], reason: str | None,
) -> P:
    result, errors = await run_command(info, act, reason)
    if result is None:
        return payload(experiment=None, position=None, user_errors=errors)
    experiment = await load_experiment(context(info), result)
    return payload(experiment=experiment, position=result.position, user_errors=[])


async def feedback_mutation(
    info: strawberry.Info, payload: type[F],
    record: Callable[[RequestContext, uuid.UUID, EventMetadata], CommandResult],
) -> F:
    async def command(ctx: RequestContext) -> CommandResult:
        ctx.principal.require_role(Role.MEMBER)
        member_id = uuid.UUID(ctx.principal.subject)
        meta = ctx.metadata()
        # Deliberately not ctx.run_command: see the module docstring.
        return await run_in_threadpool(lambda: record(ctx, member_id, meta))

    result, errors = await run_mutation(info, command)
    if result is None:
        return payload(recorded=None, in_experiments=None, position=None, user_errors=errors)
    assert isinstance(result, FeedbackResult)
    return payload(recorded=result.recorded, in_experiments=result.in_experiments,
                   position=result.position, user_errors=[])


def _require_reader(ctx: RequestContext) -> None:
    try:
        ctx.principal.require_role(*READERS)
    except DomainError as error:
        raise ApiError.from_domain(error) from None


async def _experiment_row(ctx: RequestContext, id: strawberry.ID) -> dict[str, Any] | None:
    try:
        experiment_id = str(decode_experiment_id(id, "id"))
        ctx.principal.require_role(*READERS)
    except DomainError as error:
        raise ApiError.from_domain(error) from None
    return (await readmodels.get_experiments(ctx.runtime.async_engine, [experiment_id])).get(
        experiment_id)


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class ExperimentQueries:
    @strawberry.field(description="An experiment: staff and auditors.")
    async def experiment(self, info: strawberry.Info,
                         id: strawberry.ID) -> ExperimentNode | None:
        row = await _experiment_row(context(info), id)
        return ExperimentNode.of(row) if row else None

    @strawberry.field(description="Experiments, the latest defined first: staff and "
                                  "auditors.")
    async def experiments(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        status: ExperimentStatus | None = None,  # type: ignore[valid-type]
    ) -> Connection[ExperimentNode]:
        ctx = context(info)
        _require_reader(ctx)
        size = page_size(info, first)
        wanted = model.ExperimentStatus(status.value) if status is not None else None
        try:
            page = await readmodels.list_experiments(ctx.runtime.async_engine, wanted, size,
                                                     after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection(
            [ExperimentNode.of(r) for r in page.rows],
            [readmodels.experiment_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=after is not None, total=page.total,
        )

    @strawberry.field(description="Per variant: impressions, clicks, CTR and conversion with "
                                  "95% intervals, revenue, and the difference in conversion "
                                  "from the control. Staff and auditors.")
    async def experiment_results(self, info: strawberry.Info,
                                 id: strawberry.ID) -> ExperimentResults | None:
        ctx = context(info)
        row = await _experiment_row(ctx, id)
        if row is None:
            return None
        results = await readmodels.experiment_results(ctx.runtime.async_engine,
                                                      row["experiment_id"], row["variants"])
        return ExperimentResults(experiment=ExperimentNode.of(row),
                                 variants=[ExperimentVariantResult(result=r) for r in results])


def _variant(item: ExperimentVariantInput) -> dict[str, Any]:
    return {"name": item.name, "share": item.share, "strategy": item.strategy.value,
            "model_version": item.model_version}


@strawberry.type
class ExperimentMutations:
    @strawberry.mutation(description="Admins: start an A/B test on a placement that runs "
                                      "none; members are split between the variants by "
                                      "their shares, each always into the same variant.")
    async def define_experiment(self, info: strawberry.Info,
                                input: DefineExperimentInput) -> DefineExperimentPayload:
        variants = [_variant(v) for v in input.variants]

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.ADMIN)
            return ctx.runtime.experiments.define(input.name, input.placement.value, variants,
                                                  input.idempotency_key, meta)

        return await experiment_mutation(info, DefineExperimentPayload, act, input.reason)

    @strawberry.mutation(description="Admins: stop an experiment for good; its results stay "
                                      "and the placement is free for another.")
    async def stop_experiment(self, info: strawberry.Info,
                              input: StopExperimentInput) -> StopExperimentPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.ADMIN)
            return ctx.runtime.experiments.stop(decode_experiment_id(input.experiment_id),
                                                meta)

        return await experiment_mutation(info, StopExperimentPayload, act, input.reason)

    @strawberry.mutation(description="The signed-in member's frontend reports recommended "
                                      "products shown (up to 500 per batch).")
    async def record_impressions(self, info: strawberry.Info,
                                 input: RecordImpressionsInput) -> RecordImpressionsPayload:
        items = [{"placement": i.placement.value, "product_id": i.product_id,
                  "position": i.position, "shown_at": i.shown_at} for i in input.impressions]
        return await feedback_mutation(
            info, RecordImpressionsPayload,
            lambda ctx, member_id, meta: ctx.runtime.experiments.record_impressions(
                member_id, input.batch_key, items, meta))

    @strawberry.mutation(description="The signed-in member's frontend reports recommended "
                                      "products clicked (up to 500 per batch).")
    async def record_click(self, info: strawberry.Info,
                           input: RecordClickInput) -> RecordClickPayload:
        items = [{"placement": i.placement.value, "product_id": i.product_id,
                  "clicked_at": i.clicked_at} for i in input.clicks]
        return await feedback_mutation(
            info, RecordClickPayload,
            lambda ctx, member_id, meta: ctx.runtime.experiments.record_clicks(
                member_id, input.batch_key, items, meta))


__all__ = ["ExperimentMutations", "ExperimentNode", "ExperimentQueries"]
