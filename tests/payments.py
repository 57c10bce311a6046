"""Paying orders in tests the way production does: a member asks (`payOrder`), then the
payment provider confirms with a signed callback to `POST /webhooks/payments/{provider}`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from api.signing import signed_headers
from tests.conftest import TEST_PAYMENT_PROVIDER, TEST_PAYMENT_SECRET
from tests.graphql import data, gql

REQUEST_PAYMENT = """
mutation Pay($input: PayOrderInput!) {
  payOrder(input: $input) {
    position
    attempt { reference provider method amount { amount currency } requestedAt }
    order { id state }
    userErrors { field message code }
  }
}
"""


async def request_payment(client: httpx.AsyncClient, order_id: str, token: str,
                          method: str = "ALIPAY", key: str | None = None) -> dict[str, Any]:
    """`payOrder` as the member: the payload (with its `attempt`), errors asserted absent."""
    body = await gql(client, REQUEST_PAYMENT, {"input": {
        "orderId": order_id, "method": method, "idempotencyKey": key or uuid.uuid4().hex,
    }}, token=token)
    payload: dict[str, Any] = data(body)["payOrder"]
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


def callback(reference: str, amount: int, outcome: str = "succeeded", *,
             event_id: str | None = None, currency: str = "CNY",
             failure_reason: str | None = None,
             occurred_at: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id or f"evt_{uuid.uuid4().hex}", "reference": reference,
        "outcome": outcome, "amount": amount, "currency": currency,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
    }
    if failure_reason:
        body["failure_reason"] = failure_reason
    return body


async def post_callback(client: httpx.AsyncClient, payload: Any = None, *,
                        raw: bytes | None = None, provider: str = TEST_PAYMENT_PROVIDER,
                        secret: str = TEST_PAYMENT_SECRET, timestamp: int | None = None,
                        headers: dict[str, str] | None = None) -> httpx.Response:
    """POST a callback signed as the provider signs it (override headers to forge)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **signed_headers(secret, body, timestamp),
            **(headers or {})}
    return await client.post(f"/webhooks/payments/{provider}", content=body, headers=sent)


async def pay_through_provider(client: httpx.AsyncClient, order_id: str, token: str, *,
                               method: str = "ALIPAY", outcome: str = "succeeded",
                               amount: int | None = None,
                               failure_reason: str | None = None) -> dict[str, Any]:
    """The member asks to pay, the provider confirms (or declines) the amount due (or
    `amount`). Returns the webhook's 202 answer; the member's next query sees it."""
    attempt = (await request_payment(client, order_id, token, method))["attempt"]
    due = attempt["amount"]["amount"]
    # The provider's event happens when the attempt is paid: right after it was opened.
    response = await post_callback(client, callback(
        attempt["reference"], due if amount is None else amount, outcome,
        currency=attempt["amount"]["currency"], failure_reason=failure_reason,
        occurred_at=datetime.fromisoformat(attempt["requestedAt"])))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer
