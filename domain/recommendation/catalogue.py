"""Products as a recommender sees them: what they are (category, brand, words), what they
cost and when they came out.

Kept apart from the models so that the synthetic generator, the evaluation (novelty needs
release dates) and the content model share one definition; the `products` read model of
the catalogue events will map its rows onto this record.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

__all__ = ["Catalogue", "Product", "by_id", "price_band", "price_band_edges"]


@dataclass(frozen=True, slots=True)
class Product:
    """One product. `price` is in minor units (cents, fen), as money is everywhere else.

    `attributes` is free text (a description, tags): the content model tokenises it, so a
    product page's words can make two products similar across brands.
    """

    item_id: str
    name: str
    category: str
    brand: str
    price: int
    released: date | None = None
    attributes: str = ""
    available: bool = True


# What a catalogue is to every function here: products by id.
Catalogue = Mapping[str, Product]


def price_band_edges(prices: Iterable[int], bands: int = 5) -> list[int]:
    """Upper-exclusive edges splitting `prices` into `bands` groups of about equal size.

    Quantiles rather than fixed amounts, because "cheap" for tea and "cheap" for a phone
    differ by two orders of magnitude, and equal-size bands make each band a useful signal.
    """
    ordered = sorted(prices)
    if bands < 1:
        raise ValueError("bands must be at least 1")
    if not ordered:
        return []
    return [ordered[len(ordered) * b // bands] for b in range(1, bands)]


def price_band(price: int, edges: list[int]) -> int:
    """The band (0 = cheapest) a price falls in, given `price_band_edges`."""
    return bisect.bisect_right(edges, price)


def by_id(products: Iterable[Product]) -> dict[str, Product]:
    """A catalogue from products, refusing duplicate ids (a silent overwrite hides bugs)."""
    catalogue: dict[str, Product] = {}
    for product in products:
        if product.item_id in catalogue:
            raise ValueError(f"duplicate product id {product.item_id!r}")
        catalogue[product.item_id] = product
    return catalogue
