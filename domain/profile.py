"""Member profiles: the rules that turn a member's stored facts into conclusions.

The "member_behaviour" projection stores facts that add up (counts, sums, latest times,
interest sums per kind of event as of their last update). Everything that depends on the
moment of reading or on the rest of the member base is decided here, from those facts and
`now`, so it follows the clock and the base without rewriting rows, and a changed weight or
threshold applies at once. It is pure (no I/O) because two readers need it: the API, which
computes a profile when asked (api/profile_readmodels.py), and live segment membership,
which the projection decides at each event's time (projections/segment_membership.py).

- Interests: each stored part decays to `now` with the half-life
  (score(t) = score * 2^(-(t - as_of) / half_life)) and is weighed by the rules' weight for
  its kind; only positive scores are listed, highest first, with their share of the
  dimension's positive total (so "interest ≥ 0.3" means 30% of the member's attention).
- Price band: the average unit price per order line paid for; before a first purchase,
  the average price of products viewed. Budget below `price_band_mid_from`, premium from
  `price_band_premium_from`, mid in between.
- Frequency: purchases per 30 days since the first purchase (over at least 30 days, so two
  purchases on the first day are 2 per 30 days, not 60). Average order value: paid less
  refunded, per purchase. Repurchase rate: the share of distinct products bought in two or
  more orders.
- RFM: quintile scores 1-5 among all members with a purchase, as the base is now. A
  member's score is ceil(5 * k / n), k being how many buyers are at or below them (more
  recent last purchase, more purchases, more spent is higher), so ties share a score and
  the best always get 5.
- Lifecycle, first match: new (joined within `lifecycle_new_days`), active (any activity
  within `lifecycle_active_days`), dormant (within `lifecycle_dormant_days`), churned.
- Shopper type, first match: quality seeker (has bought, premium band); rational comparer
  (has bought, views per purchase ≥ `comparer_views_per_purchase`); convenience buyer (has
  bought, fewer views per purchase); casual browser (never bought, views ≥
  `browser_min_views`, nothing carted or wish-listed); potential (never bought otherwise).
- Tags: see `_tags`; each comes with its rule, in words with the thresholds in force, and
  the facts that satisfied it.

Datetimes come back aware (UTC); facts are JSON-ready (ISO times).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.loyalty_rules import ProfileRules

Facts = dict[str, Any]

# Interest parts: the decayed sum per kind of event. `dwell_minutes` sums the dwell time of
# views (each capped at 2 minutes); `review_stars` sums stars and `reviews` counts reviews,
# so the reading side can weigh a review by (stars - neutral).
INTEREST_PARTS = (
    "views",
    "dwell_minutes",
    "searches",
    "cart_adds",
    "cart_removes",
    "wish_lists",
    "shares",
    "purchases",
    "review_stars",
    "reviews",
)


def decay(seconds: float, half_life_days: int) -> float:
    """How much of a score is left after `seconds`: it halves every half-life."""
    return 2.0 ** (-seconds / (half_life_days * 86_400.0))


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every time Patron stores is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _purchased_at(activity: Mapping[str, Any]) -> datetime:
    """The last purchase of a member who has bought something (so it is never missing)."""
    moment = aware(activity["last_purchase_at"])
    if moment is None:
        raise ValueError("a buyer's activity has no last purchase time")
    return moment



class PriceBand(StrEnum):
    BUDGET = "budget"
    MID = "mid"
    PREMIUM = "premium"


class Lifecycle(StrEnum):
    NEW = "new"
    ACTIVE = "active"
    DORMANT = "dormant"
    CHURNED = "churned"


class ShopperType(StrEnum):
    QUALITY_SEEKER = "quality_seeker"
    RATIONAL_COMPARER = "rational_comparer"
    CONVENIENCE_BUYER = "convenience_buyer"
    CASUAL_BROWSER = "casual_browser"
    POTENTIAL = "potential"


@dataclass(frozen=True)
class Explained:
    """A conclusion with the rule that produced it and the facts that satisfied the rule."""

    name: str
    rule: str
    facts: Facts


@dataclass(frozen=True)
class InterestScore:
    key: str
    score: float
    # Of the member's positive interest in this dimension (0-1).
    share: float
    events: int
    last_event_at: datetime
    # The weighted, decayed contribution of each kind of event (views, purchases, ...).
    contributions: dict[str, float]


@dataclass(frozen=True)
class RfmScores:
    recency: int
    frequency: int
    monetary: int
    # Members with at least one purchase: the base the quintiles are taken over.
    buyers: int


@dataclass(frozen=True)
class ChannelActivity:
    channel: str
    behaviour_events: int
    orders: int
    reviews: int

    @property
    def total(self) -> int:
        return self.behaviour_events + self.orders + self.reviews


@dataclass(frozen=True)
class BehaviourCounts:
    events: int
    views: int
    searches: int
    cart_adds: int
    cart_removes: int
    wish_lists: int
    shares: int
    average_dwell_seconds: float | None


@dataclass(frozen=True)
class MemberProfile:
    member_id: str
    # The moment the profile was computed for (decay, recency, lifecycle).
    as_of: datetime
    joined_at: datetime | None
    # Consent to personalisation now: without it no behaviour or interest is attached.
    personalised: bool
    category_interests: tuple[InterestScore, ...]
    brand_interests: tuple[InterestScore, ...]
    behaviour: BehaviourCounts
    price_band: str | None
    # Minor units; `price_basis` says whether from lines bought or products viewed.
    average_price: int | None
    price_basis: str | None
    orders_placed: int
    purchases: int
    purchase_total: int
    refunded_total: int
    average_order_value: int | None
    purchases_per_30_days: float | None
    repurchase_rate: float | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    reviews: int
    average_stars: float | None
    rfm: RfmScores | None
    lifecycle: Explained
    shopper_type: Explained
    tags: tuple[Explained, ...]
    channels: tuple[ChannelActivity, ...]
    last_activity_at: datetime | None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _days(delta: timedelta) -> float:
    return round(delta.total_seconds() / 86_400, 2)


def _weights(rules: ProfileRules) -> dict[str, float]:
    """The weight of each stored interest part."""
    return {
        "views": rules.weight_view,
        "dwell_minutes": rules.weight_view_dwell_per_minute,
        "searches": rules.weight_search,
        "cart_adds": rules.weight_cart_add,
        "cart_removes": rules.weight_cart_remove,
        "wish_lists": rules.weight_wish_list,
        "shares": rules.weight_share,
        "purchases": rules.weight_purchase,
        "review_stars": rules.weight_review_per_star,
        "reviews": -rules.review_neutral_stars * rules.weight_review_per_star,
    }


def interest_scores(rows: list[dict[str, Any]], now: datetime,
                    rules: ProfileRules) -> dict[str, tuple[InterestScore, ...]]:
    """Scores decayed to `now` and weighed, per dimension: positive ones, highest first."""
    weights = _weights(rules)
    scored: dict[str, list[tuple[str, float, dict[str, float], dict[str, Any]]]] = {
        "category": [], "brand": []}
    for row in rows:
        as_of = aware(row["as_of"])
        assert as_of is not None
        left = decay(max((now - as_of).total_seconds(), 0.0), rules.interest_half_life_days)
        contributions = {part: float(row[part]) * weights[part] * left
                         for part in INTEREST_PARTS}
        # A review's stars and its neutral point are one contribution.
        contributions["reviews"] = contributions.pop("review_stars") + contributions["reviews"]
        score = sum(contributions.values())
        if score > 1e-9 and row["dimension"] in scored:
            scored[row["dimension"]].append((row["key"], score, contributions, row))
    result: dict[str, tuple[InterestScore, ...]] = {}
    for dimension, entries in scored.items():
        total = sum(score for _key, score, _c, _row in entries)
        entries.sort(key=lambda e: (-e[1], e[0]))
        result[dimension] = tuple(
            InterestScore(
                key=key, score=round(score, 6), share=round(score / total, 6),
                events=int(row["events"]),
                last_event_at=aware(row["last_event_at"]),  # type: ignore[arg-type]
                contributions={k: round(v, 6) for k, v in contributions.items() if v},
            )
            for key, score, contributions, row in entries[: rules.top_interests]
        )
    return result


def price_band(activity: Mapping[str, Any], rules: ProfileRules
               ) -> tuple[str | None, int | None, str | None]:
    """(band, average price, basis): what was paid per line, else what was viewed."""
    if activity["bought_lines"]:
        average, basis = activity["bought_price_sum"] // activity["bought_lines"], "bought"
    elif activity["viewed_price_count"]:
        average = activity["viewed_price_sum"] // activity["viewed_price_count"]
        basis = "viewed"
    else:
        return None, None, None
    if average < rules.price_band_mid_from:
        return PriceBand.BUDGET, average, basis
    if average >= rules.price_band_premium_from:
        return PriceBand.PREMIUM, average, basis
    return PriceBand.MID, average, basis


def quintile(at_or_below: int, base: int) -> int:
    """ceil(5 * k / n): the top fifth scores 5, ties share a score."""
    return max(1, min(5, math.ceil(5 * at_or_below / base)))


def lifecycle(joined_at: datetime | None, last_activity_at: datetime | None,
              now: datetime, rules: ProfileRules) -> Explained:
    facts: Facts = {"joined_at": _iso(joined_at), "last_activity_at": _iso(last_activity_at)}
    if joined_at is not None:
        facts["days_since_joining"] = _days(now - joined_at)
    if last_activity_at is not None:
        facts["days_since_activity"] = _days(now - last_activity_at)
    if joined_at is not None and now - joined_at <= timedelta(days=rules.lifecycle_new_days):
        return Explained(Lifecycle.NEW, f"joined within {rules.lifecycle_new_days} days",
                         facts)
    if last_activity_at is not None:
        idle = now - last_activity_at
        if idle <= timedelta(days=rules.lifecycle_active_days):
            return Explained(Lifecycle.ACTIVE,
                             f"activity within {rules.lifecycle_active_days} days", facts)
        if idle <= timedelta(days=rules.lifecycle_dormant_days):
            return Explained(Lifecycle.DORMANT,
                             f"no activity for over {rules.lifecycle_active_days} days, "
                             f"some within {rules.lifecycle_dormant_days} days", facts)
    return Explained(Lifecycle.CHURNED,
                     f"no activity within {rules.lifecycle_dormant_days} days (and joined "
                     f"over {rules.lifecycle_new_days} days ago)", facts)


def shopper_type(purchases: int, behaviour: BehaviourCounts, band: str | None,
                 rules: ProfileRules) -> Explained:
    views_per_purchase = round(behaviour.views / purchases, 2) if purchases else None
    facts: Facts = {"purchases": purchases, "views": behaviour.views,
                    "views_per_purchase": views_per_purchase, "price_band": band,
                    "cart_adds": behaviour.cart_adds, "wish_lists": behaviour.wish_lists}
    if purchases:
        assert views_per_purchase is not None
        if band == PriceBand.PREMIUM:
            return Explained(ShopperType.QUALITY_SEEKER,
                             "has bought and the price band is premium", facts)
        if views_per_purchase >= rules.comparer_views_per_purchase:
            return Explained(ShopperType.RATIONAL_COMPARER,
                             f"has bought, with at least {rules.comparer_views_per_purchase} "
                             "views per purchase", facts)
        return Explained(ShopperType.CONVENIENCE_BUYER,
                         f"has bought, with fewer than {rules.comparer_views_per_purchase} "
                         "views per purchase", facts)
    if (behaviour.views >= rules.browser_min_views
            and not behaviour.cart_adds and not behaviour.wish_lists):
        return Explained(ShopperType.CASUAL_BROWSER,
                         f"never bought, at least {rules.browser_min_views} views, nothing "
                         "carted or wish-listed", facts)
    return Explained(ShopperType.POTENTIAL,
                     "never bought yet: intent shown (carted or wish-listed) or too little "
                     "known", facts)


def _tags(profile: dict[str, Any], activity: Mapping[str, Any], now: datetime,
          rules: ProfileRules) -> tuple[Explained, ...]:
    """Every tag whose rule holds, in a fixed order, with the facts that made it hold."""
    tags: list[Explained] = []
    rfm: RfmScores | None = profile["rfm"]
    if rfm and rfm.recency >= rules.tag_loyal_min_score \
            and rfm.frequency >= rules.tag_loyal_min_score:
        tags.append(Explained(
            "loyal", f"recency score >= {rules.tag_loyal_min_score} and frequency score >= "
                     f"{rules.tag_loyal_min_score}",
            {"recency_score": rfm.recency, "frequency_score": rfm.frequency,
             "buyers": rfm.buyers}))
    if rfm and rfm.monetary >= rules.tag_high_value_min_score:
        tags.append(Explained(
            "high_value", f"monetary score >= {rules.tag_high_value_min_score}",
            {"monetary_score": rfm.monetary, "purchase_total": profile["purchase_total"],
             "buyers": rfm.buyers}))
    life: Explained = profile["lifecycle"]
    if life.name in (Lifecycle.DORMANT, Lifecycle.CHURNED) \
            and profile["purchases"] >= rules.tag_at_risk_min_purchases:
        tags.append(Explained(
            "at_risk", f"dormant or churned after at least {rules.tag_at_risk_min_purchases} "
                       "purchases",
            {"lifecycle": life.name, "purchases": profile["purchases"],
             "last_activity_at": _iso(profile["last_activity_at"])}))
    carted = aware(activity["last_cart_add_at"])
    bought = profile["last_purchase_at"]
    if carted is not None and now - carted <= timedelta(days=rules.tag_cart_abandoner_days) \
            and (bought is None or bought < carted):
        tags.append(Explained(
            "cart_abandoner", f"added to cart within {rules.tag_cart_abandoner_days} days "
                              "and bought nothing since",
            {"last_cart_add_at": _iso(carted), "last_purchase_at": _iso(bought)}))
    rate = profile["repurchase_rate"]
    if rate is not None and rate * 100 >= rules.tag_repeat_buyer_min_rate_pct:
        tags.append(Explained(
            "repeat_buyer", f"at least {rules.tag_repeat_buyer_min_rate_pct}% of distinct "
                            "products bought in two or more orders",
            {"repurchase_rate": rate, "products": activity["products"],
             "repeat_products": activity["repeat_products"]}))
    brands: tuple[InterestScore, ...] = profile["brand_interests"]
    brand_events = sum(b.events for b in brands)
    if brands and brands[0].share * 100 >= rules.tag_brand_loyal_min_share_pct \
            and brand_events >= rules.tag_brand_loyal_min_events:
        tags.append(Explained(
            "brand_loyal", f"the top brand holds at least {rules.tag_brand_loyal_min_share_pct}"
                           f"% of brand interest over at least "
                           f"{rules.tag_brand_loyal_min_events} events",
            {"brand": brands[0].key, "share": brands[0].share, "events": brand_events}))
    if profile["reviews"] >= rules.tag_reviewer_min_reviews:
        tags.append(Explained(
            "reviewer", f"at least {rules.tag_reviewer_min_reviews} reviews",
            {"reviews": profile["reviews"], "average_stars": profile["average_stars"]}))
    behaviour: BehaviourCounts = profile["behaviour"]
    if behaviour.shares >= rules.tag_sharer_min_shares:
        tags.append(Explained("sharer", f"at least {rules.tag_sharer_min_shares} shares",
                              {"shares": behaviour.shares}))
    return tuple(tags)


def _channels(activity: Mapping[str, Any]) -> tuple[ChannelActivity, ...]:
    behaviour = activity["behaviour_channels"] or {}
    orders = activity["order_channels"] or {}
    reviews = activity["review_channels"] or {}
    return tuple(
        ChannelActivity(channel, int(behaviour.get(channel, 0)), int(orders.get(channel, 0)),
                        int(reviews.get(channel, 0)))
        for channel in sorted({*behaviour, *orders, *reviews})
    )



@dataclass(frozen=True)
class RfmBase:
    """The member base RFM quintiles are taken over: every buyer's three figures, sorted.

    Built once to score many members (segment reviews); a member's score counts the buyers
    at or below them, as the single-member query in the API does.
    """

    last_purchases: tuple[datetime, ...]
    purchases: tuple[int, ...]
    totals: tuple[int, ...]

    @classmethod
    def of(cls, buyers: Iterable[Mapping[str, Any]]) -> RfmBase:
        rows = [row for row in buyers if row["purchases"]]
        return cls(
            tuple(sorted(_purchased_at(row) for row in rows)),
            tuple(sorted(int(row["purchases"]) for row in rows)),
            tuple(sorted(int(row["purchase_total"]) for row in rows)),
        )

    def scores(self, activity: Mapping[str, Any]) -> RfmScores | None:
        if not activity["purchases"] or not self.purchases:
            return None
        base = len(self.purchases)
        return RfmScores(
            quintile(bisect_right(self.last_purchases, _purchased_at(activity)), base),
            quintile(bisect_right(self.purchases, int(activity["purchases"])), base),
            quintile(bisect_right(self.totals, int(activity["purchase_total"])), base),
            base,
        )


def rfm_from_counts(base: int, recent: int | None, frequent: int | None,
                    spent: int | None) -> RfmScores:
    """Scores from the buyers at or below the member on each figure (see `quintile`)."""
    return RfmScores(quintile(int(recent or 0), base), quintile(int(frequent or 0), base),
                     quintile(int(spent or 0), base), int(base))


def build_profile(member_id: str, activity: Mapping[str, Any], personalised: bool,
                  interest_rows: list[dict[str, Any]], rfm: RfmScores | None,
                  now: datetime, rules: ProfileRules) -> MemberProfile:
    """The profile as of `now` from the member's `member_activity` row (times aware),
    their interest rows, whether they consent to personalisation, and their RFM scores."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    interests = interest_scores(interest_rows, now, rules)
    behaviour = BehaviourCounts(
        events=activity["behaviour_events"], views=activity["views"],
        searches=activity["searches"], cart_adds=activity["cart_adds"],
        cart_removes=activity["cart_removes"], wish_lists=activity["wish_lists"],
        shares=activity["shares"],
        average_dwell_seconds=(round(activity["dwell_seconds"] / activity["views"], 2)
                               if activity["views"] else None),
    )
    band, average_price, basis = price_band(activity, rules)
    purchases = int(activity["purchases"])
    first_purchase = activity["first_purchase_at"]
    per_30_days = None
    if purchases and first_purchase is not None:
        span = max((now - first_purchase).total_seconds() / 86_400, 30.0)
        per_30_days = round(purchases * 30 / span, 4)
    reviews = int(activity["reviews"])
    profile: dict[str, Any] = {
        "member_id": member_id,
        "as_of": now,
        "joined_at": activity["joined_at"],
        "personalised": personalised,
        "category_interests": interests["category"],
        "brand_interests": interests["brand"],
        "behaviour": behaviour,
        "price_band": band,
        "average_price": average_price,
        "price_basis": basis,
        "orders_placed": int(activity["orders_placed"]),
        "purchases": purchases,
        "purchase_total": int(activity["purchase_total"]),
        "refunded_total": int(activity["refunded_total"]),
        "average_order_value": activity["purchase_total"] // purchases if purchases else None,
        "purchases_per_30_days": per_30_days,
        "repurchase_rate": (round(activity["repeat_products"] / activity["products"], 4)
                            if activity["products"] else None),
        "first_purchase_at": first_purchase,
        "last_purchase_at": activity["last_purchase_at"],
        "reviews": reviews,
        "average_stars": round(activity["review_stars"] / reviews, 2) if reviews else None,
        "rfm": rfm,
        "lifecycle": lifecycle(activity["joined_at"], activity["last_activity_at"], now, rules),
        "channels": _channels(activity),
        "last_activity_at": activity["last_activity_at"],
    }
    profile["shopper_type"] = shopper_type(purchases, behaviour, band, rules)
    profile["tags"] = _tags(profile, activity, now, rules)
    return MemberProfile(**profile)
