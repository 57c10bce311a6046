"""Audit: any aggregate's full event history with metadata, and its state as of any point.

These are the only queries that read the event store instead of read models: auditors
must see what was recorded, not what a projection made of it. `history` and `asOf` take
the global id of any object that is an aggregate (a member, an order, a shipment, a case, a
coupon, a reward, a segment, a campaign, a product, an experiment), a loyalty account's or a
recommender model's `historyId`; `memberHistory` and `memberAsOf` remain for members.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import strawberry
from eventsourcing.application import AggregateNotFoundError
from starlette.concurrency import run_in_threadpool
from strawberry.relay import GlobalID
from strawberry.scalars import JSON

from api.personal_data import LOST_MARK, lost_personal_part
from api.readmodels import decode_cursor, encode_cursor
from api.schema.common import ApiError, Connection, context, make_connection, page_size
from api.schema.members import MemberNode, decode_member_id
from domain.catalogue import product_aggregate_id
from domain.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from domain.loyalty import account_id_for
from domain.loyalty_rules import Tier
from domain.member import Member, is_profile_complete
from domain.metadata import Role
from domain.recommender import REGISTRY_ID

AUDIT_ROLES = (Role.AUDITOR, Role.ADMIN)


@strawberry.type(description="One recorded event, exactly as stored, with who/why/where.")
class AuditEvent:
    aggregate_id: str
    version: int
    type: str
    timestamp: dt.datetime
    actor_id: str | None
    actor_role: str | None
    channel: str | None
    correlation_id: str | None
    causation_id: str | None
    request_id: str | None
    reason: str | None
    personal_data: str = strawberry.field(
        description="'visible', 'masked' (viewer may not see it), 'erased' (the member's "
        "key is destroyed), 'tampered' (the stored bytes were changed) or 'none'."
    )
    data: JSON


def _event_type(event: Any) -> str:
    return type(event).__qualname__


def audit_event(event: Any, show_personal: bool) -> AuditEvent:
    state = dict(vars(event))
    meta = state.pop("meta", {}) or {}
    for key in ("originator_id", "originator_version", "timestamp", "originator_topic",
                LOST_MARK):
        state.pop(key, None)
    personal_state = "none"
    if "personal" in state:
        if state["personal"] is None:
            personal_state = lost_personal_part(event) or "none"
        elif show_personal:
            personal_state = "visible"
        else:
            personal_state = "masked"
            state["personal"] = {key: "***" for key in state["personal"]}
    return AuditEvent(
        aggregate_id=str(event.originator_id),
        version=event.originator_version,
        type=_event_type(event),
        timestamp=event.timestamp,
        actor_id=meta.get("actor_id"),
        actor_role=meta.get("actor_role"),
        channel=meta.get("channel"),
        correlation_id=meta.get("correlation_id"),
        causation_id=meta.get("causation_id"),
        request_id=meta.get("request_id"),
        reason=meta.get("reason"),
        personal_data=personal_state,
        data=_jsonable(state),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def profile_row_from_member(member: Member, tier: str) -> dict[str, Any]:
    """The aggregate's state in the read model's shape, so one GraphQL type shows both."""
    personal = member.personal or {}
    row: dict[str, Any] = {
        "member_id": str(member.id),
        "version": member.version,
        "name": personal.get("name"),
        "email": personal.get("email"),
        "phone": personal.get("phone"),
        "birthday": personal.get("birthday"),
        "default_address": personal.get("default_address"),
        **{key: member.profile.get(key) for key in (
            "gender", "education", "income_band", "region", "preferred_channel", "language",
        )},
        # Personal since they moved out of `profile` (older events hold them there).
        **{key: personal.get(key, member.profile.get(key)) if not member.erased else None
           for key in ("occupation", "city")},
        "preferences": member.preferences,
        "consents": member.consents,
        "status": member.status,
        "status_reason": member.status_reason,
        "tier": tier,
        "erased": member.erased,
        "erased_at": member.modified_on if member.erased else None,
        "registration_channel": member.registration_channel,
        "channel_activity": {},
        "registered_at": member.created_on,
        "updated_at": member.modified_on,
    }
    row["profile_complete"] = is_profile_complete(row)
    return row


def _require_auditor(info: strawberry.Info) -> None:
    try:
        context(info).principal.require_role(*AUDIT_ROLES)
    except DomainError as error:
        raise ApiError.from_domain(error) from None


def _member_uuid(id: strawberry.ID) -> uuid.UUID:
    try:
        return uuid.UUID(decode_member_id(id))
    except DomainError as error:
        raise ApiError.from_domain(error) from None


@strawberry.type(description="An aggregate as it was at one version, as recorded.")
class AggregateState:
    id: strawberry.ID
    type: str = strawberry.field(description="The aggregate's type, e.g. Order.")
    version: int
    at: dt.datetime = strawberry.field(description="When that version was recorded.")
    personal_data: str = strawberry.field(
        description="'visible', 'masked' (viewer may not see it), or 'none'.")
    data: JSON = strawberry.field(
        description="The aggregate's state: what its events made of it, field by field.")


@strawberry.type
class AuditQueries:
    @strawberry.field(description="Auditors and admins: every event of an aggregate (any "
                      "object's global id, a loyalty account's or a recommender model's "
                      "historyId), in order.")
    async def history(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEvent]:
        _require_auditor(info)
        ctx = context(info)
        target = audit_target(id)
        size = page_size(info, first)
        after_version = _version_cursor(after)

        def read() -> tuple[list[Any], bool, int]:
            picked: list[Any] = []
            seen = after_version
            while True:
                batch = list(ctx.runtime.app.events.get(target.aggregate_id, gt=seen,
                                                        limit=max(size + 1, 100)))
                picked.extend(e for e in batch if target.concerns(e))
                if len(picked) > size or len(batch) < max(size + 1, 100):
                    break
                seen = batch[-1].originator_version
            total = (_latest_version(ctx, target.aggregate_id) if target.model_version is None
                     else sum(1 for e in ctx.runtime.app.events.get(target.aggregate_id)
                              if target.concerns(e)))
            return picked[:size], len(picked) > size, total

        events, has_next, total = await run_in_threadpool(read)
        if total == 0:
            raise ApiError(f"nothing was recorded for {id}", ErrorCode.NOT_FOUND.value,
                           field="id")
        owner = str(target.aggregate_id) if target.type_name == "Member" else None
        return make_connection(
            [audit_event(e, _shows_personal(ctx, e, owner)) for e in events],
            [encode_cursor(e.originator_version) for e in events],
            has_next=has_next, has_previous=after_version > 0, total=total,
        )

    @strawberry.field(description="Auditors and admins: any aggregate as it was at a version "
                      "or a moment, as recorded (the state its events made).")
    async def as_of(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        version: int | None = None,
        at: dt.datetime | None = None,
    ) -> AggregateState | None:
        _require_auditor(info)
        ctx = context(info)
        target = audit_target(id)
        _check_point(version, at)

        def get(aggregate_id: uuid.UUID, wanted: int | None) -> Any:
            try:
                return ctx.runtime.app.repository.get(aggregate_id, version=wanted)
            except AggregateNotFoundError:
                raise NotFoundError(f"nothing was recorded for {id}", "id") from None

        def load() -> Any:
            return _recorded_at(ctx, target.aggregate_id, str(id), version, at, get)

        try:
            aggregate = await run_in_threadpool(load)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        state = {k: v for k, v in vars(aggregate).items()
                 if not k.startswith("_") and k not in ("pending_events",)}
        personal_state = "none"
        if state.get("personal") is not None:
            owner = state.get("member_id") or (
                str(aggregate.id) if target.type_name == "Member" else None)
            if ctx.principal.sees_personal_data or (
                    owner is not None and ctx.principal.can_see_personal_data(str(owner))):
                personal_state = "visible"
            else:
                personal_state = "masked"
                state["personal"] = {key: "***" for key in state["personal"]}
        return AggregateState(
            id=id, type=type(aggregate).__qualname__, version=aggregate.version,
            at=aggregate.modified_on, personal_data=personal_state, data=_jsonable(state),
        )

    @strawberry.field(description="Auditors and admins: every event of a member, in order.")
    async def member_history(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEvent]:
        _require_auditor(info)
        ctx = context(info)
        member_id = _member_uuid(id)
        size = page_size(info, first)
        after_version = _version_cursor(after)

        def read() -> tuple[list[Any], bool]:
            events = list(
                ctx.runtime.app.events.get(member_id, gt=after_version, limit=size + 1)
            )
            return events[:size], len(events) > size

        events, has_next = await run_in_threadpool(read)
        if not events and after_version == 0:
            raise ApiError(f"member {id} not found", ErrorCode.NOT_FOUND.value, field="id")
        show = ctx.principal.can_see_personal_data(str(member_id))
        return make_connection(
            [audit_event(e, show) for e in events],
            [encode_cursor(e.originator_version) for e in events],
            has_next=has_next,
            has_previous=after_version > 0,
            total=await run_in_threadpool(_latest_version, ctx, member_id),
        )

    @strawberry.field(
        description="Auditors and admins: the member as it was at a version or a moment."
    )
    async def member_as_of(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        version: int | None = None,
        at: dt.datetime | None = None,
    ) -> MemberNode | None:
        # Nullable, so that one failing alias (a version or moment the member did not
        # have) answers null with its error while the other aliases still answer.
        _require_auditor(info)
        ctx = context(info)
        member_id = _member_uuid(id)
        _check_point(version, at)

        def load() -> tuple[Member, str]:
            member = _recorded_at(
                ctx, member_id, f"member {id}", version, at,
                lambda aggregate_id, wanted: ctx.runtime.members.get(aggregate_id,
                                                                     version=wanted))
            return member, _tier_at(ctx, member_id, at or member.modified_on)

        try:
            member, tier = await run_in_threadpool(load)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        row = profile_row_from_member(member, tier)
        tags = [
            {"tag": t, "reason": v["reason"], "tagged_by": v["by"],
             "tagged_at": dt.datetime.fromisoformat(v["at"])}
            for t, v in sorted(member.tags.items())
        ]
        return MemberNode.from_row(row, tags)


def _version_cursor(after: str | None) -> int:
    """The version an `after` cursor of a history page points at (0: from the start)."""
    if not after:
        return 0
    try:
        (after_version,) = decode_cursor(after, 1)
        return int(after_version)
    except (ValueError, TypeError):
        raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None


def _check_point(version: int | None, at: dt.datetime | None) -> None:
    """An as-of query names exactly one point: a version, or a moment with its zone."""
    if (version is None) == (at is None):
        raise ApiError("give exactly one of version or at", ErrorCode.VALIDATION.value)
    if at is not None and at.tzinfo is None:
        raise ApiError("at must include a time zone", ErrorCode.VALIDATION.value, field="at")


def _recorded_at(
    ctx: Any, aggregate_id: uuid.UUID, what: str, version: int | None, at: dt.datetime | None,
    get: Callable[[uuid.UUID, int | None], Any],
) -> Any:
    """The aggregate as `get` loads it at `version`, or at its last event up to `at`;
    NOT_FOUND naming the argument when it had no such point."""
    wanted = version
    if at is not None:
        wanted = _version_at(ctx, aggregate_id, at)
        if wanted == 0:
            raise NotFoundError(f"{what} did not exist at {at.isoformat()}", "at")
    if wanted is not None and wanted < 1:
        raise ValidationError("version must be at least 1", "version")
    aggregate = get(aggregate_id, wanted)
    if wanted is not None and aggregate.version != wanted:
        raise NotFoundError(f"{what} has no version {wanted}", "version")
    return aggregate


def _version_at(ctx: Any, aggregate_id: uuid.UUID, at: dt.datetime) -> int:
    """The aggregate's version at a moment: the last event recorded at or before it."""
    wanted = 0
    for event in ctx.runtime.app.events.get(aggregate_id):
        if event.timestamp > at:
            break
        wanted = event.originator_version
    return wanted


def _tier_at(ctx: Any, member_id: uuid.UUID, at: dt.datetime) -> str:
    """The tier lives on the loyalty account: read it as it was at the same moment."""
    account_id = account_id_for(str(member_id))
    version = _version_at(ctx, account_id, at)
    if version == 0:
        return Tier.REGULAR.value
    account = ctx.runtime.app.repository.get(account_id, version=version)
    return str(account.tier)


# GraphQL type → the aggregate its global id names (every other node type is no aggregate).
_BY_UUID = ("Member", "Order", "Shipment", "AfterSalesCase", "Coupon", "Reward", "Segment",
            "Campaign", "Experiment")
LOYALTY_ACCOUNT = "LoyaltyAccount"  # historyId: history_id(LOYALTY_ACCOUNT, member id)
RECOMMENDER_MODEL = "RecommenderModel"  # historyId: history_id(RECOMMENDER_MODEL, version)


@dataclasses.dataclass(frozen=True)
class AuditTarget:
    """What an audit id names: the aggregate, and for a recommender model the version whose
    events (training, activation, retirement) are picked from the registry's history."""

    type_name: str
    aggregate_id: uuid.UUID
    model_version: int | None = None

    def concerns(self, event: Any) -> bool:
        if self.model_version is None:
            return True
        state = vars(event)
        return self.model_version in (state.get("version"), state.get("previous"))


def audit_target(id: strawberry.ID) -> AuditTarget:
    try:
        global_id = GlobalID.from_id(str(id))
    except Exception:
        raise ApiError("id is not a global id", ErrorCode.VALIDATION.value, field="id") from None
    name, key = global_id.type_name, global_id.node_id
    try:
        if name in _BY_UUID:
            return AuditTarget(name, uuid.UUID(key))
        if name == "Product":
            return AuditTarget(name, product_aggregate_id(key))
        if name == LOYALTY_ACCOUNT:
            return AuditTarget(name, account_id_for(str(uuid.UUID(key))))
        if name == RECOMMENDER_MODEL:
            return AuditTarget(name, REGISTRY_ID, model_version=int(key))
    except ValueError:
        raise ApiError(f"malformed {name} id", ErrorCode.VALIDATION.value, field="id") from None
    raise ApiError(f"a {name} has no history: give the id of an aggregate",
                   ErrorCode.VALIDATION.value, field="id")


def _shows_personal(ctx: Any, event: Any, owner: str | None) -> bool:
    member_id = vars(event).get("member_id") or owner
    return ctx.principal.sees_personal_data or (
        member_id is not None and ctx.principal.can_see_personal_data(str(member_id)))


def _latest_version(ctx: Any, member_id: uuid.UUID) -> int:
    events = list(ctx.runtime.app.events.get(member_id, desc=True, limit=1))
    return events[0].originator_version if events else 0
