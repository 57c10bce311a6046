"""The GraphQL schema: one module per domain area, merged here."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import strawberry
from strawberry.extensions import (
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types.graphql import OperationType

from api.config import Settings
from api.consistency import reading_with
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
from api.schema.errors import MaskUnexpectedErrors, PatronSchema
from api.schema.experiments import ExperimentMutations, ExperimentQueries
from api.schema.hygiene import SCALARS, InputHygiene, hygienic_executor
from api.schema.limits import Limits, QueryLimits, ValidationAfterLimits
from api.schema.loyalty import LoyaltyMutations, LoyaltyQueries, LoyaltySubscriptions
from api.schema.members import MemberMutations, MemberQueries
from api.schema.node import NodeQueries
from api.schema.orders import OrderMutations, OrderQueries
from api.schema.profiles import ProfileQueries
from api.schema.recommendations import RecommenderMutations, RecommenderQueries
from api.schema.segments import SegmentMutations, SegmentQueries
from api.schema.shipments import ShipmentMutations, ShipmentQueries, ShipmentSubscriptions

log = logging.getLogger("patron.api")


def _query_type() -> type:
    """A fresh Query per schema: strawberry binds a type's fields to one schema only."""
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


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    if settings is None:
        return _schema(Limits(12, 30, 50_000, 20, 100), 2000, Settings.max_input_length)
    limits = Limits(settings.max_query_depth, settings.max_aliases, settings.max_query_cost,
                    settings.default_page_size, settings.max_page_size)
    return _schema(limits, settings.max_tokens, settings.max_input_length)


@functools.cache
def _schema(limits: Limits, tokens: int, max_input_length: int) -> strawberry.Schema:
    return PatronSchema(
        query=_query_type(),
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            # Parsing and validating a document costs more than executing it; frontends send
            # the same few documents over and over, so both are cached.
            lambda: ParserCache(maxsize=512),
            # The token limit is the parser's: a long document is refused while parsing.
            lambda: MaxTokensLimiter(max_token_count=tokens),
            # Depth, aliases and cost in linear time, before graphql-core's rules.
            lambda: QueryLimits(limits),
            lambda: ValidationAfterLimits(maxsize=512),
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
