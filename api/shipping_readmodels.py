"""Async queries over the shipment-tracking and notification read models.

Both tables are written by projections ("shipment_tracking" and "notifications"), so what
these functions return includes changes recorded by any process, a little behind the event
store. Times come back aware, in UTC, on both backends (projections/timestamps.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.readmodels import RowPage, decode_cursor, encode_cursor, fetch_page, fetch_rows, instant
from domain.shipment import FINAL, RECEIVED, Direction
from projections.shipping_tables import notifications, shipment_tracking

Row = dict[str, Any]

FINAL_STATUSES = tuple(str(s.value) for s in FINAL)
RECEIVED_STATUSES = tuple(str(s.value) for s in RECEIVED)


def _utc(moment: datetime) -> datetime:
    """A bound time in UTC: SQLite compares datetimes as text, without their offset."""
    return moment.astimezone(UTC)


# -- shipments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShipmentFilter:
    order_id: str | None = None
    member_id: str | None = None
    status: str | None = None
    # True: an exception is open; False: none is.
    exception: bool | None = None
    # True: not delivered (nor finished otherwise, nor replaced) and past its promise.
    late: bool | None = None
    # True: received by the member and not rated yet.
    unrated: bool | None = None


async def get_shipments(engine: AsyncEngine, shipment_ids: list[str]) -> dict[str, Row]:
    if not shipment_ids:
        return {}
    rows = await fetch_rows(engine, select(shipment_tracking).where(
        shipment_tracking.c.shipment_id.in_(shipment_ids)))
    return {row["shipment_id"]: row for row in rows}


async def order_shipments(engine: AsyncEngine, order_id: str) -> list[Row]:
    """An order's parcels, oldest first."""
    return await fetch_rows(
        engine,
        select(shipment_tracking).where(shipment_tracking.c.order_id == order_id)
        .order_by(shipment_tracking.c.created_at, shipment_tracking.c.shipment_id),
    )


async def shipments_of_orders(engine: AsyncEngine, order_ids: list[str]) -> dict[str, list[Row]]:
    """Each order's parcels, oldest first, in one statement (for `Order.shipments` under a
    list of orders)."""
    found: dict[str, list[Row]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    rows = await fetch_rows(
        engine,
        select(shipment_tracking).where(shipment_tracking.c.order_id.in_(order_ids))
        .order_by(shipment_tracking.c.created_at, shipment_tracking.c.shipment_id),
    )
    for row in rows:
        found[row["order_id"]].append(row)
    return found


def shipment_cursor(row: Row) -> str:
    created = row["created_at"]
    assert created is not None
    return encode_cursor(created.isoformat(), row["shipment_id"])


def _late(now: datetime) -> Any:
    t = shipment_tracking.c
    return (
        t.delivered_at.is_(None) & t.status.not_in(FINAL_STATUSES) & t.reshipped_as.is_(None)
        & (t.promised_by < _utc(now))
    )


def _conditions(where: ShipmentFilter, now: datetime) -> list[Any]:
    t = shipment_tracking.c
    conditions: list[Any] = []
    if where.order_id:
        conditions.append(t.order_id == where.order_id)
    if where.member_id:
        conditions.append(t.member_id == where.member_id)
    if where.status:
        conditions.append(t.status == where.status)
    if where.exception is not None:
        conditions.append(t.exception_state == "open" if where.exception
                          else t.exception_state != "open")
    if where.late is not None:
        late = _late(now)
        conditions.append(late if where.late else ~late)
    if where.unrated is not None:
        # What the member can still rate: delivered to them (so not a return parcel).
        unrated = (t.status.in_(RECEIVED_STATUSES) & t.rated.is_(False)
                   & (t.direction == Direction.OUTBOUND.value))
        conditions.append(unrated if where.unrated else ~unrated)
    return conditions


async def list_shipments(
    engine: AsyncEngine, where: ShipmentFilter, now: datetime, first: int, after: str | None
) -> RowPage:
    """Newest parcel first."""
    conditions = _conditions(where, now)
    t = shipment_tracking.c
    query = select(shipment_tracking).where(*conditions)
    if after:
        created_at, shipment_id = decode_cursor(after, 2)
        moment = instant(str(created_at))
        query = query.where(
            (t.created_at < moment)
            | ((t.created_at == moment) & (t.shipment_id < str(shipment_id)))
        )
    query = query.order_by(t.created_at.desc(), t.shipment_id.desc())
    count = select(func.count()).select_from(shipment_tracking).where(*conditions)
    return await fetch_page(engine, query, count, first)


# -- notifications --------------------------------------------------------------------------


def notification_cursor(row: Row) -> str:
    return encode_cursor(int(row["position"]), row["notification_id"])


async def notifications_page(
    engine: AsyncEngine, member_id: str, first: int, after: str | None
) -> RowPage:
    """A member's notifications, newest first (in the order their events were recorded)."""
    n = notifications.c
    conditions = [n.member_id == member_id]
    query = select(notifications).where(*conditions)
    if after:
        position, notification_id = decode_cursor(after, 2)
        query = query.where(
            (n.position < int(position))
            | ((n.position == int(position)) & (n.notification_id < str(notification_id)))
        )
    query = query.order_by(n.position.desc(), n.notification_id.desc())
    count = select(func.count()).select_from(notifications).where(*conditions)
    return await fetch_page(engine, query, count, first)


async def latest_notification_position(engine: AsyncEngine, member_id: str) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.max(notifications.c.position)).where(
                notifications.c.member_id == member_id)
        )
    return int(value or 0)


async def notifications_since(engine: AsyncEngine, member_id: str, position: int) -> list[Row]:
    """A member's notifications recorded after `position`, oldest first."""
    n = notifications.c
    return await fetch_rows(
        engine,
        select(notifications).where((n.member_id == member_id) & (n.position > position))
        .order_by(n.position, n.notification_id),
    )
