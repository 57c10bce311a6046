"""`coupons` (a member's wallet) and `rewards` (the catalogue points buy).

As every projection: values come from the event and earlier rows only, never the wall
clock, so a rebuild reproduces both tables exactly. A reward's `stock` and
`redeemed_count` move together on `Reward.Taken`, as the aggregate's stock does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, update

from domain.coupon import Coupon, CouponStatus, Reward
from projections.commerce_tables import coupons, rewards, utc
from projections.engine import Handler, ReadModel


class CouponsProjection(ReadModel):
    name = "coupons"
    tables = (coupons, rewards)

    def handlers(self) -> dict[type, Handler]:
        return {
            Coupon.Issued: self.on_issued,
            Coupon.Reserved: self.on_reserved,
            Coupon.Released: self.on_released,
            Coupon.Used: self.on_used,
            Reward.Defined: self.on_defined,
            Reward.Taken: self.on_taken,
        }

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _touch(event: Any, position: int) -> dict[str, Any]:
        return {
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
        }

    def _save_coupon(self, conn: Connection, event: Any, position: int, **values: Any) -> None:
        conn.execute(
            update(coupons)
            .where(coupons.c.coupon_id == str(event.originator_id))
            .values(**self._touch(event, position), **values)
        )

    # -- coupons ----------------------------------------------------------------------------

    def on_issued(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            insert(coupons).values(
                coupon_id=str(event.originator_id),
                member_id=event.member_id,
                source=event.source,
                kind=event.kind,
                value=event.value,
                min_spend=event.min_spend,
                valid_from=utc(event.valid_from),
                valid_until=utc(event.valid_until),
                status=CouponStatus.AVAILABLE.value,
                order_id=None,
                ref=event.ref,
                issued_at=utc(event.timestamp),
                **self._touch(event, position),
            )
        )

    def on_reserved(self, conn: Connection, event: Any, position: int) -> None:
        self._save_coupon(
            conn, event, position, status=CouponStatus.RESERVED.value, order_id=event.order_id
        )

    def on_released(self, conn: Connection, event: Any, position: int) -> None:
        self._save_coupon(
            conn, event, position, status=CouponStatus.AVAILABLE.value, order_id=None
        )

    def on_used(self, conn: Connection, event: Any, position: int) -> None:
        # The aggregate keeps the order that reserved it; Used names the same order.
        self._save_coupon(conn, event, position, status=CouponStatus.USED.value)

    # -- rewards ----------------------------------------------------------------------------

    def on_defined(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            insert(rewards).values(
                reward_id=str(event.originator_id),
                name=event.name,
                description=event.description,
                cost_points=event.cost_points,
                stock=event.stock,
                per_member_limit=event.per_member_limit,
                valid_from=utc(event.valid_from),
                valid_until=utc(event.valid_until),
                coupon=dict(event.coupon),
                coupon_valid_days=event.coupon_valid_days,
                redeemed_count=0,
                defined_at=utc(event.timestamp),
                **self._touch(event, position),
            )
        )

    def on_taken(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            update(rewards)
            .where(rewards.c.reward_id == str(event.originator_id))
            .values(
                stock=rewards.c.stock - 1,
                redeemed_count=rewards.c.redeemed_count + 1,
                **self._touch(event, position),
            )
        )
