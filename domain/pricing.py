"""Order pricing: a pure function, so the breakdown can be shown, stored and tested alone.

The documented order of application:
1. subtotal = sum of quantity x unit price;
2. tier discount: the member's tier discount (basis points) of the subtotal, rounded down;
3. coupon: fixed amount or percentage of what remains, if that reaches its minimum spend;
4. points: at most `max_points_share_bp` of what remains, in whole currency units
   (multiples of `redemption_points_per_unit` points), at least `min_redemption_points`;
5. shipping fee: free for tiers with free shipping, or when what remains after discounts
   (before points) reaches `free_shipping_threshold`.
total = subtotal - tier discount - coupon discount - points value + shipping fee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from domain.errors import ValidationError
from domain.loyalty_rules import LoyaltyRules, Tier


@dataclass(frozen=True)
class CouponTerms:
    kind: str  # "fixed" (value in minor units) or "percent" (value in basis points)
    value: int
    min_spend: int


@dataclass(frozen=True)
class PriceBreakdown:
    subtotal: int
    tier_discount: int
    coupon_discount: int
    points_used: int
    points_value: int
    shipping_fee: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriceBreakdown:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


def coupon_discount(terms: CouponTerms, amount: int) -> int:
    if amount < terms.min_spend:
        raise ValidationError(
            f"the coupon needs a minimum spend of {terms.min_spend}; this order reaches {amount}",
            "coupon_id",
        )
    if terms.kind == "fixed":
        return min(terms.value, amount)
    return amount * terms.value // 10000


def max_points_for(amount: int, rules: LoyaltyRules) -> int:
    """The most points an order may use when `amount` remains to pay (before shipping)."""
    cap_value = amount * rules.max_points_share_bp // 10000
    units = cap_value // rules.minor_units_per_unit
    return units * rules.redemption_points_per_unit


def price_order(
    line_amounts: Sequence[int],
    tier: Tier | str,
    rules: LoyaltyRules,
    coupon: CouponTerms | None = None,
    points: int = 0,
) -> PriceBreakdown:
    subtotal = sum(line_amounts)
    if subtotal <= 0:
        raise ValidationError("an order must cost something", "lines")
    tier_rule = rules.tier_rule(tier)
    tier_discount = subtotal * tier_rule.member_discount_bp // 10000
    remaining = subtotal - tier_discount
    discount = coupon_discount(coupon, remaining) if coupon else 0
    remaining -= discount
    if points < 0:
        raise ValidationError("points cannot be negative", "points")
    if points:
        if points < rules.min_redemption_points:
            raise ValidationError(
                f"at least {rules.min_redemption_points} points must be used at once", "points"
            )
        if points % rules.redemption_points_per_unit:
            raise ValidationError(
                f"points are used in steps of {rules.redemption_points_per_unit}", "points"
            )
        allowed = max_points_for(remaining, rules)
        if points > allowed:
            raise ValidationError(
                f"at most {allowed} points may pay for this order "
                f"({rules.max_points_share_bp / 100:g}% of its value)",
                "points",
            )
    points_value = rules.points_value(points)
    free = tier_rule.free_shipping or remaining >= rules.free_shipping_threshold
    shipping = 0 if free else rules.shipping_fee
    total = remaining - points_value + shipping
    return PriceBreakdown(
        subtotal=subtotal,
        tier_discount=tier_discount,
        coupon_discount=discount,
        points_used=points,
        points_value=points_value,
        shipping_fee=shipping,
        total=total,
    )
