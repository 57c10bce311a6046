"""Per-request DataLoaders: nested lists read the read models in batches, not per row.

Without them `caseQueue(first: 100) { edges { node { member order } } }` ran one statement
per case and field (200 more), and `members { orders { shipments } }` one per member and
per order. A loader collects the keys every resolver of one execution step asks for and
reads them with one statement, so an accepted query costs a bounded number of statements
whatever the number of rows. Loaders live for one request: nothing is cached across
requests (read-your-writes decides freshness per request).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.dataloader import DataLoader

from api.commerce_readmodels import first_order_pages, get_orders
from api.readmodels import RowPage, get_member_profiles
from api.shipping_readmodels import shipments_of_orders

Row = dict[str, Any]


class Loaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.orders: DataLoader[str, Row | None] = DataLoader(self._orders)
        self.member_profiles: DataLoader[str, Row | None] = DataLoader(self._profiles)
        self.order_shipments: DataLoader[str, list[Row]] = DataLoader(self._shipments)
        # Keyed by (member id, page size): the first page of a member's orders.
        self.member_orders: DataLoader[tuple[str, int], RowPage] = DataLoader(
            self._member_orders)

    async def _orders(self, keys: Sequence[str]) -> list[Row | None]:
        rows = await get_orders(self.engine, list(dict.fromkeys(keys)))
        return [rows.get(k) for k in keys]

    async def _profiles(self, keys: Sequence[str]) -> list[Row | None]:
        rows = await get_member_profiles(self.engine, list(dict.fromkeys(keys)))
        return [rows.get(k) for k in keys]

    async def _shipments(self, keys: Sequence[str]) -> list[list[Row]]:
        rows = await shipments_of_orders(self.engine, list(dict.fromkeys(keys)))
        return [rows[k] for k in keys]

    async def _member_orders(self, keys: Sequence[tuple[str, int]]) -> list[RowPage]:
        pages: dict[tuple[str, int], RowPage] = {}
        for size in {size for _, size in keys}:
            members = list(dict.fromkeys(m for m, s in keys if s == size))
            for member, page in (await first_order_pages(self.engine, members, size)).items():
                pages[(member, size)] = page
        return [pages[k] for k in keys]
