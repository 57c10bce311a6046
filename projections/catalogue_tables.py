"""Read-model table of the product catalogue, kept by the "products" projection.

One row per product the shop has listed, keyed by the shop's own product id (the one order
lines carry), so the recommender and GraphQL read what exists, what it costs, whether it
can be bought now and when it was released. Built from catalogue events alone (see
projections/catalogue.py), so a rebuild from position zero reproduces it exactly.

Migration 0009 creates this table; a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from projections.tables import metadata
from projections.timestamps import UtcDateTime

products = Table(
    "products",
    metadata,
    Column("product_id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
    # Lower-cased like order lines (domain.order), so both name a category the same way.
    Column("category", String(64)),
    Column("brand", String(64)),
    # Minor units of `currency`.
    Column("price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("released_on", Date),
    # Free text (description, tags) the content model tokenises; '' when there is none.
    Column("attributes", Text, nullable=False),
    # Bought again and again (tea, coffee): may be recommended after it was bought.
    Column("consumable", Boolean, nullable=False),
    Column("available", Boolean, nullable=False),
    Column("availability_reason", Text),
    Column("listed_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_products_category", "category"),
    Index("ix_products_available", "available"),
)

CATALOGUE_TABLES = (products,)
