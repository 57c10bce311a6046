"""`products`: the catalogue as it stands, one row per product the shop has listed.

Built from the three catalogue events alone (never the clock, never another table), so a
rebuild from position zero reproduces the table exactly. Rows are keyed by the shop's
product id, which every catalogue event carries and which order lines and behaviour events
carry too, so readers join on it.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, insert, update

from domain.catalogue import CatalogueProduct
from projections.catalogue_tables import products
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel


def _date(value: str | None) -> date | None:
    """A release date as events record it (ISO text) for the Date column."""
    return date.fromisoformat(value) if value else None


class CatalogueProjection(ReadModel):
    name = "products"
    tables = (products,)

    def handlers(self) -> dict[type, Handler]:
        return {
            CatalogueProduct.Listed: self.on_listed,
            CatalogueProduct.Revised: self.on_revised,
            CatalogueProduct.AvailabilityChanged: self.on_availability_changed,
        }

    def on_listed(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(insert(products).values(
            product_id=event.product_id,
            name=event.name,
            category=event.category,
            brand=event.brand,
            price=event.price,
            currency=event.currency,
            released_on=_date(event.released_on),
            attributes=event.attributes,
            consumable=event.consumable,
            available=event.available,
            availability_reason=event.availability_reason,
            listed_at=utc(event.timestamp),
            updated_at=utc(event.timestamp),
            version=event.originator_version,
            position=position,
        ))

    def on_revised(self, conn: Connection, event: Any, position: int) -> None:
        changes = dict(event.changes)
        if "released_on" in changes:
            changes["released_on"] = _date(changes["released_on"])
        self._update(conn, event, position, **changes)

    def on_availability_changed(self, conn: Connection, event: Any, position: int) -> None:
        self._update(conn, event, position, available=event.available,
                     availability_reason=event.reason)

    @staticmethod
    def _update(conn: Connection, event: Any, position: int, **values: Any) -> None:
        conn.execute(
            update(products)
            .where(products.c.product_id == event.product_id)
            .values(updated_at=utc(event.timestamp), version=event.originator_version,
                    position=position, **values)
        )
