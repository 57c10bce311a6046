"""The product catalogue: what the shop sells, what it costs, and whether it can be bought.

Orders are priced from it (an order copies each product's price, name, category and brand
when it is placed, and refuses what is unavailable), and recommendations need to know what
exists, is available and is new. So each product the shop lists is a `CatalogueProduct`
aggregate, keyed by the shop's own product id (the one order lines carry): its id is
`uuid5(CATALOGUE_NAMESPACE, product_id)`, so a second upsert of a product finds the first
instead of creating another, and two upserts racing to list one new product clash on the
aggregate's first version (one of them is retried and finds the other's).

An upsert describes the product as the shop now sells it (like a product feed): every
field it leaves out is "none" (no category, no release date, no attributes, not
consumable) — except availability, which is True on first listing and otherwise only
changes when given, because it is the one thing shops change on its own. Only the fields
that differ are recorded (`Revised`), so an upsert of an unchanged product records
nothing; availability is recorded as `AvailabilityChanged` whichever command changes it,
with its reason, so "why can't I buy this?" has one place to look.

Only admins change the catalogue. Their reason is optional here (unlike other admin
actions): a shop's product feed syncs thousands of products, and a reason per product
would be noise; every event still records who changed what, through which channel, when.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import ValidationError
from domain.metadata import MAX_REASON_LENGTH, EventMetadata
from domain.segments import require_admin
from domain.validation import text_value

CATALOGUE_NAMESPACE = UUID("9c3e7a14-5b2d-4f86-a1c0-3d8e6f2b7a59")

MAX_PRODUCT_ID = 100
MAX_NAME = 200
MAX_KEY = 64  # category and brand, as order lines cut them (domain.order.validate_lines)
MAX_ATTRIBUTES = 2000
_PRODUCT_ID = re.compile(r"^[A-Za-z0-9._:/-]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

# The fields an upsert may give, in the order they are checked (the first bad one is
# reported). `available` is not among the product's described fields: see the module doc.
PRODUCT_FIELDS = ("product_id", "name", "category", "brand", "price", "currency",
                  "released_on", "attributes", "consumable", "available")
# What `Revised` may change (everything described except the id, which names the product).
REVISABLE = ("name", "category", "brand", "price", "currency", "released_on", "attributes",
             "consumable")


def product_aggregate_id(product_id: str) -> UUID:
    """The aggregate of the shop's product `product_id` (a validated id)."""
    return uuid5(CATALOGUE_NAMESPACE, product_id)


def product_id_value(value: Any, field: str = "product_id") -> str:
    """The shop's product id: 1 to 100 letters, digits or `.-_:/`, surrounding blanks removed."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("product id must not be blank", field)
    product_id = value.strip()
    if len(product_id) > MAX_PRODUCT_ID:
        raise ValidationError(f"product id must be at most {MAX_PRODUCT_ID} characters", field)
    if not _PRODUCT_ID.match(product_id):
        raise ValidationError("product id may only contain letters, digits and . - _ : /",
                              field)
    return product_id


def catalogue_key(value: Any, field: str) -> str | None:
    """A category or brand exactly as an order line keeps it: stripped, lower-cased, cut to
    64 characters, blank as none — so a product's category and its order lines' agree.

    Anything but text (or none) is refused: an admin's input is checked, not guessed.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field)
    return value.strip().lower()[:MAX_KEY] if value.strip() else None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name the product", "name")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise ValidationError(f"name must be at most {MAX_NAME} characters", "name")
    return name


def _price(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError("price must be a non-negative whole amount in minor units",
                              "price")
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise ValidationError("currency must be three upper-case letters (ISO 4217)",
                              "currency")
    return value


def _released_on(value: Any, today: date) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValidationError("release date must be a date (YYYY-MM-DD)",
                                  "released_on") from None
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValidationError("release date must be a date (YYYY-MM-DD)", "released_on")
    if value > a_year_after(today):
        raise ValidationError("release date must be at most a year from now", "released_on")
    return value


def a_year_after(today: date) -> date:
    """The same day next year (1 March for 29 February): how far ahead a shop may announce
    a release — far enough for next season's range, not so far that a typo passes."""
    try:
        return today.replace(year=today.year + 1)
    except ValueError:
        return date(today.year + 1, 3, 1)


def _attributes(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("attributes must be text", "attributes")
    text = value.strip()
    if len(text) > MAX_ATTRIBUTES:
        raise ValidationError(f"attributes must be at most {MAX_ATTRIBUTES} characters",
                              "attributes")
    return text


def _flag(value: Any, field: str, default: bool | None) -> bool | None:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false", field)
    return value


def availability_reason(value: Any) -> str | None:
    """Why a product can (no longer) be bought; blank is no reason."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("reason must be text", "reason")
    text = value.strip()
    if len(text) > MAX_REASON_LENGTH:
        raise ValidationError(f"reason must be at most {MAX_REASON_LENGTH} characters",
                              "reason")
    return text or None


def validate_product(fields: Mapping[str, Any], *, today: date) -> dict[str, Any]:
    """The product an upsert describes, checked and normalised, or a ValidationError on
    the first bad field (in `PRODUCT_FIELDS` order; an unknown field is refused first).

    Returns every field of `PRODUCT_FIELDS`: `released_on` as a `date` or None,
    `attributes` as text ('' for none), and `available` None when it was not given.
    `today` bounds the release date (at most a year ahead).
    """
    unknown = sorted(set(fields) - set(PRODUCT_FIELDS))
    if unknown:
        raise ValidationError(f"unknown product field {unknown[0]!r}", unknown[0])
    for field in PRODUCT_FIELDS:
        if isinstance(fields.get(field), str):
            text_value(fields[field], field)  # no control characters in any text
    return {
        "product_id": product_id_value(fields.get("product_id")),
        "name": _name(fields.get("name")),
        "category": catalogue_key(fields.get("category"), "category"),
        "brand": catalogue_key(fields.get("brand"), "brand"),
        "price": _price(fields.get("price")),
        "currency": _currency(fields.get("currency")),
        "released_on": _released_on(fields.get("released_on"), today),
        "attributes": _attributes(fields.get("attributes")),
        "consumable": _flag(fields.get("consumable"), "consumable", False),
        "available": _flag(fields.get("available"), "available", None),
    }


def _stored(field: str, value: Any) -> Any:
    """A checked value as an event stores it (dates as ISO text: the store has no dates)."""
    if field == "released_on" and value is not None:
        return value.isoformat()
    return value


class CatalogueProduct(RecordedAggregate):
    """One product of the shop's catalogue, as admins described it over time."""

    @classmethod
    def list_product(cls, product: Mapping[str, Any], now: datetime,
             meta: EventMetadata) -> CatalogueProduct:
        """List a product (`product` from `validate_product`), available unless it says not."""
        require_admin(meta, "change the catalogue")
        available = product["available"] is not False
        return cls._create(
            cls.Listed, id=product_aggregate_id(product["product_id"]), timestamp=now,
            product_id=product["product_id"],
            **{field: _stored(field, product[field]) for field in REVISABLE},
            available=available,
            availability_reason=None if available else meta.reason,
            meta=meta.as_dict(),
        )

    class Listed(Aggregate.Created):
        product_id: str
        name: str
        category: str | None
        brand: str | None
        price: int
        currency: str
        released_on: str | None
        attributes: str
        consumable: bool
        available: bool
        availability_reason: str | None

    def __init__(self, product_id: str, name: str, category: str | None, brand: str | None,
                 price: int, currency: str, released_on: str | None, attributes: str,
                 consumable: bool, available: bool, availability_reason: str | None,
                 meta: dict[str, Any]) -> None:
        self.product_id = product_id
        self.name = name
        self.category = category
        self.brand = brand
        self.price = price
        self.currency = currency
        # ISO date text, as recorded; see `release_date`.
        self.released_on = released_on
        self.attributes = attributes
        self.consumable = consumable
        self.available = available
        self.availability_reason = availability_reason
        self.listed_by = meta

    @property
    def release_date(self) -> date | None:
        return date.fromisoformat(self.released_on) if self.released_on else None

    # -- commands ---------------------------------------------------------------------------

    def revise(self, product: Mapping[str, Any], now: datetime, meta: EventMetadata
               ) -> list[str]:
        """Make the product what `product` (from `validate_product`) describes.

        Records `Revised` with only the fields that differ, and `AvailabilityChanged` if
        `available` was given and differs. Returns the names of the fields that changed
        (with "available"): empty, recording nothing, when the product already is so.
        """
        require_admin(meta, "change the catalogue")
        if product["product_id"] != self.product_id:
            raise ValidationError("this upsert describes another product", "product_id")
        changes = {field: _stored(field, product[field]) for field in REVISABLE
                   if getattr(self, field) != _stored(field, product[field])}
        if changes:
            self._trigger(self.Revised, now, meta, product_id=self.product_id, changes=changes)
        changed = list(changes)
        available = product["available"]
        if available is not None and self.set_availability(available, meta.reason, now, meta):
            changed.append("available")
        return changed

    def set_availability(self, available: bool, reason: Any, now: datetime,
                         meta: EventMetadata) -> bool:
        """Make the product (un)available to buy; False, recording nothing, if it already is."""
        require_admin(meta, "change the catalogue")
        if not isinstance(available, bool):
            raise ValidationError("available must be true or false", "available")
        why = availability_reason(reason)
        if available == self.available:
            return False
        self._trigger(
            self.AvailabilityChanged, now, meta, product_id=self.product_id, available=available,
            reason=why,
        )
        return True

    # -- events -----------------------------------------------------------------------------

    # Every event names the shop's product id, so readers keyed by it (the `products`
    # read model) need no lookup from aggregate id to product id.

    class Revised(RecordedAggregate.Event):
        """The fields that changed, with their new values (a release date as ISO text)."""

        product_id: str
        changes: dict[str, Any]

        def apply(self, product: Any) -> None:
            for field, value in self.changes.items():
                setattr(product, field, value)

    class AvailabilityChanged(RecordedAggregate.Event):
        product_id: str
        available: bool
        reason: str | None

        def apply(self, product: Any) -> None:
            product.available = self.available
            product.availability_reason = self.reason
