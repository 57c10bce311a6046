"""Outbound notifications: moving rows of `notification_outbox` to the outside world.

The notifications projection only *queues* messages (pending outbox rows, written in the
same transaction as the inbox rows and the projection's position). Sending happens here,
outside any projection, so a slow or failing endpoint never holds up the read models and
a rebuild never sends anything twice.

A dispatcher claims due rows, hands each to its transports (`OutboundChannel`s) and
records the outcome. Claims are safe with several dispatchers (servers, cron): on
PostgreSQL a short `SELECT … FOR UPDATE SKIP LOCKED` transaction, on SQLite a conditional
`UPDATE` under the database's write lock. A claim is a lease stamped with the run's token;
only that run may record the outcome, and a dispatcher that dies mid-delivery leaves rows
that become due again when the lease ends. Delivery is therefore at least once: receivers
deduplicate by `notification_id` and `channel` (sent in the payload and in
`X-Patron-Delivery`).

Failures are retried with exponential back-off (2**attempts seconds, at most an hour) and
given up ("failed") after `max_attempts`. Rows older than `max_age` when first seen are
"expired" instead of sent: a projection catching up on old events (first deployment, long
outage) must not message members about long-finished parcels.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, and_, insert, select, tuple_, update

from api.signing import signed_headers
from domain.clock import Clock, SystemClock
from projections.shipping_tables import (
    OUTBOX_EXPIRED,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_SENT,
    notification_outbox,
    notification_webhooks,
)

log = logging.getLogger("patron.outbound")

DELIVERY_HEADER = "X-Patron-Delivery"
DEFAULT_MAX_ATTEMPTS = 8
MAX_BACKOFF = timedelta(hours=1)

Row = Mapping[str, Any]


class DeliveryError(Exception):
    """A transport could not deliver a row; the dispatcher will retry it later."""


class OutboundChannel(Protocol):
    """A transport: deliver one outbox row, or raise to have it retried."""

    def deliver(self, row: Row) -> None: ...


def _utc(moment: datetime) -> datetime:
    """SQLite stores datetimes without their offset: compare and store UTC everywhere."""
    return moment.astimezone(UTC)


def body_of(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact, key-sorted JSON."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after `attempts` failed ones: 2, 4, 8 … seconds, at most 1h."""
    if attempts >= 12:  # 2**12 s is past the cap already; avoids huge powers
        return MAX_BACKOFF
    return min(timedelta(seconds=2 ** attempts), MAX_BACKOFF)


# -- transports ----------------------------------------------------------------------------


class OutboxRecorder:
    """The default transport: the row itself is the message, for an external relay.

    Marking it sent means "handed over by being written to the outbox table"; a relay (or
    a database change feed) reads sent rows from there.
    """

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()

    def deliver(self, row: Row) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(notification_outbox)
                .where(
                    (notification_outbox.c.notification_id == row["notification_id"])
                    & (notification_outbox.c.channel == row["channel"])
                    & (notification_outbox.c.status == OUTBOX_PENDING)
                )
                .values(status=OUTBOX_SENT, sent_at=_utc(self.clock.now()))
            )


class WebhookDelivery:
    """POSTs each row's payload to every active registered webhook, signed with its secret.

    Every webhook is tried on every attempt; if any fails, the row is retried as a whole,
    so a webhook that already accepted it may see it again (hence `X-Patron-Delivery`).

    With no active webhook there is nowhere to post, which is not a failure by default: a
    deployment without webhooks chains this with `OutboxRecorder` and relies on the outbox
    alone. `require_webhook=True` makes it one (rows wait and retry until one exists).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        timeout: float = 5.0,
        client: httpx.Client | None = None,
        require_webhook: bool = False,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.require_webhook = require_webhook
        # One pooled client: connections to the same receivers are reused across rows.
        # Redirects are not followed: a signed body goes only where it was registered.
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _webhooks(self) -> list[Row]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(notification_webhooks)
                    .where(notification_webhooks.c.active.is_(True))
                    .order_by(notification_webhooks.c.created_at,
                              notification_webhooks.c.webhook_id)
                )
            ]

    def deliver(self, row: Row) -> None:
        webhooks = self._webhooks()
        if not webhooks:
            if self.require_webhook:
                raise DeliveryError("no active webhook is registered")
            return
        body = body_of(row["payload"])
        delivery = f"{row['notification_id']}:{row['channel']}"
        errors: list[str] = []
        for webhook in webhooks:
            headers = {
                "Content-Type": "application/json",
                # The same scheme carriers and payment providers use to call us.
                **signed_headers(webhook["secret"], body),
                DELIVERY_HEADER: delivery,
            }
            try:
                response = self.client.post(webhook["url"], content=body, headers=headers,
                                            timeout=self.timeout)
            except httpx.HTTPError as error:
                errors.append(f"{webhook['url']}: {type(error).__name__}: {error}")
                continue
            if not 200 <= response.status_code < 300:
                errors.append(f"{webhook['url']}: HTTP {response.status_code}")
        if errors:
            raise DeliveryError("; ".join(errors))


def register_webhook(
    engine: Engine, url: str, secret: str, *, now: datetime | None = None
) -> str:
    """Register an endpoint for outbound notices; returns its id.

    Only http(s) URLs, and a secret long enough to make the signature mean something.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("a webhook URL must be an absolute http(s) URL")
    if len(secret) < 16:
        raise ValueError("a webhook secret must be at least 16 characters")
    webhook_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            insert(notification_webhooks).values(
                webhook_id=webhook_id, url=url, secret=secret, active=True,
                created_at=_utc(now or datetime.now(UTC)),
            )
        )
    return webhook_id


def deactivate_webhook(engine: Engine, webhook_id: str) -> bool:
    """Stop sending to a webhook (kept for the record); False if there is no such webhook."""
    with engine.begin() as conn:
        result = conn.execute(
            update(notification_webhooks)
            .where(notification_webhooks.c.webhook_id == webhook_id)
            .values(active=False)
        )
    return result.rowcount == 1


# -- the dispatcher -------------------------------------------------------------------------


class OutboundDispatcher:
    """Claims due outbox rows, delivers each through every channel, records the outcome."""

    def __init__(
        self,
        engine: Engine,
        channels: Sequence[OutboundChannel],
        clock: Clock | None = None,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        claim_for: timedelta = timedelta(minutes=5),
        max_age: timedelta | None = timedelta(days=1),
    ) -> None:
        if not channels:
            raise ValueError("a dispatcher needs at least one outbound channel")
        if max_attempts < 1 or claim_for <= timedelta(0):
            raise ValueError("max_attempts must be at least 1 and claim_for positive")
        self.engine = engine
        self.channels = list(channels)
        self.clock: Clock = clock or SystemClock()
        self.max_attempts = max_attempts
        self.claim_for = claim_for
        self.max_age = max_age

    def dispatch_due(self, limit: int = 100) -> int:
        """Deliver up to `limit` due rows; returns how many were sent."""
        now = _utc(self.clock.now())
        self._expire_old(now)
        token = uuid.uuid4().hex
        rows = self._claim(now, token, limit)
        sent = 0
        for row in rows:
            try:
                for channel in self.channels:
                    channel.deliver(row)
            except Exception as error:  # any transport failure: retry later, never crash
                log.warning("outbound %s/%s failed: %s", row["notification_id"],
                            row["channel"], error)
                self._failed(row, token, error)
            else:
                sent += self._sent(row, token)
        return sent

    # -- claiming ---------------------------------------------------------------------------

    def _expire_old(self, now: datetime) -> None:
        if self.max_age is None:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(notification_outbox)
                .where((notification_outbox.c.status == OUTBOX_PENDING)
                       & (notification_outbox.c.created_at < now - self.max_age)
                       & notification_outbox.c.claimed_by.is_(None))
                .values(status=OUTBOX_EXPIRED, last_error="too old to send",
                        next_attempt_at=None)
            )

    @staticmethod
    def _due(now: datetime) -> Any:
        return (notification_outbox.c.status == OUTBOX_PENDING) & (
            notification_outbox.c.next_attempt_at <= now
        )

    def _claim(self, now: datetime, token: str, limit: int) -> list[dict[str, Any]]:
        key = tuple_(notification_outbox.c.notification_id, notification_outbox.c.channel)
        lease = {"claimed_by": token, "next_attempt_at": now + self.claim_for}
        candidates = (
            select(notification_outbox.c.notification_id, notification_outbox.c.channel)
            .where(self._due(now))
            .order_by(notification_outbox.c.next_attempt_at,
                      notification_outbox.c.notification_id, notification_outbox.c.channel)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # Rows another dispatcher holds are skipped, not waited for.
                keys = conn.execute(candidates.with_for_update(skip_locked=True)).all()
                if keys:
                    conn.execute(
                        update(notification_outbox)
                        .where(key.in_([tuple(k) for k in keys]))
                        .values(**lease)
                    )
            else:
                # SQLite: the UPDATE takes the write lock first; its WHERE re-checks that the
                # row is still due, so of two dispatchers only one claims each row.
                for notification_id, channel in conn.execute(candidates).all():
                    conn.execute(
                        update(notification_outbox)
                        .where(and_(
                            notification_outbox.c.notification_id == notification_id,
                            notification_outbox.c.channel == channel,
                            self._due(now),
                        ))
                        .values(**lease)
                    )
            claimed = conn.execute(
                select(notification_outbox)
                .where(notification_outbox.c.claimed_by == token)
                .order_by(notification_outbox.c.next_attempt_at,
                          notification_outbox.c.notification_id, notification_outbox.c.channel)
            ).all()
        return [dict(r._mapping) for r in claimed]

    # -- outcomes ---------------------------------------------------------------------------

    def _held(self, row: Row, token: str) -> Any:
        return (
            (notification_outbox.c.notification_id == row["notification_id"])
            & (notification_outbox.c.channel == row["channel"])
            & (notification_outbox.c.claimed_by == token)
        )

    def _sent(self, row: Row, token: str) -> int:
        now = _utc(self.clock.now())
        with self.engine.begin() as conn:
            result = conn.execute(
                update(notification_outbox)
                # A transport (OutboxRecorder) may have marked it sent already.
                .where(self._held(row, token)
                       & notification_outbox.c.status.in_([OUTBOX_PENDING, OUTBOX_SENT]))
                .values(status=OUTBOX_SENT, attempts=row["attempts"] + 1, last_error=None,
                        claimed_by=None, next_attempt_at=None, sent_at=now)
            )
        return result.rowcount

    def _failed(self, row: Row, token: str, error: BaseException) -> None:
        now = _utc(self.clock.now())
        attempts = row["attempts"] + 1
        message = f"{type(error).__name__}: {error}"[:2000]
        if attempts >= self.max_attempts:
            values: dict[str, Any] = {"status": OUTBOX_FAILED, "next_attempt_at": None}
        else:
            values = {"next_attempt_at": now + backoff(attempts)}
        with self.engine.begin() as conn:
            conn.execute(
                update(notification_outbox)
                .where(self._held(row, token)
                       & (notification_outbox.c.status == OUTBOX_PENDING))
                .values(attempts=attempts, last_error=message, claimed_by=None, **values)
            )
