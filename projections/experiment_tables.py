"""Read-model tables of A/B experiments and their results, kept by "experiment_results".

- `experiments`: one row per experiment as defined (placement, variants), whether it
  runs, who defined and stopped it and why. The recommender reads the running one of a
  placement on every request (`ix_experiments_placement_status`).
- `experiment_variant_results`: the running totals per variant — impressions, clicks,
  members exposed, clicking and converted, conversions and their revenue.
- `experiment_exposures`: per experiment and member, the variant, when they were first
  exposed, first clicked and converted: what makes members count once.
- `experiment_clicks`: per experiment, member and product, the latest click, which a
  payment within the conversion window converts.
- `experiment_orders`: orders placed and not yet paid or cancelled, with what each product
  in them costs, since a payment event does not repeat the order's lines.

The last three name members and what they clicked or ordered; erasing a member deletes
their rows there, and the totals keep the numbers. Everything is built from events only
(see projections/experiment_results.py), so a rebuild reproduces the tables exactly.

Migration 0010 creates these tables; a change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    # domain.recommendation.placement.Placement
    Column("placement", String(10), nullable=False),
    # [domain.experiments.Variant.as_dict()], in the order defined (the first: control).
    Column("variants", JSONType, nullable=False),
    # 'running' | 'stopped'
    Column("status", String(10), nullable=False),
    Column("defined_at", UtcDateTime(), nullable=False),
    Column("defined_by", String(100), nullable=False),
    Column("define_reason", Text),
    Column("stopped_at", UtcDateTime()),
    Column("stopped_by", String(100)),
    Column("stop_reason", Text),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_experiments_placement_status", "placement", "status"),
    Index("ix_experiments_defined_at", "defined_at"),
)

experiment_variant_results = Table(
    "experiment_variant_results",
    metadata,
    Column("experiment_id", String(36), primary_key=True),
    Column("variant", String(40), primary_key=True),
    # The variant's place in the definition: 0 is the control.
    Column("ordinal", Integer, nullable=False),
    Column("impressions", BigInteger, nullable=False),
    Column("clicks", BigInteger, nullable=False),
    # Members with at least one impression or click in the variant.
    Column("exposed_members", Integer, nullable=False),
    Column("clicking_members", Integer, nullable=False),
    Column("converted_members", Integer, nullable=False),
    # Paid orders containing a product the member clicked in the experiment in the 7 days
    # before, and what those products' lines cost (minor units).
    Column("conversions", Integer, nullable=False),
    Column("revenue", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
)

experiment_exposures = Table(
    "experiment_exposures",
    metadata,
    Column("experiment_id", String(36), primary_key=True),
    Column("member_id", String(36), primary_key=True),
    Column("variant", String(40), nullable=False),
    # When the member was first shown (or, failing a recorded impression, clicked) one of
    # the experiment's lists.
    Column("first_shown_at", UtcDateTime(), nullable=False),
    Column("first_clicked_at", UtcDateTime()),
    Column("converted_at", UtcDateTime()),
    Column("position", BigInteger, nullable=False),
    Index("ix_experiment_exposures_member_id", "member_id"),
)

experiment_clicks = Table(
    "experiment_clicks",
    metadata,
    Column("experiment_id", String(36), primary_key=True),
    Column("member_id", String(36), primary_key=True),
    Column("product_id", String(100), primary_key=True),
    Column("last_clicked_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_experiment_clicks_member_product", "member_id", "product_id"),
)

experiment_orders = Table(
    "experiment_orders",
    metadata,
    Column("order_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    # {product_id: quantity x unit price, summed over the order's lines of that product}
    Column("product_totals", JSONType, nullable=False),
    Column("placed_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_experiment_orders_member_id", "member_id"),
)

EXPERIMENT_TABLES = (experiments, experiment_variant_results, experiment_exposures,
                     experiment_clicks, experiment_orders)
