"""Behaviour tracking, session links and product reviews.

`trackBehaviour` takes a list of events (one, or up to 500 for frontends that buffer), from
a signed-in member or an anonymous session; `linkSession` ties an anonymous session to the
member who signed in during it; `reviewProduct` reviews a delivered line the member bought.

Tracking does not move the caller's read-your-writes position: behaviour reaches read
models only through aggregate projections, and making every later query of the caller (for
anonymous callers: of *every* anonymous caller) wait for them would tax browsing for data
nobody reads back at once. The payload still reports the position, for a client that wants
to wait for it explicitly (X-Patron-Min-Position).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.utils.str_converters import to_camel_case

from api.behaviour import LinkResult, ReviewResult, TrackResult
from api.context import RequestContext
from api.schema.common import (
    EventPosition,
    Long,
    UserError,
    encode_id,
    run_mutation,
)
from api.schema.orders import decode_uuid
from api.service import CommandResult
from domain import behaviour as model
from domain.errors import ForbiddenError
from domain.metadata import Role

BehaviourKind = strawberry.enum(model.BehaviourKind, description="What a shopper did.")
ShareChannel = strawberry.enum(model.ShareChannel, description="Where a product was shared.")


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input(description="One thing a shopper did. Which fields apply depends on the "
                              "kind; a missing required one is a userError naming "
                              "`events.<index>.<field>`.")
class BehaviourEventInput:
    kind: BehaviourKind
    occurred_at: dt.datetime | None = strawberry.field(
        default=None,
        description="When it happened, with a time zone: at most 7 days ago (frontends "
                    "buffer), never in the future. Defaults to when the batch arrives.",
    )
    product_id: str | None = strawberry.field(
        default=None, description="Required for every kind but SEARCHED.")
    category: str | None = None
    brand: str | None = None
    price: Long | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="The price shown, in minor units of the shop's currency.")
    dwell_seconds: int | None = strawberry.field(
        default=None, description="PRODUCT_VIEWED: how long the product was looked at.")
    keywords: str | None = strawberry.field(
        default=None, description="SEARCHED (required): what was searched for. Personal "
                                  "data: stored encrypted for members.")
    result_count: int | None = strawberry.field(
        default=None, description="SEARCHED: how many results the search showed.")
    share_channel: ShareChannel | None = strawberry.field(
        default=None, description="SHARED: where to (default OTHER).")


def _event_from_input(cls: type, value: Mapping[str, Any], _context: Any) -> Any:
    """Build a BehaviourEventInput straight from the value graphql-core has coerced.

    Strawberry's generic conversion resolves every field's type again for every object;
    for a batch of 500 events that was most of a request's time (about 14 ms of 19 ms per
    100 events, against 2.5 ms for recording them). Every field here is a leaf (scalar or
    enum) that graphql-core has already parsed (enums to their members, DateTime and Long
    to Python values, omitted fields to their published null default), so there is
    nothing left to convert: only the names change. `from_input` is Strawberry's hook for
    exactly this (see StrawberryObjectDefinition.from_input).
    """
    return cls(**{python: value.get(graphql) for python, graphql in _EVENT_FIELDS})


_EVENT_DEFINITION = BehaviourEventInput.__strawberry_definition__  # type: ignore[attr-defined]
_EVENT_FIELDS = tuple((field.python_name, field.graphql_name or to_camel_case(field.python_name))
                      for field in _EVENT_DEFINITION.fields)
_EVENT_DEFINITION.from_input = _event_from_input


@strawberry.input
class TrackBehaviourInput:
    events: list[BehaviourEventInput] = strawberry.field(
        description="1 to 500 events, recorded together or not at all.")
    session_id: str | None = strawberry.field(
        default=None,
        description="The browser or app session (8-100 letters, digits or . _ : -): "
                    "required when not signed in, so the session can be linked to the "
                    "member who signs in during it.",
    )
    batch_key: str = strawberry.field(
        description="Unique per batch of this member or session: a resent batch with the "
                    "same key and events is recorded once.")


@strawberry.input
class LinkSessionInput:
    session_id: str = strawberry.field(
        description="The session the signed-in member browsed in before signing in.")


@strawberry.input
class ReviewProductInput:
    order_id: strawberry.ID
    line_id: str
    stars: int = strawberry.field(description="1 to 5.")
    text: str | None = strawberry.field(
        default=None, description="Optional, up to 5000 characters; a review with text "
                                  "earns the line's review points, once.")


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class TrackBehaviourPayload:
    accepted: int | None = strawberry.field(description="Events recorded by the batch.")
    attributed: bool | None = strawberry.field(
        description="True when the batch is attached to the signed-in member (they consent "
                    "to personalisation); false when it counts in aggregate statistics only.")
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class LinkSessionPayload:
    linked: bool | None = strawberry.field(
        description="False when the member does not consent to personalisation: the "
                    "session then stays anonymous and nothing is recorded.")
    session_id: str | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type(description="A member's review of a line they bought.")
class ProductReview:
    review_id: str
    order_id: strawberry.ID
    line_id: str
    product_id: str | None
    stars: int
    text: str | None
    version: int

    @classmethod
    def of(cls, result: ReviewResult) -> ProductReview:
        return cls(review_id=str(result.aggregate_id), order_id=encode_id("Order", result.order_id),
                   line_id=result.line_id, product_id=result.product_id, stars=result.stars,
                   text=result.text, version=result.version)


@strawberry.type
class ReviewProductPayload:
    review: ProductReview | None
    points_awarded: Long | None = strawberry.field(  # type: ignore[valid-type]
        description="Review points this request credited: the first version with text of a "
                    "line's review earns them; revisions and retries earn 0.")
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


# -- operations -----------------------------------------------------------------------------


def _event(item: BehaviourEventInput) -> dict[str, Any]:
    return {
        "kind": item.kind.value,
        "occurred_at": item.occurred_at,
        "product_id": item.product_id,
        "category": item.category,
        "brand": item.brand,
        "price": item.price,
        "dwell_seconds": item.dwell_seconds,
        "keywords": item.keywords,
        "result_count": item.result_count,
        "share_channel": item.share_channel.value if item.share_channel else None,
    }


def _tracked_member(ctx: RequestContext) -> uuid.UUID | None:
    """Shoppers are tracked: a member as themself, anyone else by session. Staff and
    auditors browse the shop on the job; their clicks would skew what shoppers like."""
    if ctx.principal.role is Role.MEMBER:
        return uuid.UUID(ctx.principal.subject)
    if ctx.principal.role is Role.ANONYMOUS:
        return None
    raise ForbiddenError("behaviour is tracked for shoppers only: members and anonymous "
                         "sessions")


@strawberry.type
class BehaviourMutations:
    @strawberry.mutation(description="Record what a shopper did: one event, or a buffered "
                                      "batch of up to 500. Members and anonymous sessions.")
    async def track_behaviour(
        self, info: strawberry.Info, input: TrackBehaviourInput
    ) -> TrackBehaviourPayload:
        items = [_event(item) for item in input.events]

        async def command(ctx: RequestContext) -> CommandResult:
            member_id = _tracked_member(ctx)
            meta = ctx.metadata()
            # Deliberately not ctx.run_command: see the module docstring.
            return await run_in_threadpool(lambda: ctx.runtime.behaviour.track(
                member_id, input.session_id, items, input.batch_key, meta))

        result, errors = await run_mutation(info, command)
        if result is None:
            return TrackBehaviourPayload(accepted=None, attributed=None, position=None,
                                         user_errors=errors)
        assert isinstance(result, TrackResult)
        return TrackBehaviourPayload(accepted=result.accepted, attributed=result.attributed,
                                     position=result.position, user_errors=[])

    @strawberry.mutation(description="The signed-in member claims the anonymous session they "
                                      "browsed in: once, and only for one member.")
    async def link_session(
        self, info: strawberry.Info, input: LinkSessionInput
    ) -> LinkSessionPayload:
        async def command(ctx: RequestContext) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER)
            member_id = uuid.UUID(ctx.principal.subject)
            meta = ctx.metadata()
            return await ctx.run_command(lambda: ctx.runtime.behaviour.link_session(
                input.session_id, member_id, meta))

        result, errors = await run_mutation(info, command)
        if result is None:
            return LinkSessionPayload(linked=None, session_id=None, position=None,
                                      user_errors=errors)
        assert isinstance(result, LinkResult)
        return LinkSessionPayload(linked=result.linked, session_id=input.session_id,
                                  position=result.position, user_errors=[])

    @strawberry.mutation(description="The signed-in member reviews a delivered line they "
                                      "bought; reviewing it again revises the review.")
    async def review_product(
        self, info: strawberry.Info, input: ReviewProductInput
    ) -> ReviewProductPayload:
        async def command(ctx: RequestContext) -> CommandResult:
            ctx.principal.require_role(Role.MEMBER)
            member_id = uuid.UUID(ctx.principal.subject)
            order_id = decode_uuid(input.order_id, "Order", "order_id")
            meta = ctx.metadata()
            return await ctx.run_command(lambda: ctx.runtime.behaviour.review_product(
                member_id, order_id, input.line_id, input.stars, input.text, meta))

        result, errors = await run_mutation(info, command)
        if result is None:
            return ReviewProductPayload(review=None, points_awarded=None, position=None,
                                        user_errors=errors)
        assert isinstance(result, ReviewResult)
        return ReviewProductPayload(review=ProductReview.of(result),
                                    points_awarded=result.points_awarded,
                                    position=result.position, user_errors=[])


__all__ = ["BehaviourMutations"]
