"""The GraphQL schema: one module per domain area, merged here."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import strawberry
from strawberry import relay
from strawberry.extensions import (
    AddValidationRules,
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
from api.consistency import ProjectionLagError
from api.schema.after_sales import CaseMutations, CaseQueries, CaseSubscriptions
from api.schema.audit import AuditQueries
from api.schema.behaviour import BehaviourMutations
from api.schema.campaigns import CampaignMutations, CampaignQueries
from api.schema.catalogue import CatalogueMutations, CatalogueQueries
from api.schema.common import (
    EVENT_POSITION_SCALAR,
    LONG_SCALAR,
    ApiError,
    EventPosition,
    Long,
)
from api.schema.errors import MaskUnexpectedErrors, PatronSchema
from api.schema.experiments import ExperimentMutations, ExperimentQueries
from api.schema.hygiene import SCALARS, InputHygiene, hygienic_executor
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
    """Queries wait until the read models include the client's own writes (bounded)."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        if execution.operation_type == OperationType.QUERY and execution.context:
            ctx = execution.context["patron"]
            wanted = ctx.required_position()
            if wanted:
                try:
                    await ctx.runtime.wait_for_read_models(wanted)
                except ProjectionLagError as error:
                    raise ApiError(
                        str(error), "PROJECTION_LAG", wanted=error.wanted, reached=error.reached
                    ) from None
        yield


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    if settings is None:
        return _schema(12, 30, 2000, Settings.max_input_length)
    return _schema(settings.max_query_depth, settings.max_aliases, settings.max_tokens,
                   settings.max_input_length)


@functools.cache
def _schema(depth: int, aliases: int, tokens: int, max_input_length: int) -> strawberry.Schema:
    # The limit rules are built once, so the validation cache (keyed by the rules) hits.
    limits = [
        *QueryDepthLimiter(max_depth=depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=aliases).validation_rules,
    ]
    return PatronSchema(
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
            lambda: InputHygiene(max_input_length),
            ReadYourWrites,
            MaskUnexpectedErrors,
        ],
        # Every argument passes the input-hygiene layer (api/schema/hygiene.py).
        execution_context_class=hygienic_executor(max_input_length),
        config=StrawberryConfig(
            scalar_map={EventPosition: EVENT_POSITION_SCALAR, Long: LONG_SCALAR, **SCALARS}
        ),
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
