"""Carrier webhooks: `POST /webhooks/carriers/{carrier}` with an HMAC-signed tracking update.

A carrier signs the raw body with its shared secret (`X-Patron-Signature: sha256=<hex>`).
Unsigned, wrongly signed or malformed requests are refused with a clear HTTP error and
record nothing. Carriers retry, so the same update may arrive twice (recorded once, by its
`update_id`) and updates may arrive out of order (the shipment keeps its timeline in the
order things happened).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.runtime import Runtime
from domain.errors import DomainError
from domain.metadata import Channel, EventMetadata, Role
from projections.shipping_tables import shipment_tracking

log = logging.getLogger("patron.webhooks")

SIGNATURE_HEADER = "x-patron-signature"
MAX_BODY = 64 * 1024
REQUIRED = ("update_id", "tracking_number", "status", "occurred_at")


def sign(secret: str, body: bytes) -> str:
    """The signature a carrier sends: what senders (and tests) compute."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}},
                        status_code=status)


def _when(payload: dict[str, Any], field: str, required: bool) -> datetime | None:
    value = payload.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be an ISO-8601 time with a zone")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{field} must include a time zone")
    return moment


async def carrier_webhook(request: Request) -> Response:
    runtime: Runtime = request.app.state.holder.runtime
    carrier = request.path_params["carrier"].lower()
    secret = runtime.settings.carrier_secrets.get(carrier)
    if secret is None:
        return _error(404, "UNKNOWN_CARRIER", f"no webhook is configured for carrier {carrier!r}")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, "TOO_LARGE", f"the body must be at most {MAX_BODY} bytes")
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return _error(401, "UNSIGNED", f"sign the body with HMAC-SHA256 in {SIGNATURE_HEADER}")
    if not hmac.compare_digest(signature.strip(), sign(secret, body)):
        return _error(401, "BAD_SIGNATURE", "the signature does not match the body")
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("the body must be a JSON object")
        missing = [f for f in REQUIRED if not payload.get(f)]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        occurred_at = _when(payload, "occurred_at", required=True)
        eta = _when(payload, "eta", required=False)
        for field in ("update_id", "tracking_number", "status", "location", "note"):
            if payload.get(field) is not None and not isinstance(payload[field], str):
                raise ValueError(f"{field} must be a string")
    except ValueError as error:
        return _error(400, "MALFORMED", str(error))

    async with runtime.async_engine.connect() as conn:
        shipment_id = await conn.scalar(
            select(shipment_tracking.c.shipment_id).where(
                (shipment_tracking.c.carrier == carrier)
                & (shipment_tracking.c.tracking_number == payload["tracking_number"])
            )
        )
    if shipment_id is None:
        return _error(404, "UNKNOWN_SHIPMENT",
                      f"no {carrier} shipment with tracking number {payload['tracking_number']!r}")
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    meta = EventMetadata(
        actor_id=f"carrier:{carrier}", actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
        correlation_id=f"carrier:{carrier}:{payload['tracking_number']}",
        causation_id=str(payload["update_id"])[:100], request_id=request_id[:100],
    )
    try:
        result = await run_in_threadpool(
            runtime.shipping.record_tracking, uuid.UUID(shipment_id), payload["update_id"],
            payload["status"], occurred_at, payload.get("location"), payload.get("note"), eta,
            meta,
        )
    except DomainError as error:
        return _error(422, error.code.value, error.message, field=error.field)
    return JSONResponse(
        {"accepted": True, "duplicate": result.position is None, "position": result.position},
        status_code=202,
    )
