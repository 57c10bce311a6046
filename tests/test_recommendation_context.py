"""Popularity in context, for members without history or consent to personalisation: the
most specific context with enough members wins, smaller ones fall back, festivals and
seasons pool their years, and every pick says in plain English why it is there."""

from __future__ import annotations

import itertools
import pickle
import random
import time
from datetime import date, datetime, timedelta

import pytest

from domain.recommendation.context import (
    DEFAULT_FESTIVALS,
    NORTHERN_METEOROLOGICAL_SEASONS,
    ContextPick,
    ContextReason,
    ContextualPopularity,
    Festival,
    FestivalCalendar,
    MemberContext,
    describe,
)

Signal = tuple[str, str, float, datetime]

# Days outside every default festival window.
SUMMER_DAY = datetime(2025, 7, 10, 12)
WINTER_DAY = datetime(2025, 1, 5, 12)


def bought(members: list[str], item: str, at: datetime = SUMMER_DAY,
           weight: float = 5.0) -> list[Signal]:
    return [(member, item, weight, at) for member in members]


def people(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n}" for n in range(count)]


def items_of(picks: list[ContextPick]) -> list[str]:
    return [pick.item for pick in picks]


GOLD_SHANGHAI = MemberContext(tier="gold", city="Shanghai")


# -- the most specific context with enough members -------------------------------------------


def test_a_tier_and_city_with_enough_members_wins() -> None:
    gold_shanghai, silver_shanghai, gold_beijing = (
        people("gs", 5), people("ss", 6), people("gb", 6))
    contexts = ({m: GOLD_SHANGHAI for m in gold_shanghai}
                | {m: MemberContext("silver", "Shanghai") for m in silver_shanghai}
                | {m: MemberContext("gold", "Beijing") for m in gold_beijing})
    signals = (bought(gold_shanghai, "silk-scarf")
               + bought(silver_shanghai + gold_beijing, "tea")
               + bought(gold_shanghai[:2], "tea"))
    model = ContextualPopularity.fit(signals, contexts)

    picks = model.recommend(GOLD_SHANGHAI, now=SUMMER_DAY, k=2)

    assert picks == [
        ContextPick("silk-scarf", 1.0, ContextReason("tier_city", tier="gold", city="Shanghai")),
        ContextPick("tea", 2 / 5, ContextReason("tier_city", tier="gold", city="Shanghai")),
    ]
    # Overall, tea is far more popular; Gold members in Shanghai are not asked about it.
    assert items_of(model.recommend(MemberContext(), now=SUMMER_DAY, k=2)) == [
        "tea", "silk-scarf"]


def test_a_context_with_too_few_members_falls_back_to_the_next_one() -> None:
    gold_shanghai, silver_shanghai = people("gs", 4), people("ss", 3)
    contexts = ({m: GOLD_SHANGHAI for m in gold_shanghai}
                | {m: MemberContext("silver", "Shanghai") for m in silver_shanghai})
    signals = bought(gold_shanghai, "silk-scarf") + bought(silver_shanghai, "dumplings")
    model = ContextualPopularity.fit(signals, contexts, min_members=5)

    picks = model.recommend(GOLD_SHANGHAI, now=SUMMER_DAY, k=1)

    # Four Gold members in Shanghai are too few; Shanghai has seven.
    assert model.members_in(ContextReason("tier_city", tier="gold", city="Shanghai")) == 4
    assert picks == [ContextPick("silk-scarf", 4 / 7, ContextReason("city", city="Shanghai"))]


def test_the_list_is_filled_context_by_context_from_most_to_least_specific() -> None:
    contexts = {
        "a": MemberContext("gold", "Shanghai", ("s-small",)),
        "b": MemberContext("gold", "Shanghai", ("s-small",)),
        "c": MemberContext("silver", "Shanghai"),
        "d": MemberContext("silver", "Shanghai"),
        "e": MemberContext("gold", "Beijing"),
        "f": MemberContext("gold", "Beijing"),
        "m": MemberContext("regular", "Chengdu", ("s-small",)),
    } | {member: MemberContext("regular", "Chengdu", ("s-big",)) for member in "ghijkl"}
    signals = (bought(["a", "b"], "i-tier-city") + bought(["c", "d"], "i-city")
               + bought(["e", "f"], "i-tier") + bought(list("ghijkl"), "i-segment-big")
               + bought(["m"], "i-segment-small")
               + bought(["n", "o"], "i-christmas", at=datetime(2024, 12, 20))
               + bought(["p", "q"], "i-winter", at=WINTER_DAY)
               + bought(["r", "s"], "i-summer"))
    model = ContextualPopularity.fit(signals, contexts, segment_names={"s-big": "Big spenders"},
                                     min_members=2)
    member = MemberContext("gold", "Shanghai", ("s-small", "s-big"))

    picks = model.recommend(member, now=datetime(2025, 12, 15, 9), k=20)

    assert picks == [
        ContextPick("i-tier-city", 2 / 2, ContextReason("tier_city", tier="gold",
                                                        city="Shanghai")),
        ContextPick("i-city", 2 / 4, ContextReason("city", city="Shanghai")),
        ContextPick("i-tier", 2 / 4, ContextReason("tier", tier="gold")),
        # The member's larger segment first.
        ContextPick("i-segment-big", 6 / 6, ContextReason("segment", segment_id="s-big",
                                                          segment_name="Big spenders")),
        ContextPick("i-segment-small", 1 / 3, ContextReason("segment", segment_id="s-small")),
        ContextPick("i-christmas", 2 / 2, ContextReason("festival", festival="Christmas")),
        # Christmas shoppers shopped in winter too: four winter members.
        ContextPick("i-winter", 2 / 4, ContextReason("season", season="winter")),
        ContextPick("i-summer", 2 / 19, ContextReason("overall")),
    ]


def test_members_count_not_weights_nor_repeats() -> None:
    signals = ([("heavy", "gadget", 10.0, SUMMER_DAY + timedelta(hours=n)) for n in range(50)]
               + bought(["x", "y"], "book", weight=0.5)
               + bought(people("z", 8), "free-sample", weight=0.0)
               + bought(people("w", 8), "returned", weight=-3.0))
    model = ContextualPopularity.fit(signals, {})

    picks = model.recommend(MemberContext(), now=SUMMER_DAY, k=10)

    assert items_of(picks) == ["book", "gadget"]
    assert [pick.score for pick in picks] == [2 / 3, 1 / 3]
    assert model.members_in(ContextReason("overall")) == 3


def test_tier_and_city_match_whatever_their_case_and_are_shown_as_asked() -> None:
    members = people("m", 5)
    contexts = {m: MemberContext("Gold", " shanghai ") for m in members}
    model = ContextualPopularity.fit(bought(members, "tea"), contexts)

    [pick] = model.recommend(MemberContext("GOLD", "Shanghai"), now=SUMMER_DAY, k=1)

    assert pick.reason == ContextReason("tier_city", tier="GOLD", city="Shanghai")
    assert describe(pick.reason) == "popular with Gold members in Shanghai"


def test_members_without_a_known_context_still_count_overall_and_in_time() -> None:
    known = people("k", 5)
    contexts = {m: MemberContext("gold", "Shanghai") for m in known}
    signals = bought(known, "tea") + bought(people("u", 7), "coffee")
    model = ContextualPopularity.fit(signals, contexts)

    assert items_of(model.recommend(GOLD_SHANGHAI, now=SUMMER_DAY, k=1)) == ["tea"]
    assert model.members_in(ContextReason("overall")) == 12
    assert model.members_in(ContextReason("season", season="summer")) == 12
    assert items_of(model.recommend(MemberContext(), now=SUMMER_DAY, k=2)) == ["coffee", "tea"]


# -- festivals and seasons -------------------------------------------------------------------


def test_spring_festival_windows_follow_the_lunar_calendar_of_each_year() -> None:
    names_on = DEFAULT_FESTIVALS.names_on
    # 2024: New Year on Feb 10, window Jan 27 - Feb 13.
    assert "Spring Festival" not in names_on(date(2024, 1, 26))
    assert "Spring Festival" in names_on(date(2024, 1, 27))
    assert "Spring Festival" in names_on(date(2024, 2, 13))
    assert "Spring Festival" not in names_on(date(2024, 2, 14))
    # 2025: New Year on Jan 29, window Jan 15 - Feb 1.
    assert "Spring Festival" not in names_on(date(2025, 1, 14))
    assert "Spring Festival" in names_on(date(2025, 1, 15))
    assert "Spring Festival" in names_on(date(2025, 2, 1))
    assert "Spring Festival" not in names_on(date(2025, 2, 2))
    # 2028: New Year on Jan 26.
    assert "Spring Festival" in names_on(date(2028, 1, 12))
    assert "Spring Festival" in names_on(date(2028, 1, 29))
    assert "Spring Festival" not in names_on(date(2028, 1, 30))


def test_the_default_calendar_has_each_festivals_window() -> None:
    names_on = DEFAULT_FESTIVALS.names_on
    # Mid-Autumn 2025 is on Oct 6 (window from Sep 26); in 2026 on Sep 25.
    assert names_on(date(2025, 9, 25)) == []
    assert names_on(date(2025, 9, 26)) == ["Mid-Autumn Festival"]
    assert names_on(date(2025, 10, 6)) == ["Mid-Autumn Festival"]
    assert names_on(date(2025, 10, 7)) == []
    assert names_on(date(2026, 9, 15)) == ["Mid-Autumn Festival"]
    assert names_on(date(2026, 9, 26)) == []
    assert names_on(date(2027, 11, 1)) == names_on(date(2027, 11, 11)) == ["Singles' Day"]
    assert names_on(date(2027, 11, 12)) == []
    assert names_on(date(2026, 12, 10)) == names_on(date(2026, 12, 25)) == ["Christmas"]
    assert names_on(date(2026, 12, 26)) == []
    # 2026's Spring Festival (Feb 17) window runs Feb 3 - 20, past Valentine's Day.
    assert names_on(date(2026, 2, 7)) == ["Valentine's Day", "Spring Festival"]
    assert names_on(date(2027, 2, 14)) == ["Valentine's Day"]
    assert names_on(date(2025, 2, 7)) == ["Valentine's Day"]
    assert DEFAULT_FESTIVALS.names == [
        "Christmas", "Mid-Autumn Festival", "Singles' Day", "Spring Festival",
        "Valentine's Day"]
    assert {f.start.year for f in DEFAULT_FESTIVALS.festivals} == set(range(2024, 2029))


def test_overlapping_windows_put_the_one_closing_first_first() -> None:
    # 2024-02-10 is New Year's Day (window to Feb 13) and in Valentine's week (to Feb 14).
    assert DEFAULT_FESTIVALS.names_on(date(2024, 2, 10)) == [
        "Spring Festival", "Valentine's Day"]


def test_festival_signals_pool_the_windows_of_every_year() -> None:
    signals = (bought(["m1", "m2"], "lantern", at=datetime(2024, 2, 1, 10))
               + bought(["m3", "m4", "m5"], "lantern", at=datetime(2025, 1, 20, 10))
               # The day after 2025's window: not Spring Festival shopping.
               + bought(people("late", 6), "kite", at=datetime(2025, 2, 2, 10)))
    model = ContextualPopularity.fit(signals, {})
    spring = ContextReason("festival", festival="Spring Festival")

    picks = model.recommend(MemberContext(), now=datetime(2026, 2, 10, 8), k=2)

    assert model.members_in(spring) == 5
    assert picks[0] == ContextPick("lantern", 1.0, spring)
    assert picks[1].item == "kite" and picks[1].reason.kind != "festival"


def test_a_shop_can_bring_its_own_calendar() -> None:
    calendar = FestivalCalendar([
        Festival("Anniversary sale", date(2024, 6, 1), date(2024, 6, 3)),
        Festival("Anniversary sale", date(2025, 6, 1), date(2025, 6, 3)),
    ])
    signals = (bought(people("a", 5), "cake", at=datetime(2024, 6, 2))
               + bought(people("b", 6), "umbrella", at=datetime(2024, 6, 10)))
    model = ContextualPopularity.fit(signals, {}, calendar=calendar)

    [pick] = model.recommend(MemberContext(), now=datetime(2025, 6, 3, 23), k=1)

    assert pick == ContextPick("cake", 1.0, ContextReason("festival",
                                                          festival="Anniversary sale"))
    assert describe(pick.reason) == "popular around Anniversary sale"
    # No default festival is known to this model.
    assert DEFAULT_FESTIVALS.names_on(date(2025, 12, 20)) == ["Christmas"]
    assert model.recommend(MemberContext(), now=datetime(2025, 12, 20), k=1)[0].reason.kind \
        != "festival"


def test_a_festival_window_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValueError):
        Festival("Backwards", date(2024, 5, 2), date(2024, 5, 1))
    with pytest.raises(ValueError):
        Festival(" ", date(2024, 5, 1), date(2024, 5, 1))


def test_seasons_are_meteorological_and_northern_by_default() -> None:
    season = NORTHERN_METEOROLOGICAL_SEASONS
    assert [season[month] for month in range(1, 13)] == (
        ["winter"] * 2 + ["spring"] * 3 + ["summer"] * 3 + ["autumn"] * 3 + ["winter"])


def test_signals_count_for_the_season_of_their_month_in_any_year() -> None:
    signals = (bought(people("s", 3), "sunscreen", at=datetime(2024, 6, 1))
               + bought(people("t", 2), "sunscreen", at=datetime(2026, 8, 31, 23))
               + bought(people("w", 6), "gloves", at=datetime(2025, 12, 1)))
    model = ContextualPopularity.fit(signals, {})

    [summer_pick] = model.recommend(MemberContext(), now=datetime(2027, 7, 1), k=1)
    [winter_pick] = model.recommend(MemberContext(), now=datetime(2027, 2, 20), k=1)

    assert summer_pick == ContextPick("sunscreen", 1.0, ContextReason("season", season="summer"))
    assert winter_pick == ContextPick("gloves", 1.0, ContextReason("season", season="winter"))


def test_the_season_mapping_is_a_parameter() -> None:
    southern = {month: NORTHERN_METEOROLOGICAL_SEASONS[(month + 5) % 12 + 1]
                for month in range(1, 13)}
    assert southern[1] == "summer" and southern[7] == "winter"
    signals = bought(people("s", 5), "sunscreen", at=datetime(2025, 1, 10))
    model = ContextualPopularity.fit(signals, {}, seasons=southern)

    [pick] = model.recommend(MemberContext(), now=datetime(2026, 12, 30), k=1)

    assert pick.reason == ContextReason("season", season="summer")


def test_a_season_mapping_must_cover_every_month() -> None:
    incomplete = {month: "any" for month in range(1, 12)}
    with pytest.raises(ValueError, match="12"):
        ContextualPopularity.fit([], {}, seasons=incomplete)


# -- exclusions, anonymous visitors, descriptions --------------------------------------------


def test_excluded_items_are_never_returned_and_no_item_appears_twice() -> None:
    rng = random.Random(5)
    members = people("m", 60)
    contexts = {m: MemberContext(rng.choice(["gold", "silver"]), rng.choice(["A", "B"]),
                                 (rng.choice(["s1", "s2"]),)) for m in members}
    signals = [(rng.choice(members), f"p{rng.randrange(40):02d}", 1.0,
                datetime(2024, 1, 1) + timedelta(days=rng.randrange(700)))
               for _ in range(1_500)]
    model = ContextualPopularity.fit(signals, contexts)
    excluded = {f"p{n:02d}" for n in range(0, 40, 3)}

    for member in members[:10]:
        picks = model.recommend(contexts[member], now=datetime(2025, 2, 1), k=40,
                                exclude=excluded)
        assert not set(items_of(picks)) & excluded
        assert len(picks) == len(set(items_of(picks))) == 40 - len(excluded)


def test_an_anonymous_visitor_out_of_season_gets_the_overall_list() -> None:
    signals = bought(people("a", 3), "fan") + bought(people("b", 2), "hat")
    model = ContextualPopularity.fit(signals, {})

    picks = model.recommend(MemberContext(), now=WINTER_DAY, k=5)

    # Nobody shopped in winter; only five members overall, yet overall is the last resort
    # and is used whatever its size.
    assert picks == [ContextPick("fan", 3 / 5, ContextReason("overall")),
                     ContextPick("hat", 2 / 5, ContextReason("overall"))]


def test_nothing_learned_gives_an_empty_list() -> None:
    model = ContextualPopularity.fit([], {})

    assert model.recommend(GOLD_SHANGHAI, now=SUMMER_DAY, k=5) == []


def test_descriptions_read_as_english() -> None:
    expected = {
        ContextReason("tier_city", tier="gold", city="Shanghai"):
            "popular with Gold members in Shanghai",
        ContextReason("city", city="Shanghai"): "popular in Shanghai",
        ContextReason("tier", tier="platinum"): "popular with Platinum members",
        ContextReason("segment", segment_id="seg-1", segment_name="Tea lovers"):
            "popular with members in Tea lovers",
        ContextReason("segment", segment_id="seg-2"): "popular with members in seg-2",
        ContextReason("festival", festival="Spring Festival"): "popular around Spring Festival",
        ContextReason("season", season="winter"): "popular in winter",
        ContextReason("overall"): "popular with members",
    }
    for reason, text in expected.items():
        assert describe(reason) == text


def test_segment_reasons_carry_the_name_given_to_fit() -> None:
    members = people("m", 5)
    contexts = {m: MemberContext(segments=("seg-7",)) for m in members}
    model = ContextualPopularity.fit(bought(members, "tea"), contexts,
                                     segment_names={"seg-7": "Tea lovers"})

    [pick] = model.recommend(MemberContext(segments=("seg-7",)), now=SUMMER_DAY, k=1)

    assert describe(pick.reason) == "popular with members in Tea lovers"


# -- determinism, storage, speed, bad input --------------------------------------------------


def random_signals(rng: random.Random, members: list[str], count: int,
                   n_items: int = 300) -> list[Signal]:
    start = datetime(2024, 1, 1)
    return [(rng.choice(members), f"p{min(int(rng.paretovariate(1.1)), n_items):04d}",
             rng.choice([0.2, 1.0, 5.0]), start + timedelta(minutes=rng.randrange(1_300_000)))
            for _ in range(count)]


def random_contexts(rng: random.Random, members: list[str]) -> dict[str, MemberContext]:
    return {m: MemberContext(rng.choice(["regular", "silver", "gold", "platinum"]),
                             rng.choice(["Shanghai", "Beijing", "Chengdu", "Hangzhou"]),
                             tuple(rng.sample(["s1", "s2", "s3", "s4"], rng.randint(0, 2))))
            for m in members}


def test_the_same_signals_in_any_order_give_the_same_lists_with_ties_by_item_id() -> None:
    rng = random.Random(8)
    members = people("m", 200)
    contexts = random_contexts(rng, members)
    signals = random_signals(rng, members, 3_000)
    shuffled = rng.sample(signals, len(signals))

    first = ContextualPopularity.fit(signals, contexts)
    second = ContextualPopularity.fit(shuffled, contexts)

    for member in members[:20]:
        for now in (datetime(2025, 1, 20), datetime(2025, 7, 1), datetime(2026, 11, 5)):
            picks = first.recommend(contexts[member], now=now, k=30)
            assert picks == second.recommend(contexts[member], now=now, k=30)
            for before, after in itertools.pairwise(picks):
                if before.reason == after.reason:
                    assert (-before.score, before.item) < (-after.score, after.item)


def test_a_fitted_model_survives_a_pickle_round_trip() -> None:
    rng = random.Random(3)
    members = people("m", 100)
    contexts = random_contexts(rng, members)
    model = ContextualPopularity.fit(random_signals(rng, members, 2_000), contexts,
                                     segment_names={"s1": "Tea lovers"})

    restored = pickle.loads(pickle.dumps(model))

    for member in members[:10]:
        now = datetime(2025, 2, 10)
        assert (restored.recommend(contexts[member], now=now, k=15, exclude={"p0001"})
                == model.recommend(contexts[member], now=now, k=15, exclude={"p0001"}))
    assert restored.calendar == model.calendar


def test_100000_signals_of_5000_members_fit_in_well_under_a_few_seconds() -> None:
    rng = random.Random(1)
    members = people("m", 5_000)
    contexts = random_contexts(rng, members)
    signals = random_signals(rng, members, 100_000, n_items=2_000)

    started = time.perf_counter()
    model = ContextualPopularity.fit(signals, contexts)
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0, f"fit took {elapsed:.2f} s"
    assert model.members_in(ContextReason("overall")) == len({s[0] for s in signals})
    assert len(model.recommend(contexts["m0"], now=datetime(2025, 1, 20), k=10)) == 10


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        ContextualPopularity.fit([], {}, min_members=0)
    model = ContextualPopularity.fit(bought(["a"], "tea"), {})
    with pytest.raises(ValueError):
        model.recommend(MemberContext(), now=SUMMER_DAY, k=0)
