"""Campaigns: admins reward a segment's members with a coupon or bonus points, within a
budget and a window, and everyone on staff (and auditors) sees what it achieved.

Launching and stopping are admin mutations with a reason; reading campaigns is for staff
and auditors. Everything shown comes from the "campaign_results" read model (see
projections/campaign_results.py for what issued, redeemed and spend mean); the state is
that record read against the business clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import strawberry
from strawberry import relay

from api import campaign_readmodels as readmodels
from api.context import RequestContext
from api.readmodels import InvalidCursorError, get_member_profiles, instant, required_instant
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
)
from api.schema.loyalty import CouponKind
from api.schema.members import MemberNode
from api.schema.orders import Money, decode_uuid, money
from api.schema.segments import SegmentNode
from api.segment_readmodels import get_segments
from api.service import CommandResult
from domain import campaigns as model
from domain.errors import DomainError, ErrorCode
from domain.metadata import EventMetadata, Role

CampaignState = strawberry.enum(
    model.CampaignState, name="CampaignState",
    description="SCHEDULED before its start, RUNNING in its window, ENDED after it, STOPPED "
                "when an admin stopped it.")
CampaignRewardKind = strawberry.enum(model.RewardKind, name="CampaignRewardKind")

READERS = (Role.AGENT, Role.ADMIN, Role.AUDITOR)
NODE = "Campaign"
POLL_SECONDS = 0.25




# -- output types ---------------------------------------------------------------------------


@strawberry.type(description="The coupon a campaign puts in each rewarded member's wallet.")
class CampaignCoupon:
    kind: CouponKind  # type: ignore[valid-type]
    value: Long = strawberry.field(  # type: ignore[valid-type]
        description="Minor units for FIXED coupons, basis points for PERCENT.")
    min_spend: Money
    valid_days: int = strawberry.field(
        description="Days the coupon is usable from the moment it is issued (not cut at the "
                    "campaign's end).")


@strawberry.type(description="What each rewarded member receives: a coupon or bonus points.")
class CampaignRewardTerms:
    kind: CampaignRewardKind  # type: ignore[valid-type]
    coupon: CampaignCoupon | None
    points: Long | None = strawberry.field(  # type: ignore[valid-type]
        description="Bonus points (POINTS campaigns).")


@strawberry.type(description="A member a campaign rewarded, and whether it was redeemed.")
class CampaignReward:
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="The member's global id.")
    def member_id(self) -> strawberry.ID:
        return strawberry.ID(str(relay.GlobalID("Member", self.row["member_id"])))

    @strawberry.field(description="The member's profile.")
    async def member(self, info: strawberry.Info) -> MemberNode | None:
        member_id = self.row["member_id"]
        rows = await get_member_profiles(context(info).runtime.async_engine, [member_id])
        return MemberNode.from_row(rows[member_id]) if member_id in rows else None

    @strawberry.field
    def issued_at(self) -> dt.datetime:
        return required_instant(self.row["issued_at"])

    @strawberry.field(description="The coupon's global id (COUPON campaigns).")
    def coupon_id(self) -> strawberry.ID | None:
        coupon = self.row["coupon_id"]
        return strawberry.ID(str(relay.GlobalID("Coupon", coupon))) if coupon else None

    @strawberry.field(description="The points credited (POINTS campaigns).")
    def points(self) -> Long | None:  # type: ignore[valid-type]
        return self.row["points"]

    @strawberry.field(description="Until when a redemption counts: the coupon's validity, or "
                                  "the campaign's end for points.")
    def redeemable_until(self) -> dt.datetime:
        return required_instant(self.row["redeemable_until"])

    @strawberry.field(description="When the reward was redeemed: the coupon used on a paid "
                                  "order, or the first order paid after the points.")
    def redeemed_at(self) -> dt.datetime | None:
        return instant(self.row["redeemed_at"])

    @strawberry.field(description="The redeeming order's global id (for a coupon, also the "
                                  "order it is reserved for before payment).")
    def order_id(self) -> strawberry.ID | None:
        order = self.row["order_id"]
        return strawberry.ID(str(relay.GlobalID("Order", order))) if order else None

    @strawberry.field(description="What the redeeming order paid.")
    def spend(self, info: strawberry.Info) -> Money:
        return money(int(self.row["spend"]), context(info).runtime.rules.currency)

    @strawberry.field(description="What was refunded on the redeeming order since.")
    def refunded(self, info: strawberry.Info) -> Money:
        return money(int(self.row["refunded"]), context(info).runtime.rules.currency)


@strawberry.type(name="Campaign",
                 description="A segment rewarded with a coupon or bonus points, once per "
                             "member, within a budget and a window.")
class CampaignNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Iterable[str], required: bool = False
    ) -> list[CampaignNode | None]:
        ctx = context(info)
        ids = [str(i) for i in node_ids]
        if ctx.principal.role not in READERS:
            return [None for _ in ids]
        rows = await readmodels.get_campaigns(ctx.runtime.async_engine, ids)
        return [cls.of(rows[i]) if i in rows else None for i in ids]

    @classmethod
    def of(cls, row: dict[str, Any]) -> CampaignNode:
        return cls(key=row["campaign_id"], row=row)

    def _money(self, info: strawberry.Info, amount: int) -> Money:
        return money(amount, context(info).runtime.rules.currency)

    @strawberry.field(description="The campaign's UUID (the id inside the global id).")
    def campaign_id(self) -> str:
        return self.key

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field(description="The targeted segment's global id.")
    def segment_id(self) -> strawberry.ID:
        return strawberry.ID(str(relay.GlobalID("Segment", self.row["segment_id"])))

    @strawberry.field(description="The targeted segment as it is now.")
    async def segment(self, info: strawberry.Info) -> SegmentNode | None:
        segment_id = self.row["segment_id"]
        rows = await get_segments(context(info).runtime.async_engine, [segment_id])
        return SegmentNode.of(rows[segment_id]) if segment_id in rows else None

    @strawberry.field
    def reward(self, info: strawberry.Info) -> CampaignRewardTerms:
        reward = model.CampaignReward.from_dict(self.row["reward"])
        coupon = None
        if reward.kind is model.RewardKind.COUPON:
            coupon = CampaignCoupon(
                kind=CouponKind(reward.coupon_kind), value=int(reward.value or 0),
                min_spend=self._money(info, reward.min_spend or 0),
                valid_days=int(reward.valid_days or 0))
        return CampaignRewardTerms(kind=reward.kind, coupon=coupon, points=reward.points)

    @strawberry.field(description="The most members the campaign rewards.")
    def budget(self) -> int:
        return int(self.row["budget"])

    @strawberry.field(description="Rewards the budget still allows.")
    def remaining(self) -> int:
        return max(int(self.row["budget"]) - int(self.row["issued"]), 0)

    @strawberry.field
    def starts_at(self) -> dt.datetime:
        return required_instant(self.row["starts_at"])

    @strawberry.field
    def ends_at(self) -> dt.datetime:
        return required_instant(self.row["ends_at"])

    @strawberry.field(description="The state now, by the business clock.")
    def state(self, info: strawberry.Info) -> CampaignState:  # type: ignore[valid-type]
        return model.state_at(self.row["status"], required_instant(self.row["starts_at"]),
                              required_instant(self.row["ends_at"]),
                              context(info).runtime.clock.now())

    @strawberry.field
    def launched_at(self) -> dt.datetime:
        return required_instant(self.row["launched_at"])

    @strawberry.field(description="The admin who launched it.")
    def launched_by(self) -> str:
        return str(self.row["launched_by"])

    @strawberry.field(description="Why it was launched.")
    def launch_reason(self) -> str | None:
        return self.row["launch_reason"]

    @strawberry.field
    def stopped_at(self) -> dt.datetime | None:
        return instant(self.row["stopped_at"])

    @strawberry.field
    def stopped_by(self) -> str | None:
        return self.row["stopped_by"]

    @strawberry.field(description="Why it was stopped.")
    def stop_reason(self) -> str | None:
        return self.row["stop_reason"]

    @strawberry.field(description="Members rewarded (never more than the budget).")
    def issued(self) -> int:
        return int(self.row["issued"])

    @strawberry.field(description="Bonus points that went out (POINTS campaigns).")
    def points_issued(self) -> Long:  # type: ignore[valid-type]
        return int(self.row["points_issued"])

    @strawberry.field(description="When rewards last went out.")
    def last_issued_at(self) -> dt.datetime | None:
        return instant(self.row["last_issued_at"])

    @strawberry.field(description="Rewards redeemed: coupons used on paid orders, or "
                                  "members who paid an order after their points and before "
                                  "the campaign's end.")
    def redeemed(self) -> int:
        return int(self.row["redeemed"])

    @strawberry.field(description="redeemed / issued (0 to 1); null before any reward.")
    def redemption_rate(self) -> float | None:
        issued = int(self.row["issued"])
        return int(self.row["redeemed"]) / issued if issued else None

    @strawberry.field(description="What the redeeming orders paid.")
    def spend(self, info: strawberry.Info) -> Money:
        return self._money(info, int(self.row["spend"]))

    @strawberry.field(description="What was refunded on the redeeming orders since.")
    def refunded(self, info: strawberry.Info) -> Money:
        return self._money(info, int(self.row["refunded"]))

    @strawberry.field(description="spend - refunded.")
    def net_spend(self, info: strawberry.Info) -> Money:
        return self._money(info, int(self.row["spend"]) - int(self.row["refunded"]))

    @strawberry.field(description="The members rewarded, in the order they were rewarded.")
    async def rewards(self, info: strawberry.Info, first: int | None = None,
                      after: str | None = None,
                      redeemed: bool | None = None) -> Connection[CampaignReward]:
        size = page_size(info, first)
        try:
            page = await readmodels.list_rewards(context(info).runtime.async_engine, self.key,
                                                 redeemed, size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection(
            [CampaignReward(row=r) for r in page.rows],
            [readmodels.reward_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=after is not None, total=page.total,
        )

    @strawberry.field(description="When the campaign's results last changed.")
    def updated_at(self) -> dt.datetime:
        return required_instant(self.row["updated_at"])

    @strawberry.field(description="Version of the campaign (launch, stop, each issuing).")
    def version(self) -> int:
        return int(self.row["version"])


# -- inputs ---------------------------------------------------------------------------------


@strawberry.input(description="A coupon for each rewarded member.")
class CampaignCouponInput:
    kind: CouponKind  # type: ignore[valid-type]
    value: Long = strawberry.field(  # type: ignore[valid-type]
        description="Minor units for FIXED, basis points (1-10000) for PERCENT.")
    min_spend: Long = strawberry.field(  # type: ignore[valid-type]
        default=0, description="The order value (after the tier discount) it needs.")
    valid_days: int = strawberry.field(
        description="Days it is usable from the moment it is issued (1-366).")


@strawberry.input(description="Exactly one of: a coupon, or bonus points.")
class CampaignRewardInput:
    coupon: CampaignCouponInput | None = None
    points: Long | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Bonus points (1-100000).")


@strawberry.input
class LaunchCampaignInput:
    name: str
    segment_id: strawberry.ID = strawberry.field(description="An active segment.")
    reward: CampaignRewardInput
    budget: int = strawberry.field(description="The most members to reward (1-1000000).")
    starts_at: dt.datetime | None = strawberry.field(
        default=None, description="When rewards start going out; now if left out.")
    ends_at: dt.datetime = strawberry.field(
        description="When they stop; at most 366 days after the start.")
    idempotency_key: str = strawberry.field(
        description="A retry with the same key and input returns the first campaign.")
    reason: str | None = strawberry.field(default=None, description="Required: why.")


@strawberry.input
class StopCampaignInput:
    campaign_id: strawberry.ID
    reason: str | None = strawberry.field(default=None, description="Required: why.")


# -- payloads -------------------------------------------------------------------------------


@strawberry.type
class CampaignPayload:
    campaign: CampaignNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; null when nothing was recorded.")
    user_errors: list[UserError]


@strawberry.type
class LaunchCampaignPayload(CampaignPayload):
    pass


@strawberry.type
class StopCampaignPayload(CampaignPayload):
    pass


# -- helpers --------------------------------------------------------------------------------

P = TypeVar("P", bound=CampaignPayload)


def decode_campaign_id(global_id: strawberry.ID, field: str = "campaign_id") -> uuid.UUID:
    return decode_uuid(global_id, NODE, field)


def _reward(reward: CampaignRewardInput) -> dict[str, Any]:
    """The input as the domain reads it (it checks that exactly one reward is given)."""
    coupon = reward.coupon
    return {
        "coupon": None if coupon is None else {
            "kind": coupon.kind.value, "value": coupon.value, "min_spend": coupon.min_spend,
            "valid_days": coupon.valid_days,
        },
        "points": reward.points,
    }


async def load_campaign(ctx: RequestContext, result: CommandResult) -> CampaignNode | None:
    """The campaign as the read model shows it once it includes this write (a retried
    launch recorded nothing, so its row is awaited by the version the command saw)."""
    try:
        await ctx.runtime.wait_for_read_models(result.position)
    except Exception:
        return None
    engine = ctx.runtime.async_engine
    campaign_id = str(result.aggregate_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.runtime.settings.read_your_writes_timeout
    while True:
        row = (await readmodels.get_campaigns(engine, [campaign_id])).get(campaign_id)
        if row is not None and int(row["version"]) >= result.version:
            return CampaignNode.of(row)
        if loop.time() > deadline:
            return CampaignNode.of(row) if row else None
        await ctx.runtime.changes.wait(POLL_SECONDS)


async def campaign_mutation(
    info: strawberry.Info, payload: type[P],
    act: Callable[[RequestContext, EventMetadata], CommandResult], reason: str | None,
) -> P:
    result, errors = await run_command(info, act, reason)
    if result is None:
        return payload(campaign=None, position=None, user_errors=errors)
    campaign = await load_campaign(context(info), result)
    return payload(campaign=campaign, position=result.position, user_errors=[])


def _require_admin(ctx: RequestContext) -> None:
    ctx.principal.require_role(Role.ADMIN)


# -- operations -----------------------------------------------------------------------------


@strawberry.type
class CampaignQueries:
    @strawberry.field(description="A campaign and its results: staff and auditors.")
    async def campaign(self, info: strawberry.Info, id: strawberry.ID) -> CampaignNode | None:
        ctx = context(info)
        try:
            campaign_id = str(decode_campaign_id(id, "id"))
            ctx.principal.require_role(*READERS)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        row = (await readmodels.get_campaigns(ctx.runtime.async_engine, [campaign_id])).get(
            campaign_id)
        return CampaignNode.of(row) if row else None

    @strawberry.field(description="Campaigns, the latest launched first: staff and auditors.")
    async def campaigns(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None,
        state: CampaignState | None = None,  # type: ignore[valid-type]
    ) -> Connection[CampaignNode]:
        ctx = context(info)
        try:
            ctx.principal.require_role(*READERS)
        except DomainError as error:
            raise ApiError.from_domain(error) from None
        size = page_size(info, first)
        wanted = model.CampaignState(state.value) if state is not None else None
        try:
            page = await readmodels.list_campaigns(ctx.runtime.async_engine, wanted,
                                                   ctx.runtime.clock.now(), size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection(
            [CampaignNode.of(r) for r in page.rows],
            [readmodels.campaign_cursor(r) for r in page.rows],
            has_next=page.has_next, has_previous=after is not None, total=page.total,
        )


@strawberry.type
class CampaignMutations:
    @strawberry.mutation(description="Admins: reward a segment's members with a coupon or "
                                      "bonus points, once each, within a budget and a window. "
                                      "If the window is open, rewards go out at once.")
    async def launch_campaign(self, info: strawberry.Info,
                              input: LaunchCampaignInput) -> LaunchCampaignPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_admin(ctx)
            segment_id = decode_uuid(input.segment_id, "Segment", "segment_id")
            return ctx.runtime.campaigns.launch(
                input.name, segment_id, _reward(input.reward), input.budget, input.starts_at,
                input.ends_at, input.idempotency_key, meta)

        return await campaign_mutation(info, LaunchCampaignPayload, act, input.reason)

    @strawberry.mutation(description="Admins: stop a campaign (or call off a scheduled one); "
                                      "what was issued stays issued.")
    async def stop_campaign(self, info: strawberry.Info,
                            input: StopCampaignInput) -> StopCampaignPayload:
        def act(ctx: RequestContext, meta: EventMetadata) -> CommandResult:
            _require_admin(ctx)
            return ctx.runtime.campaigns.stop(decode_campaign_id(input.campaign_id), meta)

        return await campaign_mutation(info, StopCampaignPayload, act, input.reason)


__all__ = ["CampaignMutations", "CampaignNode", "CampaignQueries"]
