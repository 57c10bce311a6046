"""Coupons in a member's wallet, and the catalogue of rewards that points buy.

A coupon is single use: it is reserved when an order is placed with it, released if that
order is cancelled, and used when the order is paid. Rewards have stock and a per-member
limit; taking one is recorded on the reward, so two members can never take the last one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import InvalidTransitionError, LimitExceededError, ValidationError
from domain.metadata import EventMetadata
from domain.pricing import CouponTerms

MAX_VALIDITY = timedelta(days=3660)


class CouponKind(StrEnum):
    FIXED = "fixed"
    PERCENT = "percent"


class CouponSource(StrEnum):
    REDEMPTION = "redemption"
    CAMPAIGN = "campaign"
    BIRTHDAY = "birthday"
    WELCOME = "welcome"
    ADMIN = "admin"


class CouponStatus(StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    USED = "used"
    # Never recorded: an available coupon whose validity window has ended is expired.
    # Time alone expires it, so it is derived when read (see `status_at`).
    EXPIRED = "expired"


def status_at(recorded: str, valid_until: datetime, now: datetime) -> CouponStatus:
    """A coupon's status as a member sees it at `now`."""
    if recorded == CouponStatus.AVAILABLE and now >= valid_until:
        return CouponStatus.EXPIRED
    return CouponStatus(recorded)


def validate_terms(kind: Any, value: Any, min_spend: Any) -> CouponTerms:
    try:
        kind_value = CouponKind(kind).value
    except ValueError:
        raise ValidationError("coupon kind must be fixed or percent", "kind") from None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValidationError("coupon value must be a positive whole number", "value")
    if kind_value == CouponKind.PERCENT and value > 10000:
        raise ValidationError("a percentage coupon is at most 10000 basis points", "value")
    if not isinstance(min_spend, int) or isinstance(min_spend, bool) or min_spend < 0:
        raise ValidationError("minimum spend must be zero or more", "min_spend")
    return CouponTerms(kind=kind_value, value=value, min_spend=min_spend)


def validate_window(valid_from: datetime, valid_until: datetime) -> None:
    if valid_from.tzinfo is None or valid_until.tzinfo is None:
        raise ValidationError("validity times need a time zone", "valid_until")
    if valid_until <= valid_from:
        raise ValidationError("a coupon must be valid for some time", "valid_until")
    if valid_until - valid_from > MAX_VALIDITY:
        raise ValidationError("a coupon is valid for at most ten years", "valid_until")


class Coupon(RecordedAggregate):
    @classmethod
    def issue(
        cls,
        coupon_id: Any,
        member_id: str,
        source: Any,
        terms: CouponTerms,
        valid_from: datetime,
        valid_until: datetime,
        ref: str | None,
        now: datetime,
        meta: EventMetadata,
    ) -> Coupon:
        try:
            source_value = CouponSource(source).value
        except ValueError:
            raise ValidationError("unknown coupon source", "source") from None
        validate_window(valid_from, valid_until)
        if source_value == CouponSource.ADMIN:
            meta.require_reason()
        return cls._create(
            cls.Issued, id=coupon_id, timestamp=now, member_id=member_id, source=source_value,
            kind=terms.kind, value=terms.value, min_spend=terms.min_spend,
            valid_from=valid_from.isoformat(), valid_until=valid_until.isoformat(), ref=ref,
            meta=meta.as_dict(),
        )

    class Issued(Aggregate.Created):
        member_id: str
        source: str
        kind: str
        value: int
        min_spend: int
        valid_from: str
        valid_until: str
        ref: str | None

    def __init__(
        self, member_id: str, source: str, kind: str, value: int, min_spend: int,
        valid_from: str, valid_until: str, ref: str | None, meta: dict[str, Any],
    ) -> None:
        self.member_id = member_id
        self.source = source
        self.terms: dict[str, Any] = {"kind": kind, "value": value, "min_spend": min_spend}
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.ref = ref
        self.status: str = CouponStatus.AVAILABLE.value
        self.order_id: str | None = None

    @property
    def coupon_terms(self) -> CouponTerms:
        return CouponTerms(**self.terms)

    def usable_at(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.valid_from) <= now < datetime.fromisoformat(
            self.valid_until
        )

    def reserve(self, member_id: str, order_id: str, now: datetime, meta: EventMetadata) -> None:
        if member_id != self.member_id:
            raise ValidationError("this coupon belongs to another member", "coupon_id")
        if self.status != CouponStatus.AVAILABLE:
            raise InvalidTransitionError(
                f"the coupon is {self.status}", current_state=self.status, field="coupon_id",
                attempted="reserve",
            )
        if not self.usable_at(now):
            raise ValidationError(
                f"the coupon is valid from {self.valid_from} until {self.valid_until}",
                "coupon_id",
            )
        self._trigger(self.Reserved, now, meta, order_id=order_id)

    def release(self, order_id: str, now: datetime, meta: EventMetadata) -> None:
        """Give the coupon back when its order is cancelled, whether reserved or used."""
        if self.status != CouponStatus.AVAILABLE and self.order_id == order_id:
            self._trigger(self.Released, now, meta, order_id=order_id)

    def use(self, order_id: str, now: datetime, meta: EventMetadata) -> None:
        if self.status == CouponStatus.RESERVED and self.order_id == order_id:
            self._trigger(self.Used, now, meta, order_id=order_id)

    class Reserved(RecordedAggregate.Event):
        order_id: str

        def apply(self, coupon: Any) -> None:
            coupon.status = CouponStatus.RESERVED.value
            coupon.order_id = self.order_id

    class Released(RecordedAggregate.Event):
        order_id: str

        def apply(self, coupon: Any) -> None:
            coupon.status = CouponStatus.AVAILABLE.value
            coupon.order_id = None

    class Used(RecordedAggregate.Event):
        order_id: str

        def apply(self, coupon: Any) -> None:
            coupon.status = CouponStatus.USED.value


class Reward(RecordedAggregate):
    """A catalogue entry: a coupon that costs points, with stock and a per-member limit."""

    @classmethod
    def define(
        cls,
        name: str,
        description: str | None,
        cost_points: int,
        stock: int,
        per_member_limit: int,
        valid_from: datetime,
        valid_until: datetime,
        terms: CouponTerms,
        coupon_valid_days: int,
        now: datetime,
        meta: EventMetadata,
    ) -> Reward:
        meta.require_reason()
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 100:
            raise ValidationError("a reward needs a name of at most 100 characters", "name")
        for field, value, low in (("cost_points", cost_points, 1), ("stock", stock, 0),
                                  ("per_member_limit", per_member_limit, 1),
                                  ("coupon_valid_days", coupon_valid_days, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValidationError(f"{field} must be a whole number of at least {low}", field)
        validate_window(valid_from, valid_until)
        return cls._create(
            cls.Defined, timestamp=now, name=name.strip(),
            description=(description or "").strip()[:500] or None, cost_points=cost_points,
            stock=stock, per_member_limit=per_member_limit, valid_from=valid_from.isoformat(),
            valid_until=valid_until.isoformat(), coupon=dict(terms.__dict__),
            coupon_valid_days=coupon_valid_days, meta=meta.as_dict(),
        )

    class Defined(Aggregate.Created):
        name: str
        description: str | None
        cost_points: int
        stock: int
        per_member_limit: int
        valid_from: str
        valid_until: str
        coupon: dict[str, Any]
        coupon_valid_days: int

    def __init__(
        self, name: str, description: str | None, cost_points: int, stock: int,
        per_member_limit: int, valid_from: str, valid_until: str, coupon: dict[str, Any],
        coupon_valid_days: int, meta: dict[str, Any],
    ) -> None:
        self.name = name
        self.description = description
        self.cost_points = cost_points
        self.stock = stock
        self.per_member_limit = per_member_limit
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.coupon = dict(coupon)
        self.coupon_valid_days = coupon_valid_days
        self.taken_by: dict[str, int] = {}

    def take(self, member_id: str, redemption_ref: str, now: datetime,
             meta: EventMetadata) -> None:
        if not (datetime.fromisoformat(self.valid_from) <= now
                < datetime.fromisoformat(self.valid_until)):
            raise ValidationError("this reward is not available now", "reward_id")
        if self.stock <= 0:
            raise LimitExceededError("this reward is out of stock", "reward_id")
        if self.taken_by.get(member_id, 0) >= self.per_member_limit:
            raise LimitExceededError(
                f"a member may redeem this reward at most {self.per_member_limit} time(s)",
                "reward_id",
            )
        self._trigger(self.Taken, now, meta, member_id=member_id, ref=redemption_ref)

    class Taken(RecordedAggregate.Event):
        member_id: str
        ref: str

        def apply(self, reward: Any) -> None:
            reward.stock -= 1
            reward.taken_by[self.member_id] = reward.taken_by.get(self.member_id, 0) + 1
