"""Read-model tables for orders, loyalty points and coupons.

They live on the same `metadata` as the member tables, so one Alembic environment (and one
`metadata.create_all` in a scratch database) sees every read model. Migration 0002 creates
them; a change here needs a new migration, never an edit of 0002.

Amounts are integer minor units and points are whole points, as in the domain, so
BigInteger everywhere and no floating point. Times are UTC (`UtcDateTime()`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime


def utc(value: datetime | str | None) -> datetime | None:
    """A domain time (datetime or ISO string) as an aware UTC datetime, for these columns.

    SQLite stores datetimes without their offset, so anything not in UTC would be read back
    shifted; converting first makes both backends store the same instant.
    """
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: domain times are timezone-aware")
    return in_utc(moment)


def in_utc(moment: datetime) -> datetime:
    """`moment` in UTC, clamped to the representable range rather than overflowing.

    The edges refuse business times outside 1900-2200, but events recorded before they did
    (or a far-off offset at the very end of the calendar) must not stop a projection.
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        edge = datetime.max if moment.year > 1 else datetime.min
        return edge.replace(tzinfo=UTC)


def stored(value: datetime) -> datetime:
    """A time read back from a column: SQLite returns it naive (it is UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    """A time inside a JSON column: ISO 8601 in UTC, the same on every backend."""
    return in_utc(value).isoformat()


orders = Table(
    "orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("state", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    # The tier the order was priced at (the member's tier may have changed since).
    Column("tier", String(20), nullable=False),
    Column("lines", JSONType, nullable=False),
    # subtotal, tier_discount, coupon_discount, points_used, points_value, shipping_fee, total.
    Column("pricing", JSONType, nullable=False),
    Column("coupon_id", String(36)),
    # [{payment_id, method, amount, provider_reference, at}]
    Column("payments", JSONType, nullable=False),
    Column("failed_payments", Integer, nullable=False),
    # [{rule, detail, at}]: why the order waits for a human.
    Column("flags", JSONType, nullable=False),
    # [{refund_id, lines: [{line_id, quantity}], amount, at, actor_id, reason}]
    Column("refunds", JSONType, nullable=False),
    Column("paid_amount", BigInteger, nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    # {reason, note, at, actor_id, actor_role} once cancelled.
    Column("cancellation", JSONType),
    # [{state, at}]: every state the order entered, in order.
    Column("history", JSONType, nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("paid_at", UtcDateTime()),
    Column("delivered_at", UtcDateTime()),
    Column("completed_at", UtcDateTime()),
    Column("cancelled_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_orders_member_id", "member_id"),
    Index("ix_orders_state", "state"),
)

loyalty_accounts = Table(
    "loyalty_accounts",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # Events name the account, not the member: handlers find the row by this id.
    Column("account_id", String(36), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("tier_since", UtcDateTime()),
    Column("maintenance_due", UtcDateTime()),
    # Equal to the aggregate's `available`, `pending` and `debt` after every event.
    Column("available", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    Column("debt", BigInteger, nullable=False),
    # Points credited, net of claw-backs (a reversed earning was never really earned).
    Column("lifetime_earned", BigInteger, nullable=False),
    # Points spent on rewards and orders (adjustments are not redemptions), net of points
    # returned by cancelled orders.
    Column("lifetime_redeemed", BigInteger, nullable=False),
    Column("lifetime_expired", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_loyalty_accounts_account_id", "account_id", unique=True),
)

loyalty_lots = Table(
    "loyalty_lots",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("lot_id", String(100), primary_key=True),
    Column("source", String(40), nullable=False),
    Column("ref", String(200), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    # Points of this (order) lot reversed by refunds so far.
    Column("clawed_back", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("earned_at", UtcDateTime(), nullable=False),
    Column("release_at", UtcDateTime()),
    Column("available_at", UtcDateTime()),
    Column("expires_at", UtcDateTime()),
    # The aggregate's order of lots: ties in expiry are consumed oldest first.
    Column("seq", Integer, nullable=False),
    # The expiry and release jobs look for lots by status and due time.
    Index("ix_loyalty_lots_status_expires_at", "status", "expires_at"),
    Index("ix_loyalty_lots_status_release_at", "status", "release_at"),
)

loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # Per-member sequence number, from 1: the order movements happened in.
    Column("entry", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    # earned | released | debited | expired | clawed_back | debt_settled | superseded
    Column("kind", String(20), nullable=False),
    # Signed change of `bucket`'s balance: + credit, - debit. The debt bucket's balance is
    # minus the debt, so a shortfall is negative and settling it positive.
    Column("points", BigInteger, nullable=False),
    Column("bucket", String(10), nullable=False),
    # order | review | profile_completion | birthday | campaign | adjustment | reward |
    # order_payment | expiry | reversal (and any credit source the domain adds).
    Column("cause", String(40), nullable=False),
    Column("ref", String(200)),
    Column("lot_id", String(100)),
    Column("available_after", BigInteger, nullable=False),
    Column("pending_after", BigInteger, nullable=False),
    Column("debt_after", BigInteger, nullable=False),
    Column("actor_id", String(100)),
    Column("reason", String(500)),
)

loyalty_spend = Table(
    "loyalty_spend",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("entry", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    # Paid amounts count up, refunds count down (minor units).
    Column("amount", BigInteger, nullable=False),
    Column("ref", String(200), nullable=False),
)

tier_history = Table(
    "tier_history",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("entry", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("from_tier", String(20), nullable=False),
    Column("to_tier", String(20), nullable=False),
    Column("reason", String(200), nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("coupon_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("source", String(20), nullable=False),
    Column("kind", String(10), nullable=False),
    # Minor units for a fixed coupon, basis points for a percentage.
    Column("value", BigInteger, nullable=False),
    Column("min_spend", BigInteger, nullable=False),
    Column("valid_from", UtcDateTime(), nullable=False),
    Column("valid_until", UtcDateTime(), nullable=False),
    Column("status", String(10), nullable=False),
    # The order holding (reserved) or having used the coupon.
    Column("order_id", String(36)),
    Column("ref", String(200)),
    Column("issued_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_coupons_member_id", "member_id"),
)

rewards = Table(
    "rewards",
    metadata,
    Column("reward_id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("cost_points", BigInteger, nullable=False),
    Column("stock", BigInteger, nullable=False),
    Column("per_member_limit", Integer, nullable=False),
    Column("valid_from", UtcDateTime(), nullable=False),
    Column("valid_until", UtcDateTime(), nullable=False),
    # The coupon a redemption issues: {kind, value, min_spend}.
    Column("coupon", JSONType, nullable=False),
    Column("coupon_valid_days", Integer, nullable=False),
    Column("redeemed_count", BigInteger, nullable=False),
    Column("defined_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
)
