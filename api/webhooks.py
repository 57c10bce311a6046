"""Carrier webhooks: `POST /webhooks/carriers/{carrier}` with an HMAC-signed tracking update.

A carrier signs a timestamp and the raw body with its shared secret (api/signing.py:
`X-Patron-Timestamp` and `X-Patron-Signature: sha256=<hex>`); a timestamp outside the
replay window is refused. Unsigned, wrongly signed, stale, oversized or malformed requests
are refused with a clear HTTP error and record nothing (api/webhook_bodies.py). Carriers
retry, so the same update may arrive twice (recorded once, by its `update_id`) and updates
may arrive out of order (the shipment keeps its timeline in the order things happened).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.runtime import Runtime
from api.signing import SignatureError, verify
from api.webhook_bodies import WebhookError, moment, parse_object, read_body, text
from domain.errors import DomainError, ErrorCode
from domain.metadata import Channel, EventMetadata, Role
from projections.shipping_tables import shipment_tracking

log = logging.getLogger("patron.webhooks")


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return WebhookError(status, code, message, field).response()


async def carrier_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.holder.runtime
    carrier = request.path_params["carrier"].lower()
    secret = runtime.settings.carrier_secrets.get(carrier)
    if secret is None:
        return error(404, "UNKNOWN_CARRIER", f"no webhook is configured for carrier {carrier!r}")
    try:
        body = await read_body(request)
        verify(secret, request.headers, body)
    except WebhookError as refusal:
        return refusal.response()
    except SignatureError as refusal:
        return error(401, refusal.code, refusal.message)
    try:
        payload = parse_object(body)
        update_id = text(payload, "update_id", required=True, max_length=100)
        tracking_number = text(payload, "tracking_number", required=True, max_length=100)
        # Carriers write statuses either way (the README lists them in upper case).
        status = (text(payload, "status", required=True, max_length=64) or "").lower()
        location = text(payload, "location", required=False, max_length=200)
        note = text(payload, "note", required=False)
        occurred_at = moment(payload, "occurred_at", required=True)
        eta = moment(payload, "eta", required=False)
    except WebhookError as refusal:
        log.info("carrier %s webhook refused: %s %s", carrier, refusal.status, refusal.code)
        return refusal.response()
    assert update_id and tracking_number and status and occurred_at

    async with runtime.async_engine.connect() as conn:
        shipment_id = await conn.scalar(
            select(shipment_tracking.c.shipment_id).where(
                (shipment_tracking.c.carrier == carrier)
                & (shipment_tracking.c.tracking_number == tracking_number)
            )
        )
    if shipment_id is None:
        return error(404, "UNKNOWN_SHIPMENT",
                     f"no {carrier} shipment with tracking number {tracking_number!r}")
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    meta = EventMetadata(
        actor_id=f"carrier:{carrier}", actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
        correlation_id=f"carrier:{carrier}:{tracking_number}",
        causation_id=update_id[:100], request_id=request_id[:100],
    )
    try:
        result = await run_in_threadpool(
            runtime.shipping.record_tracking, uuid.UUID(shipment_id), update_id, status,
            occurred_at, location, note, eta, meta,
        )
    except DomainError as refusal:
        # The same update id with a different content is a conflict, not a bad value.
        status_code = 409 if refusal.code is ErrorCode.IDEMPOTENCY_CONFLICT else 422
        return error(status_code, refusal.code.value, refusal.message, refusal.field)
    return JSONResponse(
        {"accepted": True, "duplicate": result.position is None, "position": result.position},
        status_code=202,
    )
