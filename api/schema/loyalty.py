"""Loyalty: points accounts, lots and ledger, tiers, rewards, coupons and the rules in force."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import fields as dataclass_fields
from typing import Any, ClassVar

import strawberry
from strawberry import relay

from api import commerce_readmodels
from api.commerce_readmodels import (
    LiabilityBucket,
    expiring_points,
    expiring_window,
    get_account,
    get_lots,
    get_tier_history,
    ledger_page,
    list_rewards,
    tier_progress,
)
from api.context import RequestContext
from api.readmodels import InvalidCursorError, encode_cursor, instant, rows_by_id
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Long,
    Tier,
    UserError,
    context,
    history_id,
    make_connection,
    page_size,
    readable,
    run_command,
    subscription_principal,
)
from api.schema.orders import Money, decode_uuid, money
from api.service import CommandResult
from domain import coupon as coupons_model
from domain import loyalty_rules as rules_model
from domain.errors import DomainError, ErrorCode
from domain.loyalty import LotStatus as LotStatusModel
from domain.metadata import EventMetadata, Role
from projections.commerce_tables import coupons

LotStatus = strawberry.enum(LotStatusModel)
CouponKind = strawberry.enum(coupons_model.CouponKind)
CouponSource = strawberry.enum(coupons_model.CouponSource)
CouponStatus = strawberry.enum(coupons_model.CouponStatus)


def _at(value: Any) -> dt.datetime | None:
    return instant(value)


@strawberry.type
class TierBenefits:
    tier: Tier
    threshold: Money
    earn_multiplier: float
    member_discount_percent: float
    free_shipping: bool
    priority_dispatch: bool
    expedited_delivery: bool
    first_review_sla_hours: int
    birthday_bonus_points: Long  # type: ignore[valid-type]
    dedicated_service_team: bool

    @classmethod
    def of(cls, rule: rules_model.TierRule, currency: str) -> TierBenefits:
        return cls(
            tier=Tier(rule.tier), threshold=money(rule.threshold, currency),
            earn_multiplier=rule.earn_multiplier_bp / 10000,
            member_discount_percent=rule.member_discount_bp / 100,
            free_shipping=rule.free_shipping, priority_dispatch=rule.priority_dispatch,
            expedited_delivery=rule.expedited_delivery,
            first_review_sla_hours=rule.first_review_sla_hours,
            birthday_bonus_points=rule.birthday_bonus_points,
            dedicated_service_team=rule.dedicated_service_team,
        )


@strawberry.type(description="The loyalty, pricing and order rules in force.")
class LoyaltyRules:
    currency: str
    tiers: list[TierBenefits]
    qualifying_months: int
    maintenance_months: int
    points_per_unit: int
    return_window_days: int
    points_expiry_months: int
    expiring_soon_days: int
    review_points: Long  # type: ignore[valid-type]
    profile_completion_points: Long  # type: ignore[valid-type]
    redemption_points_per_unit: int
    max_points_share_percent: float
    min_redemption_points: Long  # type: ignore[valid-type]
    redemption_period_days: int
    redemption_limit_per_period: Long  # type: ignore[valid-type]
    shipping_fee: Money
    free_shipping_threshold: Money
    abnormal_order_multiple: int
    abnormal_order_floor: Money
    max_failed_payments: int
    max_line_quantity: int
    max_order_value: Money = strawberry.field(
        description="An order's subtotal (before discounts) may be at most this.")
    max_points_adjustment: Long  # type: ignore[valid-type]
    welcome_coupon_value: Money
    birthday_coupon_value: Money

    @classmethod
    def of(cls, rules: rules_model.LoyaltyRules) -> LoyaltyRules:
        c = rules.currency
        plain = {
            f.name: getattr(rules, f.name) for f in dataclass_fields(rules)
            if f.name in {f2.name for f2 in dataclass_fields(cls)}  # type: ignore[arg-type]
            and isinstance(getattr(rules, f.name), int | str)
        }
        plain.update(
            tiers=[TierBenefits.of(t, c) for t in rules.tiers],
            max_points_share_percent=rules.max_points_share_bp / 100,
            shipping_fee=money(rules.shipping_fee, c),
            free_shipping_threshold=money(rules.free_shipping_threshold, c),
            abnormal_order_floor=money(rules.abnormal_order_floor, c),
            max_order_value=money(rules.max_order_value, c),
            welcome_coupon_value=money(rules.welcome_coupon_value, c),
            birthday_coupon_value=money(rules.birthday_coupon_value, c),
        )
        return cls(**plain)


@strawberry.type
class PointsLot:
    lot_id: str
    source: str
    ref: str
    points: Long  # type: ignore[valid-type]
    remaining: Long  # type: ignore[valid-type]
    status: LotStatus
    earned_at: dt.datetime
    release_at: dt.datetime | None = strawberry.field(
        description="When pending points become available (return window closes)."
    )
    available_at: dt.datetime | None
    expires_at: dt.datetime | None


@strawberry.type(description="One movement of points, with its cause.")
class LedgerEntry:
    entry: int
    at: dt.datetime
    kind: str
    points: Long  # type: ignore[valid-type]
    bucket: str
    cause: str
    ref: str | None
    lot_id: str | None
    available_after: Long  # type: ignore[valid-type]
    pending_after: Long  # type: ignore[valid-type]
    debt_after: Long  # type: ignore[valid-type]
    actor_id: str | None
    reason: str | None


@strawberry.type
class ExpiringPoints:
    points: Long  # type: ignore[valid-type]
    within_days: int
    earliest: dt.datetime | None


@strawberry.type
class TierProgress:
    tier: Tier
    qualifying_spend: Money
    next_tier: Tier | None
    spend_to_next_tier: Money | None = strawberry.field(
        description="Spend this much more…"
    )
    reach_by: dt.datetime | None = strawberry.field(description="…by then to reach nextTier.")
    maintenance_due: dt.datetime | None = strawberry.field(
        description="When the tier is next reviewed (it drops one tier at most)."
    )
    spend_to_keep_tier: Money | None


@strawberry.type
class TierChange:
    at: dt.datetime
    from_tier: Tier
    to_tier: Tier
    reason: str


@strawberry.type
class LoyaltyAccount:
    member_id: strawberry.ID
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Auditors: pass to `history(id:)` or `asOf(id:)`.")
    def history_id(self) -> strawberry.ID:
        return history_id("LoyaltyAccount", str(self.row["member_id"]))

    @strawberry.field
    def tier(self) -> Tier:
        return Tier(self.row["tier"])

    @strawberry.field
    def tier_since(self) -> dt.datetime | None:
        return _at(self.row.get("tier_since"))

    @strawberry.field(description="Points that can be spent now.")
    def available(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["available"])

    @strawberry.field(description="Points earned on orders still inside their return window.")
    def pending(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["pending"])

    @strawberry.field(description="Points clawed back after they were spent; settled first.")
    def debt(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["debt"])

    @strawberry.field
    def lifetime_earned(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["lifetime_earned"])

    @strawberry.field
    async def expiring_soon(self, info: strawberry.Info) -> ExpiringPoints:
        runtime = context(info).runtime
        before = expiring_window(runtime.clock.now(), runtime.rules)
        points, earliest = await expiring_points(runtime.async_engine, self.row["member_id"],
                                                 before)
        return ExpiringPoints(points=points, within_days=runtime.rules.expiring_soon_days,
                              earliest=earliest)

    @strawberry.field
    async def lots(self, info: strawberry.Info, status: LotStatus | None = None) -> list[PointsLot]:
        rows = await get_lots(context(info).runtime.async_engine, self.row["member_id"],
                              status.value if status else None)
        return [
            PointsLot(
                lot_id=r["lot_id"], source=r["source"], ref=r["ref"], points=r["points"],
                remaining=r["remaining"], status=LotStatus(r["status"]),
                earned_at=_at(r["earned_at"]),  # type: ignore[arg-type]
                release_at=_at(r["release_at"]), available_at=_at(r["available_at"]),
                expires_at=_at(r["expires_at"]),
            )
            for r in rows
        ]

    @strawberry.field(description="Every movement, newest first.")
    async def ledger(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[LedgerEntry]:
        size = page_size(info, first)
        try:
            page = await ledger_page(context(info).runtime.async_engine, self.row["member_id"],
                                     size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value, field="after") from None
        nodes = [
            LedgerEntry(**{k: r[k] for k in (
                "entry", "kind", "points", "bucket", "cause", "ref", "lot_id",
                "available_after", "pending_after", "debt_after", "actor_id", "reason",
            )}, at=_at(r["at"]))  # type: ignore[arg-type]
            for r in page.rows
        ]
        return make_connection(nodes, [encode_cursor(r["entry"]) for r in page.rows],
                               has_next=page.has_next, has_previous=after is not None,
                               total=page.total)

    @strawberry.field
    async def tier_progress(self, info: strawberry.Info) -> TierProgress:
        runtime = context(info).runtime
        progress = await tier_progress(runtime.async_engine, self.row, runtime.rules,
                                       runtime.clock.now())
        c = runtime.rules.currency
        return TierProgress(
            tier=Tier(progress.tier),
            qualifying_spend=money(progress.qualifying_spend, c),
            next_tier=Tier(progress.next_tier) if progress.next_tier else None,
            spend_to_next_tier=(money(progress.spend_to_next_tier, c)
                                if progress.spend_to_next_tier is not None else None),
            reach_by=progress.reach_by,
            maintenance_due=progress.maintenance_due,
            spend_to_keep_tier=(money(progress.spend_to_keep_tier, c)
                                if progress.spend_to_keep_tier is not None else None),
        )

    @strawberry.field
    async def tier_history(self, info: strawberry.Info) -> list[TierChange]:
        rows = await get_tier_history(context(info).runtime.async_engine, self.row["member_id"])
        return [TierChange(at=_at(r["at"]), from_tier=Tier(r["from_tier"]),  # type: ignore[arg-type]
                           to_tier=Tier(r["to_tier"]), reason=r["reason"]) for r in rows]

    @strawberry.field
    def benefits(self, info: strawberry.Info) -> TierBenefits:
        rules = context(info).runtime.rules
        return TierBenefits.of(rules.tier_rule(self.row["tier"]), rules.currency)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LoyaltyAccount:
        return cls(member_id=strawberry.ID(str(relay.GlobalID("Member", row["member_id"]))),
                   row=row)


@strawberry.type(name="Coupon")
class CouponNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[CouponNode | None]:
        ctx = context(info)
        ids = list(node_ids)
        rows = await rows_by_id(ctx.runtime.async_engine, coupons.c.coupon_id, ids)
        return [cls(key=row["coupon_id"], row=row) if row else None
                for row in readable(ctx.principal, rows, ids)]

    @strawberry.field
    def source(self) -> CouponSource:
        return CouponSource(self.row["source"])

    @strawberry.field
    def kind(self) -> CouponKind:
        return CouponKind(self.row["kind"])

    @strawberry.field(description="Minor units for FIXED coupons, basis points for PERCENT.")
    def value(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["value"])

    @strawberry.field
    def min_spend(self, info: strawberry.Info) -> Money:
        return money(int(self.row["min_spend"]), context(info).runtime.rules.currency)

    @strawberry.field
    def valid_from(self) -> dt.datetime:
        return _at(self.row["valid_from"])  # type: ignore[return-value]

    @strawberry.field
    def valid_until(self) -> dt.datetime:
        return _at(self.row["valid_until"])  # type: ignore[return-value]

    @strawberry.field(description="EXPIRED once its validity window has ended unused.")
    def status(self, info: strawberry.Info) -> CouponStatus:
        now = context(info).runtime.clock.now()
        return coupons_model.status_at(
            self.row["status"], _at(self.row["valid_until"]), now  # type: ignore[arg-type]
        )

    @strawberry.field(description="False once used, reserved or outside its validity window.")
    def usable(self, info: strawberry.Info) -> bool:
        now = context(info).runtime.clock.now()
        return (self.row["status"] == "available"
                and _at(self.row["valid_from"]) <= now < _at(self.row["valid_until"]))  # type: ignore[operator]

    @strawberry.field
    def order_id(self) -> strawberry.ID | None:
        order = self.row.get("order_id")
        return strawberry.ID(str(relay.GlobalID("Order", order))) if order else None


@strawberry.type(name="Reward")
class RewardNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[RewardNode | None]:
        rows = {r["reward_id"]: r for r in await list_rewards(
            context(info).runtime.async_engine, None)}
        return [cls(key=i, row=rows[i]) if i in rows else None for i in node_ids]

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field
    def description(self) -> str | None:
        return self.row.get("description")

    @strawberry.field
    def cost_points(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["cost_points"])

    @strawberry.field
    def stock(self) -> int:
        return int(self.row["stock"])

    @strawberry.field
    def per_member_limit(self) -> int:
        return int(self.row["per_member_limit"])

    @strawberry.field
    def valid_from(self) -> dt.datetime:
        return _at(self.row["valid_from"])  # type: ignore[return-value]

    @strawberry.field
    def valid_until(self) -> dt.datetime:
        return _at(self.row["valid_until"])  # type: ignore[return-value]

    @strawberry.field
    def coupon_kind(self) -> CouponKind:
        return CouponKind(self.row["coupon"]["kind"])

    @strawberry.field
    def coupon_value(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["coupon"]["value"])

    @strawberry.field
    def coupon_valid_days(self) -> int:
        return int(self.row["coupon_valid_days"])

    @strawberry.field
    def redeemed_count(self) -> int:
        return int(self.row["redeemed_count"])


# -- inputs and payloads --------------------------------------------------------------------


@strawberry.input
class RedeemRewardInput:
    # The points redeemed are the chosen reward's cost.
    domain_paths: ClassVar[dict[str, str]] = {"points": "reward_id"}
    member_id: strawberry.ID | None = None
    reward_id: strawberry.ID
    idempotency_key: str
    reason: str | None = None


@strawberry.input
class AdjustPointsInput:
    member_id: strawberry.ID
    points: Long = strawberry.field(  # type: ignore[valid-type]
        description="Positive credits, negative debits; at most maxPointsAdjustment either way.")
    reason: str
    idempotency_key: str


@strawberry.input
class IssueCouponInput:
    member_id: strawberry.ID
    kind: CouponKind
    value: Long  # type: ignore[valid-type]
    min_spend: Long = 0  # type: ignore[valid-type]
    valid_from: dt.datetime
    valid_until: dt.datetime
    reason: str
    idempotency_key: str


@strawberry.input
class DefineRewardInput:
    name: str
    description: str | None = None
    cost_points: Long  # type: ignore[valid-type]
    stock: int
    per_member_limit: int = 1
    valid_from: dt.datetime
    valid_until: dt.datetime
    coupon_kind: CouponKind
    coupon_value: Long  # type: ignore[valid-type]
    coupon_min_spend: Long = 0  # type: ignore[valid-type]
    coupon_valid_days: int = 30
    reason: str


@strawberry.type
class RedeemRewardPayload:
    coupon: CouponNode | None
    account: LoyaltyAccount | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class AdjustPointsPayload:
    account: LoyaltyAccount | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class IssueCouponPayload:
    coupon: CouponNode | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


@strawberry.type
class DefineRewardPayload:
    reward: RewardNode | None
    position: EventPosition | None  # type: ignore[valid-type]
    user_errors: list[UserError]


# -- helpers --------------------------------------------------------------------------------


def member_uuid(ctx: RequestContext, member_id: strawberry.ID | None) -> uuid.UUID:
    if member_id is None:
        ctx.principal.require_role(Role.MEMBER)
        raw = ctx.principal.subject
    else:
        raw = str(decode_uuid(member_id, "Member", "member_id"))
    ctx.principal.require_member_access(raw)
    return uuid.UUID(raw)


async def account_view(ctx: RequestContext, member_id: str) -> LoyaltyAccount | None:
    row = await get_account(ctx.runtime.async_engine, member_id)
    return LoyaltyAccount.from_row(row) if row else None


async def coupon_view(ctx: RequestContext, coupon_id: str) -> CouponNode | None:
    rows = await member_coupons_by_id(ctx, coupon_id)
    return CouponNode(key=coupon_id, row=rows) if rows else None


async def member_coupons_by_id(ctx: RequestContext, coupon_id: str) -> dict[str, Any] | None:
    from sqlalchemy import select

    from projections.commerce_tables import coupons

    async with ctx.runtime.async_engine.connect() as conn:
        row = (await conn.execute(select(coupons).where(coupons.c.coupon_id == coupon_id))).first()
    return dict(row._mapping) if row else None


async def run_and_settle(
    info: strawberry.Info, reason: str | None,
    act: Callable[[RequestContext, EventMetadata], CommandResult],
) -> tuple[CommandResult | None, list[UserError]]:
    result, errors = await run_command(info, act, reason)
    if result is not None:
        # The write happened; if the read models lag, the payload just shows them as they are.
        with contextlib.suppress(Exception):
            await context(info).runtime.wait_for_read_models(result.position)
    return result, errors


# -- points liability ----------------------------------------------------------------------


@strawberry.type(description="Points in one slice of the book, and what they are worth.")
class LiabilitySlice:
    members: int = strawberry.field(description="Loyalty accounts in this slice.")
    available: Long = strawberry.field(  # type: ignore[valid-type]
        description="Points members can spend now.")
    pending: Long = strawberry.field(  # type: ignore[valid-type]
        description="Points earned on orders still inside their return window.")
    debt: Long = strawberry.field(  # type: ignore[valid-type]
        description="Points members owe (clawed back after they were spent).")
    available_value: Money = strawberry.field(
        description="The available points at the redemption rate.")
    pending_value: Money = strawberry.field(
        description="The pending points at the redemption rate, should they vest.")


@strawberry.type(description="A slice of the book for one tier.")
class TierLiability:
    tier: Tier
    points: LiabilitySlice


@strawberry.type(description="Available points that expire at one instant.")
class ExpiryLiability:
    expires_at: dt.datetime | None = strawberry.field(
        description="When they expire (the first instant they cannot be used); null: never.")
    month: str | None = strawberry.field(
        description="The last month they can be used, YYYY-MM.")
    points: Long  # type: ignore[valid-type]
    value: Money


@strawberry.type(description="What the shop owes its members in points.")
class PointsLiability:
    position: Long = strawberry.field(  # type: ignore[valid-type]
        description="The event position the figures include (the loyalty read model's).")
    total: LiabilitySlice
    by_tier: list[TierLiability]
    by_expiry: list[ExpiryLiability] = strawberry.field(
        description="The available points by when they expire, soonest first.")


def _liability_slice(bucket: LiabilityBucket, rules: rules_model.LoyaltyRules) -> LiabilitySlice:
    return LiabilitySlice(
        members=bucket.members, available=bucket.available, pending=bucket.pending,
        debt=bucket.debt,
        available_value=money(rules.points_value(bucket.available), rules.currency),
        pending_value=money(rules.points_value(bucket.pending), rules.currency),
    )


def points_liability_view(
    book: commerce_readmodels.PointsLiability, rules: rules_model.LoyaltyRules
) -> PointsLiability:
    def last_month(at: dt.datetime | None) -> str | None:
        return None if at is None else (at - dt.timedelta(microseconds=1)).strftime("%Y-%m")

    tiers = [t for t in rules_model.Tier if t.value in book.by_tier]
    return PointsLiability(
        position=book.position,
        total=_liability_slice(book.total, rules),
        by_tier=[TierLiability(tier=tier, points=_liability_slice(book.by_tier[tier.value],
                                                                  rules))
                 for tier in tiers],
        by_expiry=[ExpiryLiability(expires_at=e.expires_at, month=last_month(e.expires_at),
                                   points=e.points,
                                   value=money(rules.points_value(e.points), rules.currency))
                   for e in book.by_expiry],
    )


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class LoyaltyQueries:
    @strawberry.field(description="A member's points and tier: the member, staff, auditors.")
    async def loyalty_account(
        self, info: strawberry.Info, member_id: strawberry.ID
    ) -> LoyaltyAccount | None:
        ctx = context(info)
        try:
            raw = str(decode_uuid(member_id, "Member", "member_id"))
            if ctx.principal.role is Role.ANONYMOUS:
                ctx.principal.require_role(Role.MEMBER)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        if not ctx.principal.can_read_member(raw):
            return None
        return await account_view(ctx, raw)

    @strawberry.field(description="The reward catalogue (by default only what can be redeemed).")
    async def rewards(self, info: strawberry.Info, active_only: bool = True) -> list[RewardNode]:
        runtime = context(info).runtime
        rows = await list_rewards(runtime.async_engine,
                                  runtime.clock.now() if active_only else None)
        return [RewardNode(key=r["reward_id"], row=r) for r in rows]

    @strawberry.field(description="The loyalty, pricing and order rules in force.")
    def loyalty_rules(self, info: strawberry.Info) -> LoyaltyRules:
        return LoyaltyRules.of(context(info).runtime.rules)

    @strawberry.field(description="Admins and auditors: the points the shop owes its "
                      "members, by tier and by expiry, with their value at the redemption "
                      "rate.")
    async def points_liability(self, info: strawberry.Info) -> PointsLiability:
        ctx = context(info)
        try:
            ctx.principal.require_role(Role.ADMIN, Role.AUDITOR)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        book = await commerce_readmodels.points_liability(ctx.runtime.async_engine)
        return points_liability_view(book, ctx.runtime.rules)


@strawberry.type
class LoyaltyMutations:
    @strawberry.mutation(description="Spend points on a reward; the coupon lands in the wallet.")
    async def redeem_reward(
        self, info: strawberry.Info, input: RedeemRewardInput
    ) -> RedeemRewardPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            member = member_uuid(ctx, input.member_id)
            if ctx.principal.is_staff:
                meta.require_reason()
            reward = decode_uuid(input.reward_id, "Reward", "reward_id")
            return ctx.runtime.loyalty.redeem_reward(member, reward, input.idempotency_key, meta)

        result, errors = await run_and_settle(info, input.reason, act)
        if result is None:
            return RedeemRewardPayload(coupon=None, account=None, position=None,
                                       user_errors=errors)
        ctx = context(info)
        coupon = await coupon_view(ctx, str(result.aggregate_id))
        owner = coupon.row["member_id"] if coupon else None
        account = await account_view(ctx, owner) if owner else None
        return RedeemRewardPayload(coupon=coupon, account=account, position=result.position,
                                   user_errors=[])

    @strawberry.mutation(description="Admin: credit or debit points, with a reason.")
    async def adjust_points(
        self, info: strawberry.Info, input: AdjustPointsInput
    ) -> AdjustPointsPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.ADMIN)
            member = member_uuid(ctx, input.member_id)
            return ctx.runtime.loyalty.adjust(member, input.points, input.idempotency_key, meta)

        result, errors = await run_and_settle(info, input.reason, act)
        if result is None:
            return AdjustPointsPayload(account=None, position=None, user_errors=errors)
        member = str(decode_uuid(input.member_id, "Member", "member_id"))
        return AdjustPointsPayload(account=await account_view(context(info), member),
                                   position=result.position, user_errors=[])

    @strawberry.mutation(description="Admin: put a coupon in a member's wallet, with a reason.")
    async def issue_coupon(
        self, info: strawberry.Info, input: IssueCouponInput
    ) -> IssueCouponPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.ADMIN)
            member = member_uuid(ctx, input.member_id)
            return ctx.runtime.loyalty.issue_coupon(
                member, coupons_model.CouponSource.ADMIN, input.kind.value, input.value,
                input.min_spend, input.valid_from, input.valid_until, input.idempotency_key, meta,
            )

        result, errors = await run_and_settle(info, input.reason, act)
        if result is None:
            return IssueCouponPayload(coupon=None, position=None, user_errors=errors)
        return IssueCouponPayload(coupon=await coupon_view(context(info), str(result.aggregate_id)),
                                  position=result.position, user_errors=[])

    @strawberry.mutation(description="Admin: add a reward to the catalogue, with a reason.")
    async def define_reward(
        self, info: strawberry.Info, input: DefineRewardInput
    ) -> DefineRewardPayload:
        details = {
            "name": input.name, "description": input.description,
            "cost_points": input.cost_points, "stock": input.stock,
            "per_member_limit": input.per_member_limit, "valid_from": input.valid_from,
            "valid_until": input.valid_until, "coupon_kind": input.coupon_kind.value,
            "coupon_value": input.coupon_value, "coupon_min_spend": input.coupon_min_spend,
            "coupon_valid_days": input.coupon_valid_days,
        }

        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            ctx.principal.require_role(Role.ADMIN)
            return ctx.runtime.loyalty.define_reward(details, meta)

        result, errors = await run_and_settle(info, input.reason, act)
        if result is None:
            return DefineRewardPayload(reward=None, position=None, user_errors=errors)
        rows = {r["reward_id"]: r for r in await list_rewards(
            context(info).runtime.async_engine, None)}
        row = rows.get(str(result.aggregate_id))
        reward = RewardNode(key=row["reward_id"], row=row) if row else None
        return DefineRewardPayload(reward=reward, position=result.position, user_errors=[])


def _subscriber(info: strawberry.Info) -> str:
    """The member a subscription is for: from the socket's header or connection params."""
    principal = subscription_principal(info)
    if principal.role is not Role.MEMBER:
        raise ApiError("subscribe with a member token", ErrorCode.FORBIDDEN.value)
    return principal.subject


POLL_SECONDS = 0.25


@strawberry.type
class LoyaltySubscriptions:
    @strawberry.subscription(
        description="The signed-in member's account now, then whenever points or tier change."
    )
    async def points_changed(
        self, info: strawberry.Info
    ) -> AsyncGenerator[LoyaltyAccount, None]:
        member_id = _subscriber(info)
        engine = context(info).runtime.async_engine
        last_version: int | None = None
        while True:
            row = await get_account(engine, member_id)
            if row is not None and row["version"] != last_version:
                last_version = row["version"]
                yield LoyaltyAccount.from_row(row)
            await context(info).runtime.changes.wait(POLL_SECONDS)
