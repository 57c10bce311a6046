"""Campaign read models: each campaign's results and each rewarded member.

Written by hand to match projections/campaign_tables.py, so the schema a deployment runs
is reviewed, not generated. The "campaign_results" projection fills the tables from
position zero on its first run.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

CAMPAIGN_INDEXES = (
    ("ix_campaigns_launched_at", ["launched_at"]),
    ("ix_campaigns_segment_id", ["segment_id"]),
)
REWARD_INDEXES = (
    ("ix_campaign_rewards_page", ["campaign_id", "issued_at", "member_id"]),
    ("ix_campaign_rewards_account_id", ["account_id"]),
    ("ix_campaign_rewards_coupon_id", ["coupon_id"]),
    ("ix_campaign_rewards_order_id", ["order_id"]),
)


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("campaign_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("segment_id", sa.String(36), nullable=False),
        sa.Column("reward_kind", sa.String(10), nullable=False),
        sa.Column("reward", JSONType, nullable=False),
        sa.Column("budget", sa.Integer, nullable=False),
        sa.Column("starts_at", _tz(), nullable=False),
        sa.Column("ends_at", _tz(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("launched_at", _tz(), nullable=False),
        sa.Column("launched_by", sa.String(100), nullable=False),
        sa.Column("launch_reason", sa.Text),
        sa.Column("stopped_at", _tz()),
        sa.Column("stopped_by", sa.String(100)),
        sa.Column("stop_reason", sa.Text),
        sa.Column("issued", sa.Integer, nullable=False),
        sa.Column("points_issued", sa.BigInteger, nullable=False),
        sa.Column("last_issued_at", _tz()),
        sa.Column("redeemed", sa.Integer, nullable=False),
        sa.Column("spend", sa.BigInteger, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for name, columns in CAMPAIGN_INDEXES:
        op.create_index(name, "campaigns", columns)

    op.create_table(
        "campaign_rewards",
        sa.Column("campaign_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("reward_kind", sa.String(10), nullable=False),
        sa.Column("coupon_id", sa.String(36)),
        sa.Column("points", sa.Integer),
        sa.Column("issued_at", _tz(), nullable=False),
        sa.Column("redeemable_until", _tz(), nullable=False),
        sa.Column("order_id", sa.String(36)),
        sa.Column("redeemed_at", _tz()),
        sa.Column("spend", sa.BigInteger, nullable=False),
        sa.Column("refunded", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for name, columns in REWARD_INDEXES:
        op.create_index(name, "campaign_rewards", columns)


def downgrade() -> None:
    for name, _columns in reversed(REWARD_INDEXES):
        op.drop_index(name, table_name="campaign_rewards")
    op.drop_table("campaign_rewards")
    for name, _columns in reversed(CAMPAIGN_INDEXES):
        op.drop_index(name, table_name="campaigns")
    op.drop_table("campaigns")
