"""Payment provider callbacks: `POST /webhooks/payments/{provider}`, signed, recorded once.

The provider signs a timestamp and the raw body with its shared secret, exactly as
carriers do (api/signing.py). The body is a JSON object:

    {"event_id": "evt_1", "reference": "pay_…", "outcome": "succeeded" | "failed",
     "amount": 12900, "currency": "CNY", "occurred_at": "2026-12-04T10:00:00+08:00",
     "failure_reason": "card declined"}            # failure_reason: optional

Answers, as the carrier webhook: 202 `{"accepted": true, "duplicate": …, "recorded": …}`;
400 malformed body; 401 unsigned, wrongly signed or stale; 404 unknown provider or payment
reference; 409 the event id was recorded with another body, or the order cannot take it
(already paid, cancelled); 413 body over 64 KiB; 422 a value out of range. Refusals record
nothing.

`deliver` is the whole check-and-record path without HTTP, so the demo seed and
`patron payments simulate` (in-process) go through the same verification and service code
as a provider's request; the Starlette handler only reads the body and answers.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.payments import MAX_AMOUNT, Outcome, ProviderCallback
from api.runtime import Runtime
from api.signing import SignatureError, signed_headers, verify
from api.webhook_bodies import (
    WebhookError,
    invalid,
    moment,
    parse_object,
    read_body,
    text,
    whole_number,
)
from domain.errors import DomainError, ErrorCode
from domain.metadata import Channel, EventMetadata, Role

log = logging.getLogger("patron.payments")

_STATUS = {ErrorCode.NOT_FOUND: 404, ErrorCode.IDEMPOTENCY_CONFLICT: 409,
           ErrorCode.INVALID_TRANSITION: 409, ErrorCode.CONFLICT: 409}


def callback_body(event_id: str, reference: str, outcome: str, amount: int, currency: str,
                  occurred_at: datetime, failure_reason: str | None = None) -> bytes:
    """The body a provider sends: what senders (CLI, demo, tests) put on the wire."""
    payload: dict[str, Any] = {
        "event_id": event_id, "reference": reference, "outcome": outcome, "amount": amount,
        "currency": currency, "occurred_at": occurred_at.isoformat(),
    }
    if failure_reason:
        payload["failure_reason"] = failure_reason
    return json.dumps(payload, separators=(",", ":")).encode()


def parse_callback(provider: str, body: bytes) -> ProviderCallback:
    payload = parse_object(body)
    event_id = text(payload, "event_id", required=True, max_length=100)
    reference = text(payload, "reference", required=True, max_length=100)
    outcome = text(payload, "outcome", required=True, max_length=20)
    amount = whole_number(payload, "amount", minimum=0, maximum=MAX_AMOUNT)
    currency = text(payload, "currency", required=True, max_length=3)
    occurred_at = moment(payload, "occurred_at", required=True)
    failure_reason = text(payload, "failure_reason", required=False, max_length=200)
    assert event_id and reference and outcome and currency and occurred_at
    if outcome not in (Outcome.SUCCEEDED, Outcome.FAILED):
        invalid("outcome must be succeeded or failed", "outcome")
    if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
        invalid("currency must be a three-letter ISO 4217 code", "currency")
    return ProviderCallback(provider=provider, event_id=event_id, reference=reference,
                            outcome=outcome, amount=amount, currency=currency.upper(),
                            occurred_at=occurred_at, failure_reason=failure_reason)


def deliver(runtime: Runtime, provider: str, headers: Mapping[str, str], body: bytes,
            request_id: str | None = None) -> dict[str, Any]:
    """Verify and record one callback; returns the 202 answer or raises WebhookError."""
    provider = provider.lower()
    secret = runtime.settings.payment_secret(provider)
    if secret is None:
        raise WebhookError(404, "UNKNOWN_PROVIDER",
                           f"no payment provider {provider!r} is configured")
    try:
        verify(secret, headers, body)
    except SignatureError as refusal:
        raise WebhookError(401, refusal.code, refusal.message) from None
    callback = parse_callback(provider, body)
    meta = EventMetadata(
        actor_id=f"provider:{provider}", actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
        correlation_id=f"payment:{callback.reference}",
        causation_id=f"{provider}:{callback.event_id}"[:100],
        request_id=(request_id or uuid.uuid4().hex)[:100],
    )
    try:
        settled = runtime.payments.settle(callback, meta)
    except DomainError as error:
        status = _STATUS.get(error.code, 422)
        code = {404: "UNKNOWN_PAYMENT", 409: "CONFLICT"}.get(status, error.code.value)
        raise WebhookError(status, code, error.message, error.field) from None
    # Read-your-writes for the member: their next query sees the payment.
    runtime.writes.record(settled.member_id, settled.result.position)
    return {"accepted": True, "duplicate": settled.duplicate, "recorded": settled.recorded,
            "position": settled.result.position}


def deliver_signed(runtime: Runtime, provider: str, body: bytes) -> dict[str, Any]:
    """In-process delivery signed now with the provider's secret, as the provider would."""
    secret = runtime.settings.payment_secret(provider)
    if secret is None:
        raise WebhookError(404, "UNKNOWN_PROVIDER",
                           f"no payment provider {provider!r} is configured")
    return deliver(runtime, provider, signed_headers(secret, body), body)


async def payment_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.holder.runtime
    provider = request.path_params["provider"]
    try:
        if runtime.settings.payment_secret(provider.lower()) is None:
            raise WebhookError(404, "UNKNOWN_PROVIDER",
                               f"no payment provider {provider.lower()!r} is configured")
        body = await read_body(request)
        answer = await run_in_threadpool(
            deliver, runtime, provider, dict(request.headers), body,
            request.headers.get("x-request-id"),
        )
    except WebhookError as refusal:
        log.info("payment callback from %s refused: %s %s", provider[:40], refusal.status,
                 refusal.code)
        return refusal.response()
    return JSONResponse(answer, status_code=202)
