"""The catalogue a test's orders need, listed before they are placed.

Orders are priced by the catalogue, never by the caller. Tests that think in priced lines
(`{product_id, name, quantity, unit_price, ...}`) list each line's product at that price
first, as the shop's admin would, and then ask for what a client may ask for: a product and
a quantity. Re-listing a product at another price revises it, so a test's later orders pay
the new price and its earlier orders keep theirs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role

CATALOGUE_ADMIN = "catalogue-admin"


def catalogue_admin() -> EventMetadata:
    return EventMetadata(CATALOGUE_ADMIN, Role.ADMIN, Channel.ADMIN, "catalogue", None,
                         uuid.uuid4().hex, "test catalogue")


def product_of(runtime: Runtime, line: Mapping[str, Any]) -> dict[str, Any]:
    """The catalogue product a priced line describes. A product the test listed already
    keeps its name and what the line does not say (category, brand, release date,
    attributes, consumable): the line only sets its price."""
    listed = runtime.catalogue.find(line["product_id"])
    product = {"product_id": line["product_id"], "name": line.get("name") or line["product_id"],
               "price": line["unit_price"], "currency": runtime.rules.currency,
               "category": line.get("category"), "brand": line.get("brand")}
    if listed is not None:
        product.update(name=listed.name, released_on=listed.released_on,
                       attributes=listed.attributes, consumable=listed.consumable,
                       category=product["category"] or listed.category,
                       brand=product["brand"] or listed.brand)
    return product


def stocked(runtime: Runtime, lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """List each priced line's product at its price (recording nothing when it already is
    so); the lines as `OrderService.place` takes them (product and quantity)."""
    requested = []
    for line in lines:
        runtime.catalogue.upsert(product_of(runtime, line), catalogue_admin())
        requested.append({"product_id": line["product_id"], "quantity": line["quantity"]})
    return requested
