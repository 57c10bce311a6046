"""Read-model tables of campaigns and what they achieved, kept by "campaign_results".

One row per campaign (what was launched, whether it was stopped, and its running totals)
and one per rewarded member (the reward, and the order that redeemed it, if any). Both are
built from events alone (see projections/campaign_results.py), so a rebuild from position
zero reproduces them exactly. Only member ids are kept here, never personal data.

Migration 0007 creates these tables; a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

campaigns = Table(
    "campaigns",
    metadata,
    Column("campaign_id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("segment_id", String(36), nullable=False),
    # 'coupon' | 'points'
    Column("reward_kind", String(10), nullable=False),
    # domain.campaigns.CampaignReward.as_dict(): the coupon's terms and validity, or points.
    Column("reward", JSONType, nullable=False),
    # The most members the campaign rewards.
    Column("budget", Integer, nullable=False),
    Column("starts_at", UtcDateTime(), nullable=False),
    Column("ends_at", UtcDateTime(), nullable=False),
    # 'launched' | 'stopped' (scheduled / running / ended are read against the clock).
    Column("status", String(10), nullable=False),
    Column("launched_at", UtcDateTime(), nullable=False),
    Column("launched_by", String(100), nullable=False),
    Column("launch_reason", Text),
    Column("stopped_at", UtcDateTime()),
    Column("stopped_by", String(100)),
    Column("stop_reason", Text),
    # Members rewarded, and the points that went out (points campaigns).
    Column("issued", Integer, nullable=False),
    Column("points_issued", BigInteger, nullable=False),
    Column("last_issued_at", UtcDateTime()),
    # Rewards redeemed, what their orders paid and what was refunded on those orders since.
    Column("redeemed", Integer, nullable=False),
    Column("spend", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_campaigns_launched_at", "launched_at"),
    Index("ix_campaigns_segment_id", "segment_id"),
)

campaign_rewards = Table(
    "campaign_rewards",
    metadata,
    Column("campaign_id", String(36), primary_key=True),
    Column("member_id", String(36), primary_key=True),
    # The member's loyalty account (domain.loyalty.account_id_for): whose payments count.
    Column("account_id", String(36), nullable=False),
    Column("reward_kind", String(10), nullable=False),
    # Coupon campaigns: the coupon issued (uuid5 of campaign and member).
    Column("coupon_id", String(36)),
    # Points campaigns: the points credited.
    Column("points", Integer),
    Column("issued_at", UtcDateTime(), nullable=False),
    # Until when a redemption counts: the coupon's validity, or the campaign's end.
    Column("redeemable_until", UtcDateTime(), nullable=False),
    # The order the coupon is reserved for or used on / the order that redeemed the points.
    Column("order_id", String(36)),
    Column("redeemed_at", UtcDateTime()),
    # What that order paid, and what was refunded on it since (minor units).
    Column("spend", BigInteger, nullable=False),
    Column("refunded", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_campaign_rewards_page", "campaign_id", "issued_at", "member_id"),
    Index("ix_campaign_rewards_account_id", "account_id"),
    Index("ix_campaign_rewards_coupon_id", "coupon_id"),
    Index("ix_campaign_rewards_order_id", "order_id"),
)

CAMPAIGN_TABLES = (campaigns, campaign_rewards)
