"""The product catalogue: admins list and revise products; anyone may read them.

It is the public catalogue a storefront shows, so `product` and `products` need no
token. Writes are for admins: `upsertProduct` describes a product as the shop now sells
it (recording only what changed, nothing when nothing did) and `setProductAvailability`
takes it off sale or puts it back. Both take an optional `reason` for the audit trail;
for availability it is also the reason shown with the product.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import strawberry
from strawberry import relay

from api import catalogue_readmodels as readmodels
from api.readmodels import InvalidCursorError
from api.schema.common import (
    ApiError,
    Connection,
    EventPosition,
    Long,
    UserError,
    context,
    make_connection,
    page_size,
    run_command,
    settled,
)
from api.service import CommandResult
from domain.errors import ErrorCode

MAX_SEARCH = 200


@strawberry.type(name="Product", description="A product of the shop's catalogue.")
class ProductNode(relay.Node):
    key: relay.NodeID[str]
    row: strawberry.Private[dict[str, Any]]

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: strawberry.Info, node_ids: Any, required: bool = False
    ) -> list[ProductNode | None]:
        ids = [str(i) for i in node_ids]
        rows = await readmodels.get_products(context(info).runtime.async_engine, ids)
        return [cls.of(rows[i]) if i in rows else None for i in ids]

    @classmethod
    def of(cls, row: dict[str, Any]) -> ProductNode:
        return cls(key=row["product_id"], row=row)

    @strawberry.field(description="The shop's own id, as order lines carry it.")
    def product_id(self) -> str:
        return self.key

    @strawberry.field
    def name(self) -> str:
        return str(self.row["name"])

    @strawberry.field(description="Lower-case, as order lines keep it.")
    def category(self) -> str | None:
        return self.row["category"]  # type: ignore[no-any-return]

    @strawberry.field(description="Lower-case, as order lines keep it.")
    def brand(self) -> str | None:
        return self.row["brand"]  # type: ignore[no-any-return]

    @strawberry.field(description="Minor units of `currency`.")
    def price(self) -> Long:  # type: ignore[valid-type]
        return Long(int(self.row["price"]))

    @strawberry.field
    def currency(self) -> str:
        return str(self.row["currency"])

    @strawberry.field
    def released_on(self) -> dt.date | None:
        return self.row["released_on"]  # type: ignore[no-any-return]

    @strawberry.field(description="Released within the last 30 days (by the server's clock).")
    def is_new(self, info: strawberry.Info) -> bool:
        return readmodels.is_new(self.row["released_on"], context(info).runtime.clock.today())

    @strawberry.field(description="Free text: description and tags ('' when none).")
    def attributes(self) -> str:
        return str(self.row["attributes"])

    @strawberry.field(description="Bought again and again (tea, coffee): may be recommended "
                                  "after a purchase.")
    def consumable(self) -> bool:
        return bool(self.row["consumable"])

    @strawberry.field(description="Can be bought now.")
    def available(self) -> bool:
        return bool(self.row["available"])

    @strawberry.field(description="Why it is (un)available, as the admin said.")
    def availability_reason(self) -> str | None:
        return self.row["availability_reason"]  # type: ignore[no-any-return]

    @strawberry.field
    def listed_at(self) -> dt.datetime:
        return self.row["listed_at"]  # type: ignore[no-any-return]

    @strawberry.field
    def updated_at(self) -> dt.datetime:
        return self.row["updated_at"]  # type: ignore[no-any-return]

    @strawberry.field(description="Catalogue events recorded for this product.")
    def version(self) -> int:
        return int(self.row["version"])

    @strawberry.field(description="Event-store position of its latest change.")
    def position(self) -> EventPosition:  # type: ignore[valid-type]
        return EventPosition(int(self.row["position"]))


# -- mutations ------------------------------------------------------------------------------


@strawberry.input(description="A product as the shop now sells it; what is left out is "
                              "none (availability: unchanged, or available when new).")
class ProductInput:
    product_id: str = strawberry.field(
        description="1 to 100 letters, digits or . - _ : / (the id order lines carry).")
    name: str
    price: Long = strawberry.field(  # type: ignore[valid-type]
        description="Minor units of `currency`, at least 0.")
    currency: str = strawberry.field(description="ISO 4217, e.g. CNY.")
    category: str | None = None
    brand: str | None = None
    released_on: dt.date | None = strawberry.field(
        default=None, description="At most a year ahead.")
    attributes: str | None = strawberry.field(
        default=None, description="Description and tags, at most 2000 characters.")
    consumable: bool = False
    available: bool | None = strawberry.field(
        default=None, description="Null: available when first listed, else unchanged.")
    reason: str | None = strawberry.field(default=None, description="For the audit trail.")

    def fields(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "name": self.name, "price": self.price,
                "currency": self.currency, "category": self.category, "brand": self.brand,
                "released_on": self.released_on, "attributes": self.attributes,
                "consumable": self.consumable, "available": self.available}


@strawberry.input
class SetProductAvailabilityInput:
    product_id: str
    available: bool
    reason: str | None = strawberry.field(
        default=None, description="For the audit trail; shown with the product.")


@strawberry.type
class ProductPayload:
    product: ProductNode | None
    position: EventPosition | None = strawberry.field(  # type: ignore[valid-type]
        description="Event-store position of this write; null when nothing was recorded "
                    "(the product already was so).")
    user_errors: list[UserError]


@strawberry.type
class UpsertProductPayload(ProductPayload):
    pass


@strawberry.type
class SetProductAvailabilityPayload(ProductPayload):
    pass


async def _payload(info: strawberry.Info, payload: type[ProductPayload], product_id: str,
                   result: CommandResult | None, errors: list[UserError]) -> Any:
    """The product as the read model shows it once it includes this write (null, with the
    write's position, if the read models lag)."""
    if result is None:
        return payload(product=None, position=None, user_errors=errors)
    runtime = context(info).runtime
    row = None
    if await settled(info, result.position):
        row = await readmodels.get_product(runtime.async_engine, product_id.strip())
    return payload(product=ProductNode.of(row) if row else None, position=result.position,
                   user_errors=[])


@strawberry.type
class CatalogueMutations:
    @strawberry.mutation(description="List a product or revise it to match (admins). Only "
                                     "what changed is recorded; nothing, if nothing did.")
    async def upsert_product(self, info: strawberry.Info,
                             input: ProductInput) -> UpsertProductPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.catalogue.upsert(input.fields(), meta),
            input.reason)
        return await _payload(info, UpsertProductPayload, input.product_id, result, errors)  # type: ignore[no-any-return]

    @strawberry.mutation(description="Take a product off sale or put it back (admins), with "
                                     "an optional reason shown with it.")
    async def set_product_availability(
        self, info: strawberry.Info, input: SetProductAvailabilityInput,
    ) -> SetProductAvailabilityPayload:
        result, errors = await run_command(
            info, lambda ctx, meta: ctx.runtime.catalogue.set_availability(
                input.product_id, input.available, input.reason, meta),
            input.reason)
        return await _payload(info, SetProductAvailabilityPayload, input.product_id, result,  # type: ignore[no-any-return]
                              errors)


# -- queries --------------------------------------------------------------------------------


@strawberry.type
class CatalogueQueries:
    @strawberry.field(description="A product by the shop's id: anyone, signed in or not.")
    async def product(self, info: strawberry.Info, product_id: str) -> ProductNode | None:
        row = await readmodels.get_product(context(info).runtime.async_engine,
                                           product_id.strip())
        return ProductNode.of(row) if row else None

    @strawberry.field(description="The catalogue in product-id order, by category, "
                                  "availability and words of the name: anyone.")
    async def products(self, info: strawberry.Info, category: str | None = None,
                       available: bool | None = None, search: str | None = None,
                       first: int | None = None, after: str | None = None
                       ) -> Connection[ProductNode]:
        size = page_size(info, first)
        if search is not None and len(search) > MAX_SEARCH:
            raise ApiError(f"search must be at most {MAX_SEARCH} characters",
                           ErrorCode.VALIDATION.value, field="search")
        try:
            page = await readmodels.list_products(context(info).runtime.async_engine,
                                                  category, available, search, size, after)
        except (InvalidCursorError, ValueError, TypeError):
            raise ApiError("malformed cursor", ErrorCode.VALIDATION.value,
                           field="after") from None
        return make_connection([ProductNode.of(r) for r in page.rows],
                               [readmodels.product_cursor(r) for r in page.rows],
                               has_next=page.has_next, has_previous=after is not None,
                               total=page.total)
