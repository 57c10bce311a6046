"""Read-model tables for after-sales cases: the work queue, each case's timeline, and KPIs.

They live on the shared `metadata`, like every read model, so one Alembic environment sees
them; migration 0004 creates them, and a change here needs a new migration.

No personal data lives here. What a member or an agent writes about the member (the
reason's detail, evidence, messages, comments, inspection and follow-up notes, a
withdrawal's reason, and the agents' free-text notes on approvals and resolutions) stays
in the events; these tables keep only the facts a queue, an audit trail and a KPI report
need, so erasing a member needs no clean-up here.

Two projections own them: "case_queue" (`case_queue`, `case_timeline`) and "service_kpis"
(`service_kpis`), so a slow KPI rebuild never holds the agents' queue back. Times are UTC.
"""

from __future__ import annotations

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

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

# -- the queue (projection "case_queue") ----------------------------------------------------

case_queue = Table(
    "case_queue",
    metadata,
    Column("case_id", String(36), primary_key=True),
    # "AS-261122-KOF6G577": what a member reads out on the phone.
    Column("case_number", String(32), nullable=False),
    Column("order_id", String(36), nullable=False),
    Column("member_id", String(36), nullable=False),
    # return | exchange | repair | refund_only | reissue
    Column("case_type", String(20), nullable=False),
    # One of the configured reason names (never the member's free-text detail).
    Column("reason", String(100), nullable=False),
    # [{line_id, quantity}]
    Column("lines", JSONType, nullable=False),
    Column("preferred_outcome", String(20)),
    # requested | under_review | approved | rejected | awaiting_return | received |
    # inspected | resolved | closed | withdrawn
    Column("state", String(20), nullable=False),
    # The member's tier when the case was opened (it set the first-review deadline).
    Column("tier", String(20), nullable=False),
    # The team the case is routed to now (reassignment may move it).
    Column("team", String(60), nullable=False),
    Column("assignee", String(100)),
    Column("opened_at", UtcDateTime(), nullable=False),
    # member | agent | admin: who opened it.
    Column("opened_by_role", String(20), nullable=False),
    Column("first_review_due", UtcDateTime(), nullable=False),
    Column("first_reviewed_at", UtcDateTime()),
    # The first message from staff.
    Column("first_response_at", UtcDateTime()),
    Column("resolution_due", UtcDateTime(), nullable=False),
    Column("resolved_at", UtcDateTime()),
    Column("closed_at", UtcDateTime()),
    # refunded | exchanged | repaired | reissued, once resolved.
    Column("outcome", String(20)),
    # {refund_id, amount, currency} for a refund resolution.
    Column("refund", JSONType),
    # The parcel a resolution sends (exchange, repair, reissue).
    Column("replacement_shipment_id", String(36)),
    # The return parcel and its label.
    Column("return_shipment_id", String(36)),
    Column("return_carrier", String(40)),
    Column("return_tracking_number", String(60)),
    Column("label_url", String(500)),
    # confirmed | not_confirmed; restock | refurbish | scrap.
    Column("inspection_result", String(20)),
    Column("disposition", String(20)),
    # Recorded by the scheduled SLA check (never computed from a clock here).
    Column("first_review_breached", Boolean, nullable=False),
    Column("resolution_breached", Boolean, nullable=False),
    Column("breached", Boolean, nullable=False),
    # While the case is open: the deadline it works towards now (first review until it is
    # first reviewed, then resolution). NULL once it is no longer open. "Urgency" order.
    Column("next_due_at", UtcDateTime()),
    Column("follow_up_scheduled_for", UtcDateTime()),
    # satisfied | not_satisfied | unreachable
    Column("follow_up_outcome", String(20)),
    # {attitude, ability, efficiency, category, at}: never the member's comment.
    Column("rating", JSONType),
    Column("message_count", Integer, nullable=False),
    Column("last_message_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    # Not unique: numbers are derived from ids, and a (very unlikely) repeat must not stop
    # the projection; a lookup by number then shows both cases.
    Index("ix_case_queue_case_number", "case_number"),
    Index("ix_case_queue_member_id", "member_id"),
    Index("ix_case_queue_order_id", "order_id"),
    Index("ix_case_queue_state", "state"),
    Index("ix_case_queue_team", "team"),
    Index("ix_case_queue_assignee", "assignee"),
    Index("ix_case_queue_next_due_at", "next_due_at"),
    Index("ix_case_queue_opened_at", "opened_at"),
)

# One row per event of a case: the audit trail agents and members see.
case_timeline = Table(
    "case_timeline",
    metadata,
    Column("case_id", String(36), primary_key=True),
    # The event's originator_version: the order of the case's history.
    Column("version", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    # opened, assigned, approved, rejected, return_label_issued, return_received,
    # inspected, resolved, withdrawn, closed, message_posted, sla_breached,
    # follow_up_scheduled, follow_up_recorded, rated
    Column("kind", String(30), nullable=False),
    # The case's state after the event.
    Column("state", String(20), nullable=False),
    Column("actor_id", String(100), nullable=False),
    Column("actor_role", String(20), nullable=False),
    # Non-personal facts of the event only (see projections/case_queue.py).
    Column("detail", JSONType, nullable=False),
    Column("position", BigInteger, nullable=False),
)

# -- KPI facts (projection "service_kpis") --------------------------------------------------

# One fact row per case: durations measured from opening, breaches and the rating, so a
# KPI report over any range of opening days is one scan of these rows.
service_kpis = Table(
    "service_kpis",
    metadata,
    Column("case_id", String(36), primary_key=True),
    # The case's team now (kept in step with reassignments).
    Column("team", String(60), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("case_type", String(20), nullable=False),
    Column("opened_at", UtcDateTime(), nullable=False),
    # The UTC day of opening: the "by day" grouping.
    Column("opened_on", Date, nullable=False),
    # Opening → first staff message / first review / resolution, in seconds.
    Column("first_response_seconds", Float),
    Column("first_review_seconds", Float),
    Column("resolution_seconds", Float),
    Column("resolved_at", UtcDateTime()),
    Column("first_review_breached", Boolean, nullable=False),
    Column("resolution_breached", Boolean, nullable=False),
    # The member's rating (1-5 each) and its category, once rated.
    Column("attitude", Integer),
    Column("ability", Integer),
    Column("efficiency", Integer),
    Column("category", String(20)),
    Column("rated_at", UtcDateTime()),
    Column("position", BigInteger, nullable=False),
    Index("ix_service_kpis_opened_at", "opened_at"),
)
