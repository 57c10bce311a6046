"""Loyalty rules and order pricing as a specification: pure functions, no storage.

Money is in integer minor units (1 CNY = 100), percentages in basis points (1% = 100),
so every expectation below is exact integer arithmetic.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from domain.errors import ErrorCode, ValidationError
from domain.loyalty_rules import DEFAULT_TIERS, LoyaltyRules, Tier, TierRule
from domain.pricing import (
    CouponTerms,
    PriceBreakdown,
    coupon_discount,
    max_points_for,
    price_order,
)

RULES = LoyaltyRules()


def fixed(value: int, min_spend: int = 0) -> CouponTerms:
    return CouponTerms(kind="fixed", value=value, min_spend=min_spend)


def percent(basis_points: int, min_spend: int = 0) -> CouponTerms:
    return CouponTerms(kind="percent", value=basis_points, min_spend=min_spend)


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "loyalty.toml"
    path.write_text(text)
    return path


# -- rules: the brief's defaults ------------------------------------------------------------


def test_default_tiers_are_ordered_regular_silver_gold_platinum() -> None:
    assert [rule.tier for rule in RULES.tiers] == [
        Tier.REGULAR,
        Tier.SILVER,
        Tier.GOLD,
        Tier.PLATINUM,
    ]
    assert RULES.tiers == DEFAULT_TIERS


@pytest.mark.parametrize(
    ("tier", "threshold", "multiplier_bp", "discount_bp", "birthday", "sla_hours"),
    [
        (Tier.REGULAR, 0, 10000, 0, 0, 24),
        (Tier.SILVER, 200_000, 12000, 200, 100, 24),
        (Tier.GOLD, 800_000, 15000, 500, 300, 12),
        (Tier.PLATINUM, 2_000_000, 20000, 800, 500, 4),
    ],
)
def test_default_tier_settings_match_the_brief(
    tier: Tier,
    threshold: int,
    multiplier_bp: int,
    discount_bp: int,
    birthday: int,
    sla_hours: int,
) -> None:
    rule = RULES.tier_rule(tier)
    assert rule.threshold == threshold  # 0 / 2,000 / 8,000 / 20,000 CNY in fen
    assert rule.earn_multiplier_bp == multiplier_bp  # 1.0x / 1.2x / 1.5x / 2.0x
    assert rule.member_discount_bp == discount_bp  # 0% / 2% / 5% / 8%
    assert rule.birthday_bonus_points == birthday
    assert rule.first_review_sla_hours == sla_hours


@pytest.mark.parametrize(
    ("tier", "free_shipping", "priority", "expedited", "dedicated"),
    [
        (Tier.REGULAR, False, False, False, False),
        (Tier.SILVER, False, False, False, False),
        (Tier.GOLD, True, False, True, False),
        (Tier.PLATINUM, True, True, True, True),
    ],
)
def test_default_tier_benefits(
    tier: Tier, free_shipping: bool, priority: bool, expedited: bool, dedicated: bool
) -> None:
    rule = RULES.tier_rule(tier)
    assert rule.free_shipping is free_shipping
    assert rule.priority_dispatch is priority
    assert rule.expedited_delivery is expedited
    assert rule.dedicated_service_team is dedicated


def test_default_scalar_rules_match_the_brief() -> None:
    assert RULES.currency == "CNY"
    assert RULES.minor_units_per_unit == 100
    assert RULES.points_per_unit == 1
    assert RULES.qualifying_months == 12
    assert RULES.maintenance_months == 12
    assert RULES.return_window_days == 7
    assert RULES.points_expiry_months == 12
    assert RULES.redemption_points_per_unit == 100
    assert RULES.max_points_share_bp == 5000
    assert RULES.min_redemption_points == 100
    assert RULES.redemption_period_days == 30
    assert RULES.redemption_limit_per_period == 50_000


def test_tier_rule_accepts_the_tier_name_and_rejects_unknown_tiers() -> None:
    assert RULES.tier_rule("gold") is RULES.tier_rule(Tier.GOLD)
    with pytest.raises((ValidationError, ValueError)):
        RULES.tier_rule("diamond")


@pytest.mark.parametrize(
    ("spend", "tier"),
    [
        (-50_000, Tier.REGULAR),
        (0, Tier.REGULAR),
        (199_999, Tier.REGULAR),
        (200_000, Tier.SILVER),
        (799_999, Tier.SILVER),
        (800_000, Tier.GOLD),
        (1_999_999, Tier.GOLD),
        (2_000_000, Tier.PLATINUM),
        (50_000_000, Tier.PLATINUM),
    ],
)
def test_tier_for_spend_is_the_highest_threshold_reached(spend: int, tier: Tier) -> None:
    assert RULES.tier_for_spend(spend) == tier


def test_tier_below_and_above_step_one_tier_and_stop_at_the_ends() -> None:
    assert RULES.tier_below(Tier.PLATINUM) == Tier.GOLD
    assert RULES.tier_below(Tier.GOLD) == Tier.SILVER
    assert RULES.tier_below(Tier.SILVER) == Tier.REGULAR
    assert RULES.tier_below(Tier.REGULAR) == Tier.REGULAR
    assert RULES.tier_above(Tier.REGULAR) == Tier.SILVER
    assert RULES.tier_above("gold") == Tier.PLATINUM
    assert RULES.tier_above(Tier.PLATINUM) is None


@pytest.mark.parametrize(
    ("paid", "tier", "points"),
    [
        (10_000, Tier.REGULAR, 100),  # 100 CNY at 1.0x
        (10_000, Tier.SILVER, 120),
        (10_000, Tier.GOLD, 150),
        (10_000, Tier.PLATINUM, 200),
        (12_345, Tier.REGULAR, 123),  # 123.45 points, rounded down
        (12_345, Tier.SILVER, 148),  # 148.14
        (12_345, Tier.GOLD, 185),  # 185.175
        (12_345, Tier.PLATINUM, 246),  # 246.9: never rounded up
        (99, Tier.PLATINUM, 1),
        (99, Tier.REGULAR, 0),  # less than one currency unit earns nothing
        (0, Tier.GOLD, 0),
    ],
)
def test_points_for_payment_apply_the_tier_multiplier_and_round_down(
    paid: int, tier: Tier, points: int
) -> None:
    assert RULES.points_for_payment(paid, tier) == points


def test_points_value_converts_points_to_minor_units() -> None:
    assert RULES.points_value(100) == 100  # 100 points = 1 CNY = 100 fen
    assert RULES.points_value(4_500) == 4_500
    cheap = replace(RULES, redemption_points_per_unit=200)
    assert cheap.points_value(100) == 50


def test_rules_refuse_tiers_out_of_threshold_order() -> None:
    silver_above_gold = tuple(
        replace(rule, threshold=900_000) if rule.tier == Tier.SILVER else rule
        for rule in DEFAULT_TIERS
    )
    with pytest.raises(ValidationError):
        LoyaltyRules(tiers=silver_above_gold)


def test_rules_refuse_a_regular_tier_that_does_not_start_at_zero() -> None:
    tiers = tuple(
        replace(rule, threshold=1) if rule.tier == Tier.REGULAR else rule for rule in DEFAULT_TIERS
    )
    with pytest.raises(ValidationError):
        LoyaltyRules(tiers=tiers)


def test_rules_refuse_non_positive_conversion_rates() -> None:
    with pytest.raises(ValidationError):
        LoyaltyRules(redemption_points_per_unit=0)
    with pytest.raises(ValidationError):
        LoyaltyRules(minor_units_per_unit=0)


def test_tiers_given_in_any_order_are_sorted_by_threshold() -> None:
    rules = LoyaltyRules(tiers=tuple(reversed(DEFAULT_TIERS)))
    assert [rule.tier for rule in rules.tiers] == list(Tier)


# -- rules: TOML overrides ------------------------------------------------------------------


def test_load_without_a_path_gives_the_defaults() -> None:
    assert LoyaltyRules.load(None) == RULES
    assert LoyaltyRules.load("") == RULES


def test_toml_overrides_a_scalar_and_a_tier_setting_and_keeps_everything_else(
    tmp_path: Path,
) -> None:
    path = write_rules(
        tmp_path,
        """
        return_window_days = 14
        shipping_fee = 800

        [tiers.gold]
        threshold = 500000
        birthday_bonus_points = 400
        """,
    )

    rules = LoyaltyRules.load(path)

    assert rules.return_window_days == 14
    assert rules.shipping_fee == 800
    gold = rules.tier_rule(Tier.GOLD)
    assert gold.threshold == 500_000
    assert gold.birthday_bonus_points == 400
    assert gold.earn_multiplier_bp == 15000
    assert gold.free_shipping is True
    assert rules.tier_rule(Tier.SILVER) == RULES.tier_rule(Tier.SILVER)
    assert rules.tier_rule(Tier.PLATINUM) == RULES.tier_rule(Tier.PLATINUM)
    assert rules.tier_for_spend(500_000) == Tier.GOLD
    assert replace(rules, return_window_days=7, shipping_fee=1_000, tiers=DEFAULT_TIERS) == RULES


def test_load_accepts_a_string_path_and_an_empty_file(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "")
    assert LoyaltyRules.load(str(path)) == RULES


def test_load_reports_a_missing_file_as_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        LoyaltyRules.load(tmp_path / "missing.toml")
    assert "cannot read loyalty rules" in caught.value.message
    assert caught.value.code == ErrorCode.VALIDATION


def test_load_reports_malformed_toml_as_a_validation_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "return_window_days = = 3\n")
    with pytest.raises(ValidationError, match="cannot read loyalty rules"):
        LoyaltyRules.load(path)


def test_unknown_rule_names_are_rejected_by_name(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "return_window_dayz = 14\nbonus = 1\n")
    with pytest.raises(ValidationError) as caught:
        LoyaltyRules.load(path)
    assert "bonus" in caught.value.message
    assert "return_window_dayz" in caught.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("return_window_days", "14"),
        ("return_window_days", 14.0),
        ("return_window_days", True),
        ("shipping_fee", 9.99),
        ("currency", 156),
        ("currency", None),
        ("max_points_share_bp", [5000]),
    ],
)
def test_scalar_rules_of_the_wrong_type_are_rejected(key: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        LoyaltyRules.from_mapping({key: value})
    assert key in caught.value.message


def test_unknown_tier_settings_are_rejected(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "[tiers.gold]\nlounge_access = true\n")
    with pytest.raises(ValidationError, match="lounge_access"):
        LoyaltyRules.load(path)


def test_a_tier_override_that_breaks_the_tier_order_is_rejected() -> None:
    with pytest.raises(ValidationError):
        LoyaltyRules.from_mapping({"tiers": {"silver": {"threshold": 900_000}}})


def test_a_tier_override_cannot_rename_the_tier() -> None:
    with pytest.raises(ValidationError):
        LoyaltyRules.from_mapping({"tiers": {"gold": {"tier": "platinum"}}})


# The next three specify that every malformed tier override is a ValidationError naming the
# problem, like every other malformed rule; see the report for the current behaviour.


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("earn_multiplier_bp", "1.5x"),
        ("threshold", 500_000.5),
        ("free_shipping", "yes"),
        ("birthday_bonus_points", True),
    ],
)
def test_tier_settings_of_the_wrong_type_are_rejected(setting: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        LoyaltyRules.from_mapping({"tiers": {"gold": {setting: value}}})
    assert setting in caught.value.message


def test_an_unknown_tier_name_in_overrides_is_a_validation_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "[tiers.diamond]\nthreshold = 5000000\n")
    with pytest.raises(ValidationError, match="diamond"):
        LoyaltyRules.load(path)


def test_tiers_written_as_an_array_of_tables_are_a_validation_error(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "[[tiers]]\ntier = 'gold'\nthreshold = 500000\n")
    with pytest.raises(ValidationError):
        LoyaltyRules.load(path)


def test_as_dict_lists_every_rule_and_every_tier() -> None:
    data = RULES.as_dict()
    assert data["return_window_days"] == 7
    assert [tier["tier"] for tier in data["tiers"]] == ["regular", "silver", "gold", "platinum"]
    assert data["tiers"][3]["threshold"] == 2_000_000
    assert set(data) == set(LoyaltyRules.__dataclass_fields__)
    assert set(data["tiers"][0]) == set(TierRule.__dataclass_fields__)


# -- pricing: tier discount -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "discount"),
    [(Tier.REGULAR, 0), (Tier.SILVER, 2_000), (Tier.GOLD, 5_000), (Tier.PLATINUM, 8_000)],
)
def test_tier_discount_is_the_tier_percentage_of_the_subtotal(tier: Tier, discount: int) -> None:
    price = price_order([60_000, 40_000], tier, RULES)
    assert price.subtotal == 100_000
    assert price.tier_discount == discount  # 0% / 2% / 5% / 8%
    assert price.total == 100_000 - discount


def test_tier_discount_is_rounded_down() -> None:
    price = price_order([12_345], "silver", RULES)
    assert price.tier_discount == 246  # 2% of 12,345 is 246.9


def test_an_order_must_cost_something() -> None:
    with pytest.raises(ValidationError) as caught:
        price_order([0, 0], "regular", RULES)
    assert caught.value.field == "lines"
    with pytest.raises(ValidationError):
        price_order([], "regular", RULES)


# -- pricing: coupons -----------------------------------------------------------------------


def test_a_fixed_coupon_takes_its_value_off_what_remains_after_the_tier_discount() -> None:
    price = price_order([20_000], "gold", RULES, fixed(3_000))
    assert price.tier_discount == 1_000
    assert price.coupon_discount == 3_000
    assert price.total == 16_000


def test_a_fixed_coupon_never_discounts_more_than_what_remains() -> None:
    price = price_order([2_000], "regular", RULES, fixed(5_000))
    assert price.coupon_discount == 2_000
    assert price.total == 0 + RULES.shipping_fee


def test_a_percentage_coupon_applies_to_what_remains_after_the_tier_discount() -> None:
    price = price_order([20_000], "gold", RULES, percent(1_000))  # 10%
    assert price.tier_discount == 1_000
    assert price.coupon_discount == 1_900  # 10% of 19,000, not of 20,000
    assert price.total == 17_100


def test_a_percentage_coupon_discount_is_rounded_down() -> None:
    price = price_order([9_999], "regular", RULES, percent(1_500))  # 15% of 9,999 = 1,499.85
    assert price.coupon_discount == 1_499


def test_a_coupon_applies_when_what_remains_exactly_reaches_its_minimum_spend() -> None:
    price = price_order([10_000], "silver", RULES, fixed(500, min_spend=9_800))
    assert price.coupon_discount == 500


def test_a_coupon_minimum_spend_is_judged_after_the_tier_discount() -> None:
    # The subtotal reaches 10,000 but a silver member pays 9,800 before the coupon.
    with pytest.raises(ValidationError) as caught:
        price_order([10_000], "silver", RULES, fixed(500, min_spend=10_000))
    assert caught.value.field == "coupon_id"
    assert "10000" in caught.value.message
    assert "9800" in caught.value.message


def test_coupon_discount_alone() -> None:
    assert coupon_discount(fixed(1_000, 5_000), 5_000) == 1_000
    assert coupon_discount(percent(10_000), 7_777) == 7_777
    with pytest.raises(ValidationError):
        coupon_discount(percent(500, 5_000), 4_999)


# -- pricing: points ------------------------------------------------------------------------


def test_points_pay_at_most_half_of_what_remains_after_tier_and_coupon_discounts() -> None:
    # 10,000 - 1,000 coupon = 9,000 remaining; half is 4,500 fen = 4,500 points.
    allowed = price_order([10_000], "regular", RULES, fixed(1_000), points=4_500)
    assert allowed.points_used == 4_500
    assert allowed.points_value == 4_500
    with pytest.raises(ValidationError) as caught:
        price_order([10_000], "regular", RULES, fixed(1_000), points=4_600)
    assert caught.value.field == "points"
    assert "4500" in caught.value.message


def test_the_points_cap_is_rounded_down_to_whole_currency_units() -> None:
    # Half of 9,950 is 4,975 fen: only 49 whole CNY, so 4,900 points.
    assert max_points_for(9_950, RULES) == 4_900
    assert price_order([9_950], "regular", RULES, points=4_900).points_value == 4_900
    with pytest.raises(ValidationError):
        price_order([9_950], "regular", RULES, points=5_000)


def test_points_cap_for_a_small_order() -> None:
    assert max_points_for(199, RULES) == 0
    assert max_points_for(200, RULES) == 100
    with pytest.raises(ValidationError):
        price_order([199], "regular", RULES, points=100)


@pytest.mark.parametrize("points", [150, 250, 1_001])
def test_points_are_used_in_steps_of_the_conversion_rate(points: int) -> None:
    with pytest.raises(ValidationError, match="steps of 100"):
        price_order([100_000], "regular", RULES, points=points)


@pytest.mark.parametrize("points", [1, 50, 99])
def test_fewer_than_the_minimum_points_are_rejected(points: int) -> None:
    with pytest.raises(ValidationError, match="at least 100"):
        price_order([100_000], "regular", RULES, points=points)


def test_the_minimum_redemption_is_configurable() -> None:
    rules = replace(RULES, min_redemption_points=500)
    with pytest.raises(ValidationError, match="at least 500"):
        price_order([100_000], "regular", rules, points=400)
    assert price_order([100_000], "regular", rules, points=500).points_used == 500


def test_negative_points_are_rejected() -> None:
    with pytest.raises(ValidationError):
        price_order([100_000], "regular", RULES, points=-100)


def test_no_points_means_no_points_value() -> None:
    price = price_order([100_000], "regular", RULES)
    assert price.points_used == 0
    assert price.points_value == 0


# -- pricing: shipping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "fee"),
    [(Tier.REGULAR, 1_000), (Tier.SILVER, 1_000), (Tier.GOLD, 0), (Tier.PLATINUM, 0)],
)
def test_shipping_is_free_from_gold_whatever_the_amount(tier: Tier, fee: int) -> None:
    price = price_order([500], tier, RULES)
    assert price.shipping_fee == fee


def test_shipping_is_free_when_what_remains_reaches_the_threshold() -> None:
    assert price_order([9_899], "regular", RULES).shipping_fee == 1_000
    assert price_order([9_900], "regular", RULES).shipping_fee == 0


def test_the_shipping_threshold_is_judged_after_discounts() -> None:
    # 10,000 - 2% silver discount = 9,800: below the 9,900 threshold.
    assert price_order([10_000], "silver", RULES).shipping_fee == 1_000
    # 12,000 - 3,000 coupon = 9,000: below the threshold.
    assert price_order([12_000], "regular", RULES, fixed(3_000)).shipping_fee == 1_000


def test_the_shipping_threshold_is_judged_before_points() -> None:
    price = price_order([10_000], "regular", RULES, points=5_000)
    assert price.shipping_fee == 0
    assert price.total == 5_000


# -- pricing: the whole breakdown -----------------------------------------------------------


def test_breakdown_applies_tier_discount_coupon_points_and_shipping_in_order() -> None:
    price = price_order([30_000, 20_000], "gold", RULES, percent(1_000), points=20_000)
    assert price == PriceBreakdown(
        subtotal=50_000,
        tier_discount=2_500,  # 5% of 50,000
        coupon_discount=4_750,  # 10% of 47,500
        points_used=20_000,  # cap: half of 42,750 is 21,375 -> 21,300 points
        points_value=20_000,
        shipping_fee=0,
        total=22_750,
    )


@pytest.mark.parametrize(
    ("lines", "tier", "coupon", "points"),
    [
        ([1_234, 5_678], "regular", None, 0),
        ([1_234, 5_678], "regular", fixed(700, 5_000), 3_000),
        ([99_999], "silver", percent(333), 47_300),
        ([3_333, 3_333, 3_334], "platinum", fixed(10_000), 0),
        ([4_950], "silver", None, 200),
    ],
)
def test_total_is_subtotal_minus_discounts_and_points_plus_shipping(
    lines: list[int], tier: str, coupon: CouponTerms | None, points: int
) -> None:
    price = price_order(lines, tier, RULES, coupon, points)
    assert price.subtotal == sum(lines)
    assert price.total == (
        price.subtotal
        - price.tier_discount
        - price.coupon_discount
        - price.points_value
        + price.shipping_fee
    )
    assert price.total >= price.shipping_fee
    assert price.points_value * 2 <= price.subtotal - price.tier_discount - price.coupon_discount


def test_breakdown_round_trips_through_a_dict() -> None:
    price = price_order([30_000, 20_000], "gold", RULES, percent(1_000), points=20_000)
    data = price.as_dict()
    assert data["total"] == 22_750
    assert PriceBreakdown.from_dict(data) == price
    assert PriceBreakdown.from_dict({k: str(v) for k, v in data.items()}) == price


def test_input_limits_default_to_the_documented_values_and_refuse_zero_or_beyond_64_bits(
) -> None:
    rules = LoyaltyRules()
    assert (rules.max_line_quantity, rules.max_order_value, rules.max_points_adjustment) == (
        999, 100_000_000, 10_000_000)
    for name in ("max_line_quantity", "max_order_value", "max_points_adjustment"):
        assert getattr(LoyaltyRules.from_mapping({name: 7}), name) == 7
        for bad in (0, 10**15 + 1):
            with pytest.raises(ValidationError, match=name):
                LoyaltyRules.from_mapping({name: bad})
