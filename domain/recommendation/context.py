"""Popularity in context: what members like this one, here and now, interact with.

The collaborative and content models know nothing about a member without history, and a
member who did not consent to personalisation must not get lists built from their own
behaviour. Both still deserve a better list than "popular overall": what is popular with
Gold members in their city, in their segments, around the coming festival, this season.
`ContextualPopularity` counts that from every member's signals once, at training time,
and answers from the most specific context that has enough members to be trusted.

Contexts (`ContextReason.kind`), most specific first:

- `tier_city`, `city`, `tier`, `segment`: who the member is (`MemberContext`; tier and city
  match case-insensitively, since cities are typed by members);
- `festival`: signals inside a festival's windows, in any year (`FestivalCalendar`);
- `season`: signals in a season, in any year (month -> season, northern meteorological
  by default);
- `overall`.

Time contexts pool years on purpose: the items bought before last Spring Festival are the
best guess for this one, and one year's window alone is too thin for most shops. Dates are
taken from the signals' `at` as given: pass them in the shop's time zone.

Nothing here reads a member's *own* behaviour at recommendation time, so the lists are
fit for members without consent to personalisation; the attributes used (tier, city,
segments) are the member's own profile, not behaviour-based inference about them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, NamedTuple

__all__ = [
    "DEFAULT_FESTIVALS",
    "NORTHERN_METEOROLOGICAL_SEASONS",
    "ContextKind",
    "ContextPick",
    "ContextReason",
    "ContextualPopularity",
    "Festival",
    "FestivalCalendar",
    "MemberContext",
    "describe",
]

ContextKind = Literal["tier_city", "city", "tier", "segment", "festival", "season", "overall"]


@dataclass(frozen=True, slots=True)
class MemberContext:
    """What the recommender may know about a member without their behaviour: their tier,
    city and segment ids. All optional; `MemberContext()` is an anonymous visitor."""

    tier: str | None = None
    city: str | None = None
    segments: tuple[str, ...] = ()


class ContextReason(NamedTuple):
    """Which context an item was popular in; `describe` turns it into English. Only the
    fields of its kind are set (a `tier_city` reason has tier and city, a `festival`
    reason the festival's name...). Tier and city are as the caller gave them."""

    kind: ContextKind
    tier: str | None = None
    city: str | None = None
    segment_id: str | None = None
    segment_name: str | None = None
    festival: str | None = None
    season: str | None = None


class ContextPick(NamedTuple):
    """An item and its score: the share of the context's members who interacted with it
    (0 to 1), so a pick from a city list and one from the overall list are comparable."""

    item: str
    score: float
    reason: ContextReason


def describe(reason: ContextReason) -> str:
    """The English explanation shown with a pick ("popular with Gold members in Shanghai").

    Tiers are stored lower-case ("gold") and title-cased here; cities are shown as given.
    A segment without a known name is shown by its id rather than not at all.
    """
    match reason.kind:
        case "tier_city":
            return f"popular with {_title(reason.tier)} members in {reason.city}"
        case "city":
            return f"popular in {reason.city}"
        case "tier":
            return f"popular with {_title(reason.tier)} members"
        case "segment":
            return f"popular with members in {reason.segment_name or reason.segment_id}"
        case "festival":
            return f"popular around {reason.festival}"
        case "season":
            return f"popular in {reason.season}"
        case "overall":
            return "popular with members"
    raise ValueError(f"unknown context kind {reason.kind!r}")


def _title(tier: str | None) -> str:
    return (tier or "").title()


# -- seasons and festivals -----------------------------------------------------------------

NORTHERN_METEOROLOGICAL_SEASONS: Mapping[int, str] = {
    12: "winter", 1: "winter", 2: "winter",
    3: "spring", 4: "spring", 5: "spring",
    6: "summer", 7: "summer", 8: "summer",
    9: "autumn", 10: "autumn", 11: "autumn",
}


@dataclass(frozen=True, slots=True)
class Festival:
    """One window of a festival's shopping season, both ends inclusive. A festival that
    recurs has one `Festival` per year, all with the same name."""

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a festival needs a name")
        if self.end < self.start:
            raise ValueError(f"{self.name}: the window ends ({self.end}) before it starts "
                             f"({self.start})")


class FestivalCalendar:
    """A shop's festival windows: `FestivalCalendar([Festival(...), ...])`.

    Windows may overlap (Spring Festival's often covers Valentine's Day); a day then
    belongs to every festival whose window holds it. Immutable after construction.
    """

    def __init__(self, festivals: Iterable[Festival]) -> None:
        self._festivals = tuple(sorted(festivals, key=lambda f: (f.start, f.end, f.name)))
        by_day: dict[date, list[Festival]] = defaultdict(list)
        for festival in self._festivals:
            day = festival.start
            while day <= festival.end:
                by_day[day].append(festival)
                day += timedelta(days=1)
        self._by_day = {day: tuple(windows) for day, windows in by_day.items()}

    @property
    def festivals(self) -> tuple[Festival, ...]:
        """Every window, by start date."""
        return self._festivals

    @property
    def names(self) -> list[str]:
        """The distinct festival names, sorted."""
        return sorted({festival.name for festival in self._festivals})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FestivalCalendar):
            return NotImplemented
        return self._festivals == other._festivals

    def __hash__(self) -> int:
        return hash(self._festivals)

    def __repr__(self) -> str:
        return f"FestivalCalendar({len(self._festivals)} windows: {', '.join(self.names)})"

    def festivals_on(self, day: date) -> list[Festival]:
        """The windows holding `day`, the one that closes first first (its demand is the
        most pressing; on a tie, by name)."""
        return sorted(self._by_day.get(day, ()), key=lambda f: (f.end, f.name))

    def names_on(self, day: date) -> list[str]:
        """The names of the festivals whose windows hold `day`, in `festivals_on` order."""
        return list(dict.fromkeys(f.name for f in self.festivals_on(day)))


SPRING_FESTIVAL = "Spring Festival"
MID_AUTUMN_FESTIVAL = "Mid-Autumn Festival"
SINGLES_DAY = "Singles' Day"
CHRISTMAS = "Christmas"
VALENTINES_DAY = "Valentine's Day"

# Lunar festivals move: the Gregorian dates of the first day of the first lunar month and
# the 15th day of the eighth (per the Chinese calendar, China Standard Time).
_LUNAR_NEW_YEAR = {
    2024: date(2024, 2, 10), 2025: date(2025, 1, 29), 2026: date(2026, 2, 17),
    2027: date(2027, 2, 6), 2028: date(2028, 1, 26),
}
_MID_AUTUMN = {
    2024: date(2024, 9, 17), 2025: date(2025, 10, 6), 2026: date(2026, 9, 25),
    2027: date(2027, 9, 15), 2028: date(2028, 10, 3),
}


def _default_festivals() -> list[Festival]:
    """2024-2028. Windows are the shopping seasons, not the holidays: gifts and food for
    Spring Festival are bought in the two weeks before it (and the first days of it),
    mooncakes in the ten days before Mid-Autumn; Singles' Day sales run from Nov 1."""
    festivals: list[Festival] = []
    for year in range(2024, 2029):
        new_year = _LUNAR_NEW_YEAR[year]
        festivals.append(Festival(SPRING_FESTIVAL, new_year - timedelta(days=14),
                                  new_year + timedelta(days=3)))
        mid_autumn = _MID_AUTUMN[year]
        festivals.append(Festival(MID_AUTUMN_FESTIVAL, mid_autumn - timedelta(days=10),
                                  mid_autumn))
        festivals.append(Festival(SINGLES_DAY, date(year, 11, 1), date(year, 11, 11)))
        festivals.append(Festival(CHRISTMAS, date(year, 12, 10), date(year, 12, 25)))
        festivals.append(Festival(VALENTINES_DAY, date(year, 2, 7), date(year, 2, 14)))
    return festivals


DEFAULT_FESTIVALS = FestivalCalendar(_default_festivals())


# -- the model ----------------------------------------------------------------------------

# A context's key: its kind and what identifies it, e.g. ("tier_city", "gold", "shanghai").
_Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Ranked:
    """One context's list: how many members it has, and its items by how many of them
    interacted with each (most first, ties by item id), ranked once at fit time."""

    members: int
    items: tuple[tuple[str, int], ...]


def _normalise(text: str | None) -> str | None:
    """Tier and city as keys: case and surrounding spaces do not make another city."""
    if text is None:
        return None
    folded = text.strip().casefold()
    return folded or None


def _member_keys(context: MemberContext) -> list[_Key]:
    """The attribute contexts a member belongs to."""
    tier, city = _normalise(context.tier), _normalise(context.city)
    keys: list[_Key] = []
    if tier is not None and city is not None:
        keys.append(("tier_city", tier, city))
    if city is not None:
        keys.append(("city", city))
    if tier is not None:
        keys.append(("tier", tier))
    keys.extend(("segment", segment) for segment in dict.fromkeys(context.segments))
    return keys


class ContextualPopularity:
    """Popularity per context, for cold-start and non-personalised lists.

    Build with `ContextualPopularity.fit(...)`, ask with `recommend(...)`. Fitted state is
    plain dicts and tuples, so the model pickles into a trained model file, and it is
    never mutated after `fit`, so concurrent requests can share it.
    """

    def __init__(
        self,
        lists: Mapping[_Key, _Ranked],
        segment_names: Mapping[str, str],
        calendar: FestivalCalendar,
        seasons: Mapping[int, str],
        min_members: int,
    ) -> None:
        self._lists = dict(lists)
        self.segment_names = dict(segment_names)
        self.calendar = calendar
        self.seasons = dict(seasons)
        self.min_members = min_members

    @classmethod
    def fit(
        cls,
        signals: Iterable[tuple[str, str, float, datetime]],
        contexts: Mapping[str, MemberContext],
        segment_names: Mapping[str, str] | None = None,
        calendar: FestivalCalendar = DEFAULT_FESTIVALS,
        min_members: int = 5,
        seasons: Mapping[int, str] = NORTHERN_METEOROLOGICAL_SEASONS,
    ) -> ContextualPopularity:
        """Count, per context, how many distinct members interacted with each item.

        `signals` are (member, item, weight, at); only positive weights count, and each
        member counts once per item and context however often and strongly they
        interacted, so one heavy user cannot make an item popular. `contexts` gives each
        member's tier, city and segments; members missing from it still count for the
        festival, season and overall lists. `segment_names` (id -> name) are used in
        reasons. `min_members` is how many distinct members a context needs before its
        list is used (the overall list is always used: nothing is less specific).
        `seasons` maps every month (1-12) to a season name.
        """
        if min_members < 1:
            raise ValueError("min_members must be at least 1")
        missing_months = set(range(1, 13)) - set(seasons)
        if missing_months:
            raise ValueError(f"seasons must name every month; missing {sorted(missing_months)}")

        # Distinct (member, item) pairs per time context and overall; days are looked up
        # once each, as most signals share a few hundred days.
        overall: dict[str, set[str]] = defaultdict(set)
        timed: dict[_Key, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        keys_of_day: dict[date, list[_Key]] = {}
        for member, item, weight, at in signals:
            if not weight > 0:
                continue
            overall[member].add(item)
            day = at.date()
            keys = keys_of_day.get(day)
            if keys is None:
                keys = [("festival", name) for name in calendar.names_on(day)]
                keys.append(("season", seasons[day.month]))
                keys_of_day[day] = keys
            for key in keys:
                timed[key][member].add(item)

        lists: dict[_Key, _Ranked] = {("overall",): _rank(overall.values())}
        for key, by_member in timed.items():
            lists[key] = _rank(by_member.values())
        by_attribute: dict[_Key, list[set[str]]] = defaultdict(list)
        for member, items in overall.items():
            context = contexts.get(member)
            if context is not None:
                for key in _member_keys(context):
                    by_attribute[key].append(items)
        for key, item_sets in by_attribute.items():
            lists[key] = _rank(item_sets)
        return cls(lists, segment_names or {}, calendar, seasons, min_members)

    def members_in(self, reason: ContextReason) -> int:
        """How many members with positive signals the context of `reason` has (0 when it
        was never seen), e.g. for a model's report or a test."""
        ranked = self._lists.get(self._key(reason))
        return 0 if ranked is None else ranked.members

    def recommend(
        self,
        context: MemberContext,
        now: datetime,
        k: int,
        exclude: Collection[str] = (),
    ) -> list[ContextPick]:
        """At most k items popular in the member's contexts, never one in `exclude`.

        The list is filled from the most specific context with at least `min_members`
        members — tier and city, city, tier, the member's segments (largest first), the
        festivals `now` falls in (the one closing first first), the season of `now`, and
        overall — then from the next one when it runs out, each item once, with the
        reason of the context it came from. So the list is ordered by context first and
        by score within a context; scores (the item's share of its context's members)
        can be compared across contexts when blending with other models.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        blocked = set(exclude)
        picks: list[ContextPick] = []
        for reason in self._chain(context, now):
            ranked = self._lists.get(self._key(reason))
            if ranked is None or (reason.kind != "overall"
                                  and ranked.members < self.min_members):
                continue
            for item, count in ranked.items:
                if item in blocked:
                    continue
                blocked.add(item)
                picks.append(ContextPick(item, count / ranked.members, reason))
                if len(picks) == k:
                    return picks
        return picks

    def _chain(self, context: MemberContext, now: datetime) -> list[ContextReason]:
        """The contexts to try for `context` at `now`, most specific first."""
        chain: list[ContextReason] = []
        tier, city = _normalise(context.tier), _normalise(context.city)
        # Reasons show tier and city as the caller wrote them (trimmed), keys ignore case.
        shown_tier = (context.tier or "").strip() or None
        shown_city = (context.city or "").strip() or None
        if tier is not None and city is not None:
            chain.append(ContextReason("tier_city", tier=shown_tier, city=shown_city))
        if city is not None:
            chain.append(ContextReason("city", city=shown_city))
        if tier is not None:
            chain.append(ContextReason("tier", tier=shown_tier))
        segments = sorted(
            dict.fromkeys(context.segments),
            key=lambda s: (-self.members_in(ContextReason("segment", segment_id=s)), s),
        )
        chain.extend(ContextReason("segment", segment_id=segment,
                                   segment_name=self.segment_names.get(segment))
                     for segment in segments)
        chain.extend(ContextReason("festival", festival=name)
                     for name in self.calendar.names_on(now.date()))
        chain.append(ContextReason("season", season=self.seasons[now.month]))
        chain.append(ContextReason("overall"))
        return chain

    @staticmethod
    def _key(reason: ContextReason) -> _Key:
        match reason.kind:
            case "tier_city":
                return ("tier_city", _normalise(reason.tier) or "", _normalise(reason.city) or "")
            case "city":
                return ("city", _normalise(reason.city) or "")
            case "tier":
                return ("tier", _normalise(reason.tier) or "")
            case "segment":
                return ("segment", reason.segment_id or "")
            case "festival":
                return ("festival", reason.festival or "")
            case "season":
                return ("season", reason.season or "")
        return ("overall",)


def _rank(item_sets: Iterable[set[str]]) -> _Ranked:
    """A context's list from its members' item sets (one set per member)."""
    counts: Counter[str] = Counter()
    members = 0
    for items in item_sets:
        members += 1
        counts.update(items)
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    return _Ranked(members, tuple(ranked))
