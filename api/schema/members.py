"""Members: registration, profile, preferences, consent, tags, status and erasure."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry
from strawberry import relay

from api.auth import Principal, mint_token
from api.consistency import ProjectionLagError
from api.context import RequestContext
from api.readmodels import (
    InvalidCursorError,
    MemberFilter,
    get_member_profiles,
    get_member_tags,
    list_member_profiles,
    member_cursor,
)
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Tier,
    UserError,
    context,
    decode_id,
    make_connection,
    page_size,
    run_mutation,
)
from api.schema.recommendations import PlacementEnum
from api.service import CommandResult
from domain import member as model
from domain.errors import (
    DomainError,
    ErrorCode,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role

if TYPE_CHECKING:
    from api.schema.after_sales import CaseNode, MemberCaseFilterInput
    from api.schema.loyalty import CouponNode, CouponStatus, LoyaltyAccount
    from api.schema.orders import OrderNode
    from api.schema.profiles import MemberProfileType
    from api.schema.recommendations import RecommendationList
    from api.schema.segments import MemberSegment
    from api.schema.shipments import NotificationNode

Gender = strawberry.enum(model.Gender)
Education = strawberry.enum(model.Education)
IncomeBand = strawberry.enum(model.IncomeBand)
ShoppingChannel = strawberry.enum(model.ShoppingChannel)
PriceSensitivity = strawberry.enum(model.PriceSensitivity)
LayoutDensity = strawberry.enum(model.LayoutDensity)
Theme = strawberry.enum(model.Theme)
FontSize = strawberry.enum(model.FontSize)
DeliveryTimeWindow = strawberry.enum(model.DeliveryTimeWindow)
Packaging = strawberry.enum(model.Packaging)
ConsentPurpose = strawberry.enum(model.ConsentPurpose)
ConsentChannel = strawberry.enum(model.ConsentChannel)
MemberStatus = strawberry.enum(model.MemberStatus)
EventChannel = strawberry.enum(Channel, name="EventChannel")


def _enum(enum: Any, value: str | None) -> Any:
    return None if value is None else enum(value)


# -- output types ---------------------------------------------------------------------------


@strawberry.type
class Address:
    recipient: str
    line1: str
    line2: str | None
    city: str
    region: str | None
    postal_code: str | None
    country: str
    phone: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Address | None:
        if not data:
            return None
        return cls(**{k: data.get(k) for k in (
            "recipient", "line1", "line2", "city", "region", "postal_code", "country", "phone"
        )})


@strawberry.type
class UiPreferences:
    layout_density: LayoutDensity | None
    theme: Theme | None
    font_size: FontSize | None


@strawberry.type
class DeliveryPreferences:
    default_address: Address | None = strawberry.field(
        description="Personal data: null when masked or erased."
    )
    pickup_point: str | None
    time_window: DeliveryTimeWindow | None
    packaging: list[Packaging]


@strawberry.type
class Preferences:
    categories: list[str]
    brands: list[str]
    price_sensitivity: PriceSensitivity | None
    ui: UiPreferences
    delivery: DeliveryPreferences


@strawberry.type
class Consent:
    purpose: ConsentPurpose
    channel: ConsentChannel
    granted: bool
    source: EventChannel = strawberry.field(description="Channel through which it was given.")
    actor_id: str
    at: dt.datetime


@strawberry.type
class MemberTag:
    tag: str
    reason: str | None
    tagged_by: str
    tagged_at: dt.datetime


@strawberry.type
class ChannelActivity:
    channel: EventChannel
    events: int


@strawberry.type(name="Member", description="A member's unified profile across channels.")
class MemberNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]
    tag_rows: strawberry.Private[list[dict[str, Any]] | None] = None

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls,
        *,
        info: strawberry.Info,
        node_ids: Iterable[str],
        required: bool = False,
    ) -> list[MemberNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        readable = [i for i in ids if ctx.principal.can_read_member(i)]
        rows = await get_member_profiles(ctx.runtime.async_engine, readable)
        return [MemberNode.from_row(rows[i]) if i in rows else None for i in ids]

    @classmethod
    def from_row(cls, row: dict[str, Any], tags: list[dict[str, Any]] | None = None) -> MemberNode:
        return cls(key=row["member_id"], row=row, tag_rows=tags)

    @strawberry.field(description="The member's UUID (the id inside the global id).")
    def member_id(self) -> str:
        return self.key

    def _personal(self, info: strawberry.Info, field: str) -> Any:
        if context(info).principal.can_see_personal_data(self.key):
            return self.row.get(field)
        return None

    @strawberry.field(description="False when personal fields are masked for this viewer.")
    def personal_data_visible(self, info: strawberry.Info) -> bool:
        return context(info).principal.can_see_personal_data(self.key)

    @strawberry.field(description="Personal data: null when masked or erased.")
    def name(self, info: strawberry.Info) -> str | None:
        return self._personal(info, "name")

    @strawberry.field(description="Personal data: null when masked or erased.")
    def email(self, info: strawberry.Info) -> str | None:
        return self._personal(info, "email")

    @strawberry.field(description="Personal data: null when masked or erased.")
    def phone(self, info: strawberry.Info) -> str | None:
        return self._personal(info, "phone")

    @strawberry.field(description="Personal data: null when masked or erased.")
    def birthday(self, info: strawberry.Info) -> dt.date | None:
        value = self._personal(info, "birthday")
        return dt.date.fromisoformat(value) if isinstance(value, str) else value

    @strawberry.field
    def gender(self) -> Gender | None:
        return _enum(Gender, self.row.get("gender"))

    @strawberry.field(description="Personal data: null when masked or erased.")
    def occupation(self, info: strawberry.Info) -> str | None:
        return self._personal(info, "occupation")

    @strawberry.field
    def education(self) -> Education | None:
        return _enum(Education, self.row.get("education"))

    @strawberry.field
    def income_band(self) -> IncomeBand | None:
        return _enum(IncomeBand, self.row.get("income_band"))

    @strawberry.field(description="Personal data: null when masked or erased.")
    def city(self, info: strawberry.Info) -> str | None:
        return self._personal(info, "city")

    @strawberry.field
    def region(self) -> str | None:
        return self.row.get("region")

    @strawberry.field
    def preferred_channel(self) -> ShoppingChannel | None:
        return _enum(ShoppingChannel, self.row.get("preferred_channel"))

    @strawberry.field
    def language(self) -> str | None:
        return self.row.get("language")

    @strawberry.field
    def preferences(self, info: strawberry.Info) -> Preferences:
        prefs = self.row.get("preferences") or {}
        ui = prefs.get("ui") or {}
        delivery = prefs.get("delivery") or {}
        return Preferences(
            categories=list(prefs.get("categories") or []),
            brands=list(prefs.get("brands") or []),
            price_sensitivity=_enum(PriceSensitivity, prefs.get("price_sensitivity")),
            ui=UiPreferences(
                layout_density=_enum(LayoutDensity, ui.get("layout_density")),
                theme=_enum(Theme, ui.get("theme")),
                font_size=_enum(FontSize, ui.get("font_size")),
            ),
            delivery=DeliveryPreferences(
                default_address=Address.from_dict(self._personal(info, "default_address")),
                pickup_point=delivery.get("pickup_point"),
                time_window=_enum(DeliveryTimeWindow, delivery.get("time_window")),
                packaging=[Packaging(p) for p in delivery.get("packaging") or []],
            ),
        )

    @strawberry.field
    def consents(self) -> list[Consent]:
        entries = (self.row.get("consents") or {}).values()
        return [
            Consent(
                purpose=ConsentPurpose(e["purpose"]),
                channel=ConsentChannel(e["channel"]),
                granted=e["granted"],
                source=Channel(e["source"]),
                actor_id=e["actor_id"],
                at=dt.datetime.fromisoformat(e["at"]),
            )
            for e in sorted(entries, key=lambda e: (e["purpose"], e["channel"]))
        ]

    @strawberry.field
    async def tags(self, info: strawberry.Info) -> list[MemberTag]:
        rows = self.tag_rows
        if rows is None:
            rows = await get_member_tags(context(info).runtime.async_engine, self.key)
        return [
            MemberTag(
                tag=r["tag"],
                reason=r["reason"],
                tagged_by=r["tagged_by"],
                tagged_at=r["tagged_at"],
            )
            for r in rows
        ]

    @strawberry.field
    def status(self) -> MemberStatus:
        return MemberStatus(self.row["status"])

    @strawberry.field
    def status_reason(self) -> str | None:
        return self.row.get("status_reason")

    @strawberry.field(description="Loyalty tier (regular until the loyalty engine assigns one).")
    def tier(self) -> Tier:
        return Tier(self.row["tier"])

    @strawberry.field(description="True once the member's personal data has been erased.")
    def erased(self) -> bool:
        return bool(self.row["erased"])

    @strawberry.field
    def erased_at(self) -> dt.datetime | None:
        return self.row.get("erased_at")

    @strawberry.field
    def profile_complete(self) -> bool:
        return bool(self.row["profile_complete"])

    @strawberry.field
    def registration_channel(self) -> EventChannel:
        return Channel(self.row["registration_channel"])

    @strawberry.field(description="How many events each channel contributed to this profile.")
    def channel_activity(self) -> list[ChannelActivity]:
        activity = self.row.get("channel_activity") or {}
        return [ChannelActivity(channel=Channel(c), events=n) for c, n in sorted(activity.items())]

    @strawberry.field
    def registered_at(self) -> dt.datetime:
        return self.row["registered_at"]

    @strawberry.field
    def updated_at(self) -> dt.datetime:
        return self.row["updated_at"]

    @strawberry.field(description="Version of the member aggregate this view reflects.")
    def version(self) -> int:
        return int(self.row["version"])

    @strawberry.field(description="The member's orders, newest first.")
    async def orders(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[OrderNode, strawberry.lazy("api.schema.orders")]]:
        from api.commerce_readmodels import OrderFilter, order_cursor
        from api.schema.orders import OrderNode, orders_connection

        if after is not None:
            return await orders_connection(info, OrderFilter(member_id=self.key), first, after)
        # A first page: batched with the other members' of this request (DataLoader).
        page = await context(info).loaders.member_orders.load((self.key, page_size(info, first)))
        return make_connection(
            [OrderNode.from_row(r) for r in page.rows], [order_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=False, total=page.total,
        )

    @strawberry.field(description="Points, lots, ledger and tier.")
    async def loyalty(
        self, info: strawberry.Info
    ) -> Annotated[LoyaltyAccount, strawberry.lazy("api.schema.loyalty")] | None:
        from api.schema.loyalty import account_view

        return await account_view(context(info), self.key)

    @strawberry.field(description="Notices about the member's parcels, newest first.")
    async def notifications(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[NotificationNode, strawberry.lazy("api.schema.shipments")]]:
        from api.schema.shipments import member_notifications

        return await member_notifications(info, self.key, first, after)

    @strawberry.field(description="The member's after-sales cases, newest first.")
    async def cases(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        filter: Annotated[
            MemberCaseFilterInput, strawberry.lazy("api.schema.after_sales")
        ] | None = None,
    ) -> Connection[Annotated[CaseNode, strawberry.lazy("api.schema.after_sales")]]:
        from api.schema.after_sales import member_cases

        return await member_cases(info, self.key, filter, first, after)

    @strawberry.field(description="Interests, RFM, lifecycle, shopper type and tags, as of "
                                  "now: the member themself, staff and auditors.")
    async def profile(
        self, info: strawberry.Info
    ) -> Annotated[MemberProfileType, strawberry.lazy("api.schema.profiles")] | None:
        from api.schema.profiles import member_profile_view

        return await member_profile_view(info, self.key)

    @strawberry.field(description="The segments the member is in now, since when and why: "
                                  "the member themself, staff and auditors.")
    async def segments(
        self, info: strawberry.Info
    ) -> list[Annotated[MemberSegment, strawberry.lazy("api.schema.segments")]]:
        from api.schema.segments import member_segments_view

        return await member_segments_view(info, self.key)

    @strawberry.field(description=(
        "A ranked list of products for a placement, each with a score and a reason: the "
        "member themself, staff and auditors. product needs productId, cart needs "
        "cartProductIds, search re-ranks candidateIds."))
    async def recommendations(
        self,
        info: strawberry.Info,
        placement: PlacementEnum,  # type: ignore[valid-type]
        first: int = 10,
        product_id: str | None = None,
        cart_product_ids: list[str] | None = None,
        candidate_ids: list[str] | None = None,
    ) -> Annotated[RecommendationList, strawberry.lazy("api.schema.recommendations")]:
        from api.schema.recommendations import member_recommendations

        return await member_recommendations(info, self.key, placement, first, product_id,
                                            cart_product_ids, candidate_ids)

    @strawberry.field(description="The coupon wallet, newest first.")
    async def coupons(
        self,
        info: strawberry.Info,
        status: Annotated[CouponStatus, strawberry.lazy("api.schema.loyalty")] | None = None,
    ) -> list[Annotated[CouponNode, strawberry.lazy("api.schema.loyalty")]]:
        from api.commerce_readmodels import member_coupons
        from api.schema.loyalty import CouponNode

        runtime = context(info).runtime
        rows = await member_coupons(runtime.async_engine, self.key,
                                    status.value if status else None, runtime.clock.now())
        return [CouponNode(key=r["coupon_id"], row=r) for r in rows]


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input
class RegisterMemberInput:
    name: str
    email: str
    phone: str | None = None
    gender: Gender | None = None
    birthday: dt.date | None = None
    occupation: str | None = None
    education: Education | None = None
    income_band: IncomeBand | None = None
    city: str | None = None
    region: str | None = None
    preferred_channel: ShoppingChannel | None = None
    language: str | None = None
    reason: str | None = strawberry.field(
        default=None, description="Required when staff register a member on their behalf."
    )


@strawberry.input(description="Omitted fields stay as they are; null clears an optional field.")
class UpdateMemberProfileInput:
    member_id: strawberry.ID | None = strawberry.field(
        default=None, description="Defaults to the signed-in member."
    )
    name: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    gender: Gender | None = strawberry.UNSET
    birthday: dt.date | None = strawberry.UNSET
    occupation: str | None = strawberry.UNSET
    education: Education | None = strawberry.UNSET
    income_band: IncomeBand | None = strawberry.UNSET
    city: str | None = strawberry.UNSET
    region: str | None = strawberry.UNSET
    preferred_channel: ShoppingChannel | None = strawberry.UNSET
    language: str | None = strawberry.UNSET
    reason: str | None = strawberry.field(
        default=None, description="Required when staff act on a member's behalf."
    )


@strawberry.input
class AddressInput:
    recipient: str
    line1: str
    line2: str | None = None
    city: str
    region: str | None = None
    postal_code: str | None = None
    country: str
    phone: str | None = None


@strawberry.input
class UiPreferencesInput:
    layout_density: LayoutDensity | None = None
    theme: Theme | None = None
    font_size: FontSize | None = None


@strawberry.input
class DeliveryPreferencesInput:
    default_address: AddressInput | None = None
    pickup_point: str | None = None
    time_window: DeliveryTimeWindow | None = None
    packaging: list[Packaging] | None = None


@strawberry.input(description="Each section given replaces that section; others stay.")
class SetMemberPreferencesInput:
    member_id: strawberry.ID | None = None
    categories: list[str] | None = strawberry.UNSET
    brands: list[str] | None = strawberry.UNSET
    price_sensitivity: PriceSensitivity | None = strawberry.UNSET
    ui: UiPreferencesInput | None = strawberry.UNSET
    delivery: DeliveryPreferencesInput | None = strawberry.UNSET
    reason: str | None = None


@strawberry.input
class SetConsentInput:
    member_id: strawberry.ID | None = None
    purpose: ConsentPurpose
    channel: ConsentChannel
    granted: bool
    reason: str | None = None


@strawberry.input
class TagMemberInput:
    member_id: strawberry.ID
    tag: str
    reason: str


@strawberry.input
class SetMemberStatusInput:
    member_id: strawberry.ID
    status: MemberStatus
    reason: str


@strawberry.input
class EraseMemberInput:
    member_id: strawberry.ID
    reason: str


@strawberry.input
class MemberFilterInput:
    status: MemberStatus | None = None
    tag: str | None = None
    city: str | None = strawberry.field(
        default=None,
        description="The member's city, exactly (case-insensitive). Personal data: callers "
        "who cannot see it get a FORBIDDEN error naming filter.city.",
    )
    search: str | None = strawberry.field(
        default=None,
        description="Matches part of the name or email (case-insensitive; % and _ match "
        "themselves) or the whole member id. Personal data: callers who cannot see it "
        "(auditors without the pii scope) get a FORBIDDEN error naming filter.search.",
    )


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class MemberPayload:
    member: MemberNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; later reads include it."
    )
    user_errors: list[UserError]


@strawberry.type
class RegisterMemberPayload(MemberPayload):
    token: str | None = strawberry.field(
        description="A member token for self-registration (null when staff register)."
    )


@strawberry.type
class UpdateMemberProfilePayload(MemberPayload):
    pass


@strawberry.type
class SetMemberPreferencesPayload(MemberPayload):
    pass


@strawberry.type
class SetConsentPayload(MemberPayload):
    pass


@strawberry.type
class TagMemberPayload(MemberPayload):
    pass


@strawberry.type
class UntagMemberPayload(MemberPayload):
    pass


@strawberry.type
class SetMemberStatusPayload(MemberPayload):
    pass


@strawberry.type
class EraseMemberPayload(MemberPayload):
    pass


# -- helpers --------------------------------------------------------------------------------


def _set_fields(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    """Fields the client actually sent (UNSET ones are left out), as plain values."""
    values: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name)
        if value is strawberry.UNSET:
            continue
        values[name] = _plain(value)
    return values


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "__strawberry_definition__"):
        return {k: _plain(v) for k, v in vars(value).items() if v is not strawberry.UNSET}
    return value


def decode_member_id(global_id: strawberry.ID | str, field: str = "id") -> str:
    raw = decode_id(global_id, "Member", field)
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ValidationError(f"malformed member id {global_id!r}", field) from None


def target_member(ctx: RequestContext, member_id: strawberry.ID | None) -> uuid.UUID:
    """The member a command acts on: the given one, or the signed-in member."""
    if member_id is None:
        if ctx.principal.member_id is None:
            ctx.principal.require_role(Role.MEMBER)
            raise NotFoundError("memberId is required", "member_id")
        raw = ctx.principal.member_id
    else:
        raw = decode_member_id(member_id, "member_id")
    ctx.principal.require_member_access(raw)
    return uuid.UUID(raw)


async def load_member(
    ctx: RequestContext, position: int | None, member_id: str
) -> MemberNode | None:
    """The member as the read model shows it once it includes this write."""
    try:
        await ctx.runtime.wait_for_read_models(position)
    except ProjectionLagError:
        return None
    rows = await get_member_profiles(ctx.runtime.async_engine, [member_id])
    return MemberNode.from_row(rows[member_id]) if member_id in rows else None


MemberCommand = Callable[[RequestContext, uuid.UUID, EventMetadata], CommandResult]
P = TypeVar("P", bound=MemberPayload)


async def _member_mutation(
    info: strawberry.Info,
    payload: type[P],
    member_id: strawberry.ID | None,
    reason: str | None,
    act: MemberCommand,
    *roles: Role,
) -> P:
    """The shape every member mutation shares: authorise, record, then read it back."""
    async def command(ctx: RequestContext) -> CommandResult:
        if roles:
            ctx.principal.require_role(*roles)
        target = target_member(ctx, member_id)
        meta = ctx.metadata(reason)
        return await ctx.run_command(lambda: act(ctx, target, meta))

    result, errors = await run_mutation(info, command)
    if result is None:
        return payload(member=None, position=None, user_errors=errors)
    member = await load_member(context(info), result.position, str(result.aggregate_id))
    return payload(member=member, position=result.position, user_errors=[])


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class MemberQueries:
    @strawberry.field(description="The signed-in member.")
    async def me(self, info: strawberry.Info) -> MemberNode | None:
        ctx = context(info)
        try:
            ctx.principal.require_role(Role.MEMBER)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        rows = await get_member_profiles(ctx.runtime.async_engine, [ctx.principal.subject])
        row = rows.get(ctx.principal.subject)
        return MemberNode.from_row(row) if row else None

    @strawberry.field(description="A member by id: staff and auditors, or the member themself.")
    async def member(self, info: strawberry.Info, id: strawberry.ID) -> MemberNode | None:
        ctx = context(info)
        try:
            member_id = decode_member_id(id)
            if ctx.principal.role is Role.ANONYMOUS:
                ctx.principal.require_role(Role.MEMBER)
            if not ctx.principal.can_read_member(member_id):
                raise NotFoundError(f"member {id} not found", "id")
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        rows = await get_member_profiles(ctx.runtime.async_engine, [member_id])
        return MemberNode.from_row(rows[member_id]) if member_id in rows else None

    @strawberry.field(description="Members in registration order, for staff and auditors.")
    async def members(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        filter: MemberFilterInput | None = None,
    ) -> Connection[MemberNode]:
        ctx = context(info)
        try:
            ctx.principal.require_role(Role.AGENT, Role.ADMIN, Role.AUDITOR)
            if filter and filter.search is not None and not ctx.principal.sees_personal_data:
                # Not an empty page: any answer, even a count, would confirm an address.
                raise ForbiddenError(
                    "searching members by name or email needs the personal-data (pii) "
                    "scope; look a member up by id with member(id:)", "filter.search"
                )
            if filter and filter.city is not None and not ctx.principal.sees_personal_data:
                raise ForbiddenError(
                    "filtering members by city needs the personal-data (pii) scope",
                    "filter.city",
                )
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        size = page_size(info, first)
        where = MemberFilter(
            status=filter.status.value if filter and filter.status else None,
            tag=filter.tag if filter else None,
            city=filter.city if filter else None,
            search=filter.search if filter else None,
        )
        try:
            page = await list_member_profiles(ctx.runtime.async_engine, where, size, after)
        except InvalidCursorError as error:
            raise ApiError(str(error), ErrorCode.VALIDATION.value, field="after") from None
        return make_connection(
            [MemberNode.from_row(r) for r in page.rows],
            [member_cursor(r) for r in page.rows],
            has_next=page.has_next,
            has_previous=after is not None,
            total=page.total,
        )


@strawberry.type
class MemberMutations:
    @strawberry.mutation(description="Open to everyone; returns a token for the new member.")
    async def register_member(
        self, info: strawberry.Info, input: RegisterMemberInput
    ) -> RegisterMemberPayload:
        details = _set_fields(input, [f for f in model.PERSONAL_FIELDS + model.PROFILE_FIELDS])
        details = {k: v for k, v in details.items() if v is not None}
        if isinstance(details.get("birthday"), dt.date):
            details["birthday"] = details["birthday"].isoformat()

        async def command(ctx: RequestContext) -> CommandResult:
            if ctx.principal.role in (Role.MEMBER, Role.AUDITOR):
                raise ForbiddenError("signed-in members and auditors cannot register members")
            meta = ctx.metadata(input.reason)
            result = await ctx.run_command(lambda: ctx.runtime.members.register(details, meta))
            ctx.record_write(result.position, subject=str(result.aggregate_id))
            return result

        result, errors = await run_mutation(info, command)
        if result is None:
            return RegisterMemberPayload(member=None, position=None, user_errors=errors, token=None)
        ctx = context(info)
        token = None
        if ctx.principal.role is Role.ANONYMOUS:
            token = mint_token(
                ctx.runtime.settings.secret_key, Role.MEMBER, str(result.aggregate_id)
            )
            # The rest of this response is for the member who just signed up.
            ctx.principal = Principal(subject=str(result.aggregate_id), role=Role.MEMBER)
        member = await load_member(ctx, result.position, str(result.aggregate_id))
        return RegisterMemberPayload(
            member=member, position=result.position, user_errors=[], token=token
        )

    @strawberry.mutation
    async def update_member_profile(
        self, info: strawberry.Info, input: UpdateMemberProfileInput
    ) -> UpdateMemberProfilePayload:
        changes = _set_fields(input, model.PERSONAL_FIELDS + model.PROFILE_FIELDS)
        if isinstance(changes.get("birthday"), dt.date):
            changes["birthday"] = changes["birthday"].isoformat()
        return await _member_mutation(
            info, UpdateMemberProfilePayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.update_profile(mid, changes, meta),
        )

    @strawberry.mutation
    async def set_member_preferences(
        self, info: strawberry.Info, input: SetMemberPreferencesInput
    ) -> SetMemberPreferencesPayload:
        preferences = _set_fields(
            input, ("categories", "brands", "price_sensitivity", "ui", "delivery")
        )
        return await _member_mutation(
            info, SetMemberPreferencesPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.set_preferences(mid, preferences, meta),
        )

    @strawberry.mutation
    async def set_consent(self, info: strawberry.Info, input: SetConsentInput) -> SetConsentPayload:
        return await _member_mutation(
            info, SetConsentPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.set_consent(
                mid, input.purpose.value, input.channel.value, input.granted, meta
            ),
        )

    @strawberry.mutation(description="Staff: label a member, with a reason.")
    async def tag_member(self, info: strawberry.Info, input: TagMemberInput) -> TagMemberPayload:
        return await _member_mutation(
            info, TagMemberPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.tag(mid, input.tag, meta),
            Role.AGENT, Role.ADMIN,
        )

    @strawberry.mutation(description="Staff: remove a label, with a reason.")
    async def untag_member(
        self, info: strawberry.Info, input: TagMemberInput
    ) -> UntagMemberPayload:
        return await _member_mutation(
            info, UntagMemberPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.untag(mid, input.tag, meta),
            Role.AGENT, Role.ADMIN,
        )

    @strawberry.mutation(description="Admin: activate, block or close a member, with a reason.")
    async def set_member_status(
        self, info: strawberry.Info, input: SetMemberStatusInput
    ) -> SetMemberStatusPayload:
        return await _member_mutation(
            info, SetMemberStatusPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.set_status(mid, input.status.value, meta),
            Role.ADMIN,
        )

    @strawberry.mutation(
        description="Admin: erase a member's personal data everywhere (GDPR), with a reason."
    )
    async def erase_member(
        self, info: strawberry.Info, input: EraseMemberInput
    ) -> EraseMemberPayload:
        return await _member_mutation(
            info, EraseMemberPayload, input.member_id, input.reason,
            lambda ctx, mid, meta: ctx.runtime.members.erase(mid, meta),
            Role.ADMIN,
        )
