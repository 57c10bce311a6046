"""Outbound delivery of queued notices: the default recorder, signed webhooks, retries.

Rows are queued straight into `notification_outbox` (what the notifications projection
writes), so each test controls exactly what is due. Webhooks are posted to a real HTTP
server on 127.0.0.1, and time moves only when a test moves the dispatcher's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from api.outbound import (
    DeliveryError,
    OutboundDispatcher,
    OutboxRecorder,
    WebhookDelivery,
    backoff,
    body_of,
    deactivate_webhook,
    register_webhook,
)
from api.signing import verify
from domain.clock import AdjustableClock
from projections.database import DatabaseConfig
from projections.shipping_tables import notification_outbox

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = DatabaseConfig(database_url).create_sync_engine()
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> AdjustableClock:
    return AdjustableClock(NOW)


def queue(engine: Engine, count: int, created_at: datetime = NOW,
          prefix: str = "ship") -> list[tuple[str, str]]:
    """Pending rows as the notifications projection writes them; returns their keys."""
    keys = []
    with engine.begin() as conn:
        for n in range(count):
            notification_id, channel = f"{prefix}-{n:03d}:1", ("sms", "email")[n % 2]
            conn.execute(insert(notification_outbox).values(
                notification_id=notification_id, channel=channel, member_id="member-1",
                payload={"notification_id": notification_id, "channel": channel,
                         "member_id": "member-1", "topic": "shipment.delivered",
                         "title": "Your parcel was delivered", "body": f"Parcel {n} — ✓"},
                status="pending", attempts=0, next_attempt_at=created_at,
                created_at=created_at,
            ))
            keys.append((notification_id, channel))
    return keys


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(notification_outbox).order_by(notification_outbox.c.notification_id,
                                                 notification_outbox.c.channel))]


def as_utc(value: datetime | None) -> datetime | None:
    return None if value is None else (value if value.tzinfo else value.replace(tzinfo=UTC))


# -- a receiving server ---------------------------------------------------------------------


@dataclass
class Receiver:
    """A local HTTP endpoint that records requests and answers with scripted statuses."""

    statuses: list[int] = field(default_factory=list)  # consumed in order; then 204
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API names it so
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.lock:
                received.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(received.answer())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/patron"
    yield received
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- tests ----------------------------------------------------------------------------------


def test_the_outbox_recorder_marks_due_rows_sent_once(
    engine: Engine, clock: AdjustableClock
) -> None:
    queue(engine, 3)
    queue(engine, 1, created_at=NOW + timedelta(minutes=5), prefix="later")
    dispatcher = OutboundDispatcher(engine, [OutboxRecorder(engine, clock)], clock)
    assert dispatcher.dispatch_due() == 3
    assert dispatcher.dispatch_due() == 0
    by_status = {r["notification_id"]: r for r in rows(engine)}
    for n in range(3):
        row = by_status[f"ship-{n:03d}:1"]
        assert (row["status"], row["attempts"], row["claimed_by"]) == ("sent", 1, None)
        assert as_utc(row["sent_at"]) == NOW
    assert by_status["later-000:1"]["status"] == "pending"  # not due yet
    clock.advance(timedelta(minutes=5))
    assert dispatcher.dispatch_due() == 1


def test_old_rows_expire_instead_of_being_sent(engine: Engine, clock: AdjustableClock) -> None:
    """A projection catching up on last month's events must not message anyone about them."""
    queue(engine, 2, created_at=NOW - timedelta(days=2))
    queue(engine, 1, prefix="fresh")
    dispatcher = OutboundDispatcher(engine, [OutboxRecorder(engine, clock)], clock)
    assert dispatcher.dispatch_due() == 1
    assert sorted(r["status"] for r in rows(engine)) == ["expired", "expired", "sent"]


def test_webhooks_get_the_payload_signed_with_their_secret(
    engine: Engine, clock: AdjustableClock, receiver: Receiver
) -> None:
    keys = queue(engine, 2)
    register_webhook(engine, receiver.url, SECRET, now=NOW)
    retired = register_webhook(engine, receiver.url + "/old", "another-secret-1234", now=NOW)
    assert deactivate_webhook(engine, retired)
    webhooks = WebhookDelivery(engine, timeout=5.0)
    try:
        assert OutboundDispatcher(engine, [webhooks], clock).dispatch_due() == 2
    finally:
        webhooks.close()

    assert [r["path"] for r in receiver.requests] == ["/hooks/patron"] * 2
    payloads = {r["notification_id"]: r["payload"] for r in rows(engine)}
    for request, (notification_id, channel) in zip(receiver.requests, keys, strict=True):
        body, headers = request["body"], request["headers"]
        # HMAC-SHA256 over "<timestamp>." + body, which the receiver verifies as we do.
        signed = headers["X-Patron-Timestamp"].encode() + b"." + body
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert headers["X-Patron-Signature"] == f"sha256={expected}"
        verify(SECRET, headers, body)
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Patron-Delivery"] == f"{notification_id}:{channel}"
        assert json.loads(body) == payloads[notification_id]
        assert body == body_of(payloads[notification_id])
    assert {r["status"] for r in rows(engine)} == {"sent"}


def test_a_failing_endpoint_is_retried_with_back_off_then_given_up(
    engine: Engine, clock: AdjustableClock, receiver: Receiver
) -> None:
    queue(engine, 1)
    receiver.statuses = [500] * 20
    register_webhook(engine, receiver.url, SECRET, now=NOW)
    webhooks = WebhookDelivery(engine, timeout=5.0)
    dispatcher = OutboundDispatcher(engine, [webhooks], clock, max_attempts=8)
    try:
        for attempt in range(1, 9):
            assert dispatcher.dispatch_due() == 0
            (row,) = rows(engine)
            assert row["attempts"] == attempt
            assert "HTTP 500" in row["last_error"] and row["claimed_by"] is None
            if attempt < 8:
                wait = timedelta(seconds=2 ** attempt)
                assert row["status"] == "pending"
                assert as_utc(row["next_attempt_at"]) == clock.now() + wait
                # Not due a moment before the back-off ends: nothing is sent then.
                clock.advance(wait - timedelta(milliseconds=1))
                assert dispatcher.dispatch_due() == 0
                assert len(receiver.requests) == attempt
                clock.advance(timedelta(milliseconds=1))
        (row,) = rows(engine)
        assert (row["status"], row["next_attempt_at"]) == ("failed", None)
        clock.advance(timedelta(days=1))
        assert dispatcher.dispatch_due() == 0
        assert len(receiver.requests) == 8
    finally:
        webhooks.close()


def test_an_endpoint_that_recovers_gets_the_row_and_back_off_is_capped(
    engine: Engine, clock: AdjustableClock, receiver: Receiver
) -> None:
    queue(engine, 1)
    receiver.statuses = [503, 500]
    register_webhook(engine, receiver.url, SECRET, now=NOW)
    webhooks = WebhookDelivery(engine, timeout=5.0)
    dispatcher = OutboundDispatcher(engine, [webhooks], clock)
    try:
        assert dispatcher.dispatch_due() == 0
        clock.advance(timedelta(seconds=2))
        assert dispatcher.dispatch_due() == 0
        clock.advance(timedelta(seconds=4))
        assert dispatcher.dispatch_due() == 1
    finally:
        webhooks.close()
    (row,) = rows(engine)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 11, 12, 40)] == [
        2, 4, 8, 2048, 3600, 3600]


def test_without_webhooks_the_outbox_alone_carries_the_notices(
    engine: Engine, clock: AdjustableClock
) -> None:
    """The runtime's chain: webhooks if any are registered, then the outbox record."""
    queue(engine, 2)
    webhooks = WebhookDelivery(engine)
    try:
        dispatcher = OutboundDispatcher(engine, [webhooks, OutboxRecorder(engine, clock)], clock)
        assert dispatcher.dispatch_due() == 2
    finally:
        webhooks.close()
    assert {(r["status"], r["attempts"]) for r in rows(engine)} == {("sent", 1)}


def test_a_required_or_unreachable_webhook_is_a_failure_to_retry(
    engine: Engine, clock: AdjustableClock
) -> None:
    queue(engine, 1)
    webhooks = WebhookDelivery(engine, timeout=0.5, require_webhook=True)
    dispatcher = OutboundDispatcher(engine, [webhooks], clock)
    try:
        assert dispatcher.dispatch_due() == 0
        (row,) = rows(engine)
        assert "no active webhook" in row["last_error"]
        with pytest.raises(DeliveryError):
            webhooks.deliver(row)
        register_webhook(engine, "http://127.0.0.1:9/closed", SECRET, now=NOW)
        clock.advance(timedelta(seconds=2))
        assert dispatcher.dispatch_due() == 0
        (row,) = rows(engine)
        assert row["attempts"] == 2 and "ConnectError" in row["last_error"]
    finally:
        webhooks.close()


def test_webhook_registration_is_checked(engine: Engine) -> None:
    with pytest.raises(ValueError):
        register_webhook(engine, "ftp://example.com/hook", SECRET)
    with pytest.raises(ValueError):
        register_webhook(engine, "/relative", SECRET)
    with pytest.raises(ValueError):
        register_webhook(engine, "https://example.com/hook", "short")
    assert not deactivate_webhook(engine, "no-such-webhook")
    with pytest.raises(ValueError):
        OutboundDispatcher(engine, [], None)
    with pytest.raises(ValueError):
        OutboundDispatcher(engine, [Recording()], None, max_attempts=0)


class Recording:
    """A transport that remembers what it delivered, slowly enough for claims to overlap."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def deliver(self, row: Any) -> None:
        time.sleep(0.002)
        with self.lock:
            self.delivered.append((row["notification_id"], row["channel"]))


def test_two_dispatchers_never_deliver_a_row_twice(
    engine: Engine, clock: AdjustableClock
) -> None:
    keys = queue(engine, 60)
    transport = Recording()
    dispatchers = [OutboundDispatcher(engine, [transport], clock) for _ in range(2)]
    barrier = threading.Barrier(2)
    sent: list[int] = []
    errors: list[BaseException] = []

    def run(dispatcher: OutboundDispatcher) -> None:
        try:
            barrier.wait()
            while count := dispatcher.dispatch_due(limit=7):
                sent.append(count)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    # Whatever one dispatcher still held when the other ran dry, it delivered itself.
    OutboundDispatcher(engine, [transport], clock).dispatch_due()
    assert len(transport.delivered) == len(set(transport.delivered))
    assert sorted(transport.delivered) == sorted(keys)
    assert sum(sent) == 60
    assert {(r["status"], r["attempts"]) for r in rows(engine)} == {("sent", 1)}


def test_rows_held_by_a_dispatcher_that_died_are_delivered_after_its_claim(
    engine: Engine, clock: AdjustableClock
) -> None:
    queue(engine, 3)
    crashed = OutboundDispatcher(engine, [Recording()], clock, claim_for=timedelta(minutes=5))
    assert len(crashed._claim(clock.now(), "dead-run", 10)) == 3  # claimed, never finished
    transport = Recording()
    survivor = OutboundDispatcher(engine, [transport], clock, max_age=None)
    assert survivor.dispatch_due() == 0
    clock.advance(timedelta(minutes=5))
    assert survivor.dispatch_due() == 3
    assert len(transport.delivered) == 3
