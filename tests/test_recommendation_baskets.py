"""Frequently bought together: association rules from order baskets, as the cart
placement will use them — correct counts, thresholds that filter, never suggesting what is
already in the cart or excluded, and the same answer for the same orders."""

from __future__ import annotations

import dataclasses
import pickle
import random

import pytest

from domain.recommendation.baskets import (
    AssociationRule,
    AssociationRules,
    CartPick,
    mine_rules,
)

# Five orders. Items: a in 4, b in 4, c in 2, d in 2. Pairs: ab 3, ac 2, bd 2, bc 1, ad 1.
SMALL = [
    {"a", "b", "c"},
    {"a", "b"},
    {"a", "c"},
    {"b", "d"},
    {"a", "b", "d"},
]


def rule(rules: AssociationRules, antecedent: str, consequent: str) -> AssociationRule:
    matches = [r for r in rules.rules_for(antecedent) if r.consequent == consequent]
    assert len(matches) == 1, f"no single rule {antecedent} -> {consequent}"
    return matches[0]


def pairs(rules: AssociationRules) -> set[tuple[str, str]]:
    return {(r.antecedent, r.consequent) for r in rules.rules}


# -- counting --------------------------------------------------------------------------------


def test_support_confidence_and_lift_are_computed_as_by_hand() -> None:
    rules = mine_rules(SMALL)

    # a -> c: 2 of 5 baskets hold both; 2 of a's 4; P(c) = 2/5, so lift 0.5 / 0.4.
    a_c = rule(rules, "a", "c")
    assert (a_c.pair_count, a_c.support, a_c.confidence, a_c.lift) == (2, 0.4, 0.5, 1.25)
    # c -> a: every basket with c has a; P(a) = 4/5.
    c_a = rule(rules, "c", "a")
    assert (c_a.pair_count, c_a.support, c_a.confidence, c_a.lift) == (2, 0.4, 1.0, 1.25)
    d_b = rule(rules, "d", "b")
    assert (d_b.confidence, d_b.lift) == (1.0, 1.25)
    # a and b are together in 3 baskets, yet less often than chance (0.75 < P(b) = 0.8):
    # lift 0.9375 < 1, so the default min_lift drops both directions.
    assert ("a", "b") not in pairs(rules) and ("b", "a") not in pairs(rules)
    # bc and ad occur once: below the default min_support_count of 2.
    assert pairs(rules) == {("a", "c"), ("c", "a"), ("b", "d"), ("d", "b")}
    assert len(rules) == 4
    assert rules.n_baskets == 5


def test_a_rule_lifts_a_pair_seen_less_than_chance_when_the_threshold_allows_it() -> None:
    rules = mine_rules(SMALL, min_lift=0.0)

    a_b = rule(rules, "a", "b")
    assert (a_b.pair_count, a_b.support, a_b.confidence, a_b.lift) == (3, 0.6, 0.75, 0.9375)
    # It argues against b, so it has no strength to recommend b with.
    assert a_b.strength == 0.0


def test_strength_is_the_added_value_of_the_antecedent_smoothed_towards_chance() -> None:
    unsmoothed = mine_rules(SMALL, prior_baskets=0.0)
    # P(a | c) - P(a) = 1.0 - 0.8
    assert rule(unsmoothed, "c", "a").strength == pytest.approx(0.2)
    assert rule(unsmoothed, "a", "c").strength == pytest.approx(0.5 - 0.4)

    smoothed = mine_rules(SMALL, prior_baskets=5.0)
    # (2 + 5 * 0.8) / (2 + 5) - 0.8: two baskets of evidence count for little.
    assert rule(smoothed, "c", "a").strength == pytest.approx(6 / 7 - 0.8)
    assert rule(smoothed, "a", "c").strength == pytest.approx(4 / 9 - 0.4)


def test_a_pair_resting_on_two_orders_ranks_below_a_well_supported_one() -> None:
    """Lift alone would put a fluke first: two rare items bought together twice."""
    baskets = [{"phone", "case"}] * 200 + [{"phone"}] * 300 + [{"fluke-1", "fluke-2"}] * 2
    baskets += [{f"filler-{n % 400}"} for n in range(10_000)]
    baskets += [{"phone", "fluke-1"}]  # so the fluke is a candidate for phone buyers too
    rules = mine_rules(baskets, min_support_count=1)

    fluke = rule(rules, "fluke-1", "fluke-2")
    case = rule(rules, "phone", "case")
    assert fluke.lift > 100 * case.lift
    assert fluke.strength < case.strength

    picks = rules.recommend_for_cart(["phone", "fluke-1"], k=2)
    assert [pick.item for pick in picks] == ["case", "fluke-2"]


def test_an_items_repeated_lines_count_once_per_basket() -> None:
    rules = mine_rules([["a", "a", "c"], ["a", "c", "c"], ["b"]])

    assert rule(rules, "a", "c").pair_count == 2
    assert rule(rules, "a", "c").confidence == 1.0


def test_baskets_larger_than_max_basket_are_skipped_and_left_out_of_every_count() -> None:
    bulk = {f"x{n}" for n in range(10)} | {"a", "c"}
    rules = mine_rules([*SMALL, bulk, bulk], max_basket=10)

    assert rules.skipped_baskets == 2
    assert rules.n_baskets == 5
    assert not any(r.antecedent.startswith("x") for r in rules.rules)
    # Exactly as without the bulk orders: a and c were not counted from them either.
    assert rule(rules, "a", "c") == rule(mine_rules(SMALL), "a", "c")


# -- thresholds ------------------------------------------------------------------------------


def test_min_support_count_drops_rare_pairs() -> None:
    rules = mine_rules(SMALL, min_support_count=3, min_lift=0.0)

    assert pairs(rules) == {("a", "b"), ("b", "a")}


def test_min_confidence_drops_unreliable_rules() -> None:
    rules = mine_rules(SMALL, min_confidence=0.6)

    # a -> c and b -> d have confidence 0.5; c -> a and d -> b have 1.0.
    assert pairs(rules) == {("c", "a"), ("d", "b")}


def test_min_lift_drops_rules_no_better_than_chance() -> None:
    assert pairs(mine_rules(SMALL, min_lift=1.3)) == set()
    assert ("a", "b") in pairs(mine_rules(SMALL, min_lift=0.9))


@pytest.mark.parametrize(
    "arguments",
    [
        {"min_support_count": 0},
        {"min_confidence": 1.5},
        {"min_confidence": -0.1},
        {"min_lift": -1.0},
        {"max_basket": 1},
        {"prior_baskets": -1.0},
    ],
)
def test_nonsensical_thresholds_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        mine_rules(SMALL, **arguments)


# -- the cart --------------------------------------------------------------------------------


def test_cart_items_and_exclusions_are_never_returned() -> None:
    rules = mine_rules(SMALL, min_support_count=1, min_lift=0.0, min_confidence=0.0)
    every_item = {"a", "b", "c", "d"}

    for cart in (["a"], ["a", "b"], ["c", "d"], ["a", "c"]):
        for exclude in ((), ("d",), ("b", "c")):
            picks = rules.recommend_for_cart(cart, k=10, exclude=exclude)
            returned = {pick.item for pick in picks}
            assert not returned & set(cart)
            assert not returned & set(exclude)
            assert returned <= every_item


def test_the_cart_score_combines_the_rules_of_every_cart_item() -> None:
    # x goes with both a and b; y, as common as x, goes only with a, as strongly as x does.
    baskets = ([{"a", "x"}] * 4 + [{"b", "x"}] * 4 + [{"a", "y"}] * 4 + [{"y"}] * 4
               + [{"a"}] * 4 + [{"b"}] * 8 + [{f"other-{n}"} for n in range(40)])
    rules = mine_rules(baskets, prior_baskets=0.0)
    a_x, b_x, a_y = rule(rules, "a", "x"), rule(rules, "b", "x"), rule(rules, "a", "y")
    assert a_x.strength == b_x.strength == a_y.strength > 0

    picks = rules.recommend_for_cart(["b", "a"], k=5)

    assert [pick.item for pick in picks] == ["x", "y"]
    x, y = picks
    assert x.score == pytest.approx(1 - (1 - a_x.strength) * (1 - b_x.strength))
    assert y.score == pytest.approx(a_y.strength)
    assert y == CartPick("y", y.score, "a", a_y)
    # x's rules from a and b are equally strong: the smaller id is named.
    assert (x.because, x.rule) == ("a", a_x)


def test_because_names_the_cart_item_whose_rule_is_strongest() -> None:
    baskets = ([{"a", "x"}] * 2 + [{"a"}] * 6 + [{"b", "x"}] * 6 + [{"b"}] * 2
               + [{f"other-{n}"} for n in range(30)])
    rules = mine_rules(baskets)

    [pick] = rules.recommend_for_cart(["a", "b"], k=3)

    assert pick.item == "x"
    assert pick.because == "b"
    assert pick.rule == rule(rules, "b", "x")


def test_the_cart_list_is_cut_at_k_and_ties_go_to_the_smaller_item_id() -> None:
    baskets = [{"a", item} for item in ("q", "p", "s", "r") for _ in range(3)]
    baskets += [{f"other-{n}"} for n in range(20)]
    rules = mine_rules(baskets)

    picks = rules.recommend_for_cart(["a"], k=3)

    assert [pick.item for pick in picks] == ["p", "q", "r"]
    assert len({pick.score for pick in picks}) == 1


def test_a_cart_nothing_goes_with_gets_an_empty_list() -> None:
    rules = mine_rules(SMALL)

    assert rules.recommend_for_cart([], k=5) == []
    assert rules.recommend_for_cart(["unknown"], k=5) == []
    assert rules.rules_for("unknown") == []


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError):
        mine_rules(SMALL).recommend_for_cart(["a"], k=0)


def test_rules_for_lists_an_items_rules_best_first() -> None:
    baskets = ([{"a", "x"}] * 6 + [{"a", "y"}] * 3 + [{"a", "z"}] * 3 + [{"a"}] * 2
               + [{f"other-{n}"} for n in range(30)])
    rules = mine_rules(baskets)

    listed = rules.rules_for("a")

    assert [r.consequent for r in listed] == ["x", "y", "z"]  # y and z tie: by id
    strengths = [r.strength for r in listed]
    assert strengths == sorted(strengths, reverse=True)


# -- determinism, empty input, storage -------------------------------------------------------


def test_the_same_orders_in_any_order_give_the_same_rules_and_picks() -> None:
    rng = random.Random(11)
    items = [f"p{n:02d}" for n in range(30)]
    baskets = [rng.sample(items, rng.randint(1, 5)) for _ in range(400)]
    shuffled = [rng.sample(basket, len(basket)) for basket in baskets]
    rng.shuffle(shuffled)

    first, second = mine_rules(baskets, min_confidence=0.0), mine_rules(shuffled,
                                                                        min_confidence=0.0)

    assert len(first) > 0
    assert first == second
    assert first.rules == second.rules
    cart = ["p03", "p07", "p11"]
    assert (first.recommend_for_cart(cart, k=8)
            == second.recommend_for_cart(list(reversed(cart)), k=8))


def test_no_orders_give_no_rules() -> None:
    rules = mine_rules([])

    assert len(rules) == 0
    assert rules.n_baskets == 0
    assert rules.recommend_for_cart(["a"], k=5) == []


def test_single_item_orders_give_no_rules() -> None:
    assert len(mine_rules([{"a"}, {"b"}, {"a"}])) == 0


def test_rules_are_frozen_and_survive_a_pickle_round_trip() -> None:
    rules = mine_rules(SMALL)

    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.n_baskets = 7  # type: ignore[misc]
    restored = pickle.loads(pickle.dumps(rules))

    assert restored == rules
    assert restored.rules_for("c") == rules.rules_for("c")
    assert restored.recommend_for_cart(["a", "b"], k=3) == rules.recommend_for_cart(
        ["a", "b"], k=3)


# -- a planted pair --------------------------------------------------------------------------


def test_a_pair_planted_in_5000_random_orders_is_found_with_the_highest_lift() -> None:
    rng = random.Random(2024)
    catalogue = [f"p{n:03d}" for n in range(200)]
    # Popularity is skewed, as in a real shop: low ids sell far more.
    weights = [1.0 / (n + 1) ** 0.8 for n in range(len(catalogue))]
    baskets: list[set[str]] = []
    for _ in range(5_000):
        size = rng.randint(1, 6)
        baskets.append(set(rng.choices(catalogue, weights=weights, k=size)))
    # Camera and memory card: each bought alone now and then, together in 2% of orders.
    for basket in rng.sample(baskets, 100):
        basket |= {"camera", "memory-card"}
    for basket in rng.sample(baskets, 40):
        basket.add(rng.choice(["camera", "memory-card"]))

    rules = mine_rules(baskets)

    best = max(rules.rules, key=lambda r: (r.lift, r.antecedent, r.consequent))
    assert {best.antecedent, best.consequent} == {"camera", "memory-card"}
    # Chance pairs of rare items come close on lift (two orders of evidence are enough for
    # a high one); on strength, which discounts thin evidence, the planted pair is far ahead.
    chance = [r for r in rules.rules if {r.antecedent, r.consequent} != {"camera", "memory-card"}]
    planted_strength = min(r.strength for r in rules.rules if r not in chance)
    assert planted_strength > 3 * max(r.strength for r in chance)
    assert rules.rules_for("camera")[0].consequent == "memory-card"
    assert rules.recommend_for_cart(["camera", "p000"], k=1)[0].item == "memory-card"
