"""The GraphQL schema: one module per domain area, merged here."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator

import strawberry
from graphql import GraphQLError
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types.graphql import OperationType

from api.config import Settings
from api.consistency import ProjectionLagError, reading_with
from api.schema.after_sales import CaseMutations, CaseQueries, CaseSubscriptions
from api.schema.audit import AuditQueries
from api.schema.behaviour import BehaviourMutations
from api.schema.campaigns import CampaignMutations, CampaignQueries
from api.schema.catalogue import CatalogueMutations, CatalogueQueries
from api.schema.common import (
    EVENT_POSITION_SCALAR,
    LONG_SCALAR,
    EventPosition,
    Long,
)
from api.schema.experiments import ExperimentMutations, ExperimentQueries
from api.schema.loyalty import LoyaltyMutations, LoyaltyQueries, LoyaltySubscriptions
from api.schema.members import MemberMutations, MemberQueries
from api.schema.orders import OrderMutations, OrderQueries
from api.schema.profiles import ProfileQueries
from api.schema.recommendations import RecommenderMutations, RecommenderQueries
from api.schema.segments import SegmentMutations, SegmentQueries
from api.schema.shipments import ShipmentMutations, ShipmentQueries, ShipmentSubscriptions

log = logging.getLogger("patron.api")


def _query_type() -> type:
    """A fresh Query per schema: strawberry binds relay's `node` field to one schema only."""

    @strawberry.type
    class NodeQueries:
        node: relay.Node | None = relay.node(description="Any object by its global id.")

    return merge_types(
        "Query",
        (NodeQueries, MemberQueries, OrderQueries, LoyaltyQueries, ShipmentQueries,
         CaseQueries, AuditQueries, ProfileQueries, SegmentQueries,
         CampaignQueries, CatalogueQueries, RecommenderQueries, ExperimentQueries),
    )


Mutation = merge_types(
    "Mutation",
    (MemberMutations, OrderMutations, LoyaltyMutations, ShipmentMutations, CaseMutations,
     BehaviourMutations, SegmentMutations, CampaignMutations, CatalogueMutations,
     RecommenderMutations, ExperimentMutations),
)
Subscription = merge_types(
    "Subscription", (LoyaltySubscriptions, ShipmentSubscriptions, CaseSubscriptions)
)


class ReadYourWrites(SchemaExtension):
    """Queries see the client's own writes (bounded wait), in what they read.

    No wait up front: the query runs with a read gate, and each read-model statement waits
    only for the projections owning the tables it reads (api/consistency.py). A query that
    reads no projection's tables does not wait at all. Lag surfaces as PROJECTION_LAG on
    the field that read (see MaskUnexpectedErrors).
    """

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        gate = None
        if execution.operation_type == OperationType.QUERY and execution.context:
            ctx = execution.context["patron"]
            wanted = ctx.required_position()
            if wanted:
                gate = ctx.runtime.read_gate(wanted)
        # Always a scope of its own: a gate a mutation sets for its payload ends with it.
        with reading_with(gate):
            yield


class MaskUnexpectedErrors(MaskErrors):
    """Expected failures keep their message and code; anything else is logged and masked."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=self._is_unexpected)

    @staticmethod
    def _is_unexpected(error: GraphQLError) -> bool:
        original = error.original_error
        return original is not None and not isinstance(original, GraphQLError)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        lag = error.original_error
        if isinstance(lag, ProjectionLagError):  # expected: the read models are behind
            return GraphQLError(
                message=str(lag), nodes=error.nodes, source=error.source,
                positions=error.positions, path=error.path,
                extensions={"code": "PROJECTION_LAG", "wanted": lag.wanted,
                            "reached": lag.reached},
            )
        context = self.execution_context.context or {}
        patron = context.get("patron") if isinstance(context, dict) else None
        request_id = patron.request_id if patron else None
        log.error(
            "unexpected error in %s (request %s)",
            ".".join(str(p) for p in error.path or []) or "operation",
            request_id,
            exc_info=error.original_error,
        )
        return GraphQLError(
            message=f"Internal error; quote request id {request_id} when reporting it.",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL", "requestId": request_id},
        )

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    if settings is None:
        return _schema(12, 30, 2000)
    return _schema(settings.max_query_depth, settings.max_aliases, settings.max_tokens)


@functools.cache
def _schema(depth: int, aliases: int, tokens: int) -> strawberry.Schema:
    # The limit rules are built once, so the validation cache (keyed by the rules) hits.
    limits = [
        *QueryDepthLimiter(max_depth=depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=aliases).validation_rules,
    ]
    return strawberry.Schema(
        query=_query_type(),
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            # Parsing and validating a document costs more than executing it; frontends send
            # the same few documents over and over, so both are cached.
            lambda: ParserCache(maxsize=512),
            lambda: ValidationCache(maxsize=512),
            lambda: MaxTokensLimiter(max_token_count=tokens),
            lambda: AddValidationRules(limits),
            ReadYourWrites,
            MaskUnexpectedErrors,
        ],
        config=StrawberryConfig(
            scalar_map={EventPosition: EVENT_POSITION_SCALAR, Long: LONG_SCALAR}
        ),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
