"""Read-model tables of the "member_behaviour" projection: what profiles are computed from.

They live on the shared `metadata`, like every read model, so one Alembic environment sees
them; migration 0005 creates them, and a change here needs a new migration.

What is stored are *facts that add up*, never conclusions: counts, sums, first and last
times, and interest scores per kind of event. Everything that depends on "now" or on the
rest of the member base (decay to the present, RFM quintiles, lifecycle, price band,
shopper type, tags) is computed when a profile is read (domain/profile.py), so it
follows the clock and the base without rewriting rows, and changing a weight or a
threshold in the rules needs no rebuild.

Interest scores decay exponentially. A row keeps, per kind of event, the decayed sum as of
`as_of` (the latest event time folded in): sum of amount * 2^(-(as_of - t) / half_life).
A reader decays it further to now; a writer decays it to the new event's time first. The
half-life is therefore part of what is stored: changing it needs a rebuild.

Personal data: none of these tables holds names, contact details or search words (those
stay encrypted in the events). What they hold about a member is behavioural and deleted
when the member is erased; `behaviour_daily` counts everyone and names no one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    Index,
    Integer,
    String,
    Table,
)

from domain.profile import INTEREST_PARTS
from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

# Behaviour counts kept for a member and for an anonymous session alike, so a session can be
# added to a member when it is linked.
BEHAVIOUR_COUNTS = ("behaviour_events", "views", "searches", "cart_adds", "cart_removes",
                    "wish_lists", "shares")
BEHAVIOUR_SUMS = ("dwell_seconds", "viewed_price_sum", "viewed_price_count")
BEHAVIOUR_TIMES = ("first_behaviour_at", "last_behaviour_at", "last_cart_add_at")


def _behaviour_columns() -> list[Column[Any]]:
    return [
        *(Column(name, Integer, nullable=False) for name in BEHAVIOUR_COUNTS),
        # Seconds of dwell over all views; price (minor units) and count of viewed products
        # that had a price: the viewed side of the price band.
        Column("dwell_seconds", BigInteger, nullable=False),
        Column("viewed_price_sum", BigInteger, nullable=False),
        Column("viewed_price_count", Integer, nullable=False),
        # {channel: behaviour events}: web, app, mini_program, store.
        Column("behaviour_channels", JSONType, nullable=False),
        *(Column(name, UtcDateTime()) for name in BEHAVIOUR_TIMES),
    ]


def _interest_columns() -> list[Column[Any]]:
    return [
        # 'category' | 'brand'
        Column("dimension", String(10), primary_key=True),
        Column("key", String(100), primary_key=True),
        *(Column(name, Float, nullable=False) for name in INTEREST_PARTS),
        Column("as_of", UtcDateTime(), nullable=False),
        Column("events", Integer, nullable=False),
        Column("last_event_at", UtcDateTime(), nullable=False),
    ]


# Per member: behaviour (only what was attributed with consent), orders, purchases, reviews.
member_activity = Table(
    "member_activity",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # Registration time (NULL if behaviour arrived before the registration was projected).
    Column("joined_at", UtcDateTime()),
    # Loyalty tier, for segment rules (NULL until a first tier change: regular).
    Column("tier", String(20)),
    *_behaviour_columns(),
    # Orders placed (paid or not) and their channels; reviews and theirs.
    Column("orders_placed", Integer, nullable=False),
    Column("order_channels", JSONType, nullable=False),
    Column("last_order_at", UtcDateTime()),
    Column("reviews", Integer, nullable=False),
    Column("review_stars", Integer, nullable=False),
    Column("review_channels", JSONType, nullable=False),
    Column("last_review_at", UtcDateTime()),
    # Purchases are paid orders; the total is what was paid less what was refunded.
    Column("purchases", Integer, nullable=False),
    Column("purchase_total", BigInteger, nullable=False),
    Column("refunded_total", BigInteger, nullable=False),
    Column("first_purchase_at", UtcDateTime()),
    Column("last_purchase_at", UtcDateTime()),
    # Unit prices of the lines paid for, and how many: the bought side of the price band.
    Column("bought_price_sum", BigInteger, nullable=False),
    Column("bought_lines", Integer, nullable=False),
    # Distinct products bought, and those bought in two or more orders: repurchase rate.
    Column("products", Integer, nullable=False),
    Column("repeat_products", Integer, nullable=False),
    # The latest activity of any kind (behaviour, an order placed or paid, a review), kept
    # as the latest of the times above: lifecycle segments read it.
    Column("last_activity_at", UtcDateTime()),
    Column("position", BigInteger, nullable=False),
    Index("ix_member_activity_last_activity_at", "last_activity_at"),
    Index("ix_member_activity_last_purchase_at", "last_purchase_at"),
)

member_interests = Table(
    "member_interests",
    metadata,
    Column("member_id", String(36), primary_key=True),
    *_interest_columns(),
)

# Which products a member bought, in how many orders: repurchase rate.
member_product_purchases = Table(
    "member_product_purchases",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("product_id", String(200), primary_key=True),
    Column("orders", Integer, nullable=False),
    Column("first_at", UtcDateTime(), nullable=False),
    Column("last_at", UtcDateTime(), nullable=False),
)

# Anonymous sessions: their behaviour adds up here until the session is linked to a member
# who consents to personalisation (then it moves to the member), or to one who does not
# (then it stays aggregate-only, and so does anything the session sends later).
behaviour_sessions = Table(
    "behaviour_sessions",
    metadata,
    Column("session_id", String(100), primary_key=True),
    Column("member_id", String(36)),
    # True when the session's behaviour belongs to `member_id`.
    Column("attributed", Boolean, nullable=False),
    Column("linked_at", UtcDateTime()),
    *_behaviour_columns(),
    Column("position", BigInteger, nullable=False),
    Index("ix_behaviour_sessions_member_id", "member_id"),
)

session_interests = Table(
    "session_interests",
    metadata,
    Column("session_id", String(100), primary_key=True),
    *_interest_columns(),
)

# The projection's own view of consent and erasure, so it never waits for another
# projection and a rebuild sees each consent as it was at each event.
behaviour_consents = Table(
    "behaviour_consents",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("personalisation", Boolean, nullable=False),
    Column("changed_at", UtcDateTime()),
    # Erased members: nothing about them is recorded any more.
    Column("erased", Boolean, nullable=False),
)

# Orders until paid (their lines become purchases then) and after (for refunds).
behaviour_orders = Table(
    "behaviour_orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    # [{product_id, category, brand, quantity, unit_price}]
    Column("lines", JSONType, nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("paid_at", UtcDateTime()),
    Index("ix_behaviour_orders_member_id", "member_id"),
)

# Reviews, for the stars a revision replaces.
behaviour_reviews = Table(
    "behaviour_reviews",
    metadata,
    Column("review_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("category", String(100)),
    Column("brand", String(100)),
    Column("stars", Integer, nullable=False),
    Index("ix_behaviour_reviews_member_id", "member_id"),
)

# Aggregate statistics per UTC day and kind: every behaviour event, attributed or not
# (product_viewed, searched, added_to_cart, ...), and "purchase" (orders paid, with the
# amount paid). Erasure leaves them: they name no one.
behaviour_daily = Table(
    "behaviour_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("kind", String(20), primary_key=True),
    Column("events", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
)

BEHAVIOUR_TABLES = (
    member_activity,
    member_interests,
    member_product_purchases,
    behaviour_sessions,
    session_interests,
    behaviour_consents,
    behaviour_orders,
    behaviour_reviews,
    behaviour_daily,
)
