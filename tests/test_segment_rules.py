"""The segment rule language: what parses, what it means, how it explains itself, and how
mistakes are reported (with the exact line and column an admin needs to fix them).

Pure: no storage. Facts are built by hand, and `now` is always given.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import ValidationError
from domain.profile import (
    BehaviourCounts,
    Explained,
    InterestScore,
    Lifecycle,
    MemberProfile,
    PriceBand,
    RfmScores,
    ShopperType,
)
from domain.segment_rules import (
    FIELDS,
    LIFECYCLES,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_RULE_LENGTH,
    PRICE_BANDS,
    SHOPPER_TYPES,
    And,
    Compare,
    Facts,
    HasTag,
    Interest,
    IsIn,
    Not,
    Or,
    Reason,
    Rule,
    SegmentRuleError,
    Within,
    evaluate,
    parse_rule,
)
from domain.segments import facts_from_profile

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
ISSUE_EXAMPLE = ('tier in [Gold, Platinum] and last purchase within 30 days '
                 'and interest(category "outdoor") ≥ 0.3')


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def facts(**overrides: Any) -> Facts:
    """A gold buyer who last bought 10 days ago and mostly looks at outdoor gear."""
    values: dict[str, Any] = dict(
        tier="gold", lifecycle="active", shopper_type="rational_comparer", price_band="mid",
        purchases=4, orders_placed=5, reviews=1, total_spent=48_000,
        average_order_value=12_000, repurchase_rate=0.25, purchases_per_30_days=1.5,
        rfm_recency=5, rfm_frequency=3, rfm_monetary=4, last_purchase=days_ago(10),
        last_activity=days_ago(1), joined=days_ago(400),
        interests={("category", "Outdoor"): 0.45, ("category", "books"): 0.55,
                   ("brand", "Acme"): 1.0},
        tags=frozenset({"loyal", "repeat_buyer"}),
    )
    values.update(overrides)
    return Facts(**values)


def matches(rule: str, member: Facts | None = None, now: datetime = NOW) -> bool:
    return evaluate(parse_rule(rule), member or facts(), now).matched


def error(text: str) -> SegmentRuleError:
    with pytest.raises(SegmentRuleError) as caught:
        parse_rule(text)
    return caught.value


# -- the issue's example --------------------------------------------------------------------


def test_the_issues_example_parses_to_its_canonical_text_and_names_its_facts() -> None:
    rule = parse_rule(ISSUE_EXAMPLE)
    assert rule.text == ('tier in [gold, platinum] and last_purchase within 30 days '
                         'and interest(category "outdoor") >= 0.3')
    assert rule.root == And((
        IsIn("tier", ("gold", "platinum")), Within("last_purchase", 30),
        Interest("category", "outdoor", ">=", 0.3),
    ))
    assert rule.fields == {"tier", "last_purchase", "interests"}


def test_the_issues_example_selects_a_recent_gold_outdoor_buyer_and_says_why() -> None:
    verdict = evaluate(parse_rule(ISSUE_EXAMPLE), facts(), NOW)
    assert verdict.matched
    assert verdict.why == (
        Reason("tier in [gold, platinum]", "tier", "gold", True),
        Reason("last_purchase within 30 days", "last_purchase", days_ago(10), True),
        Reason('interest(category "outdoor") >= 0.3', "interests", 0.45, True),
    )
    assert verdict.why[1].as_dict() == {
        "condition": "last_purchase within 30 days", "fact": "last_purchase",
        "value": days_ago(10).isoformat(), "held": True, "negated": False}


@pytest.mark.parametrize("member", [
    facts(tier="silver"),
    facts(last_purchase=days_ago(31)),
    facts(interests={("category", "outdoor"): 0.29}),
    facts(interests={("category", "books"): 1.0}),  # no interest in outdoor: share 0
])
def test_the_issues_example_leaves_out_whoever_fails_one_condition(member: Facts) -> None:
    assert not matches(ISSUE_EXAMPLE, member)


# -- structure ------------------------------------------------------------------------------

GOLD = Compare("tier", "=", "gold")
BUYER = Compare("purchases", ">", 2)
DORMANT = Compare("lifecycle", "=", "dormant")


@pytest.mark.parametrize(("text", "root"), [
    ("tier = gold or purchases > 2 and lifecycle = dormant", Or((GOLD, And((BUYER, DORMANT))))),
    ("tier = gold and purchases > 2 or lifecycle = dormant", Or((And((GOLD, BUYER)), DORMANT))),
    ("(tier = gold or purchases > 2) and lifecycle = dormant",
     And((Or((GOLD, BUYER)), DORMANT))),
    ("not tier = gold and purchases > 2", And((Not(GOLD), BUYER))),
    ("not (tier = gold and purchases > 2)", Not(And((GOLD, BUYER)))),
    ("not not tier = gold", Not(Not(GOLD))),
    # However a chain is parenthesised, it is one n-ary node: one tree per meaning.
    ("tier = gold and (purchases > 2 and lifecycle = dormant)", And((GOLD, BUYER, DORMANT))),
    ("((tier = gold)) or ((purchases > 2) or lifecycle = dormant)", Or((GOLD, BUYER, DORMANT))),
])
def test_not_binds_tightest_then_and_then_or_and_parentheses_group(text: str,
                                                                    root: Any) -> None:
    assert parse_rule(text).root == root


def test_the_canonical_text_uses_minimal_parentheses() -> None:
    assert parse_rule("(tier = gold or purchases > 2) and (lifecycle = dormant)").text == \
        "(tier = gold or purchases > 2) and lifecycle = dormant"
    assert parse_rule("not (tier = gold)").text == "not tier = gold"
    assert parse_rule("not (tier = gold or (purchases>2))").text == \
        "not (tier = gold or purchases > 2)"


@pytest.mark.parametrize(("op", "canonical", "held_for_4"), [
    ("=", "=", False), ("==", "=", False), ("!=", "!=", True), ("≠", "!=", True),
    ("<", "<", False), ("<=", "<=", False), ("≤", "<=", False),
    (">", ">", True), (">=", ">=", True), ("≥", ">=", True),
])
def test_every_operator(op: str, canonical: str, held_for_4: bool) -> None:
    rule = parse_rule(f"purchases {op} 3")
    assert rule.text == f"purchases {canonical} 3"
    assert evaluate(rule, facts(purchases=4), NOW).matched is held_for_4
    assert evaluate(rule, facts(purchases=3), NOW).matched is (canonical in ("=", "<=", ">="))
    assert evaluate(rule, facts(purchases=2), NOW).matched is (canonical in ("!=", "<", "<="))


def test_operators_need_no_spaces() -> None:
    assert parse_rule("purchases>=3 and(tier=gold)").text == "purchases >= 3 and tier = gold"


def test_keywords_fields_and_enum_words_are_case_insensitive() -> None:
    shouting = parse_rule('TIER IN [GOLD, "Platinum"] AND NOT Lifecycle = Churned OR '
                          'Last Purchase WITHIN 3 DAYS or HAS TAG "Loyal" '
                          'or INTEREST(Category "x") > 0.1')
    quiet = parse_rule('tier in [gold, platinum] and not lifecycle = churned or '
                       'last_purchase within 3 days or has tag "Loyal" '
                       'or interest(category "x") > 0.1')
    assert shouting == quiet
    assert matches('has tag "LOYAL"')  # tags compare case-insensitively
    assert matches('interest(category "OUTDOOR") > 0.4')
    assert matches('interest(brand acme) = 1')


def test_enum_values_may_be_written_as_phrases() -> None:
    assert parse_rule('shopper_type = "Rational comparer"').root == \
        Compare("shopper_type", "=", "rational_comparer")
    assert parse_rule("shopper type in [quality_seeker, 'casual-browser']").text == \
        "shopper_type in [quality_seeker, casual_browser]"


def test_one_day_is_singular_or_plural() -> None:
    assert parse_rule("joined within 1 day").root == Within("joined", 1)


@pytest.mark.parametrize(("text", "tag"), [
    ('has tag "vip"', "vip"),
    ("has tag 'vip'", "vip"),
    ("has tag vip", "vip"),
    (r'has tag "say \"hi\""', 'say "hi"'),
    (r"has tag 'it\'s'", "it's"),
    (r'has tag "back\\slash"', "back\\slash"),
    (r'has tag "tab\there"', "tab\there"),
    (r'has tag "line\nbreak"', "line\nbreak"),
    ('has tag "它\'s"', "它's"),
    ('has tag "  padded  "', "padded"),
])
def test_strings_take_either_quote_and_escapes(text: str, tag: str) -> None:
    rule = parse_rule(text)
    assert rule.root == HasTag(tag)
    assert parse_rule(rule.text) == rule


def test_strings_render_with_double_quotes_and_escapes() -> None:
    assert parse_rule(r"has tag 'say \"hi\"'").text == r'has tag "say \"hi\""'
    assert parse_rule(r"interest(brand 'a\\b') > 0.5").text == r'interest(brand "a\\b") > 0.5'


def test_rules_may_span_lines_and_numbers_render_without_exponents() -> None:
    rule = parse_rule("tier = gold\n  and\tinterest(brand \"acme\") >= 0.00001\r\n")
    assert rule.text == 'tier = gold and interest(brand "acme") >= 0.00001'
    assert parse_rule("purchases_per_30_days > 2").text == "purchases_per_30_days > 2.0"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    ("", 1, 1, "expected a condition"),
    ("   \n  ", 2, 3, "expected a condition"),
    ("tier in [", 1, 10, "expected a tier (regular, silver, gold, platinum) after 'in [', "
                         "found the end of the rule"),
    ("tier in [gold,]", 1, 15, "after ','"),
    ("tier in [gold platinum]", 1, 15, "expected ',' or ']' in the list, found 'platinum'"),
    ("tier in gold", 1, 9, "expected '[' after 'tier in'"),
    ("tier gold", 1, 6, "expected =, != or in after 'tier', found 'gold'"),
    ("purchases", 1, 10, "expected =, !=, <, <=, >, >= or in after 'purchases', found the end"),
    ("tier = gold and", 1, 16, "expected a condition"),
    ("tier = gold purchases > 1", 1, 13, "expected 'and', 'or' or the end of the rule"),
    ("tier = gold and or purchases > 1", 1, 17, "expected a condition"),
    ("(tier = gold", 1, 13, "expected ')' (to close the '(' of line 1, column 1), found the end"),
    ("tier = gold)", 1, 12, "unmatched ')'"),
    ("purchases > ", 1, 13, "expected a whole number after 'purchases >'"),
    ("purchases > 1.", 1, 15, "expected a digit after the decimal point"),
    ("purchases > 1234567890123456", 1, 13, "at most 15 digits"),
    ("purchases > 3 & tier = gold", 1, 15, "unexpected character '&'"),
    ("purchases ! 3", 1, 11, "unknown operator '!'"),
    ("purchases => 3", 1, 12, "expected a whole number after 'purchases ='"),
    ('has tag "vip', 1, 9, 'unterminated string: no closing "'),
    ('has tag "v\nip"', 1, 9, "unterminated string"),
    (r'has tag "v\ip"', 1, 11, "unknown escape"),
    ("has tag", 1, 8, "expected the tag's name after 'has tag'"),
    ('has tag ""', 1, 9, "the tag's name is 1-100 characters"),
    ("has tags 'x'", 1, 5, "expected 'tag' after 'has', found 'tags'"),
    ("interest category 'x' > 0.3", 1, 10, "expected '(' after 'interest'"),
    ("interest(shop 'x') > 0.3", 1, 10, "expected 'category' or 'brand' after 'interest('"),
    ("interest(category) > 0.3", 1, 18, "expected the category's name after "
                                        "'interest(category'"),
    ("interest(category 'x' > 0.3", 1, 23, "expected ')' after the category's name"),
    ("interest(category 'x') 0.3", 1, 24, "expected =, !=, <, <=, > or >= after"),
    ("interest(category 'x') > high", 1, 26, "expected a share from 0 to 1"),
    ("interest(category 'x') > 1.5", 1, 26, "an interest share is from 0 to 1, not 1.5"),
    ("last_purchase within days", 1, 22, "expected a whole number of days after "
                                         "'last_purchase within'"),
    ("last_purchase within 30", 1, 24, "expected 'days' after 'last_purchase within 30'"),
    ("last_purchase within 0 days", 1, 22, "the number of days is from 1 to 36500, not 0"),
    ("last_purchase within 1.5 days", 1, 22, "expected a whole number of days"),
    # Multi-line: the line and column of the mistake, not of the rule.
    ("tier in [gold, platinum]\n  and last purchase within 30 days\n  and purchases >> 2",
     3, 18, "expected a whole number after 'purchases >', found '>'"),
    ("tier = gold\nand (\n  lifecycle = dormant\n  or lifecycle = new\n", 5, 1,
     "expected ')' (to close the '(' of line 2, column 5), found the end of the rule"),
    ("tier = gold and\r\n\thas tag 'x", 2, 10, "unterminated string"),
])
def test_malformed_rules_are_rejected_with_the_position_of_the_error(
        text: str, line: int, column: int, message: str) -> None:
    caught = error(text)
    assert (caught.line, caught.column) == (line, column), caught.message
    assert message in caught.message
    assert caught.message.endswith(f" at line {line}, column {column}")
    lines = text.split("\n")
    assert caught.offset == sum(len(x) + 1 for x in lines[: line - 1]) + column - 1


def test_a_rule_error_is_a_validation_error_of_the_rule_field() -> None:
    caught = error("tier in [")
    assert isinstance(caught, ValidationError)
    assert caught.field == "rule"
    assert caught.offset == 9
    assert caught.problem.startswith("expected a tier")


@pytest.mark.parametrize(("text", "column", "message"), [
    ("tier > 3", 6, "tier is compared with =, != or in, not '>'"),
    ("tier = 3", 8, "expected a tier (regular, silver, gold, platinum) after 'tier ='"),
    ("tier = diamond", 8, "'diamond' is not a tier; expected one of: regular, silver, gold, "
                          "platinum"),
    ("tier in [gold, platnum]", 16, "'platnum' is not a tier (did you mean 'platinum'?)"),
    ("lifecycle = sleeping", 13, "is not a lifecycle"),
    ("price_band in [cheap]", 16, "is not a price_band"),
    ("purchases in [a]", 15, "expected a whole number after 'in [', found 'a'"),
    ("purchases = 'three'", 13, "expected a whole number after 'purchases ='"),
    ("purchases > 2.5", 13, "purchases is a whole number, not '2.5'"),
    ("total_spent > 99.95", 15, "total_spent is a whole number (minor units), not '99.95'"),
    ("rfm_monetary >= 6", 17, "rfm_monetary is from 1 to 5, not 6"),
    ("rfm_recency = 0", 15, "rfm_recency is from 1 to 5, not 0"),
    ("repurchase_rate > 2", 19, "repurchase_rate is from 0 to 1, not 2"),
    ("repurchase_rate in [1]", 17, "'in' takes a field of named values or whole numbers"),
    ("tier within 3 days", 6, "'within N days' applies to the time fields (last_purchase, "
                              "last_activity, joined), not to tier"),
    ("last_purchase > 30", 15, "last_purchase is a time: write 'last_purchase within N days'"),
    ("joined in [1]", 8, "'in' takes a field of named values or whole numbers; joined is not"),
    ("joined = gold", 8, "joined is a time"),
])
def test_a_comparison_of_the_wrong_type_is_an_error_at_parse_time(
        text: str, column: int, message: str) -> None:
    caught = error(text)
    assert message in caught.message
    assert (caught.line, caught.column) == (1, column)


@pytest.mark.parametrize(("text", "column", "message"), [
    ("purchace > 2", 1, "unknown field 'purchace' (did you mean 'purchases'?)"),
    ("tier = gold and last purchse within 3 days", 17,
     "unknown field 'last purchse' (did you mean 'last_purchase'?)"),
    ("Averge_Order_Value > 100", 1, "(did you mean 'average_order_value'?)"),
    ("lifecyle = new", 1, "(did you mean 'lifecycle'?)"),
    ("intrest(category 'x') > 0.1", 1, "(did you mean 'interest'?)"),
    ("colour = red", 1, "unknown field 'colour'; known fields: tier, lifecycle,"),
])
def test_unknown_fields_are_named_with_the_closest_known_one(
        text: str, column: int, message: str) -> None:
    caught = error(text)
    assert message in caught.message
    assert caught.column == column


def test_every_whitelisted_field_parses() -> None:
    for name, spec in FIELDS.items():
        if spec.kind == "time":
            text = f"{name} within 7 days"
        elif spec.kind == "enum":
            text = f"{name} = {spec.values[0]}"
        else:
            text = f"{name} >= 1"
        assert parse_rule(text).fields == {name}


def test_the_rule_language_knows_the_profiles_values() -> None:
    assert set(LIFECYCLES) == {x.value for x in Lifecycle}
    assert set(SHOPPER_TYPES) == {x.value for x in ShopperType}
    assert set(PRICE_BANDS) == {x.value for x in PriceBand}


def test_rules_are_text() -> None:
    assert error(None).message == "a rule is text at line 1, column 1"  # type: ignore[arg-type]


# -- limits ---------------------------------------------------------------------------------


def test_a_rule_has_at_most_2000_characters() -> None:
    fits = "purchases > 1" + " " * (MAX_RULE_LENGTH - 13)
    assert len(fits) == MAX_RULE_LENGTH
    parse_rule(fits)
    caught = error(fits + " ")
    assert caught.offset == MAX_RULE_LENGTH
    assert "at most 2000 characters" in caught.message


def test_a_rule_has_at_most_50_conditions() -> None:
    parse_rule(" or ".join(["purchases > 1"] * MAX_CONDITIONS))
    text = " or ".join(["purchases > 1"] * (MAX_CONDITIONS + 1))
    caught = error(text)
    assert caught.offset == text.rindex("purchases")
    assert "at most 50 conditions" in caught.message


def test_nesting_is_limited_so_no_rule_can_exhaust_the_stack() -> None:
    parse_rule("(" * MAX_DEPTH + "tier = gold" + ")" * MAX_DEPTH)
    parse_rule("not " * MAX_DEPTH + "tier = gold")
    caught = error("(" * (MAX_DEPTH + 1) + "tier = gold" + ")" * (MAX_DEPTH + 1))
    assert caught.offset == MAX_DEPTH
    assert "at most 20 levels" in caught.message
    parse_rule("not (" * 10 + "tier = gold" + ")" * 10)  # 20 levels: the limit
    caught = error("not (" * 11 + "tier = gold" + ")" * 11)
    assert caught.offset == len("not (" * 10)  # the 21st level: the eleventh 'not'
    # Far past the limit fails just as cleanly.
    assert error("(" * 1999).offset == MAX_DEPTH


def test_lists_are_limited() -> None:
    parse_rule(f"purchases in [{', '.join(['1'] * 50)}]")
    caught = error(f"purchases in [{', '.join(['1'] * 51)}]")
    assert "at most 50 values" in caught.message


# -- evaluation -----------------------------------------------------------------------------


def test_and_explains_with_all_its_conditions_when_it_holds() -> None:
    verdict = evaluate(parse_rule("tier = gold and purchases >= 4"), facts(), NOW)
    assert verdict.matched
    assert [(r.condition, r.value, r.held) for r in verdict.why] == [
        ("tier = gold", "gold", True), ("purchases >= 4", 4, True)]


def test_and_explains_with_the_conditions_that_failed_when_it_does_not() -> None:
    verdict = evaluate(parse_rule("tier = gold and purchases > 9 and reviews = 0"),
                       facts(), NOW)
    assert not verdict.matched
    assert [(r.condition, r.value, r.held) for r in verdict.why] == [
        ("purchases > 9", 4, False), ("reviews = 0", 1, False)]


def test_or_explains_with_the_satisfied_branch() -> None:
    verdict = evaluate(parse_rule(
        "tier = platinum or (lifecycle = active and has tag loyal) or purchases > 9"),
        facts(), NOW)
    assert verdict.matched
    assert verdict.why == (
        Reason("lifecycle = active", "lifecycle", "active", True),
        Reason('has tag "loyal"', "tags", ("loyal", "repeat_buyer"), True),
    )


def test_a_failed_or_explains_with_every_branch() -> None:
    verdict = evaluate(parse_rule("tier = platinum or purchases > 9"), facts(), NOW)
    assert not verdict.matched
    assert [r.held for r in verdict.why] == [False, False]


def test_not_explains_with_its_inner_condition_held_inverted() -> None:
    verdict = evaluate(parse_rule("not tier = platinum and not has tag 'at_risk'"),
                       facts(), NOW)
    assert verdict.matched
    assert verdict.why == (
        Reason("tier = platinum", "tier", "gold", held=True, negated=True),
        Reason('has tag "at_risk"', "tags", ("loyal", "repeat_buyer"), held=True,
               negated=True),
    )
    assert verdict.why[0].text == "not tier = platinum"
    failed = evaluate(parse_rule("not (tier = gold or tier = silver)"), facts(), NOW)
    assert not failed.matched
    assert failed.why == (Reason("tier = gold", "tier", "gold", held=False, negated=True),)
    twice = evaluate(parse_rule("not not tier = gold"), facts(), NOW)
    assert twice.matched and twice.why == (Reason("tier = gold", "tier", "gold", True),)


NEVER_BOUGHT = facts(purchases=0, last_purchase=None, average_order_value=None,
                     repurchase_rate=None, purchases_per_30_days=None, rfm_recency=None,
                     rfm_frequency=None, rfm_monetary=None, interests=None)


@pytest.mark.parametrize(("rule", "matched"), [
    # A condition on a missing fact is unknown, and so is its negation.
    ("last_purchase within 30 days", False),
    ("not last_purchase within 30 days", False),
    ("average_order_value > 0", False),
    ("not average_order_value > 0", False),
    ("rfm_monetary in [1, 2, 3, 4, 5]", False),
    ("interest(category 'outdoor') >= 0", False),  # no consent: interests unknown
    ("not interest(category 'outdoor') > 0.5", False),
    # false and unknown is false; true or unknown is true.
    ("purchases = 0 or last_purchase within 30 days", True),
    ("not (purchases > 0 and last_purchase within 30 days)", True),
    ("not (purchases = 0 and last_purchase within 30 days)", False),
    ("purchases = 0", True),
])
def test_missing_facts_never_satisfy_a_condition(rule: str, matched: bool) -> None:
    assert matches(rule, NEVER_BOUGHT) is matched


def test_a_missing_facts_reason_never_holds_even_negated() -> None:
    verdict = evaluate(parse_rule("not last_purchase within 30 days"), NEVER_BOUGHT, NOW)
    assert verdict.why == (Reason("last_purchase within 30 days", "last_purchase", None,
                                  held=False, negated=True),)
    unknown_or = evaluate(parse_rule("tier = platinum or rfm_recency = 5"), NEVER_BOUGHT, NOW)
    assert [r.condition for r in unknown_or.why] == ["rfm_recency = 5"]


@pytest.mark.parametrize(("age", "within_30"), [
    (timedelta(0), True),
    (timedelta(days=30), True),  # exactly 30 days ago is within 30 days
    (timedelta(days=30, seconds=1), False),
    (-timedelta(hours=1), True),  # a clock a little ahead does not drop the member
])
def test_time_windows_count_back_from_now(age: timedelta, within_30: bool) -> None:
    member = facts(last_purchase=NOW - age)
    assert matches("last_purchase within 30 days", member) is within_30
    assert matches("not last_purchase within 30 days", member) is not within_30


def test_the_same_facts_leave_a_window_as_the_clock_moves() -> None:
    rule = parse_rule("last_activity within 7 days and joined within 400 days")
    member = facts(last_activity=days_ago(1), joined=days_ago(400))
    assert evaluate(rule, member, NOW).matched
    later = evaluate(rule, member, NOW + timedelta(days=7))
    assert not later.matched
    assert [r.fact for r in later.why] == ["last_activity", "joined"]


def test_interest_shares_and_floats_compare_as_numbers() -> None:
    assert matches("interest(category books) > 0.5 and interest(brand 'ACME') = 1")
    assert matches("interest(brand nobody) = 0")  # known interests, none in this brand
    assert matches("repurchase_rate >= 0.25 and purchases_per_30_days < 2")
    assert matches("total_spent >= 48000 and average_order_value in [12000, 13000]")


def test_now_and_fact_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(parse_rule("purchases > 1"), facts(), datetime(2026, 5, 4))
    with pytest.raises(ValueError, match="timezone-aware"):
        facts(joined=datetime(2026, 5, 4))


# -- round trip -----------------------------------------------------------------------------

ROUND_TRIP = [
    ISSUE_EXAMPLE,
    "tier = gold",
    "tier != regular and lifecycle in [active, new]",
    "not (tier = gold or tier = silver) and purchases >= 3",
    "(purchases > 1 or reviews > 2) and (lifecycle = dormant or lifecycle = churned)",
    "not not not has tag 'x'",
    "price band = premium or shopper type = 'quality seeker'",
    "repurchase_rate > 0.333333 and purchases_per_30_days <= 12.5",
    "interest(brand 'O\\'Neill') >= 0.05 or interest(category \"a \\\"b\\\"\") < 1",
    "rfm_recency = 5 and rfm_frequency >= 4 and rfm_monetary <= 5",
    "((joined within 30 days)) and not last_activity within 1 day",
    "total_spent in [0, 100, 1000000] or orders_placed != 0",
    "has tag \"tab\\tand\\nnewline\\\\\"",
    "not (tier = gold and (purchases > 1 or (reviews > 0 and not has tag y)))",
    " or ".join(f"(purchases = {n} and reviews < {n})" for n in range(25)),
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_rendering_then_parsing_gives_the_same_tree(text: str) -> None:
    rule = parse_rule(text)
    again = parse_rule(rule.text)
    assert again == rule
    assert again.text == rule.text
    assert isinstance(rule, Rule)


# -- facts from a profile -------------------------------------------------------------------


def profile(**overrides: Any) -> MemberProfile:
    values: dict[str, Any] = dict(
        member_id="m1", as_of=NOW, joined_at=days_ago(100), personalised=True,
        category_interests=(InterestScore("outdoor", 3.0, 0.6, 5, days_ago(2), {}),
                            InterestScore("books", 2.0, 0.4, 4, days_ago(3), {})),
        brand_interests=(InterestScore("acme", 1.0, 1.0, 2, days_ago(2), {}),),
        behaviour=BehaviourCounts(10, 8, 1, 1, 0, 0, 0, 20.0),
        price_band=PriceBand.PREMIUM, average_price=9000, price_basis="bought",
        orders_placed=3, purchases=2, purchase_total=18_000, refunded_total=1000,
        average_order_value=9000, purchases_per_30_days=0.9, repurchase_rate=0.5,
        first_purchase_at=days_ago(60), last_purchase_at=days_ago(5), reviews=1,
        average_stars=4.0, rfm=RfmScores(4, 3, 5, 10),
        lifecycle=Explained(Lifecycle.ACTIVE, "rule", {}),
        shopper_type=Explained(ShopperType.QUALITY_SEEKER, "rule", {}),
        tags=(Explained("high_value", "rule", {}),), channels=(), last_activity_at=days_ago(1),
    )
    values.update(overrides)
    return MemberProfile(**values)


def test_facts_come_from_the_profile_and_the_tier() -> None:
    assert facts_from_profile(profile(), "Gold") == Facts(
        tier="gold", lifecycle="active", shopper_type="quality_seeker", price_band="premium",
        purchases=2, orders_placed=3, reviews=1, total_spent=18_000, average_order_value=9000,
        repurchase_rate=0.5, purchases_per_30_days=0.9, rfm_recency=4, rfm_frequency=3,
        rfm_monetary=5, last_purchase=days_ago(5), last_activity=days_ago(1),
        joined=days_ago(100),
        interests={("category", "outdoor"): 0.6, ("category", "books"): 0.4,
                   ("brand", "acme"): 1.0},
        tags=frozenset({"high_value"}),
    )
    assert evaluate(parse_rule(ISSUE_EXAMPLE), facts_from_profile(profile(), "gold"),
                    NOW).matched


def test_without_consent_a_profiles_interests_are_unknown_to_rules() -> None:
    member = facts_from_profile(profile(personalised=False), "gold")
    assert member.interests is None
    assert not matches("interest(category outdoor) < 0.1", member)
    assert not matches("not interest(category outdoor) >= 0.5", member)


def test_a_member_who_never_bought_has_no_rfm_or_last_purchase() -> None:
    member = facts_from_profile(profile(
        purchases=0, purchase_total=0, average_order_value=None, rfm=None,
        last_purchase_at=None, first_purchase_at=None, repurchase_rate=None,
        purchases_per_30_days=None, price_band=None), "regular")
    assert (member.rfm_recency, member.last_purchase, member.price_band) == (None, None, None)
    assert matches("tier = regular and purchases = 0", member)
    assert not matches("not rfm_recency = 5", member)
