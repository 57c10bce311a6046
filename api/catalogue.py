"""Commands on the product catalogue: upsert a product, make it (un)available.

A product's aggregate id is derived from the shop's product id, so an upsert needs no
idempotency key: repeating it finds the product and, nothing having changed, records
nothing. Two upserts that race to list the same new product both try to create version 1
of one aggregate; the event store takes one, and the unit of work retries the other on
fresh state, where it finds the listed product and revises it (or records nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.service import CommandResult, Session, UnitOfWork
from domain.catalogue import (
    CatalogueProduct,
    product_aggregate_id,
    product_id_value,
    validate_product,
)
from domain.clock import Clock
from domain.errors import NotFoundError
from domain.metadata import EventMetadata
from domain.segments import require_admin


class CatalogueService:
    def __init__(self, uow: UnitOfWork, clock: Clock) -> None:
        self.uow = uow
        self.clock = clock

    def find(self, product_id: str) -> CatalogueProduct | None:
        """The product the shop calls `product_id`, from the event store (None if unlisted)."""
        return Session(self.uow.app).find(CatalogueProduct,
                                          product_aggregate_id(product_id_value(product_id)))

    def upsert(self, fields: Mapping[str, Any], meta: EventMetadata) -> CommandResult:
        """List the product `fields` describe, or revise it to match (admins).

        `fields` are those of `domain.catalogue.PRODUCT_FIELDS`. The result's position is
        None when nothing was recorded (the product already was exactly so).
        """
        require_admin(meta, "change the catalogue")
        product = validate_product(fields, today=self.clock.today())
        aggregate_id = product_aggregate_id(product["product_id"])

        def decide(session: Session) -> CatalogueProduct:
            now = self.clock.now()
            existing = session.find(CatalogueProduct, aggregate_id)
            if existing is None:
                return session.add(CatalogueProduct.list_product(product, now, meta))
            existing.revise(product, now, meta)
            return existing

        return self.uow.result_of(self.uow.run(decide))

    def set_availability(self, product_id: str, available: bool, reason: str | None,
                         meta: EventMetadata) -> CommandResult:
        """Make a listed product (un)available, with why (admins); NOT_FOUND if unlisted.

        Setting the availability it already has records nothing (position None).
        """
        require_admin(meta, "change the catalogue")
        checked_id = product_id_value(product_id)
        aggregate_id = product_aggregate_id(checked_id)

        def decide(session: Session) -> CatalogueProduct:
            product = session.find(CatalogueProduct, aggregate_id)
            if product is None:
                raise NotFoundError(f"product {checked_id!r} is not in the catalogue",
                                    "product_id")
            product.set_availability(available, reason, self.clock.now(), meta)
            return product

        return self.uow.result_of(self.uow.run(decide))
