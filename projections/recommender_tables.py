"""Tables of the recommender: the behaviour it learns from, its trained models, and the
model files themselves.

- `recommendation_signals` (projection "recommendation_signals"): one row per piece of
  behaviour that says something about taste — a purchase line, a review, a cart add, a
  wish-list add, a product view — kept raw (kind, time, stars, dwell, quantity) so that
  weights and decay are applied when interactions are derived, and a change of weights
  needs no rebuild. A review's row is keyed by the review, so a revision replaces it.
  Erasing a member deletes their rows; withdrawing consent to personalisation deletes
  their behaviour (views, carts, wish lists) and keeps purchases and reviews, as the
  member profile does. `recommendation_orders` and `recommendation_consents` are its
  bookkeeping.
- `recommender_models` (projection "recommender_models"): every trained model version,
  what it was trained on (event position, counts), its parameters and offline metrics,
  and which one serves.
- `recommender_artifacts`: the fitted models, content-addressed by the SHA-256 the
  training event records, written by the training job before it records the event (not
  a projection: a model file is derived data too large for an event, and the checksum in
  the event lets anyone verify it).

Migration 0008 creates these tables; a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

recommendation_signals = Table(
    "recommendation_signals",
    metadata,
    # "<event position>:<index>" or "review:<review id>" (a revision replaces the row).
    Column("signal_id", String(80), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("product_id", String(200), nullable=False),
    # domain.recommendation.interactions.SignalKind
    Column("kind", String(10), nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("stars", Integer),
    Column("dwell_seconds", Integer),
    Column("quantity", Integer, nullable=False),
    # Purchases of one order form one basket for the association rules.
    Column("order_id", String(36)),
    Column("position", BigInteger, nullable=False),
    Index("ix_recommendation_signals_member", "member_id", "occurred_at"),
    Index("ix_recommendation_signals_order", "order_id"),
)

# Lines of placed, unpaid orders: a purchase signal is written when the order is paid.
recommendation_orders = Table(
    "recommendation_orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("product_ids", JSONType, nullable=False),  # [[product_id, quantity], ...]
    Column("position", BigInteger, nullable=False),
)

# Consent to personalisation as this projection saw it: behaviour signals are kept only
# while a member consents, and serving personalises only for those who do.
recommendation_consents = Table(
    "recommendation_consents",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("personalisation", Boolean, nullable=False),
    Column("changed_at", UtcDateTime()),
    Column("position", BigInteger, nullable=False),
)

recommender_models = Table(
    "recommender_models",
    metadata,
    Column("version", Integer, primary_key=True),
    # 'trained' | 'active' | 'retired' (was active, replaced or rolled back)
    Column("state", String(10), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("trained_at", UtcDateTime(), nullable=False),
    Column("trained_by", String(100), nullable=False),
    Column("reason", Text),
    # The last event position the training data included.
    Column("data_position", BigInteger, nullable=False),
    Column("interactions", Integer, nullable=False),
    Column("members", Integer, nullable=False),
    Column("products", Integer, nullable=False),
    Column("training_seconds", Float, nullable=False),
    Column("params", JSONType, nullable=False),
    Column("metrics", JSONType, nullable=False),
    Column("activated_at", UtcDateTime()),
    Column("activated_by", String(100)),
    Column("position", BigInteger, nullable=False),
)

recommender_artifacts = Table(
    "recommender_artifacts",
    metadata,
    Column("checksum", String(64), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
