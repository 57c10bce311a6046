"""`campaigns` and `campaign_rewards`: what each campaign handed out and what it brought in.

Definitions (what the numbers mean):

- **issued**: members rewarded (one coupon or one credit each); never more than the budget.
  **points issued**: issued times the campaign's bonus points (points campaigns).
- **redeemed**, coupon campaigns: the member's campaign coupon was used on an order that
  was paid (`Coupon.Used`). If that order is later cancelled the coupon is released and
  the redemption is undone (it may be redeemed again on another order).
- **redeemed**, points campaigns: the member paid an order after the reward and before the
  campaign's end (`ends_at`, whether or not it was stopped early: the reward was given).
  Only the first such order counts, so that like a coupon each reward is redeemed at most
  once and "redeemed / issued" is a conversion rate.
- **spend**: what the redeeming orders paid (the order's paid amount, in minor units).
  **refunded**: what has been refunded on those orders since, so spend - refunded is the
  net revenue the campaign brought in.

Payments are read from `LoyaltyAccount.SpendRecorded` (recorded with every payment, with
the paid amount, and with every refund, negated) of the rewarded member's account; the
coupon's order from `Coupon.Reserved`. Everything comes from events and these two tables
only (never another projection's tables, never the clock), so a rebuild from position
zero reproduces both tables exactly. Totals on the campaign row are kept as deltas of the
reward rows, so each stays the sum of its rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from domain.campaigns import Campaign, CampaignReward, CampaignStatus, RewardKind, reward_coupon_id
from domain.coupon import Coupon
from domain.loyalty import LoyaltyAccount, account_id_for
from projections.campaign_tables import campaign_rewards, campaigns
from projections.commerce_tables import stored, utc
from projections.engine import Handler, ReadModel

ORDER_REF = "order:"
REFUND_REF = "refund:"



def contribution(row: dict[str, Any]) -> tuple[int, int, int]:
    """What a reward row adds to its campaign's (redeemed, spend, refunded)."""
    if row["redeemed_at"] is None:
        return 0, 0, 0
    return 1, int(row["spend"]), int(row["refunded"])


class CampaignResultsProjection(ReadModel):
    name = "campaign_results"
    tables = (campaigns, campaign_rewards)

    def handlers(self) -> dict[type, Handler]:
        return {
            Campaign.Launched: self.on_launched,
            Campaign.Stopped: self.on_stopped,
            Campaign.RewardsIssued: self.on_rewards_issued,
            Coupon.Reserved: self.on_coupon_reserved,
            Coupon.Released: self.on_coupon_released,
            Coupon.Used: self.on_coupon_used,
            LoyaltyAccount.SpendRecorded: self.on_spend_recorded,
        }

    # -- campaigns --------------------------------------------------------------------------

    def on_launched(self, conn: Connection, event: Any, position: int) -> None:
        reward = CampaignReward.from_dict(event.reward)
        conn.execute(insert(campaigns).values(
            campaign_id=str(event.originator_id),
            name=event.name,
            segment_id=event.segment_id,
            reward_kind=reward.kind.value,
            reward=reward.as_dict(),
            budget=event.budget,
            starts_at=utc(event.starts_at),
            ends_at=utc(event.ends_at),
            status=CampaignStatus.LAUNCHED.value,
            launched_at=utc(event.timestamp),
            launched_by=event.meta["actor_id"],
            launch_reason=event.meta.get("reason"),
            stopped_at=None,
            stopped_by=None,
            stop_reason=None,
            issued=0,
            points_issued=0,
            last_issued_at=None,
            redeemed=0,
            spend=0,
            refunded=0,
            updated_at=utc(event.timestamp),
            version=event.originator_version,
            position=position,
        ))

    @staticmethod
    def _campaign_event(conn: Connection, event: Any, position: int, **values: Any) -> None:
        conn.execute(
            update(campaigns)
            .where(campaigns.c.campaign_id == str(event.originator_id))
            .values(updated_at=utc(event.timestamp), version=event.originator_version,
                    position=position, **values)
        )

    def on_stopped(self, conn: Connection, event: Any, position: int) -> None:
        self._campaign_event(conn, event, position, status=CampaignStatus.STOPPED.value,
                             stopped_at=utc(event.timestamp),
                             stopped_by=event.meta["actor_id"],
                             stop_reason=event.meta.get("reason"))

    def on_rewards_issued(self, conn: Connection, event: Any, position: int) -> None:
        campaign_id = str(event.originator_id)
        row = conn.execute(
            select(campaigns.c.reward, campaigns.c.ends_at, campaigns.c.issued,
                   campaigns.c.points_issued)
            .where(campaigns.c.campaign_id == campaign_id)
        ).one()
        reward = CampaignReward.from_dict(row.reward)
        issued_at = utc(event.timestamp)
        assert issued_at is not None
        coupon = reward.kind is RewardKind.COUPON
        until = reward.coupon_valid_until(issued_at) if coupon else stored(row.ends_at)
        conn.execute(insert(campaign_rewards), [
            {
                "campaign_id": campaign_id,
                "member_id": member_id,
                "account_id": str(account_id_for(member_id)),
                "reward_kind": reward.kind.value,
                "coupon_id": str(reward_coupon_id(event.originator_id, member_id))
                if coupon else None,
                "points": None if coupon else reward.points,
                "issued_at": issued_at,
                "redeemable_until": until,
                "order_id": None,
                "redeemed_at": None,
                "spend": 0,
                "refunded": 0,
                "position": position,
            }
            for member_id in event.member_ids
        ])
        count = len(event.member_ids)
        self._campaign_event(
            conn, event, position, issued=row.issued + count,
            points_issued=row.points_issued + (0 if coupon else count * (reward.points or 0)),
            last_issued_at=issued_at,
        )

    # -- redemptions ------------------------------------------------------------------------

    @staticmethod
    def _rewards(conn: Connection, *conditions: Any) -> list[dict[str, Any]]:
        query = select(campaign_rewards).where(*conditions).order_by(
            campaign_rewards.c.campaign_id, campaign_rewards.c.member_id)
        return [dict(r._mapping) for r in conn.execute(query)]

    @staticmethod
    def _change(conn: Connection, event: Any, position: int, row: dict[str, Any],
                **values: Any) -> None:
        """Change a reward row and move its campaign's totals by what that changes."""
        before = contribution(row)
        after = contribution({**row, **values})
        conn.execute(
            update(campaign_rewards)
            .where((campaign_rewards.c.campaign_id == row["campaign_id"])
                   & (campaign_rewards.c.member_id == row["member_id"]))
            .values(position=position, **values)
        )
        if after == before:
            return
        redeemed, spend, refunded = (a - b for a, b in zip(after, before, strict=True))
        c = campaigns.c
        conn.execute(
            update(campaigns).where(c.campaign_id == row["campaign_id"]).values(
                redeemed=c.redeemed + redeemed, spend=c.spend + spend,
                refunded=c.refunded + refunded, updated_at=utc(event.timestamp),
                position=position,
            )
        )

    def _coupon_rows(self, conn: Connection, event: Any) -> list[dict[str, Any]]:
        return self._rewards(conn, campaign_rewards.c.coupon_id == str(event.originator_id))

    def on_coupon_reserved(self, conn: Connection, event: Any, position: int) -> None:
        for row in self._coupon_rows(conn, event):
            self._change(conn, event, position, row, order_id=event.order_id,
                         redeemed_at=None, spend=0, refunded=0)

    def on_coupon_released(self, conn: Connection, event: Any, position: int) -> None:
        # The order was cancelled: whether the coupon was only reserved or already used,
        # it is back in the wallet and the order no longer counts.
        for row in self._coupon_rows(conn, event):
            if row["order_id"] == event.order_id:
                self._change(conn, event, position, row, order_id=None, redeemed_at=None,
                             spend=0, refunded=0)

    def on_coupon_used(self, conn: Connection, event: Any, position: int) -> None:
        for row in self._coupon_rows(conn, event):
            if row["order_id"] == event.order_id and row["redeemed_at"] is None:
                self._change(conn, event, position, row, redeemed_at=utc(event.timestamp))

    def on_spend_recorded(self, conn: Connection, event: Any, position: int) -> None:
        ref = str(event.ref)
        account = campaign_rewards.c.account_id == str(event.originator_id)
        if ref.startswith(ORDER_REF):
            order_id = ref[len(ORDER_REF):]
            paid = int(event.amount)
            at = utc(event.timestamp)
            # The coupon reserved for this order: what the order paid.
            for row in self._rewards(conn, account, campaign_rewards.c.order_id == order_id):
                if row["reward_kind"] == RewardKind.COUPON.value:
                    self._change(conn, event, position, row, spend=paid)
            # Points rewards not yet redeemed whose period includes this payment.
            for row in self._rewards(
                conn, account,
                campaign_rewards.c.reward_kind == RewardKind.POINTS.value,
                campaign_rewards.c.redeemed_at.is_(None),
                campaign_rewards.c.issued_at <= at,
                campaign_rewards.c.redeemable_until > at,
            ):
                self._change(conn, event, position, row, order_id=order_id, redeemed_at=at,
                             spend=paid)
        elif ref.startswith(REFUND_REF):
            order_id = ref[len(REFUND_REF):]
            for row in self._rewards(conn, account, campaign_rewards.c.order_id == order_id):
                self._change(conn, event, position, row,
                             refunded=int(row["refunded"]) - int(event.amount))
