"""Segments: admins define them as rules over member profiles; membership is live.

Rules are written in the segment rule language (domain/segment_rules.py); a rule that does
not parse comes back as a VALIDATION userError on `rule` with its `location` (offset, line,
column). Membership, sizes and history are read from the "member_behaviour" projection,
which decides them as events arrive (projections/segment_membership.py).

Staff and auditors read segments; only admins define, change or archive them, with a
reason. A member may see the segments they are in, and why, through `me { segments }`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.scalars import JSON

from api import segment_readmodels as readmodels
from api.readmodels import InvalidCursorError
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    UserError,
    context,
    decode_id,
    make_connection,
    page_size,
    run_command,
    settled,
)
from api.service import CommandResult
from domain.errors import DomainError, ErrorCode, ValidationError
from domain.metadata import Role
from domain.segments import SegmentState

if TYPE_CHECKING:
    from api.schema.members import MemberNode

NODE = "Segment"
READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)

SegmentStateEnum = strawberry.enum(SegmentState, name="SegmentState")


@strawberry.type(description="One condition of a segment's rule as it counted for a member.")
class SegmentReason:
    condition: str = strawberry.field(description="The condition, in canonical rule text.")
    fact: str = strawberry.field(description="The profile fact it reads.")
    value: JSON | None = strawberry.field(description="The fact's value; null if missing.")
    held: bool
    negated: bool = strawberry.field(description="The condition is under a `not`.")

    @classmethod
    def of(cls, item: dict[str, Any]) -> SegmentReason:
        return cls(condition=item["condition"], fact=item["fact"], value=item.get("value"),
                   held=bool(item["held"]), negated=bool(item.get("negated", False)))


def _reasons(why: list[dict[str, Any]] | None) -> list[SegmentReason]:
    return [SegmentReason.of(item) for item in why or []]


@strawberry.type(description="A member of a segment now.")
class SegmentMember:
    member_id: str = strawberry.field(description="The member's UUID.")
    row: strawberry.Private[dict[str, Any]]
    joined_at: dt.datetime
    evaluated_at: dt.datetime = strawberry.field(
        description="When `why` was last recorded; later evaluations found it unchanged.")
    why: list[SegmentReason] = strawberry.field(
        description="The conditions that made the rule hold, with the facts.")

    @strawberry.field(description="The member (personal fields masked as for any query).")
    async def member(self, info: strawberry.Info
                     ) -> Annotated[MemberNode, strawberry.lazy("api.schema.members")] | None:
        from api.schema.members import MemberNode

        nodes = await MemberNode.resolve_nodes(info=info, node_ids=[str(self.row["member_id"])])
        return nodes[0]

    @classmethod
    def of(cls, row: dict[str, Any]) -> SegmentMember:
        return cls(member_id=row["member_id"], row=row,
                   joined_at=row["joined_at"], evaluated_at=row["evaluated_at"],
                   why=_reasons(row["why"]))


@strawberry.type(description="A member joining or leaving a segment.")
class SegmentMembershipChange:
    member_id: str = strawberry.field(description="The member's UUID.")
    change: str = strawberry.field(description="'joined' or 'left'.")
    at: dt.datetime
    position: str = strawberry.field(
        description="Event-store position of the event (or review) that caused it.")


@strawberry.type(description="A segment's size at the end of a UTC day.")
class SegmentSizeDay:
    day: dt.date
    size: int
    joins: int
    leaves: int


@strawberry.type(name="Segment", description="Members whose profile satisfies a rule, live.")
class SegmentNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Any, required: bool = False
    ) -> list[SegmentNode | None]:
        ctx = context(info)
        ids = [str(i) for i in node_ids]
        if ctx.principal.role not in READERS:
            return [None for _ in ids]
        rows = await readmodels.get_segments(ctx.runtime.async_engine, ids)
        return [cls.of(rows[i]) if i in rows else None for i in ids]

    @classmethod
    def of(cls, row: dict[str, Any]) -> SegmentNode:
        return cls(key=row["segment_id"], row=row)

    @strawberry.field
    def segment_id(self) -> str:
        return self.key

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field
    def description(self) -> str | None:
        return self.row["description"]

    @strawberry.field(description="The rule in canonical form (see the rule language).")
    def rule(self) -> str:
        return str(self.row["rule"])

    @strawberry.field
    def state(self) -> SegmentStateEnum:  # type: ignore[valid-type]
        return SegmentState(self.row["state"])

    @strawberry.field
    def defined_at(self) -> dt.datetime:
        return self.row["defined_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def updated_at(self) -> dt.datetime:
        return self.row["updated_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def archived_at(self) -> dt.datetime | None:
        return self.row["archived_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="Members now.")
    def size(self) -> int:
        return int(self.row["size"])

    @strawberry.field(description="The latest evaluation of every member (definition, rule "
                                  "change or periodic review).")
    def evaluated_at(self) -> dt.datetime | None:
        return self.row["evaluated_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="Current members in the order they joined: staff and "
                                  "auditors.")
    async def members(self, info: strawberry.Info, first: int | None = None,
                      after: str | None = None) -> Connection[SegmentMember]:
        ctx = context(info)
        _require_reader(ctx.principal)
        size = page_size(info, first)
        try:
            page = await readmodels.segment_members_page(ctx.runtime.async_engine, self.key,
                                                         size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection([SegmentMember.of(r) for r in page.rows],
                               [readmodels.member_cursor(r) for r in page.rows],
                               has_next=page.has_next, has_previous=after is not None,
                               total=page.total)

    @strawberry.field(description="Joins and leaves, newest first: staff and auditors.")
    async def changes(self, info: strawberry.Info, member_id: strawberry.ID | None = None,
                      first: int | None = None, after: str | None = None
                      ) -> Connection[SegmentMembershipChange]:
        ctx = context(info)
        _require_reader(ctx.principal)
        size = page_size(info, first)
        try:
            member = decode_id(member_id, "Member", "member_id") if member_id else None
            page = await readmodels.membership_changes_page(
                ctx.runtime.async_engine, self.key, member, size, after)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection(
            [SegmentMembershipChange(member_id=r["member_id"],
                                     change=r["change"], at=r["at"],
                                     position=str(r["position"]))
             for r in page.rows],
            [readmodels.change_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=after is not None, total=page.total)

    @strawberry.field(description="Size at the end of every UTC day from..to (inclusive, at "
                                  "most 366): staff and auditors.")
    async def sizes(self, info: strawberry.Info,
                    from_: Annotated[dt.date, strawberry.argument(name="from")],
                    to: dt.date) -> list[SegmentSizeDay]:
        ctx = context(info)
        _require_reader(ctx.principal)
        series = await size_series(info, [self.key], from_, to)
        return series[self.key]


def _require_reader(principal: Any) -> None:
    try:
        principal.require_role(*READERS)
    except DomainError as error:
        raise ApiError.from_domain(error) from None


async def size_series(info: strawberry.Info, segment_ids: list[str], start: dt.date,
                      end: dt.date) -> dict[str, list[SegmentSizeDay]]:
    """Daily sizes per segment; a range that is backwards or too long is a typed error."""
    if end < start:
        raise ApiError("to must not be before from", ErrorCode.VALIDATION.value, field="to")
    if (end - start).days + 1 > readmodels.MAX_SIZE_DAYS:
        raise ApiError(f"at most {readmodels.MAX_SIZE_DAYS} days at a time",
                       ErrorCode.VALIDATION.value, field="to")
    sizes = await readmodels.segment_sizes(context(info).runtime.async_engine, segment_ids,
                                           start, end)
    return {segment_id: [SegmentSizeDay(day=d.day, size=d.size, joins=d.joins,
                                        leaves=d.leaves) for d in days]
            for segment_id, days in sizes.items()}


@strawberry.type(description="A segment the member is in, since when and why.")
class MemberSegment:
    segment: SegmentNode
    joined_at: dt.datetime
    evaluated_at: dt.datetime
    why: list[SegmentReason]


async def member_segments_view(info: strawberry.Info, member_id: str) -> list[MemberSegment]:
    """`Member.segments`: the member themself, staff and auditors."""
    ctx = context(info)
    if not ctx.principal.can_read_member(member_id):
        raise ApiError("you may only read your own segments", ErrorCode.FORBIDDEN.value)
    rows = await readmodels.member_segments(ctx.runtime.async_engine, member_id)
    segments = await readmodels.get_segments(ctx.runtime.async_engine,
                                             [r["segment_id"] for r in rows])
    return [MemberSegment(segment=SegmentNode.of(segments[r["segment_id"]]),
                          joined_at=r["joined_at"], evaluated_at=r["evaluated_at"],
                          why=_reasons(r["why"]))
            for r in rows if r["segment_id"] in segments]


# -- mutations ------------------------------------------------------------------------------


@strawberry.input
class DefineSegmentInput:
    name: str
    rule: str = strawberry.field(description="In the segment rule language, e.g. "
                                             "'tier in [Gold, Platinum] and last purchase "
                                             "within 30 days'.")
    idempotency_key: str = strawberry.field(
        description="A retry with the same key and input returns the same segment.")
    reason: str = strawberry.field(description="For the audit trail (required).")
    description: str | None = None


@strawberry.input
class UpdateSegmentInput:
    segment_id: strawberry.ID
    reason: str = strawberry.field(description="For the audit trail (required).")
    name: str | None = strawberry.field(default=None, description="Null keeps the name.")
    description: str | None = strawberry.field(
        default=None, description="Null keeps it; an empty string removes it.")
    rule: str | None = strawberry.field(
        default=None, description="Null keeps the rule; a new rule re-decides membership.")


@strawberry.input
class ArchiveSegmentInput:
    segment_id: strawberry.ID
    reason: str


@strawberry.type
class SegmentPayload:
    segment: SegmentNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; null when nothing was recorded.")
    user_errors: list[UserError]


@strawberry.type
class DefineSegmentPayload(SegmentPayload):
    pass


@strawberry.type
class UpdateSegmentPayload(SegmentPayload):
    pass


@strawberry.type
class ArchiveSegmentPayload(SegmentPayload):
    pass


def decode_segment_id(global_id: strawberry.ID, field: str = "segment_id") -> uuid.UUID:
    node_id = decode_id(global_id, NODE, field)
    try:
        return uuid.UUID(node_id)
    except ValueError:
        raise ValidationError(f"malformed id {global_id!r}", field) from None


async def _payload(info: strawberry.Info, payload: type[SegmentPayload],
                   result: CommandResult | None, errors: list[UserError]) -> Any:
    """The segment as the read model shows it once it includes this write."""
    if result is None:
        return payload(segment=None, position=None, user_errors=errors)
    runtime = context(info).runtime
    row = None
    if await settled(info, result.position):
        rows = await readmodels.get_segments(runtime.async_engine, [str(result.aggregate_id)])
        row = rows.get(str(result.aggregate_id))
    return payload(segment=SegmentNode.of(row) if row else None, position=result.position,
                   user_errors=[])


@strawberry.type
class SegmentMutations:
    @strawberry.mutation(description="Define a segment (admins, with a reason). Membership is "
                                     "decided for every member at once, then kept live.")
    async def define_segment(self, info: strawberry.Info,
                             input: DefineSegmentInput) -> DefineSegmentPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.segments.define(
                input.name, input.description, input.rule, input.idempotency_key, meta),
            input.reason)
        return await _payload(info, DefineSegmentPayload, result, errors)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Rename, redescribe or change the rule of a segment "
                                     "(admins, with a reason); nothing changes, nothing is "
                                     "recorded.")
    async def update_segment(self, info: strawberry.Info,
                             input: UpdateSegmentInput) -> UpdateSegmentPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.segments.update(
                decode_segment_id(input.segment_id), input.name, input.description,
                input.rule, meta),
            input.reason)
        return await _payload(info, UpdateSegmentPayload, result, errors)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Archive a segment (admins, with a reason): every member "
                                     "leaves it, and it can no longer change.")
    async def archive_segment(self, info: strawberry.Info,
                              input: ArchiveSegmentInput) -> ArchiveSegmentPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.segments.archive(
                decode_segment_id(input.segment_id), meta),
            input.reason)
        return await _payload(info, ArchiveSegmentPayload, result, errors)  # type: ignore[no-any-return]


# -- queries --------------------------------------------------------------------------------


@strawberry.type
class SegmentQueries:
    @strawberry.field(description="A segment: staff and auditors.")
    async def segment(self, info: strawberry.Info, id: strawberry.ID) -> SegmentNode | None:
        ctx = context(info)
        try:
            segment_id = str(decode_segment_id(id, "id"))
            ctx.principal.require_role(*READERS)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        row = (await readmodels.get_segments(ctx.runtime.async_engine, [segment_id])
               ).get(segment_id)
        return SegmentNode.of(row) if row else None

    @strawberry.field(description="Segments by name: staff and auditors.")
    async def segments(self, info: strawberry.Info,
                       state: SegmentStateEnum | None = None,  # type: ignore[valid-type]
                       first: int | None = None, after: str | None = None
                       ) -> Connection[SegmentNode]:
        ctx = context(info)
        _require_reader(ctx.principal)
        size = page_size(info, first)
        try:
            page = await readmodels.list_segments(
                ctx.runtime.async_engine, state.value if state else None, size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection([SegmentNode.of(r) for r in page.rows],
                               [readmodels.segment_cursor(r) for r in page.rows],
                               has_next=page.has_next, has_previous=after is not None,
                               total=page.total)
