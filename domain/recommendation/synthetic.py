"""A deterministic synthetic shop with planted tastes, for tests and benchmarks.

Real behaviour cannot be shipped with the project, and public rating sets have no
categories, brands or prices; so this generator makes a catalogue and users whose tastes
are known: each user prefers a few categories and, within them, a few brands. Most of a
user's interactions (`taste_share`) come from those tastes, the rest from overall
popularity, and products have skewed base popularity — so a popularity baseline has
something to find, and a recommender that learns tastes should find clearly more.

Everything comes from one seeded `numpy.random.Generator`: the same config gives the same
catalogue and interactions on every machine, which is what lets tests set margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from domain.recommendation.catalogue import Product
from domain.recommendation.interactions import DEFAULT_WEIGHTS, Interaction

__all__ = ["SyntheticConfig", "SyntheticData", "SyntheticUser", "generate"]

_CATEGORIES = (
    ("tea", 9_000), ("coffee", 12_000), ("skincare", 25_000), ("makeup", 18_000),
    ("shoes", 60_000), ("bags", 80_000), ("phones", 300_000), ("headphones", 70_000),
    ("toys", 15_000), ("books", 6_000), ("kitchen", 20_000), ("sportswear", 35_000),
    ("snacks", 3_000), ("wine", 25_000), ("baby", 12_000), ("pets", 8_000),
)  # name and median price in minor units
_WORDS = (
    "organic", "classic", "premium", "compact", "wireless", "vintage", "eco", "limited",
    "silk", "leather", "cotton", "bamboo", "matte", "gloss", "spicy", "sweet", "green",
    "black", "red", "gift", "travel", "family", "kids", "pro", "lite", "handmade",
    "imported", "local", "seasonal", "festival", "spring", "winter", "bold", "soft",
    "smart", "portable", "refill", "sample", "deluxe", "daily",
)
# Interaction kinds the generator draws, with the default weights the real pipeline uses.
_KIND_WEIGHTS = np.array(
    [DEFAULT_WEIGHTS.view, DEFAULT_WEIGHTS.cart_add, DEFAULT_WEIGHTS.wish_list,
     DEFAULT_WEIGHTS.purchase]
)
_TASTE_KINDS = np.array([0.40, 0.20, 0.10, 0.30])  # liked products get bought more
_NOISE_KINDS = np.array([0.75, 0.12, 0.05, 0.08])


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """The shop's size and how strong the planted tastes are.

    The defaults make the 100,000-interaction benchmark set: 2,000 users averaging 50
    interactions over 2,000 products in 16 categories of 6 brands each.
    """

    n_users: int = 2_000
    n_items: int = 2_000
    n_interactions: int = 100_000
    n_categories: int = 16
    brands_per_category: int = 6
    favourite_categories: int = 2
    favourite_brands: int = 2
    taste_share: float = 0.8
    brand_boost: float = 4.0
    days: int = 365
    catalogue_years: int = 3
    end: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    seed: int = 7

    def __post_init__(self) -> None:
        if not 1 <= self.n_categories <= len(_CATEGORIES):
            raise ValueError(f"n_categories must be 1 to {len(_CATEGORIES)}")
        if not 1 <= self.favourite_categories <= self.n_categories:
            raise ValueError("favourite_categories must be 1 to n_categories")
        if self.n_users < 1 or self.n_items < 2:
            raise ValueError("need at least one user and two items")
        if not 0.0 <= self.taste_share <= 1.0:
            raise ValueError("taste_share must be between 0 and 1")
        most = self.n_users * (self.n_items // 2)
        if not 2 * self.n_users <= self.n_interactions <= most:
            raise ValueError(
                f"n_interactions must be {2 * self.n_users} to {most} for this many "
                "users and items (2 per user at least, half the catalogue at most)"
            )


@dataclass(frozen=True, slots=True)
class SyntheticUser:
    """A user's planted taste: what a good recommender should discover."""

    user_id: str
    categories: tuple[str, ...]
    brands: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SyntheticData:
    catalogue: dict[str, Product]
    users: dict[str, SyntheticUser]
    interactions: list[Interaction]


def _catalogue(config: SyntheticConfig, rng: np.random.Generator) -> list[Product]:
    categories = _CATEGORIES[: config.n_categories]
    # Each brand favours two words, so free text carries a brand's style across products.
    signature = rng.integers(0, len(_WORDS), size=(config.n_categories,
                                                   config.brands_per_category, 2))
    category_of = rng.integers(0, config.n_categories, size=config.n_items)
    brand_of = rng.integers(0, config.brands_per_category, size=config.n_items)
    price_factor = rng.lognormal(0.0, 0.5, size=config.n_items)
    first_day = config.end.date() - timedelta(days=365 * config.catalogue_years)
    release_day = rng.integers(0, 365 * config.catalogue_years - 7, size=config.n_items)
    extra_words = rng.integers(0, len(_WORDS), size=(config.n_items, 2))
    products = []
    for index in range(config.n_items):
        category, median = categories[category_of[index]]
        brand = f"{category}-brand-{brand_of[index] + 1}"
        words = [_WORDS[w] for w in signature[category_of[index], brand_of[index]]]
        words += [_WORDS[w] for w in extra_words[index]]
        products.append(
            Product(
                item_id=f"p{index:05d}",
                name=f"{brand} {category} {index}",
                category=category,
                brand=brand,
                price=max(100, int(round(median * price_factor[index], -2))),
                released=first_day + timedelta(days=int(release_day[index])),
                attributes=" ".join(words),
            )
        )
    return products


def _tastes(config: SyntheticConfig, products: list[Product],
            rng: np.random.Generator) -> list[SyntheticUser]:
    categories = sorted({p.category for p in products})
    brands_in = {c: sorted({p.brand for p in products if p.category == c}) for c in categories}
    users = []
    for index in range(config.n_users):
        favourite = rng.choice(len(categories), size=min(config.favourite_categories,
                                                         len(categories)), replace=False)
        liked = tuple(categories[c] for c in sorted(favourite))
        pool = [b for c in liked for b in brands_in[c]]
        chosen = rng.choice(len(pool), size=min(config.favourite_brands, len(pool)),
                            replace=False)
        users.append(SyntheticUser(f"u{index:05d}", liked,
                                   tuple(sorted(pool[b] for b in chosen))))
    return users


def _counts(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: skewed (a few very active users), at least 2, at most half
    the catalogue, summing exactly to `n_interactions`."""
    cap = config.n_items // 2
    activity = rng.lognormal(0.0, 0.9, size=config.n_users)
    counts = 2 + rng.multinomial(config.n_interactions - 2 * config.n_users,
                                 activity / activity.sum())
    while (excess := int(np.clip(counts - cap, 0, None).sum())) > 0:
        counts = np.minimum(counts, cap)
        room = (counts < cap) * activity
        counts += rng.multinomial(excess, room / room.sum())
    return counts


def generate(config: SyntheticConfig | None = None) -> SyntheticData:
    """The catalogue, the users' planted tastes and exactly `n_interactions` interactions
    (one per distinct user and item), sorted by user then time."""
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    products = _catalogue(config, rng)
    users = _tastes(config, products, rng)
    counts = _counts(config, rng)

    popularity = rng.lognormal(0.0, 1.0, size=config.n_items)
    global_p = popularity / popularity.sum()
    category = np.array([p.category for p in products])
    brand = np.array([p.brand for p in products])
    end_s = config.end.timestamp()
    start_s = end_s - config.days * 86_400.0
    released_s = np.array([
        datetime.combine(p.released or config.end.date(), datetime.min.time(), UTC).timestamp()
        for p in products
    ])
    half_life = DEFAULT_WEIGHTS.half_life_days

    interactions: list[Interaction] = []
    for user, count in zip(users, counts, strict=True):
        affinity = popularity * np.isin(category, user.categories)
        affinity *= np.where(np.isin(brand, user.brands), config.brand_boost, 1.0)
        p = (1.0 - config.taste_share) * global_p
        if affinity.sum() > 0:
            p = p + config.taste_share * affinity / affinity.sum()
        items = rng.choice(config.n_items, size=int(count), replace=False, p=p / p.sum())
        liked = affinity[items] > 0
        kinds = np.where(
            liked,
            rng.choice(4, size=len(items), p=_TASTE_KINDS),
            rng.choice(4, size=len(items), p=_NOISE_KINDS),
        )
        earliest = np.maximum(start_s, released_s[items])
        seconds = earliest + rng.random(len(items)) * (end_s - earliest)
        age_days = (end_s - seconds) / 86_400.0
        weights = _KIND_WEIGHTS[kinds] * 0.5 ** (age_days / half_life) if half_life else (
            _KIND_WEIGHTS[kinds])
        order = np.argsort(seconds, kind="stable")
        interactions.extend(
            Interaction(user.user_id, products[items[i]].item_id, round(float(weights[i]), 4),
                        datetime.fromtimestamp(float(seconds[i]), UTC))
            for i in order
        )
    return SyntheticData(
        catalogue={p.item_id: p for p in products},
        users={u.user_id: u for u in users},
        interactions=interactions,
    )

