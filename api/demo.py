"""A deterministic demo population and a year of its commerce, through the real commands.

Same seed, same shop: names, profiles, preferences, consents, tags and statuses are drawn
from a seeded generator, and so is a year of orders, payments (some failing first),
cancellations, deliveries, refunds, reviews, coupons, points, rewards and an admin
adjustment or two. Everything is written through the services the API uses, and the
scheduler runs every simulated day (after the projections it reads from), so points are
released, orders complete and birthdays are celebrated as they would be in production.

The year needs time to pass: give the runtime an `AdjustableClock` starting at
`demo_runtime_clock()` (midnight UTC `days` days ago), and `seed_demo` moves it day by day
up to midnight today, so nothing is ever recorded in the future. With any other clock only
the members are written, all at once, as before.

Under the default rules no points expire and no tier comes up for maintenance within one
simulated year (both take twelve full months); simulate more days to see them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select

from api.commerce import COUPON_NAMESPACE
from api.payment_simulator import pay_in_process
from api.runtime import Runtime
from api.shipping import shipment_id_for
from domain.clock import AdjustableClock
from domain.errors import DomainError
from domain.loyalty import account_id_for
from domain.metadata import Channel, EventMetadata, Role
from domain.order import PROVIDER_METHODS, Order
from domain.pricing import CouponTerms, coupon_discount, max_points_for
from projections.commerce_tables import loyalty_accounts

log = logging.getLogger("patron.demo")

DEMO_DAYS = 365
# The read models the scheduler finds due work in: caught up before every daily tick.
SCHEDULER_READS = ("member_profiles", "orders", "loyalty", "case_queue", "member_behaviour")

FIRST = ["Li", "Wei", "Mei", "Jun", "Anna", "Lucas", "Sofia", "Chen", "Yuki", "Omar", "Lena",
         "Ravi", "Hana", "Mateo", "Zara", "Ming", "Ivy", "Noah", "Aisha", "Tom"]
LAST = ["Wang", "Zhang", "Liu", "Chen", "Müller", "Silva", "Tanaka", "Khan", "Rossi", "Kim",
        "Novak", "Garcia", "Dubois", "Smith", "Ahmed", "Huang", "Zhao", "Lin", "Sato", "Brown"]
CITIES = [("Shanghai", "Shanghai"), ("Beijing", "Beijing"), ("Hangzhou", "Zhejiang"),
          ("Shenzhen", "Guangdong"), ("Chengdu", "Sichuan"), ("Berlin", "Berlin"),
          ("Lisbon", "Lisboa"), ("Osaka", "Osaka")]
CATEGORIES = ["outdoor", "electronics", "beauty", "books", "home", "fashion", "toys", "grocery",
              "sports", "baby"]
BRANDS = ["northpeak", "lumen", "aurora", "kestrel", "hearth", "velvet", "orbit", "greenleaf"]
OCCUPATIONS = ["engineer", "teacher", "designer", "nurse", "student", "retired", "merchant",
               "civil servant"]
TAGS = [("vip", "top spender in pilot"), ("influencer", "large social following"),
        ("wholesale", "buys for a shop"), ("at-risk", "complained twice this quarter")]


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    brand: str
    price: int  # minor units (fen)
    weight: float  # how often it lands in a basket
    premium: bool = False


CATALOGUE = (
    Product("P-1001", "Trail backpack 30 L", "outdoor", "northpeak", 32_900, 2),
    Product("P-1002", "Camping lantern", "outdoor", "lumen", 8_900, 3),
    Product("P-1003", "Down jacket", "outdoor", "northpeak", 89_900, 1, True),
    Product("P-2001", "Noise-cancelling earbuds", "electronics", "orbit", 59_900, 1, True),
    Product("P-2002", "USB-C charger 65 W", "electronics", "lumen", 12_900, 3),
    Product("P-2003", "E-reader", "electronics", "kestrel", 109_900, 0.5, True),
    Product("P-3001", "Hydrating serum", "beauty", "aurora", 26_800, 2),
    Product("P-3002", "Sunscreen SPF 50", "beauty", "velvet", 8_900, 4),
    Product("P-3003", "Lip balm", "beauty", "aurora", 3_900, 4),
    Product("P-4001", "Novel (paperback)", "books", "kestrel", 4_500, 5),
    Product("P-4002", "Cookbook", "books", "hearth", 8_800, 3),
    Product("P-5001", "Cast-iron pan", "home", "hearth", 23_900, 2),
    Product("P-5002", "Linen towels (2)", "home", "greenleaf", 9_900, 3),
    Product("P-5003", "Scented candle", "home", "velvet", 5_900, 3),
    Product("P-6001", "Merino sweater", "fashion", "velvet", 49_900, 1, True),
    Product("P-6002", "Cotton socks (3 pairs)", "fashion", "orbit", 4_900, 4),
    Product("P-6003", "Canvas sneakers", "fashion", "orbit", 36_900, 2),
    Product("P-7001", "Building blocks set", "toys", "orbit", 19_900, 2),
    Product("P-7002", "Jigsaw puzzle 1000", "toys", "kestrel", 6_900, 3),
    Product("P-8001", "Green tea 250 g", "grocery", "greenleaf", 6_800, 5),
    Product("P-8002", "Olive oil 1 L", "grocery", "greenleaf", 9_900, 4),
    Product("P-8003", "Coffee beans 500 g", "grocery", "hearth", 8_800, 5),
    Product("P-9001", "Yoga mat", "sports", "aurora", 16_900, 3),
    Product("P-9002", "Running shoes", "sports", "northpeak", 69_900, 1, True),
    Product("P-9101", "Baby carrier", "baby", "hearth", 49_900, 1, True),
    Product("P-9102", "Baby wipes (6 packs)", "baby", "greenleaf", 3_900, 5),
)
PRICES = {product.product_id: product.price for product in CATALOGUE}
# The catalogue the demo admin lists on the first morning (see _Year._list_catalogue):
# products bought again and again may be recommended again after a purchase.
CONSUMABLE_CATEGORIES = ("grocery",)
CONSUMABLE_PRODUCTS = ("P-3002", "P-3003", "P-9102")
# Two thirds into the year this product sells out; nobody orders it after that.
SOLD_OUT = ("P-1003", "sold out until next winter")

# (name, days between orders on average, share of members, chance a basket item is premium)
SHOPPERS = [("occasional", 75, 0.35, 1.0), ("regular", 40, 0.40, 1.0),
            ("frequent", 18, 0.20, 1.5), ("big_spender", 10, 0.05, 5.0)]
BASKET_LINES = ([2, 3, 4, 5, 6], [35, 30, 18, 10, 7])
PAYMENT_METHODS = (["alipay", "wechat_pay", "card", "cash_on_delivery", "store_credit"],
                   [40, 35, 19, 4, 2])
PAYMENT_FAILURES = ["card declined", "insufficient balance", "payment provider timeout",
                    "3-D Secure check failed"]
REVIEWS = ["Exactly as described, fast delivery.", "Good value for the price.",
           "Nice quality, would buy again.", "Smaller than expected but works well.",
           "Gift for my mother, she loves it."]
RETURN_REASONS = ["returned: damaged in transit", "returned: wrong size",
                  "returned: not as described", "returned: changed mind within window"]
# After-sales cases: (type, weight, reasons, what the member writes).
CASE_KINDS = [
    ("return", 35, ["changed_mind", "size_or_fit", "not_as_described"],
     "It does not suit me; I would like to send it back."),
    ("exchange", 20, ["size_or_fit", "defective"], "Could I have another one instead?"),
    ("repair", 10, ["defective"], "It stopped working after a week."),
    ("refund_only", 20, ["damaged_in_transit", "not_as_described"],
     "It arrived damaged; not worth sending back."),
    ("reissue", 15, ["missing_item", "wrong_item"], "This is not what I ordered."),
]
CASE_OUTCOMES = {"return": "refunded", "exchange": "exchanged", "repair": "repaired",
                 "refund_only": "refunded", "reissue": "reissued"}
AGENTS = ["agent-ana", "agent-bo", "agent-cy"]
VIP_AGENT = "agent-vip"
# Segments the demo admin defines on the first morning: membership then follows the year,
# event by event and at each daily review.
SEGMENTS = [
    ("Gold and Platinum, recent buyers",
     "tier in [Gold, Platinum] and last purchase within 30 days"),
    ("Outdoor enthusiasts", 'interest(category "outdoor") >= 0.3 and purchases >= 1'),
    ("Dormant repeat buyers", "lifecycle in [dormant, churned] and purchases >= 2"),
    ("Browsed, never bought", "purchases = 0 and last_activity within 30 days"),
]

REWARDS = [
    # (day defined, days valid, details)
    (1, None, {"name": "¥10 voucher", "description": "¥10 off any order",
               "cost_points": 500, "stock": 5_000, "per_member_limit": 5,
               "coupon_kind": "fixed", "coupon_value": 1_000, "coupon_min_spend": 0,
               "coupon_valid_days": 60}),
    (1, None, {"name": "¥40 off ¥200", "description": "¥40 off orders of ¥200 or more",
               "cost_points": 1_500, "stock": 1_000, "per_member_limit": 3,
               "coupon_kind": "fixed", "coupon_value": 4_000, "coupon_min_spend": 20_000,
               "coupon_valid_days": 45}),
    (1, None, {"name": "10% off ¥300", "description": "10% off orders of ¥300 or more",
               "cost_points": 3_000, "stock": 500, "per_member_limit": 2,
               "coupon_kind": "percent", "coupon_value": 1_000, "coupon_min_spend": 30_000,
               "coupon_valid_days": 30}),
    (150, 60, {"name": "Summer ¥100 voucher", "description": "limited: 10 vouchers",
               "cost_points": 4_000, "stock": 10, "per_member_limit": 1,
               "coupon_kind": "fixed", "coupon_value": 10_000, "coupon_min_spend": 20_000,
               "coupon_valid_days": 30}),
]


def demo_runtime_clock(days: int = DEMO_DAYS, now: datetime | None = None) -> datetime:
    """Where the seeding runtime's `AdjustableClock` starts: midnight UTC, `days` days
    before today, so that the simulated year ends at midnight today."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days), time(0), tzinfo=UTC)


@dataclass
class WalletCoupon:
    coupon_id: uuid.UUID
    terms: CouponTerms
    valid_until: datetime


@dataclass
class DemoMember:
    index: int
    member_id: uuid.UUID
    channel: Channel
    birthday: date | None
    categories: list[str]
    active: bool
    joined: datetime
    wallet: list[WalletCoupon] = field(default_factory=list)
    shopper: tuple[str, int, float, float] = SHOPPERS[1]
    likes_points: bool = False
    # Separate streams, so that one member's points or coupons (which depend on the
    # calendar, through birthdays) never change when anybody shops or what they buy.
    days_rng: random.Random = field(default_factory=random.Random)
    rewards_rng: random.Random = field(default_factory=random.Random)
    orders_placed: int = 0
    redeemed: dict[uuid.UUID, int] = field(default_factory=dict)

    def take_coupon(self, now: datetime, subtotal: int) -> WalletCoupon | None:
        """The soonest-expiring coupon that is valid now and whose minimum the basket meets
        (with room for the largest tier discount)."""
        self.wallet = [c for c in self.wallet if c.valid_until > now]
        usable = [c for c in self.wallet if c.terms.min_spend <= subtotal * 92 // 100]
        if not usable:
            return None
        chosen = min(usable, key=lambda c: c.valid_until)
        self.wallet.remove(chosen)
        return chosen


@dataclass
class OrderPlan:
    member: DemoMember
    rng: random.Random  # this order's own stream: its follow-ups draw from it
    lines: list[dict[str, Any]]
    method: str
    failures: int
    fate: str  # abandon | timeout | cancel_after_pay | deliver
    refund: str | None  # None | partial | full
    review: bool
    wants_coupon: bool
    wants_points: bool

    @property
    def subtotal(self) -> int:
        """What the catalogue will charge for the lines (the member's expectation, used to
        pick a coupon and points; the order itself is priced by the catalogue)."""
        return sum(line["quantity"] * PRICES[line["product_id"]] for line in self.lines)


def seed_demo(
    runtime: Runtime,
    members: int = 50,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    *,
    clock: AdjustableClock | None = None,
    days: int = DEMO_DAYS,
    day_progress: Callable[[int], None] | None = None,
) -> list[uuid.UUID]:
    """Register `members` members and, if time can be moved, simulate `days` of commerce.

    `clock` must be the runtime's own clock (the services read that one); by default it is
    used when it is an `AdjustableClock`. `progress(1)` is called per member registered and
    `day_progress(1)` per simulated day.
    """
    if clock is None and isinstance(runtime.clock, AdjustableClock):
        clock = runtime.clock
    if clock is not None and clock is not runtime.clock:
        raise ValueError("seed_demo can only move the runtime's own clock")
    demo = _Demo(runtime, seed, progress)
    if clock is None:
        for index in range(members):
            demo.register(index)
        return demo.created
    if days and runtime.settings.default_payment_provider is None:
        # Orders are paid only through a provider's signed callback; without one every
        # payment would be refused and the year would be a year of unpaid orders.
        raise ValueError(
            "the demo pays through a payment provider: set PATRON_PAYMENT_SIMULATOR=true "
            "(the built-in simulator) or PATRON_PAYMENT_SECRETS"
        )
    return _Year(demo, clock, members, days, day_progress).run()


class _Demo:
    """The members: the same draws, in the same order, with or without the year."""

    def __init__(
        self, runtime: Runtime, seed: int, progress: Callable[[int], None] | None
    ) -> None:
        self.runtime = runtime
        self.seed = seed
        self.rng = random.Random(seed)
        self.progress = progress
        self.correlation = f"demo-seed-{seed}"
        self.created: list[uuid.UUID] = []

    def meta(
        self, actor: str, role: Role, channel: Channel, reason: str | None = None
    ) -> EventMetadata:
        return EventMetadata(
            actor_id=actor, actor_role=role, channel=channel, correlation_id=self.correlation,
            causation_id=None, request_id=uuid.uuid4().hex, reason=reason,
        )

    def admin(self, reason: str) -> EventMetadata:
        return self.meta("demo-admin", Role.ADMIN, Channel.ADMIN, reason)

    def register(self, index: int) -> DemoMember:
        runtime, rng, meta = self.runtime, self.rng, self.meta
        today = runtime.clock.today()
        channels = [Channel.WEB, Channel.APP, Channel.MINI_PROGRAM, Channel.STORE]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, region = rng.choice(CITIES)
        channel = rng.choice(channels)
        birthday = min(date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55)), today)
        details = {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{index}@example.com".replace("ü", "u"),
            "phone": f"+86 138{rng.randrange(10**7, 10**8)}",
            "gender": rng.choice(["female", "male", "non_binary", "undisclosed"]),
            "birthday": birthday.isoformat(),
            "occupation": rng.choice(OCCUPATIONS),
            "education": rng.choice(["secondary", "vocational", "bachelor", "master"]),
            "income_band": rng.choice(["low", "lower_middle", "middle", "upper_middle", "high"]),
            "city": city,
            "region": region,
            "preferred_channel": channel.value,
            "language": rng.choice(["zh-CN", "en", "de", "pt-PT", "ja"]),
        }
        if rng.random() < 0.2:  # some members leave their profile incomplete
            for field_name in ("occupation", "education", "income_band"):
                details.pop(field_name)
        member_id = runtime.members.register(details, meta("anonymous", Role.ANONYMOUS, channel))
        mid = member_id.aggregate_id
        self.created.append(mid)
        self_meta = meta(str(mid), Role.MEMBER, rng.choice(channels))
        categories = rng.sample(CATEGORIES, rng.randrange(1, 4))
        runtime.members.set_preferences(
            mid,
            {
                "categories": categories,
                "brands": rng.sample(BRANDS, rng.randrange(0, 3)),
                "price_sensitivity": rng.choice(["low", "medium", "high"]),
                "ui": {"theme": rng.choice(["light", "dark", "system"]),
                       "font_size": rng.choice(["medium", "large"])},
                "delivery": {
                    "time_window": rng.choice(["any", "morning", "evening", "weekend"]),
                    "packaging": rng.sample(["eco", "gift_wrap", "minimal"], rng.randrange(0, 2)),
                    "default_address": {
                        "recipient": details["name"], "line1": f"{rng.randrange(1, 999)} Demo Road",
                        "city": city, "region": region, "country": "CN",
                    },
                },
            },
            self_meta,
        )
        for channel_name in ("sms", "email", "app_push"):
            if rng.random() < 0.5:
                runtime.members.set_consent(mid, "marketing", channel_name, True, self_meta)
        if rng.random() < 0.7:
            runtime.members.set_consent(mid, "personalisation", "all", True, self_meta)
        if rng.random() < 0.15:
            tag, reason = rng.choice(TAGS)
            runtime.members.tag(mid, tag, meta("demo-admin", Role.ADMIN, Channel.ADMIN, reason))
        active = True
        if rng.random() < 0.05:
            active = False
            runtime.members.set_status(
                mid, "blocked", meta("demo-admin", Role.ADMIN, Channel.ADMIN, "chargeback fraud")
            )
        if self.progress:
            self.progress(1)
        now = runtime.clock.now()
        member = DemoMember(
            index=index, member_id=mid, channel=channel, birthday=birthday,
            categories=categories, active=active, joined=now,
        )
        rules = runtime.rules
        if rules.welcome_coupon_value:
            member.wallet.append(WalletCoupon(
                uuid.uuid5(account_id_for(str(mid)), "welcome"),
                CouponTerms("fixed", rules.welcome_coupon_value, rules.welcome_coupon_min_spend),
                now + timedelta(days=rules.welcome_coupon_valid_days),
            ))
        return member


class _Year:
    """A year of shopping, one simulated day at a time.

    Each day starts with the projections catching up and a scheduler tick (as a cron job at
    midnight would), then the day's actions run in time order: registrations, new orders,
    and the follow-ups earlier orders scheduled (payments, deliveries, refunds, …).
    """

    def __init__(
        self,
        demo: _Demo,
        clock: AdjustableClock,
        members: int,
        days: int,
        day_progress: Callable[[int], None] | None,
    ) -> None:
        self.demo = demo
        self.runtime = demo.runtime
        self.rules = demo.runtime.rules
        self.clock = clock
        self.members = members
        self.days = max(days, 1)
        self.day_progress = day_progress
        self.start = clock.now()
        self.keys = itertools.count(1)
        self.sequence = itertools.count()
        self.agenda: list[tuple[datetime, int, Callable[[], None]]] = []
        self.people: list[DemoMember] = []
        self.rewards: list[tuple[uuid.UUID, dict[str, Any], datetime]] = []
        self.available: dict[str, int] = {}
        self.join_day = self._join_days()
        self.stats: dict[str, int] = {}

    def _join_days(self) -> list[int]:
        """Two thirds of the members are there on day one; the rest join over nine months,
        in member order (so the members' draws happen in the same order as without time)."""
        founders = -(-self.members * 2 // 3)
        later = self.members - founders
        span = max(self.days * 3 // 4, 1)
        return [0 if i < founders else (i - founders + 1) * span // (later + 1)
                for i in range(self.members)]

    def key(self) -> str:
        return f"demo-{self.demo.seed}-{next(self.keys)}"

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def at(self, when: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self.agenda, (when, next(self.sequence), action))

    def stream(self, *parts: object) -> random.Random:
        """A generator of its own for one purpose; the members' generator is untouched, so
        the members are the same with or without the year."""
        return random.Random(":".join(str(p) for p in ("demo", self.demo.seed, *parts)))

    @staticmethod
    def hours(rng: random.Random, low: float, high: float) -> timedelta:
        return timedelta(minutes=round(rng.uniform(low, high) * 60))

    # -- the year --------------------------------------------------------------------------

    def run(self) -> list[uuid.UUID]:
        # The scheduler would retrain the recommender every simulated day; the demo trains
        # twice instead (mid-year and at the end), so the shop has a version history.
        recommender = self.runtime.recommender
        retrain_hours, recommender.retrain_hours = recommender.retrain_hours, 0
        try:
            for day in range(self.days):
                midnight = self.start + timedelta(days=day)
                self.clock.set(midnight)
                if day:
                    self.tick()
                if day and day == self.days // 2:
                    self.train_recommender("demo: mid-year model")
                self.plan_day(day, midnight)
                self.run_until(midnight + timedelta(days=1))
                if self.day_progress:
                    self.day_progress(1)
            self.clock.set(self.start + timedelta(days=self.days))
            self.tick()
            self.train_recommender("demo: the model the shop serves today")
        finally:
            recommender.retrain_hours = retrain_hours
        self.runtime.runner.run_once()
        log.info("demo year: %s", self.stats)
        return self.demo.created

    def train_recommender(self, reason: str) -> None:
        self.runtime.runner.run_once()
        report = self.runtime.recommender.train(self.demo.admin(reason))
        self.count("recommender versions")
        log.info("demo: recommender version %d on %d interactions", report.version,
                 report.interactions)

    def run_until(self, end: datetime) -> None:
        while self.agenda and self.agenda[0][0] < end:
            when, _, action = heapq.heappop(self.agenda)
            self.clock.set(when)
            try:
                action()
            except DomainError as error:  # a rule said no: the shop carries on
                log.debug("demo: %s", error.message)
                self.count("refused")

    def tick(self) -> None:
        runner = self.runtime.runner
        for name in SCHEDULER_READS:  # the rest catch up once, at the end
            if name in runner.projections:
                runner.catch_up(name)
        report = self.runtime.scheduler.tick()
        if report.errors:
            log.warning("demo: scheduler errors: %s", report.errors)
        now = self.clock.now()
        with self.runtime.sync_engine.connect() as conn:
            self.available = dict(conn.execute(
                select(loyalty_accounts.c.member_id, loyalty_accounts.c.available)
            ).all())
        if self.rules.birthday_coupon_value:
            for member in self.people:
                if member.active and member.birthday and (
                    member.birthday.strftime("%m-%d") == now.strftime("%m-%d")
                ):
                    marker = f"birthday:{now.year}"
                    member.wallet.append(WalletCoupon(
                        uuid.uuid5(COUPON_NAMESPACE, f"{member.member_id}:{marker}"),
                        CouponTerms("fixed", self.rules.birthday_coupon_value, 0),
                        now + timedelta(days=self.rules.birthday_coupon_valid_days),
                    ))

    def plan_day(self, day: int, midnight: datetime) -> None:
        # Members join at seven, after whatever earlier days left for the small hours.
        self.run_until(midnight + timedelta(hours=7))
        self.clock.set(midnight + timedelta(hours=7))
        for index, joins in enumerate(self.join_day):
            if joins == day:
                member = self.demo.register(index)
                traits = self.stream(index, "traits")
                member.shopper = traits.choices(SHOPPERS, weights=[s[2] for s in SHOPPERS])[0]
                member.likes_points = traits.random() < 0.5
                member.days_rng = self.stream(index, "days")
                member.rewards_rng = self.stream(index, "rewards")
                self.people.append(member)
        self.admin_day(day, midnight)
        year_end_sale = day >= self.days - 10
        for member in self.people:
            if not member.active:
                continue
            rate = 1 / member.shopper[1]
            if self.clock.now() - member.joined < timedelta(days=14):
                rate *= 3  # new members try the shop (and their welcome coupon)
            if year_end_sale:
                rate *= 2.5
            if member.days_rng.random() < rate:
                plan = self.plan_order(member)
                self.at(midnight + self.hours(member.days_rng, 8, 23.5),
                        lambda p=plan: self.place(p))
            # Browsing that leads nowhere (yet): a stream of its own per member and day.
            browse = self.stream(member.index, "browse", day)
            if browse.random() < 0.06 * (2 if year_end_sale else 1):
                self.at(midnight + self.hours(browse, 7, 23.9),
                        lambda m=member, r=browse: self.browse(m, r, None))
            wants_reward = member.rewards_rng.random() < 0.015
            affordable = [
                r for r in self.rewards
                if r[1]["cost_points"] <= self.available.get(str(member.member_id), 0)
                and r[2] > midnight
                and member.redeemed.get(r[0], 0) < r[1]["per_member_limit"]
            ]
            if affordable and wants_reward:
                reward = member.rewards_rng.choice(affordable)
                self.at(midnight + self.hours(member.rewards_rng, 8, 23.5),
                        lambda m=member, r=reward: self.redeem(m, r))
        visitors = self.stream("visitors", day)
        for visitor in range(visitors.choice([0, 1, 1, 2, 3])):
            self.at(midnight + self.hours(visitors, 7, 23.9),
                    lambda v=visitor, r=visitors: self.browse_anonymously(day, v, r))

    def admin_day(self, day: int, midnight: datetime) -> None:
        self._list_catalogue(day, midnight)
        if day == 0:
            self.at(midnight + timedelta(hours=9), self.define_segments)
        for defined_on, valid_days, details in REWARDS:
            if defined_on == day:
                until = midnight + timedelta(days=valid_days or (self.days + 365))
                self.at(midnight + timedelta(hours=9),
                        lambda d=details, u=until: self.define_reward(d, u))
        active = [m for m in self.people if m.active]
        if day == 30 and active:
            member = active[len(active) // 2]
            self.at(midnight + timedelta(hours=10), lambda: self.adjust(
                member, 300, "goodwill: courier lost the parcel"))
        if day == 200:
            rich = [m for m in active if self.available.get(str(m.member_id), 0) >= 200]
            if rich:
                self.at(midnight + timedelta(hours=10), lambda: self.adjust(
                    rich[0], -200, "correction: goodwill credit granted twice"))

    def plan_order(self, member: DemoMember) -> OrderPlan:
        member.orders_placed += 1
        rng = self.stream(member.index, "order", member.orders_placed)
        premium_bias = member.shopper[3]
        weights = [
            p.weight * (3 if p.category in member.categories else 1)
            * (premium_bias if p.premium else 1) * (1 if self._on_sale(p) else 0)
            for p in CATALOGUE
        ]
        count = rng.choices(*BASKET_LINES)[0]
        chosen: list[Product] = []
        while len(chosen) < count:
            product = rng.choices(CATALOGUE, weights=weights)[0]
            if product not in chosen:
                chosen.append(product)
        # A member asks for products and quantities; the catalogue listed on day 0 prices
        # them when the order is placed.
        lines = [
            {
                "product_id": p.product_id,
                "quantity": 1 if p.premium or rng.random() < 0.7 else rng.randint(2, 3),
            }
            for p in chosen
        ]
        roll = rng.random()
        fate = ("abandon" if roll < 0.05 else "timeout" if roll < 0.09
                else "cancel_after_pay" if roll < 0.13 else "deliver")
        refund_roll = rng.random()
        return OrderPlan(
            member=member,
            rng=rng,
            lines=lines,
            method=rng.choices(*PAYMENT_METHODS)[0],
            failures=rng.choice([1, 1, 2]) if rng.random() < 0.08 else 0,
            fate=fate,
            refund=None if refund_roll >= 0.12 else "partial" if refund_roll < 0.07 else "full",
            review=rng.random() < 0.3,
            wants_coupon=rng.random() < 0.8,
            wants_points=member.likes_points and rng.random() < 0.35,
        )

    # -- the catalogue ---------------------------------------------------------------------

    def _list_catalogue(self, day: int, midnight: datetime) -> None:
        """On the first morning, before any order, the admin lists every demo product
        through the catalogue service; two thirds into the year one product sells out."""
        if day == 0:
            self.at(midnight + timedelta(hours=7), self._upsert_products)
        if day == self._sold_out_day():
            self.at(midnight + timedelta(hours=7), lambda: self.runtime.catalogue.set_availability(
                SOLD_OUT[0], False, SOLD_OUT[1], self.demo.admin(SOLD_OUT[1])))

    def _sold_out_day(self) -> int | None:
        return self.days * 2 // 3 if self.days >= 3 else None

    def _on_sale(self, product: Product) -> bool:
        """Orders planned from the morning the product sold out leave it out."""
        day = self._sold_out_day()
        return not (product.product_id == SOLD_OUT[0] and day is not None
                    and self.clock.now() >= self.start + timedelta(days=day, hours=7))

    def _upsert_products(self) -> None:
        for product in CATALOGUE:
            # Released between a month and about two and a half years before the demo year.
            rng = self.stream("catalogue", product.product_id)
            consumable = (product.category in CONSUMABLE_CATEGORIES
                          or product.product_id in CONSUMABLE_PRODUCTS)
            words = [product.name, f"{product.category} by {product.brand}"]
            words += ["premium"] if product.premium else []
            words += ["everyday essential"] if consumable else []
            self.runtime.catalogue.upsert({
                "product_id": product.product_id, "name": product.name,
                "category": product.category, "brand": product.brand,
                "price": product.price, "currency": self.rules.currency,
                "released_on": self.start.date() - timedelta(days=rng.randint(30, 900)),
                "attributes": "; ".join(words), "consumable": consumable,
            }, self.demo.admin("demo catalogue"))
            self.count("products")

    # -- actions ---------------------------------------------------------------------------

    def member_meta(self, member: DemoMember) -> EventMetadata:
        return self.demo.meta(str(member.member_id), Role.MEMBER, member.channel)

    def agent_meta(self, reason: str) -> EventMetadata:
        return self.demo.meta("demo-agent", Role.AGENT, Channel.ADMIN, reason)

    def points_for(self, plan: OrderPlan, coupon: WalletCoupon | None) -> int:
        rules = self.rules
        member = plan.member
        if self.available.get(str(member.member_id), 0) < rules.min_redemption_points:
            return 0
        account = self.runtime.loyalty.account(member.member_id)
        remaining = plan.subtotal
        remaining -= remaining * rules.tier_rule(account.tier).member_discount_bp // 10000
        if coupon is not None:
            remaining -= coupon_discount(coupon.terms, remaining)
        allowed = min(max_points_for(remaining, rules), account.available)
        step = rules.redemption_points_per_unit
        points = allowed // step * step
        return points if points >= rules.min_redemption_points else 0

    def place(self, plan: OrderPlan) -> None:
        member, now = plan.member, self.clock.now()
        try:
            self.browse(member, self.stream(member.index, "browse-order",
                                            member.orders_placed), plan)
        except DomainError as error:  # browsing is not what decides whether they buy
            log.debug("demo: %s", error.message)
        coupon = member.take_coupon(now, plan.subtotal) if plan.wants_coupon else None
        points = 0
        try:
            if plan.wants_points:
                points = self.points_for(plan, coupon)
        except DomainError:
            points = 0
        key = self.key()
        meta = self.member_meta(member)
        try:
            placed = self.runtime.orders.place(
                member.member_id, plan.lines, coupon.coupon_id if coupon else None, points, key,
                meta,
            )
        except DomainError as error:
            # The coupon or the points did not fit after all: place it plainly (nothing
            # was recorded, so the same key is free).
            log.debug("demo: order with coupon/points refused (%s); placing plainly",
                      error.message)
            if coupon is not None and error.field != "coupon_id":
                member.wallet.append(coupon)
            coupon, points = None, 0
            placed = self.runtime.orders.place(member.member_id, plan.lines, None, 0, key, meta)
        self.count("orders")
        if coupon:
            self.count("orders_with_coupon")
        if points:
            self.count("orders_with_points")
        order_id = placed.aggregate_id
        order = self.runtime.orders.get(order_id)
        if plan.fate == "abandon":
            self.at(now + self.hours(plan.rng, 0.2, 3), lambda: self.cancel(
                plan, order_id, coupon, "member_request", "changed my mind", by_member=True))
            return
        if plan.fate == "timeout":
            self.at(now + self.hours(plan.rng, 24, 26), lambda: self.cancel(
                plan, order_id, coupon, "payment_timeout", None, by_member=False))
            return
        when = now
        for _ in range(plan.failures):
            when += self.hours(plan.rng, 0.02, 0.2)
            self.at(when, lambda: self.fail_payment(plan, order_id, order.total))
        when += self.hours(plan.rng, 0.02, 0.5)
        self.at(when, lambda: self.pay(plan, order_id, order.total, bool(order.flags)))

    def fail_payment(self, plan: OrderPlan, order_id: uuid.UUID, amount: int) -> None:
        """The member tries to pay and the provider's signed callback declines it."""
        method = plan.method if plan.method in PROVIDER_METHODS else "card"
        pay_in_process(self.runtime, order_id, method, self.key(),
                       self.member_meta(plan.member), outcome="failed",
                       failure_reason=plan.rng.choice(PAYMENT_FAILURES))
        self.count("payment_failures")

    def pay(self, plan: OrderPlan, order_id: uuid.UUID, amount: int, flagged: bool) -> None:
        """Online: the provider's signed callback confirms the attempt (the same
        verification and service code as the webhook). Cash and store credit: an agent
        records it, with a reason."""
        key = self.key()
        method = plan.method if not plan.failures else plan.rng.choice(["alipay", "wechat_pay"])
        if method in PROVIDER_METHODS:
            pay_in_process(self.runtime, order_id, method, key, self.member_meta(plan.member))
        else:
            self.runtime.payments.record_in_person(
                order_id, method, key,
                self.agent_meta("paid to the courier" if method == "cash_on_delivery"
                                else "paid from the member's store credit"),
            )
        self.count("payments")
        now = self.clock.now()
        if plan.fate == "cancel_after_pay":
            by_member = plan.rng.random() < 0.6
            self.at(now + self.hours(plan.rng, 1, 20), lambda: self.cancel(
                plan, order_id, None,
                "member_request" if by_member else "stock",
                "ordered the wrong colour" if by_member else "out of stock at the warehouse",
                by_member=by_member))
        elif flagged:
            self.count("held_for_review")  # paid, waiting for a human: never shipped here
        else:
            self.at(now + self.hours(plan.rng, 2, 20), lambda: self.ship(plan, order_id))

    def ship(self, plan: OrderPlan, order_id: uuid.UUID) -> None:
        """One parcel with a realistic carrier timeline; some fail, some get rated."""
        rng = plan.rng
        carrier = rng.choice(["SF", "JD", "YTO"])
        tracking = f"{carrier}{self.key()}"
        pickup = rng.random() < 0.25
        shipment = self.runtime.shipping.create(
            order_id, None, "pickup_point" if pickup else "home_delivery", "standard",
            rng.choice(sorted(self.runtime.shipping.pickup_points)) if pickup else None, None,
            None, None, carrier, tracking, self.agent_meta("packed and labelled"),
        ).aggregate_id
        self.count("shipments")
        now = self.clock.now()
        steps = ["picked_up", "in_transit", "ready_for_pickup" if pickup else "out_for_delivery"]
        when = now
        for status in steps:
            when += self.hours(rng, 3, 30)
            self.at(when, lambda s=status, w=when: self.track(shipment, s, w))
        if not pickup and rng.random() < 0.1:
            when += self.hours(rng, 1, 4)
            self.at(when, lambda w=when: self.failed_attempt(plan, shipment, w))
            when += timedelta(days=1)
        when += self.hours(rng, 1, 10)
        final = "collected" if pickup else "delivered"
        self.at(when, lambda: self.arrived(plan, order_id, shipment, final, when))

    def track(self, shipment: uuid.UUID, status: str, when: datetime,
              note: str | None = None) -> None:
        self.runtime.shipping.record_tracking(
            shipment, f"demo-{self.key()}", status, when, "demo hub", note, None,
            self.demo.meta("carrier", Role.SYSTEM, Channel.SYSTEM),
        )

    def failed_attempt(self, plan: OrderPlan, shipment: uuid.UUID, when: datetime) -> None:
        self.track(shipment, "delivery_attempt_failed", when, "nobody home")
        self.count("delivery_exceptions")
        start = (when + timedelta(days=1)).replace(hour=18, minute=0, second=0, microsecond=0)
        self.runtime.shipping.resolve_exception(
            shipment, "reschedule", None, {"start": start, "end": start + timedelta(hours=3)},
            self.member_meta(plan.member),
        )

    def arrived(self, plan: OrderPlan, order_id: uuid.UUID, shipment: uuid.UUID, final: str,
                when: datetime) -> None:
        self.track(shipment, final, when)
        member = self.member_meta(plan.member)
        if plan.rng.random() < 0.4:
            self.runtime.shipping.rate(shipment, plan.rng.randint(3, 5), plan.rng.randint(3, 5),
                                       plan.rng.randint(2, 5), None, member)
            self.count("ratings")
        if plan.rng.random() < 0.05:
            self.runtime.shipping.file_complaint(shipment, "The box arrived dented.", member)
            self.runtime.shipping.answer_complaint(
                shipment, "Sorry about that: we have told the carrier and sent a voucher.",
                self.agent_meta("complaint answered"),
            )
            self.count("complaints")
        self.deliver(plan, order_id)

    def cancel(
        self,
        plan: OrderPlan,
        order_id: uuid.UUID,
        coupon: WalletCoupon | None,
        reason: str,
        note: str | None,
        *,
        by_member: bool,
    ) -> None:
        if by_member:
            meta = self.member_meta(plan.member)
        elif reason == "payment_timeout":
            meta = self.demo.meta("order-timeout", Role.SYSTEM, Channel.SYSTEM)
        else:
            meta = self.agent_meta(note or reason)
        self.runtime.orders.cancel(order_id, reason, note, meta)
        self.count("cancelled")
        if coupon is not None:  # released by the cancellation: back in the wallet
            plan.member.wallet.append(coupon)

    def deliver(self, plan: OrderPlan, order_id: uuid.UUID) -> None:
        """The last parcel arrived (the shipment marked the order delivered)."""
        self.count("delivered")
        now = self.clock.now()
        if plan.review and self.rules.review_points:
            self.at(now + timedelta(days=plan.rng.randint(1, 5)) + self.hours(plan.rng, 0, 6),
                    lambda: self.review(plan, order_id))
        if plan.refund:
            self.at(now + timedelta(days=plan.rng.randint(1, 6)) + self.hours(plan.rng, 0, 6),
                    lambda: self.refund(plan, order_id))
        else:
            # A stream of its own, so the rest of the year is the same with or without cases.
            rng = self.stream(plan.member.index, "case", now.isoformat())
            if rng.random() < 0.08:
                self.at(now + timedelta(days=rng.randint(1, 6)) + self.hours(rng, 0, 10),
                        lambda: self.open_case(plan, order_id, rng))

    # -- behaviour -------------------------------------------------------------------------

    @staticmethod
    def looked_at(product: Product, rng: random.Random, kind: str = "product_viewed",
                  ) -> dict[str, Any]:
        event: dict[str, Any] = {"kind": kind, "product_id": product.product_id,
                                 "category": product.category, "brand": product.brand,
                                 "price": product.price}
        if kind == "product_viewed":
            event["dwell_seconds"] = rng.randint(5, 240)
        return event

    def browsing(self, categories: list[str], rng: random.Random,
                 plan: OrderPlan | None) -> list[dict[str, Any]]:
        """A session's events: a search, views, and for an order its lines carted; without
        one, sometimes a cart change of mind, a wish or a share."""
        events: list[dict[str, Any]] = []
        category = rng.choice(categories or CATEGORIES)
        shown = [p for p in CATALOGUE if p.category == category]
        words = f"{category} {rng.choice(['sale', 'new', 'best'])}"
        events.append({"kind": "searched", "keywords": words, "category": category,
                       "result_count": len(shown)})
        for product in rng.sample(shown, min(len(shown), rng.randint(1, 4))):
            events.append(self.looked_at(product, rng))
        if plan is not None:
            for line in plan.lines:
                product = next(p for p in CATALOGUE if p.product_id == line["product_id"])
                events.append(self.looked_at(product, rng))
                events.append(self.looked_at(product, rng, "added_to_cart"))
            return events
        liked = rng.choice(shown) if shown else rng.choice(CATALOGUE)
        roll = rng.random()
        if roll < 0.3:
            events.append(self.looked_at(liked, rng, "added_to_cart"))
            if rng.random() < 0.5:
                events.append(self.looked_at(liked, rng, "removed_from_cart"))
        elif roll < 0.5:
            events.append(self.looked_at(liked, rng, "wish_listed"))
        elif roll < 0.6:
            events.append({**self.looked_at(liked, rng, "shared"),
                           "share_channel": rng.choice(["wechat", "weibo", "link"])})
        return events

    def browse(self, member: DemoMember, rng: random.Random, plan: OrderPlan | None) -> None:
        """A signed-in member's session; a fifth start anonymous and are linked on sign-in."""
        events = self.browsing(member.categories, rng, plan)
        session = f"demo-session-{self.key()}"
        meta = self.member_meta(member)
        if rng.random() < 0.2:
            visitor = self.demo.meta("anonymous", Role.ANONYMOUS, member.channel)
            self.runtime.behaviour.track(None, session, events, self.key(), visitor)
            self.runtime.behaviour.link_session(session, member.member_id, meta)
            self.count("sessions_linked")
        else:
            self.runtime.behaviour.track(member.member_id, session, events, self.key(), meta)
        self.count("sessions_leading_to_orders" if plan else "sessions_browsing")

    def browse_anonymously(self, day: int, visitor: int, rng: random.Random) -> None:
        """A visitor who never signs in: counted in the shop's statistics only."""
        session = f"demo-visitor-{day}-{visitor}"
        meta = self.demo.meta("anonymous", Role.ANONYMOUS, Channel.WEB)
        self.runtime.behaviour.track(None, session, self.browsing([], rng, None), self.key(),
                                     meta)
        self.count("sessions_anonymous")

    # -- after-sales -----------------------------------------------------------------------

    def open_case(self, plan: OrderPlan, order_id: uuid.UUID, rng: random.Random) -> None:
        """A member's case, worked by agents at their own pace: some miss the SLA."""
        kind, _, reasons, text = rng.choices(CASE_KINDS, weights=[k[1] for k in CASE_KINDS])[0]
        order: Order = self.runtime.orders.get(order_id)
        line = rng.choice(order.lines)
        member = self.member_meta(plan.member)
        case_id = self.runtime.after_sales.open(
            order_id, kind, rng.choice(reasons), text, [(line["line_id"], line["quantity"])],
            None, [f"https://photos.example.com/{self.key()}.jpg"] if rng.random() < 0.5
            else None, CASE_OUTCOMES[kind], self.key(), member,
        ).aggregate_id
        self.count("cases")
        case = self.runtime.after_sales.get(case_id)
        agent = VIP_AGENT if case.team == self.rules.dedicated_service_team else rng.choice(AGENTS)
        now = self.clock.now()
        if rng.random() < 0.05:
            self.at(now + self.hours(rng, 1, 6), lambda: self.case_step(
                "withdrawn", lambda: self.runtime.after_sales.withdraw(
                    case_id, "Sorted it out myself", member)))
            return
        # Most first reviews are prompt; a few wait past the tier's SLA.
        review_in = self.hours(rng, 0.5, 8) if rng.random() < 0.8 else self.hours(rng, 20, 40)
        when = now + review_in
        self.at(when, lambda: self.review_case(case_id, kind, agent, rng))

    def case_step(self, what: str, action: Callable[[], Any]) -> None:
        action()
        self.count(f"cases_{what}")

    def review_case(self, case_id: uuid.UUID, kind: str, agent: str,
                    rng: random.Random) -> None:
        cases = self.runtime.after_sales
        staff = self.demo.meta(agent, Role.AGENT, Channel.ADMIN)
        cases.assign(case_id, agent, None, staff)
        cases.post_message(case_id, "Thank you for getting in touch, we are on it.", None,
                           None, staff)
        now = self.clock.now()
        if rng.random() < 0.1:
            self.case_step("rejected", lambda: cases.reject(
                case_id, "Outside the conditions of our returns policy", staff))
            self.at(now + timedelta(days=2), lambda: cases.close(case_id, staff))
            return
        cases.approve(case_id, None, staff)
        if kind in ("return", "exchange", "repair"):
            carrier = rng.choice(["SF", "JD"])
            tracking = f"{carrier}R{self.key()}"
            cases.issue_return_label(case_id, carrier, tracking, None, staff)
            parcel = shipment_id_for(carrier, tracking)
            sent = now + timedelta(days=rng.randint(1, 3))
            arrived = sent + timedelta(days=rng.randint(1, 4))
            self.at(sent, lambda: self.track(parcel, "picked_up", sent))
            self.at(arrived, lambda: self.track(parcel, "delivered", arrived))
            inspected = arrived + self.hours(rng, 4, 48)
            self.at(inspected, lambda: self.inspect_and_resolve(case_id, kind, staff, rng))
        else:
            self.at(now + self.hours(rng, 2, 96),
                    lambda: self.resolve_case(case_id, kind, staff, rng))

    def inspect_and_resolve(self, case_id: uuid.UUID, kind: str, staff: EventMetadata,
                            rng: random.Random) -> None:
        self.runtime.after_sales.inspect(
            case_id, "confirmed", rng.choice(["restock", "refurbish", "scrap"]), None, staff)
        self.resolve_case(case_id, kind, staff, rng)

    def resolve_case(self, case_id: uuid.UUID, kind: str, staff: EventMetadata,
                     rng: random.Random) -> None:
        cases = self.runtime.after_sales
        outcome = CASE_OUTCOMES[kind]
        carrier, tracking = (None, None)
        if outcome != "refunded":
            carrier, tracking = "SF", f"SFX{self.key()}"
        cases.resolve(case_id, outcome, carrier, tracking, None, staff)
        self.count(f"cases_{outcome}")
        now = self.clock.now()
        if carrier and tracking:
            parcel = shipment_id_for(carrier, tracking)
            delivered = now + timedelta(days=rng.randint(1, 3))
            self.at(delivered, lambda: self.track(parcel, "delivered", delivered))
        case = cases.get(case_id)
        member = self.demo.meta(case.member_id, Role.MEMBER, Channel.APP)
        if rng.random() < 0.6:
            rated = now + self.hours(rng, 6, 72)
            self.at(rated, lambda: self.case_step("rated", lambda: cases.rate(
                case_id, rng.randint(2, 5), rng.randint(2, 5), rng.randint(1, 5),
                rng.choice(["product", "logistics", "after_sales", "system"]), None, member)))
        if rng.random() < 0.3:
            visit = now + timedelta(days=2)
            cases.schedule_follow_up(case_id, visit, staff)
            self.at(visit, lambda: cases.record_follow_up(
                case_id, rng.choice(["satisfied", "satisfied", "not_satisfied", "unreachable"]),
                None, staff))
        self.at(now + timedelta(days=4), lambda: cases.close(case_id, staff))

    def review(self, plan: OrderPlan, order_id: uuid.UUID) -> None:
        """A written review of one or two of the lines bought: points once per line."""
        lines = [f"L{n}" for n in range(1, len(plan.lines) + 1)]
        for line_id in plan.rng.sample(lines, min(len(lines), plan.rng.choice([1, 1, 2]))):
            self.runtime.loyalty.award_review(
                plan.member.member_id, order_id, line_id, plan.rng.choice(REVIEWS),
                self.member_meta(plan.member),
            )
            self.count("reviews")

    def refund(self, plan: OrderPlan, order_id: uuid.UUID) -> None:
        items: list[tuple[str, int]] | None = None
        if plan.refund == "partial":
            order: Order = self.runtime.orders.get(order_id)
            line = plan.rng.choice(order.lines)
            items = [(line["line_id"], plan.rng.randint(1, line["quantity"]))]
        reason = plan.rng.choice(RETURN_REASONS)
        self.runtime.orders.refund(order_id, items, self.key(), self.agent_meta(reason))
        self.count(f"refunds_{plan.refund}")

    def define_segments(self) -> None:
        for index, (name, rule) in enumerate(SEGMENTS):
            self.runtime.segments.define(name, None, rule, f"demo-segment-{index}",
                                         self.demo.admin("demo marketing segments"))
            self.count("segments")

    def define_reward(self, details: dict[str, Any], until: datetime) -> None:
        now = self.clock.now()
        result = self.runtime.loyalty.define_reward(
            {**details, "valid_from": now, "valid_until": until},
            self.demo.admin("demo catalogue of rewards"),
        )
        self.rewards.append((result.aggregate_id, details, until))
        self.count("rewards")

    def redeem(self, member: DemoMember, reward: tuple[uuid.UUID, dict[str, Any], datetime]
               ) -> None:
        reward_id, details, _ = reward
        result = self.runtime.loyalty.redeem_reward(
            member.member_id, reward_id, self.key(), self.member_meta(member)
        )
        now = self.clock.now()
        member.wallet.append(WalletCoupon(
            result.aggregate_id,
            CouponTerms(details["coupon_kind"], details["coupon_value"],
                        details["coupon_min_spend"]),
            now + timedelta(days=details["coupon_valid_days"]),
        ))
        member.redeemed[reward_id] = member.redeemed.get(reward_id, 0) + 1
        self.available[str(member.member_id)] = (
            self.available.get(str(member.member_id), 0) - details["cost_points"]
        )
        self.count("redemptions")

    def adjust(self, member: DemoMember, points: int, reason: str) -> None:
        self.runtime.loyalty.adjust(member.member_id, points, self.key(), self.demo.admin(reason))
        self.count("adjustments")
