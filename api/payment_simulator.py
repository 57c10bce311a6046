"""Acting as the payment provider, for development, the demo seed and benchmarks.

`simulate` builds the callback a provider would send for an order's payment attempt, signs
it with that provider's secret (api/signing.py) and delivers it: over HTTP to a running
server (`url`), or in-process through `deliver`, the same verification and service code the
webhook runs. Nothing here records a payment by any other path.

Only providers the server knows can be simulated: the built-in `simulator` (enabled by
PATRON_PAYMENT_SIMULATOR, default on with SQLite) or one configured in
PATRON_PAYMENT_SECRETS, whose secret the caller then holds as the provider does.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any
from uuid import UUID

import httpx

from api.payment_webhooks import callback_body, deliver_signed
from api.payments import Outcome, latest_attempt
from api.runtime import Runtime
from api.signing import signed_headers
from api.webhook_bodies import WebhookError
from domain.errors import DomainError, ErrorCode, NotFoundError, ValidationError
from domain.metadata import EventMetadata


class SimulationError(DomainError):
    """The callback could not be built or was refused; the message says why. A domain
    error, so callers that carry on after a rule says no (the demo) do here too."""

    code = ErrorCode.CONFLICT


def callback_for(runtime: Runtime, order_id: UUID, outcome: str, amount: int | None = None,
                 reference: str | None = None, failure_reason: str | None = None,
                 ) -> tuple[str, bytes]:
    """(provider, body) of the callback for the order's latest attempt (or `reference`)."""
    if outcome not in (Outcome.SUCCEEDED, Outcome.FAILED):
        raise SimulationError("outcome must be succeeded or failed")
    try:
        order = runtime.orders.get(order_id)
    except NotFoundError:
        raise SimulationError(f"order {order_id} not found") from None
    attempt = (order.attempts.get(reference) if reference else latest_attempt(order))
    if attempt is None:
        raise SimulationError(
            f"order {order_id} has no payment attempt"
            + (f" {reference!r}" if reference else "; ask to pay first (payOrder)")
        )
    body = callback_body(
        f"evt_{uuid.uuid4().hex}", attempt["reference"], outcome,
        attempt["amount"] if amount is None else amount, order.currency,
        runtime.clock.now().astimezone(UTC),
        failure_reason or ("declined (simulated)" if outcome == Outcome.FAILED else None),
    )
    return str(attempt["provider"]), body


def simulate(runtime: Runtime, order_id: UUID, outcome: str, amount: int | None = None, *,
             reference: str | None = None, failure_reason: str | None = None,
             url: str | None = None) -> tuple[int, dict[str, Any]]:
    """Send the provider's signed callback; returns (HTTP status, answer)."""
    provider, body = callback_for(runtime, order_id, outcome, amount, reference,
                                  failure_reason)
    secret = runtime.settings.payment_secret(provider)
    if secret is None:
        raise SimulationError(f"payment provider {provider!r} is not configured here")
    if url is not None:
        target = f"{url.rstrip('/')}/webhooks/payments/{provider}"
        try:
            response = httpx.post(target, content=body, timeout=10.0, headers={
                "Content-Type": "application/json", **signed_headers(secret, body)})
        except httpx.HTTPError as error:
            raise SimulationError(f"{target}: {type(error).__name__}: {error}") from None
        try:
            answer: dict[str, Any] = response.json()
        except ValueError:
            answer = {"error": {"message": response.text[:200]}}
        return response.status_code, answer
    try:
        return 202, deliver_signed(runtime, provider, body)
    except WebhookError as refusal:
        error: dict[str, Any] = {"code": refusal.code, "message": refusal.message}
        if refusal.field:
            error["field"] = refusal.field
        return refusal.status, {"error": error}


def pay_in_process(runtime: Runtime, order_id: UUID, method: str, key: str,
                   meta: EventMetadata, outcome: str = Outcome.SUCCEEDED,
                   failure_reason: str | None = None) -> dict[str, Any]:
    """A member asks to pay and the default provider answers with its signed callback:
    the whole production path, without HTTP. Raises unless the callback was accepted."""
    provider = runtime.settings.default_payment_provider
    if provider is None:
        raise ValidationError(
            "no payment provider is configured: set PATRON_PAYMENT_SIMULATOR=true or "
            "PATRON_PAYMENT_SECRETS", "provider",
        )
    _result, attempt = runtime.payments.request(order_id, method, provider, key, meta)
    status, answer = simulate(runtime, order_id, outcome, reference=attempt["reference"],
                              failure_reason=failure_reason)
    if status != 202:
        raise SimulationError(f"the provider callback was refused: {status} {answer}")
    return answer
