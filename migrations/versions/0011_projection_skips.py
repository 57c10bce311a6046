"""Projection skips: events an operator told a read model to pass over, with the reason.

A read model whose handler fails on an event stops alone (the others carry on); once an
operator has looked at the event, `patron projections skip NAME POSITION --reason …` records
the decision here. The runner (and every rebuild, so a rebuild equals the live table)
passes over that event for that read model only.

Revision ID: 0011
Revises: 0010
Create Date: 2027-02-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "projection_skips",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("topic", sa.String(400), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("skipped_by", sa.String(200), nullable=False),
        sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("projection_skips")
