"""Catalogue read model: one row per product the shop lists, available or not.

Written by hand to match projections/catalogue_tables.py, so the schema a deployment runs
is reviewed, not generated. The "products" projection fills the table from position zero
on its first run; the recommender reads it to know what exists, is available and is new.

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRODUCT_INDEXES = (
    ("ix_products_category", ["category"]),
    ("ix_products_available", ["available"]),
)


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(64)),
        sa.Column("brand", sa.String(64)),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("released_on", sa.Date),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("consumable", sa.Boolean, nullable=False),
        sa.Column("available", sa.Boolean, nullable=False),
        sa.Column("availability_reason", sa.Text),
        sa.Column("listed_at", _tz(), nullable=False),
        sa.Column("updated_at", _tz(), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    for name, columns in PRODUCT_INDEXES:
        op.create_index(name, "products", columns)


def downgrade() -> None:
    for name, _columns in reversed(PRODUCT_INDEXES):
        op.drop_index(name, table_name="products")
    op.drop_table("products")
