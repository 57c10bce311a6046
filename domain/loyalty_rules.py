"""Loyalty, pricing and order rules as configuration, not code.

The defaults are the brief's; a shop overrides any of them in a TOML file named by
`PATRON_LOYALTY_RULES` (see README), and admins read the rules in force through the API.
Money is in integer minor units of `currency`; percentages are basis points (1% = 100)
so that no rule ever needs floating point.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from domain.errors import ValidationError


class Tier(StrEnum):
    REGULAR = "regular"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


@dataclass(frozen=True)
class TierRule:
    tier: Tier
    # Paid spend over the qualifying window needed to hold the tier (minor units).
    threshold: int
    # Points per currency unit paid, in basis points of the base rate (10000 = 1.0x).
    earn_multiplier_bp: int
    member_discount_bp: int
    free_shipping: bool
    priority_dispatch: bool
    expedited_delivery: bool
    first_review_sla_hours: int
    birthday_bonus_points: int
    dedicated_service_team: bool


@dataclass(frozen=True)
class ProfileRules:
    """How behaviour and purchases become a member profile (projection "member_behaviour").

    Interest scores decay exponentially: an event of weight w at time t counts
    w * 2^(-(now - t) / half_life) now. The projection stores, per member, category and
    brand, the decayed *sum per kind of event* (views, cart adds, ...), and weights apply
    when a profile is read; so changing a weight or a threshold here takes effect at once,
    while changing `interest_half_life_days` needs a rebuild of "member_behaviour" (the
    decay is part of what it stores). Weights are whole numbers and may be negative.
    Money is in minor units, shares and rates in whole percent.
    """

    interest_half_life_days: int = 30
    # Interest weight per behaviour kind.
    weight_view: int = 1
    # A view also earns this much per minute of dwell time (dwell counts up to 2 minutes).
    weight_view_dwell_per_minute: int = 1
    # A search only counts towards the category or brand it was filtered by.
    weight_search: int = 1
    weight_cart_add: int = 3
    weight_cart_remove: int = -1
    weight_wish_list: int = 4
    weight_share: int = 3
    # Per order line, when the order is paid.
    weight_purchase: int = 5
    # A review weighs (stars - review_neutral_stars) * weight_review_per_star.
    weight_review_per_star: int = 1
    review_neutral_stars: int = 3
    top_interests: int = 10
    # Lifecycle, first match wins: new (joined at most this many days ago), active (any
    # activity within active days), dormant (within dormant days), otherwise churned.
    lifecycle_new_days: int = 30
    lifecycle_active_days: int = 30
    lifecycle_dormant_days: int = 180
    # Price band of the average price paid per order line (or, before a first purchase,
    # of products viewed): below mid_from is budget, from premium_from on is premium.
    price_band_mid_from: int = 10_000
    price_band_premium_from: int = 50_000
    # Shopper type, first match wins (see api/profile_readmodels.py):
    # quality seeker: has bought and the price band is premium;
    # rational comparer: has bought, with at least this many views per purchase;
    comparer_views_per_purchase: int = 10
    # convenience buyer: has bought, with fewer views per purchase than a comparer;
    # casual browser: never bought, at least this many views, nothing carted or wished;
    browser_min_views: int = 5
    # potential: never bought otherwise (intent shown, or too little known yet).
    # Tags, each produced by one rule:
    # loyal: recency and frequency scores both at least this;
    tag_loyal_min_score: int = 4
    # high_value: monetary score at least this;
    tag_high_value_min_score: int = 5
    # at_risk: dormant or churned after at least this many purchases;
    tag_at_risk_min_purchases: int = 2
    # cart_abandoner: something carted within these days and nothing bought since;
    tag_cart_abandoner_days: int = 7
    # repeat_buyer: at least this share of distinct products bought in two or more orders;
    tag_repeat_buyer_min_rate_pct: int = 30
    # brand_loyal: the top brand holds at least this share of brand interest, over at
    # least tag_brand_loyal_min_events events;
    tag_brand_loyal_min_share_pct: int = 50
    tag_brand_loyal_min_events: int = 5
    # reviewer and sharer: at least this many reviews / shares.
    tag_reviewer_min_reviews: int = 3
    tag_sharer_min_shares: int = 5
    # Segment membership follows a member's own events at once; what changes with time or
    # with the rest of the base (decay, "within N days", lifecycle, RFM quintiles) is
    # re-evaluated for every member by a segment review the scheduler records this often.
    segment_review_minutes: int = 60

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValidationError(f"profile rule {f.name} must be a whole number")
            if value < 0 and not f.name.startswith("weight_"):
                raise ValidationError(f"profile rule {f.name} must not be negative")
        if self.interest_half_life_days < 1:
            raise ValidationError("profile rule interest_half_life_days must be at least 1")
        if self.lifecycle_active_days > self.lifecycle_dormant_days:
            raise ValidationError("profile rule lifecycle_active_days must not exceed "
                                  "lifecycle_dormant_days")
        if self.price_band_mid_from > self.price_band_premium_from:
            raise ValidationError("profile rule price_band_mid_from must not exceed "
                                  "price_band_premium_from")
        if not 1 <= self.review_neutral_stars <= 5:
            raise ValidationError("profile rule review_neutral_stars must be from 1 to 5")
        if not 5 <= self.segment_review_minutes <= 10_080:
            raise ValidationError("profile rule segment_review_minutes must be from 5 to "
                                  "10080 (a week)")
        for name in ("tag_loyal_min_score", "tag_high_value_min_score"):
            if not 1 <= getattr(self, name) <= 5:
                raise ValidationError(f"profile rule {name} must be a score from 1 to 5")


# No input limit may exceed this: order values are summed, multiplied by earn rates and
# stored in 64-bit columns, so every limit stays well inside 2**63.
MAX_LIMIT = 10**15

DEFAULT_TIERS = (
    TierRule(Tier.REGULAR, 0, 10000, 0, False, False, False, 24, 0, False),
    TierRule(Tier.SILVER, 200_000, 12000, 200, False, False, False, 24, 100, False),
    TierRule(Tier.GOLD, 800_000, 15000, 500, True, False, True, 12, 300, False),
    TierRule(Tier.PLATINUM, 2_000_000, 20000, 800, True, True, True, 4, 500, True),
)


@dataclass(frozen=True)
class LoyaltyRules:
    currency: str = "CNY"
    minor_units_per_unit: int = 100
    tiers: tuple[TierRule, ...] = DEFAULT_TIERS
    qualifying_months: int = 12
    maintenance_months: int = 12
    # Earning: base points per currency unit paid, before the tier multiplier.
    points_per_unit: int = 1
    return_window_days: int = 7
    points_expiry_months: int = 12
    expiring_soon_days: int = 30
    review_points: int = 20
    profile_completion_points: int = 50
    # Redemption: points worth one currency unit, and limits.
    redemption_points_per_unit: int = 100
    max_points_share_bp: int = 5000
    min_redemption_points: int = 100
    redemption_period_days: int = 30
    redemption_limit_per_period: int = 50_000
    # Shipping.
    shipping_fee: int = 1_000
    free_shipping_threshold: int = 9_900
    # Abnormal orders.
    abnormal_order_multiple: int = 5
    abnormal_order_floor: int = 100_000
    max_failed_payments: int = 3
    # Input limits: what one order line may ask for, what one order may be worth before
    # discounts (minor units), and how many points one admin adjustment may move. They keep
    # a typo (or a hostile client) from minting a Platinum tier or an unpayable order, and
    # keep every amount far inside 64 bits. max_points_adjustment bounds every single credit
    # or debit of points other than an order's earnings (adjustments, awards, redemptions,
    # points paying an order).
    max_line_quantity: int = 999
    max_order_value: int = 100_000_000
    max_points_adjustment: int = 10_000_000
    # A coupon for every new member's first order (value 0 turns it off).
    welcome_coupon_value: int = 1_000
    welcome_coupon_min_spend: int = 5_000
    welcome_coupon_valid_days: int = 30
    birthday_coupon_value: int = 2_000
    birthday_coupon_valid_days: int = 30
    # After-sales: the reasons a member picks from (plus free text), the days within which
    # each type of case should be resolved (first review is per tier, above), the teams
    # cases are routed to, and how long a member has to send a return parcel.
    case_reasons: tuple[str, ...] = (
        "defective", "damaged_in_transit", "wrong_item", "missing_item", "not_as_described",
        "size_or_fit", "changed_mind", "other",
    )
    resolution_days_return: int = 7
    resolution_days_exchange: int = 10
    resolution_days_repair: int = 21
    resolution_days_refund_only: int = 3
    resolution_days_reissue: int = 5
    general_service_team: str = "general"
    dedicated_service_team: str = "dedicated"
    return_parcel_days: int = 14
    # Member profiles: interests, lifecycle, price band, shopper type and tags.
    profile: ProfileRules = ProfileRules()

    def __post_init__(self) -> None:
        ordered = sorted(self.tiers, key=lambda t: t.threshold)
        if [t.tier for t in ordered] != list(Tier):
            raise ValidationError("tiers must be regular < silver < gold < platinum by threshold")
        if ordered[0].threshold != 0:
            raise ValidationError("the regular tier must start at zero spend")
        if not self.case_reasons or not all(
            isinstance(r, str) and r.strip() for r in self.case_reasons
        ):
            raise ValidationError("case_reasons must be a non-empty list of reason names")
        object.__setattr__(self, "case_reasons", tuple(self.case_reasons))
        if self.redemption_points_per_unit <= 0 or self.minor_units_per_unit <= 0:
            raise ValidationError("conversion rates must be positive")
        for name in ("max_line_quantity", "max_order_value", "max_points_adjustment"):
            if not 1 <= getattr(self, name) <= MAX_LIMIT:
                raise ValidationError(f"{name} must be from 1 to {MAX_LIMIT}")
        object.__setattr__(self, "tiers", tuple(ordered))

    def tier_rule(self, tier: Tier | str) -> TierRule:
        for rule in self.tiers:
            if rule.tier == Tier(tier):
                return rule
        raise ValidationError(f"unknown tier {tier!r}")

    def tier_for_spend(self, spend: int) -> Tier:
        qualified = Tier.REGULAR
        for rule in self.tiers:
            if spend >= rule.threshold:
                qualified = rule.tier
        return qualified

    def tier_below(self, tier: Tier | str) -> Tier:
        order = list(Tier)
        index = order.index(Tier(tier))
        return order[max(index - 1, 0)]

    def tier_above(self, tier: Tier | str) -> Tier | None:
        order = list(Tier)
        index = order.index(Tier(tier))
        return order[index + 1] if index + 1 < len(order) else None

    def points_for_payment(self, paid: int, tier: Tier | str) -> int:
        """Points earned on `paid` minor units at `tier`: whole points, rounded down."""
        base_bp = self.points_per_unit * self.tier_rule(tier).earn_multiplier_bp
        return paid * base_bp // (self.minor_units_per_unit * 10000)

    def points_value(self, points: int) -> int:
        """What `points` are worth, in minor units."""
        return points * self.minor_units_per_unit // self.redemption_points_per_unit

    def resolution_days(self, case_type: str) -> int:
        days: int = getattr(self, f"resolution_days_{case_type}")
        return days

    def service_team(self, tier: Tier | str) -> str:
        """Cases of tiers with the dedicated-team benefit go to that team."""
        if self.tier_rule(tier).dedicated_service_team:
            return self.dedicated_service_team
        return self.general_service_team

    @classmethod
    def load(cls, path: str | Path | None) -> LoyaltyRules:
        if not path:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValidationError(f"cannot read loyalty rules from {path}: {error}") from None
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> LoyaltyRules:
        defaults = cls()
        known = {f.name for f in fields(cls)} - {"tiers", "profile"}
        unknown = set(data) - known - {"tiers", "profile"}
        if unknown:
            raise ValidationError(f"unknown loyalty rule(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key, value in values.items():
            _check_type(key, value, getattr(defaults, key))
        tiers = list(defaults.tiers)
        tier_tables = data.get("tiers") or {}
        if not isinstance(tier_tables, dict):
            raise ValidationError("tiers must be a table of [tiers.NAME] tables")
        for name, overrides in tier_tables.items():
            if name not in {t.value for t in Tier}:
                raise ValidationError(f"unknown tier {name!r}")
            if not isinstance(overrides, dict):
                raise ValidationError(f"[tiers.{name}] must be a table")
            rule = defaults.tier_rule(name)
            tier_fields = {f.name for f in fields(TierRule)} - {"tier"}
            bad = set(overrides) - tier_fields
            if bad:
                raise ValidationError(f"unknown tier setting(s): {', '.join(sorted(bad))}")
            for key, value in overrides.items():
                _check_type(f"tiers.{name}.{key}", value, getattr(rule, key))
            tiers[tiers.index(rule)] = replace(rule, **overrides)
        return replace(defaults, tiers=tuple(tiers), profile=_profile(data.get("profile")),
                       **values)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("tiers", "profile")}
        data["profile"] = {f.name: getattr(self.profile, f.name) for f in fields(self.profile)}
        data["case_reasons"] = list(self.case_reasons)
        data["tiers"] = [{f.name: getattr(t, f.name) for f in fields(t)} for t in self.tiers]
        return data


def _profile(table: Any) -> ProfileRules:
    """The [profile] table: whole numbers only; weights may be negative, nothing else."""
    if table is None:
        return ProfileRules()
    if not isinstance(table, dict):
        raise ValidationError("profile must be a [profile] table")
    known = {f.name for f in fields(ProfileRules)}
    unknown = set(table) - known
    if unknown:
        raise ValidationError(f"unknown profile rule(s): {', '.join(sorted(unknown))}")
    for key, value in table.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(f"profile rule {key} must be a whole number")
    return ProfileRules(**table)


def _check_type(name: str, value: Any, default: Any) -> None:
    """A setting must have its default's type (no bools for numbers) and be non-negative."""
    expected = type(default)
    if expected is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"loyalty rule {name} must be a list of strings")
        return
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise ValidationError(f"loyalty rule {name} must be a {expected.__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ValidationError(f"loyalty rule {name} must not be negative")
