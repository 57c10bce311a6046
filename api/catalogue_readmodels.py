"""Queries over the `products` read model (projections/catalogue_tables.py).

Two kinds of reader: GraphQL (async, one product or a page), and the recommender, which
reads the whole catalogue at once while training or serving in a worker thread and so takes
a plain synchronous SQLAlchemy `Connection`. Rows come back with aware UTC datetimes on
every backend.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, false, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import (
    RowPage,
    contains_text,
    decode_cursor,
    encode_cursor,
    fetch_page,
    fetch_rows,
)
from domain.catalogue import catalogue_key
from domain.recommendation.catalogue import Product
from projections.catalogue_tables import products

Row = dict[str, Any]

# A product counts as new for this many days from its release (`Product.isNew`).
NEW_FOR = timedelta(days=30)


def is_new(released_on: date | None, today: date) -> bool:
    """Released in the last 30 days up to `today`; a product not yet released is not new."""
    return released_on is not None and today - NEW_FOR <= released_on <= today




# -- GraphQL --------------------------------------------------------------------------------


async def get_products(engine: AsyncEngine, product_ids: list[str]) -> dict[str, Row]:
    """Rows of the products named (those listed), by product id."""
    if not product_ids:
        return {}
    rows = await fetch_rows(engine, select(products).where(
        products.c.product_id.in_(product_ids)))
    return {row["product_id"]: row for row in rows}


async def get_product(engine: AsyncEngine, product_id: str) -> Row | None:
    return (await get_products(engine, [product_id])).get(product_id)


def product_cursor(row: Row) -> str:
    return encode_cursor(row["product_id"])


def _conditions(category: str | None, available: bool | None,
                search: str | None) -> list[ColumnElement[bool]]:
    c = products.c
    conditions: list[ColumnElement[bool]] = []
    if category is not None:
        # Spelt as products and order lines keep it, so "Tea " finds "tea".
        key = catalogue_key(category, "category")
        conditions.append(c.category == key if key is not None else c.category.is_(None))
    if available is not None:
        conditions.append(c.available == available)  # `=`, not `IS`: uses the index
    if search is not None and search.strip():
        conditions.append(contains_text(c.name, search.strip()))
    return conditions


async def list_products(engine: AsyncEngine, category: str | None, available: bool | None,
                        search: str | None, first: int, after: str | None) -> RowPage:
    """Products in product-id order, filtered by category, availability and words of the
    name (case-insensitive); keyset-paginated, so listings while someone pages through do
    not shift the pages not read yet. A malformed cursor raises InvalidCursorError."""
    conditions = _conditions(category, available, search)
    query = select(products).where(*conditions)
    if after:
        (last_id,) = decode_cursor(after, 1)
        query = query.where(products.c.product_id > str(last_id))
    query = query.order_by(products.c.product_id)
    count = select(func.count()).select_from(products).where(*conditions)
    page = await fetch_page(engine, query, count, max(first, 0))
    return RowPage(list(page.rows), page.has_next, page.total)


# -- the recommender (synchronous) ----------------------------------------------------------


def load_catalogue(conn: Connection) -> dict[str, Product]:
    """Every listed product, available or not, as the recommender's `Product`, by id.

    Unavailable products are included (flagged): a model still learns from what people
    bought before it sold out; serving filters them out.
    """
    c = products.c
    rows = conn.execute(select(c.product_id, c.name, c.category, c.brand, c.price,
                               c.released_on, c.attributes, c.available)
                        .order_by(c.product_id))
    return {
        row.product_id: Product(
            item_id=row.product_id, name=row.name, category=row.category or "",
            brand=row.brand or "", price=int(row.price), released=row.released_on,
            attributes=row.attributes or "", available=bool(row.available))
        for row in rows
    }


def consumable_product_ids(conn: Connection) -> set[str]:
    """Products bought again and again (tea, coffee): recommendable after a purchase."""
    return set(conn.scalars(select(products.c.product_id).where(products.c.consumable == true())))


def unavailable_product_ids(conn: Connection) -> set[str]:
    """Listed products that cannot be bought now: never recommended."""
    return set(conn.scalars(select(products.c.product_id).where(products.c.available == false())))
