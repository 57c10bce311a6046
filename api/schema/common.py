"""Conventions shared by every domain area of the schema.

Mutations take one `input` and return a payload with `userErrors` for expected failures;
list fields are Relay connections with a maximum page size; queries that fail for an
expected reason raise an `ApiError` whose `extensions.code` is stable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, NewType, TypeVar

import strawberry
from graphql import GraphQLError
from starlette.concurrency import run_in_threadpool
from strawberry.relay import GlobalID, to_base64

from api.auth import Principal, principal_from_authorization
from api.consistency import ProjectionLagError
from api.context import RequestContext
from api.schema.input_paths import to_client_message, to_input_path
from api.service import CommandResult
from domain import loyalty_rules
from domain.errors import DomainError, ForbiddenError, ValidationError
from domain.errors import ErrorCode as DomainErrorCode
from domain.metadata import EventMetadata, Role
from domain.segment_rules import SegmentRuleError

# One tier enum on every type that shows a tier (members, orders, cases, loyalty).
Tier = strawberry.enum(loyalty_rules.Tier)

T = TypeVar("T")


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")
    if not -(2**63) <= value < 2**63:
        raise ValueError("out of range for a 64-bit integer")
    return value

ErrorCode = strawberry.enum(DomainErrorCode, name="ErrorCode")

Long = NewType("Long", int)
LONG_SCALAR = strawberry.scalar(
    name="Long",
    serialize=int,
    parse_value=_strict_int,
    description="A 64-bit integer, e.g. an amount in minor units of a currency.",
)

EventPosition = NewType("EventPosition", int)
EVENT_POSITION_SCALAR = strawberry.scalar(
    name="EventPosition",
    serialize=int,
    parse_value=int,
    description="A position in the event store's global order (64-bit integer).",
)


class ApiError(GraphQLError):
    """An expected failure of a query: shown to the client with a stable code."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})

    @classmethod
    def from_domain(cls, error: DomainError) -> ApiError:
        """A query's or subscription's argument at fault, as the client wrote it: the
        domain's `order_id` is the argument `orderId` (api/schema/input_paths.py)."""
        return cls(to_client_message(error.message, error.field), error.code.value,
                   field=to_input_path(error.field) if error.field else None)


@strawberry.type(description="Where in a text input an error is.")
class TextLocation:
    offset: int = strawberry.field(description="0-based, in characters.")
    line: int = strawberry.field(description="1-based.")
    column: int = strawberry.field(description="1-based, in characters.")


@strawberry.type(description="An expected failure of a mutation; nothing was recorded.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault, if any.")
    message: str
    code: DomainErrorCode
    location: TextLocation | None = strawberry.field(
        default=None, description="For text that does not parse (a segment rule): where.")

    @classmethod
    def from_domain(
        cls,
        error: DomainError,
        renames: Mapping[str, str] | None = None,
        convert: Callable[[str], str] | None = None,
    ) -> UserError:
        """The userError a domain error stands for, its field and message in the client's
        names: `renames` is the input type's `domain_paths`, `convert` the schema's name
        converter (see `for_mutation`, and api/schema/input_paths.py for why here)."""
        field = to_input_path(error.field, renames, convert) if error.field else None
        location = None
        if isinstance(error, SegmentRuleError):
            location = TextLocation(offset=error.offset, line=error.line, column=error.column)
        return cls(field=field, message=to_client_message(error.message, error.field, renames,
                                                          convert),
                   code=error.code, location=location)

    @classmethod
    def for_mutation(cls, info: strawberry.Info, error: DomainError) -> UserError:
        """The userError of the mutation being resolved: its field is the path into this
        mutation's `input` as the client wrote it."""
        return cls.from_domain(error, *input_naming(info))


def input_naming(
    info: strawberry.Info,
) -> tuple[Mapping[str, str], Callable[[str], str]]:
    """How the mutation's `input` names what the domain names: the input class's
    `domain_paths` (domain path → the input's Python path, for names that differ) and the
    schema's name converter (snake_case → the GraphQL spelling)."""
    argument = info.get_argument_definition("input")
    renames: Mapping[str, str] = getattr(getattr(argument, "type", None), "domain_paths", {})
    return renames, info.schema.config.name_converter.apply_naming_config


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    total_count: int


def make_connection(
    nodes: list[Any], cursors: list[str], *, has_next: bool, has_previous: bool, total: int
) -> Connection[Any]:
    edges = [Edge(cursor=c, node=n) for c, n in zip(cursors, nodes, strict=True)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
        total_count=total,
    )


def page_size(info: strawberry.Info, first: int | None) -> int:
    settings = context(info).runtime.settings
    if first is None:
        return settings.default_page_size
    if first < 1 or first > settings.max_page_size:
        raise ApiError(
            f"first must be between 1 and {settings.max_page_size}",
            DomainErrorCode.VALIDATION.value,
            field="first",
        )
    return first


def context(info: strawberry.Info) -> RequestContext:
    return info.context["patron"]  # type: ignore[no-any-return]


def decode_id(global_id: strawberry.ID | str, expected_type: str, field: str = "id") -> str:
    """A Relay global id of the expected type, or a typed validation error."""
    try:
        parsed = GlobalID.from_id(str(global_id))
    except Exception:
        raise ValidationError(f"malformed id {global_id!r}", field) from None
    if parsed.type_name != expected_type:
        raise ValidationError(f"id {global_id!r} is not a {expected_type} id", field)
    return parsed.node_id


def encode_id(type_name: str, node_id: str) -> strawberry.ID:
    return strawberry.ID(str(GlobalID(type_name, node_id)))


async def run_mutation(
    info: strawberry.Info,
    command: Callable[[RequestContext], Awaitable[CommandResult]],
) -> tuple[CommandResult | None, list[UserError]]:
    """Run a command; expected failures become userErrors and record nothing."""
    ctx = context(info)
    try:
        result = await command(ctx)
    except DomainError as error:
        return None, [UserError.for_mutation(info, error)]
    return result, []


async def written_row(
    ctx: RequestContext, result: CommandResult,
    fetch: Callable[[], Awaitable[dict[str, Any] | None]], poll_seconds: float = 0.25,
) -> dict[str, Any] | None:
    """The read-model row of the aggregate a command wrote, once it includes that write.

    A command that recorded something has a position to wait for. A retry recorded
    nothing (no position) and answers with the aggregate the first attempt wrote, which
    may still be on its way to the read models (two identical requests sent at once): its
    row is awaited by the version the command saw instead. None if it never appears
    within the read-your-writes timeout.
    """
    try:
        await ctx.runtime.wait_for_read_models(result.position)
    except Exception:
        return None
    if result.position is not None:
        # The read models include this write: the row is as new as it gets. (Its version
        # need not be the aggregate's: a read model skips events it does not show, such
        # as an order's payment request, and waiting for that version would only end at
        # the timeout.)
        return await fetch()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.runtime.settings.read_your_writes_timeout
    while True:
        row = await fetch()
        if row is not None and int(row["version"]) >= result.version:
            return row
        if loop.time() > deadline:
            return row
        await ctx.runtime.changes.wait(poll_seconds)


async def run_command(
    info: strawberry.Info,
    act: Callable[[RequestContext, EventMetadata], CommandResult],
    reason: str | None,
) -> tuple[CommandResult | None, list[UserError]]:
    """A command with the request's metadata (and the reason staff gave), as a mutation
    runs it: expected failures become userErrors and record nothing.

    A missing reason is reported where the client has to write it: an input whose reason
    field has another name says so in its `domain_paths` (a cancellation's is `note`).
    """

    async def command(ctx: RequestContext) -> CommandResult:
        meta = ctx.metadata(reason)
        return await ctx.run_command(lambda: act(ctx, meta))

    return await run_mutation(info, command)


async def settled(info: strawberry.Info, position: int | None) -> bool:
    """Whether the read models include a write at `position` (waiting, bounded).

    A mutation calls this after its command was recorded: if the read models lag, the write
    still happened, so the payload says so (its position, the object as null) instead of
    failing — a failed answer would make the client retry something already done.
    """
    try:
        await context(info).runtime.wait_for_read_models(position)
    except ProjectionLagError:
        return False
    return True


def subscription_principal(info: strawberry.Info) -> Principal:
    """Who subscribes: the socket's handshake header, else the connection_init payload."""
    ctx = context(info)
    principal = ctx.principal
    if principal.role is Role.ANONYMOUS:
        params = info.context.get("connection_params") or {}
        header = params.get("Authorization") or params.get("authorization")
        try:
            principal = principal_from_authorization(header, ctx.runtime.settings.secret_key)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
    if principal.role is Role.ANONYMOUS:
        raise ApiError("subscribe with a bearer token", DomainErrorCode.UNAUTHENTICATED.value)
    return principal


async def followed_id(
    info: strawberry.Info,
    principal: Principal,
    decode: Callable[[], Any],
    load: Callable[[Any], Any],
    what: str,
    field: str,
) -> str:
    """The id of what a subscription follows, if `principal` may: its member, staff or
    auditors. Read from the event store, not a read model: a just-created one is there.

    `field` is the argument's domain name (`order_id`): whatever fails here is about it,
    and the error names it as the client wrote it (`orderId`)."""
    try:
        resource_id = decode()
        resource = await run_in_threadpool(load, resource_id)
        if not principal.can_read_member(resource.member_id):
            raise ForbiddenError(f"you may only follow your own {what}", field)
    except DomainError as error:
        error.field = error.field or field
        raise ApiError.from_domain(error) from None
    return str(resource_id)


def readable(principal: Principal, rows: dict[str, dict[str, Any]],
             ids: list[str]) -> list[dict[str, Any] | None]:
    """Rows for `node(id)`, in the order asked: None for one missing or not the asker's."""
    return [rows[i] if i in rows and principal.can_read_member(rows[i]["member_id"]) else None
            for i in ids]


def history_id(type_name: str, key: str) -> strawberry.ID:
    """The id `history` and `asOf` take for an aggregate that is no Relay node (a loyalty
    account, a recommender model): its type and key, encoded as a global id is."""
    return strawberry.ID(to_base64(type_name, key))
