"""Read-model tables for shipments and member notifications, and the notification outbox.

They live on the shared `metadata`, like every read model, so one Alembic environment sees
them; migration 0003 creates them, and a change here needs a new migration.

No personal data lives here: a shipment's address, printed name and gift message stay in
the (encrypted) events and never reach a read model, so crypto-shredding a member needs
no clean-up in these tables beyond what `Member.Erased` does to the notifications.

Two kinds of table, with different lifecycles:

* projection tables (`shipment_tracking`, `notifications`, `notification_consents`,
  `notification_shipments`, `notification_erasures`) are derived from events only and are
  emptied and replayed by a rebuild;
* `notification_outbox` and `notification_webhooks` are *not* derived state: the outbox
  records what was (or is to be) sent to the outside world, so a rebuild must never empty
  it (that would send every notice again), and webhooks are registered by operators.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from projections.tables import JSONType, metadata
from projections.timestamps import UtcDateTime

# -- shipments ------------------------------------------------------------------------------

shipment_tracking = Table(
    "shipment_tracking",
    metadata,
    Column("shipment_id", String(36), primary_key=True),
    Column("order_id", String(36), nullable=False),
    Column("member_id", String(36), nullable=False),
    Column("carrier", String(40), nullable=False),
    Column("tracking_number", String(60), nullable=False),
    # home_delivery | pickup_point | scheduled | return_drop_off (a return parcel)
    Column("method", String(20), nullable=False),
    # outbound (to the member) | inbound (a return parcel, back to the shop)
    Column("direction", String(10), nullable=False, server_default="outbound"),
    # The after-sales case that sends this parcel or that it is the return parcel of.
    Column("case_id", String(36)),
    # standard | expedited
    Column("speed", String(20), nullable=False),
    Column("priority_dispatch", Boolean, nullable=False),
    Column("pickup_point", String(100)),
    # {start, end} (ISO strings) for scheduled delivery.
    Column("window", JSONType),
    # [{line_id, quantity}]
    Column("items", JSONType, nullable=False),
    # {gift_wrap, eco}: the public part of the packaging choice only.
    Column("packaging", JSONType, nullable=False),
    # The aggregate's status: that of the latest update, but a final status is never
    # replaced by an older update arriving late.
    Column("status", String(30), nullable=False),
    # When the update that set the status happened (carrier time); NULL until tracked.
    Column("status_at", UtcDateTime()),
    Column("eta", UtcDateTime()),
    Column("promised_by", UtcDateTime(), nullable=False),
    # [{update_id, status, occurred_at, location, note, recorded_at}], in the order things
    # happened (sorted as the aggregate sorts them: occurred_at, then recorded_at).
    Column("timeline", JSONType, nullable=False),
    # none (never had one) | open | resolved (closed by a resolution or a final status).
    Column("exception_state", String(10), nullable=False),
    # [{kind, detail, at}]
    Column("open_exceptions", JSONType, nullable=False),
    # [{resolution, pickup_point, window, promised_by, exceptions: [kind], at}]
    Column("resolutions", JSONType, nullable=False),
    # {speed, courier_attitude, packaging_condition, comment, at} once rated.
    Column("rating", JSONType),
    Column("rated", Boolean, nullable=False),
    # {text, filed_at, answer, answered_at, answered_by, response_seconds} once filed.
    Column("complaint", JSONType),
    # The parcel this one replaces / the parcel that replaced this one (reship).
    Column("replaces", String(36)),
    Column("reshipped_as", String(36)),
    Column("created_at", UtcDateTime(), nullable=False),
    # The carrier time of the update that first made the status delivered or collected.
    Column("delivered_at", UtcDateTime()),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_shipment_tracking_order_id", "order_id"),
    Index("ix_shipment_tracking_member_id", "member_id"),
    Index("ix_shipment_tracking_status", "status"),
    Index("ix_shipment_tracking_exception_state", "exception_state"),
    Index("ix_shipment_tracking_rated", "rated"),
    Index("ix_shipment_tracking_case_id", "case_id"),
    # Carrier webhooks name a parcel by its carrier and tracking number.
    Index("ix_shipment_tracking_carrier_tracking_number", "carrier", "tracking_number",
          unique=True),
)

# -- notifications (projection "notifications") ---------------------------------------------

notifications = Table(
    "notifications",
    metadata,
    # "{shipment_id}:{version}": one notice per event, the same on every rebuild.
    Column("notification_id", String(100), primary_key=True),
    Column("member_id", String(36), nullable=False),
    # milestone | exception
    Column("kind", String(20), nullable=False),
    # shipment.label_created, shipment.picked_up, shipment.delivered, shipment.exception…
    Column("topic", String(60), nullable=False),
    Column("shipment_id", String(36), nullable=False),
    Column("order_id", String(36), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    # ["inbox", and each of "sms", "email", "app_push" consented to when it was recorded]
    Column("channels", JSONType, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("ix_notifications_member_id", "member_id"),
)

# The projection's own copy of marketing consents, so it never waits for another
# projection (member_profiles) to catch up, and a rebuild sees consents as they were.
notification_consents = Table(
    "notification_consents",
    metadata,
    Column("member_id", String(36), primary_key=True),
    # sms | email | app_push
    Column("channel", String(20), primary_key=True),
    Column("granted", Boolean, nullable=False),
    Column("changed_at", UtcDateTime(), nullable=False),
    Column("position", BigInteger, nullable=False),
)

# Later shipment events do not name the member: this remembers whom a parcel belongs to,
# and just enough of its tracking state to notify only when the status really changes.
notification_shipments = Table(
    "notification_shipments",
    metadata,
    Column("shipment_id", String(36), primary_key=True),
    Column("member_id", String(36), nullable=False),
    Column("order_id", String(36), nullable=False),
    Column("carrier", String(40), nullable=False),
    Column("tracking_number", String(60), nullable=False),
    Column("status", String(30), nullable=False),
    # The key (occurred_at, recorded_at) of the timeline entry that set `status`, as the
    # aggregate ranks them (domain.shipment.status_rank); NULL before the first update.
    Column("latest_occurred_at", String(64)),
    Column("latest_recorded_at", String(64)),
    Index("ix_notification_shipments_member_id", "member_id"),
)

# Members erased so far: no notice is recorded for them any more (their parcels may still
# move after the erasure).
notification_erasures = Table(
    "notification_erasures",
    metadata,
    Column("member_id", String(36), primary_key=True),
    Column("erased_at", UtcDateTime(), nullable=False),
)

# -- outbound (not rebuilt) -----------------------------------------------------------------

OUTBOX_PENDING = "pending"
OUTBOX_SENT = "sent"
OUTBOX_FAILED = "failed"
# Never sent: the member was erased before it went out.
OUTBOX_CANCELLED = "cancelled"
# Never sent: too old to be worth sending when a dispatcher first saw it (a projection
# catching up on old events must not message members about last year's parcels).
OUTBOX_EXPIRED = "expired"

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("notification_id", String(100), primary_key=True),
    # sms | email | app_push
    Column("channel", String(20), primary_key=True),
    Column("member_id", String(36), nullable=False),
    # What the outbound transport sends: {notification_id, channel, member_id, kind, topic,
    # title, body, shipment_id, order_id, created_at}. Emptied when the member is erased.
    Column("payload", JSONType, nullable=False),
    # pending | sent | failed | cancelled | expired
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    # Due time of the next attempt; while a dispatcher holds the row, the end of its claim.
    Column("next_attempt_at", UtcDateTime()),
    # The dispatcher run that holds the row: only it may record the outcome.
    Column("claimed_by", String(64)),
    Column("last_error", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    Index("ix_notification_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_notification_outbox_member_id", "member_id"),
)

notification_webhooks = Table(
    "notification_webhooks",
    metadata,
    Column("webhook_id", String(36), primary_key=True),
    Column("url", String(2000), nullable=False),
    # The HMAC key receivers verify `X-Patron-Signature` with (a shared secret, so stored).
    Column("secret", String(200), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)
