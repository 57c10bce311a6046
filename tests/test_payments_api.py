"""Payments over HTTP: members ask, only the provider's signed callback pays, staff record
cash and in-store payments with a reason. Every refusal records nothing.

Orders are placed with the helpers of tests/test_orders_api.py, so how a line is priced is
decided in one place.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from api.runtime import Runtime
from tests.graphql import data, gql
from tests.payments import callback, post_callback, request_payment
from tests.test_orders_api import (
    AGENT,
    LOYALTY,
    ORDER,
    PAY_ORDER,
    USER_ERRORS,
    error_of,
    head,
    line,
    mutate,
    ok,
    place,
    shopper,
)

RECORD_IN_PERSON = (
    "mutation M($input: RecordInPersonPaymentInput!) { recordInPersonPayment(input: $input) "
    f"{{ position order {{ id state paid {{ amount }} payments {{ method amount {{ amount }} }} }}"
    f" {USER_ERRORS} }} }}"
)


async def order_of(client: httpx.AsyncClient, order_id: str, token: str) -> dict[str, Any]:
    found: dict[str, Any] = data(await gql(client, ORDER, {"id": order_id}, token=token))["order"]
    return found


async def placed(client: httpx.AsyncClient) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A member, their unpaid order of 7,500 (6,500 + shipping) and an attempt to pay it."""
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    attempt = (await request_payment(client, order["id"], ann.token, "CARD"))["attempt"]
    return ann, order, attempt


async def test_asking_to_pay_opens_an_attempt_for_the_amount_due_and_pays_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    asked = await request_payment(client, order["id"], ann.token, "ALIPAY", "key-1")
    attempt = asked["attempt"]
    assert attempt["amount"] == {"amount": 7_500, "currency": "CNY"}
    assert (attempt["provider"], attempt["method"]) == ("testpay", "ALIPAY")
    assert attempt["reference"].startswith("pay_")
    assert asked["order"]["state"] == "PLACED"

    before = head(live_runtime)
    retry = await request_payment(client, order["id"], ann.token, "ALIPAY", "key-1")
    assert retry["attempt"]["reference"] == attempt["reference"] and retry["position"] is None
    assert head(live_runtime) == before
    other = await request_payment(client, order["id"], ann.token, "ALIPAY", "key-2")
    assert other["attempt"]["reference"] != attempt["reference"]

    cash_first = error_of(await mutate(client, PAY_ORDER, {
        "orderId": order["id"], "method": "CASH_ON_DELIVERY", "idempotencyKey": "k3"},
        ann.token))
    assert (cash_first["code"], cash_first["field"]) == ("VALIDATION", "method")
    assert (await order_of(client, order["id"], ann.token))["state"] == "PLACED"


async def test_asking_to_pay_answers_without_waiting_out_the_read_your_writes_timeout(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    """The orders read model does not show a payment request, so the order row keeps the
    version it had: the answer must not wait for the request's version (it never comes)."""
    assert live_runtime.settings.read_your_writes_timeout >= 5.0
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    begun = time.monotonic()
    asked = await request_payment(client, order["id"], ann.token, "ALIPAY")
    assert time.monotonic() - begun < 2.5
    assert asked["position"] is not None and asked["order"]["state"] == "PLACED"


async def test_a_member_cannot_mark_an_order_paid(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann, order, _attempt = await placed(client)
    before = head(live_runtime)
    # The old way: an amount and an outcome chosen by the client. Not part of the input.
    forged = await gql(client, PAY_ORDER, {"input": {
        "orderId": order["id"], "method": "CARD", "amount": 7_500, "outcome": "SUCCEEDED",
        "idempotencyKey": "k"}}, token=ann.token)
    assert forged["errors"] and forged.get("data") is None
    in_person = error_of(await mutate(client, RECORD_IN_PERSON, {
        "orderId": order["id"], "method": "CASH_ON_DELIVERY", "idempotencyKey": "k",
        "reason": "paid the courier"}, ann.token))
    assert in_person["code"] == "FORBIDDEN"
    assert head(live_runtime) == before
    assert (await order_of(client, order["id"], ann.token))["state"] == "PLACED"


async def test_the_provider_callback_pays_the_order_once(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann, order, attempt = await placed(client)
    body = callback(attempt["reference"], 7_500, event_id="evt-1")
    response = await post_callback(client, body)
    assert response.status_code == 202, response.text
    assert response.json() | {"position": 0} == {
        "accepted": True, "duplicate": False, "recorded": "paid", "position": 0}
    paid = await order_of(client, order["id"], ann.token)
    assert paid["state"] == "PAID" and paid["paid"]["amount"] == 7_500
    assert data(await gql(client, LOYALTY, token=ann.token))["me"]["loyalty"]["pending"] == 75

    before = head(live_runtime)
    replay = await post_callback(client, body)
    assert replay.status_code == 202 and replay.json()["duplicate"] is True
    assert head(live_runtime) == before

    changed = await post_callback(client, {**body, "amount": 7_400})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "CONFLICT"
    second = await post_callback(client, callback(attempt["reference"], 7_500))
    assert second.status_code == 409  # another event for an order already paid
    assert head(live_runtime) == before


@pytest.mark.parametrize(("amount", "currency"), [(7_499, "CNY"), (7_501, "CNY"), (0, "CNY"),
                                                  (7_500, "USD")])
async def test_a_succeeded_callback_for_another_amount_is_a_failed_payment_and_flagged(
    client: httpx.AsyncClient, live_runtime: Runtime, amount: int, currency: str
) -> None:
    ann, order, attempt = await placed(client)
    response = await post_callback(client, callback(attempt["reference"], amount,
                                                    currency=currency))
    assert response.status_code == 202, response.text
    assert response.json()["recorded"] == "amount_mismatch"
    seen = await order_of(client, order["id"], ann.token)
    assert (seen["state"], seen["failedPayments"], seen["paid"]["amount"]) == ("PLACED", 1, 0)
    assert [f["rule"] for f in seen["reviewFlags"]] == ["payment_amount_mismatch"]
    assert str(amount) in seen["reviewFlags"][0]["detail"]


async def test_forged_unsigned_and_stale_callbacks_are_refused_and_record_nothing(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    _ann, _order, attempt = await placed(client)
    body = callback(attempt["reference"], 7_500)
    before = head(live_runtime)
    refusals = [
        (await post_callback(client, body, secret="not-the-providers-secret-000"),
         401, "BAD_SIGNATURE"),
        (await post_callback(client, body, headers={"X-Patron-Signature": ""}),
         401, "UNSIGNED"),
        (await post_callback(client, body, headers={"X-Patron-Timestamp": "12e3"}),
         401, "BAD_SIGNATURE"),
        (await post_callback(client, body, timestamp=int(time.time()) - 301), 401, "STALE"),
        (await post_callback(client, body, timestamp=int(time.time()) + 301), 401, "STALE"),
        (await post_callback(client, body, provider="paypal"), 404, "UNKNOWN_PROVIDER"),
        (await post_callback(client, {**body, "reference": "pay_" + "0" * 32 + "_" + "0" * 16}),
         404, "UNKNOWN_PAYMENT"),
        (await post_callback(client, {**body, "reference": attempt["reference"] + "x"}),
         404, "UNKNOWN_PAYMENT"),
        (await post_callback(client, {**body, "reference": "psp-1"}), 404, "UNKNOWN_PAYMENT"),
    ]
    for response, status, code in refusals:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), \
            response.text
    # A signature is over the exact bytes: re-serialising the same JSON breaks it.
    raw = json.dumps(body).encode()
    tampered = await client.post(
        "/webhooks/payments/testpay", content=json.dumps(body, indent=1).encode(),
        headers=(await _headers_for(raw)))
    assert tampered.status_code == 401
    assert head(live_runtime) == before


async def _headers_for(raw: bytes) -> dict[str, str]:
    from api.signing import signed_headers
    from tests.conftest import TEST_PAYMENT_SECRET

    return {"Content-Type": "application/json", **signed_headers(TEST_PAYMENT_SECRET, raw)}


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        (b"{not json", 400, "MALFORMED", None),
        (nested(5_000), 400, "MALFORMED", None),
        (b'{"event_id": ' + nested(5_000) + b"}", 400, "MALFORMED", None),
        (b"null", 400, "MALFORMED", None),
        (b"[1, 2]", 400, "MALFORMED", None),
        (b"\xff\xfe", 400, "MALFORMED", None),
        (b"{}", 400, "MALFORMED", "event_id"),
    ],
)
async def test_malformed_callbacks_are_bad_requests(
    client: httpx.AsyncClient, live_runtime: Runtime, raw: bytes, status: int, code: str,
    field: str | None,
) -> None:
    await placed(client)
    before = head(live_runtime)
    response = await post_callback(client, raw=raw)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"].get("field") == field
    assert head(live_runtime) == before


@pytest.mark.parametrize(
    ("name", "value", "status", "code"),
    [
        ("amount", "7500", 400, "MALFORMED"),
        ("amount", True, 400, "MALFORMED"),
        ("amount", 1.5, 400, "MALFORMED"),
        ("amount", -1, 422, "VALIDATION"),
        ("amount", 2**63, 422, "VALIDATION"),
        ("outcome", "refunded", 422, "VALIDATION"),
        ("currency", "C1Y", 422, "VALIDATION"),
        ("event_id", "evt\u0000", 422, "VALIDATION"),
        ("occurred_at", "0001-01-01T00:00:00+14:00", 422, "VALIDATION"),
        ("occurred_at", "9999-12-31T23:59:59-23:59", 422, "VALIDATION"),
        ("occurred_at", "2026-12-04T10:00:00", 400, "MALFORMED"),
        ("occurred_at", "2000-01-01T00:00:00+00:00", 422, "VALIDATION"),
        ("occurred_at", "2199-01-01T00:00:00+00:00", 422, "VALIDATION"),
    ],
)
async def test_invalid_callback_values_are_refused_naming_the_field(
    client: httpx.AsyncClient, live_runtime: Runtime, name: str, value: Any, status: int,
    code: str,
) -> None:
    _ann, _order, attempt = await placed(client)
    before = head(live_runtime)
    response = await post_callback(client, {**callback(attempt["reference"], 7_500),
                                            name: value})
    assert response.status_code == status, response.text
    assert response.json()["error"] == {
        "code": code, "field": name, "message": response.json()["error"]["message"]}
    assert head(live_runtime) == before


async def test_an_oversized_callback_is_refused_before_it_is_read(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    before = head(live_runtime)
    declared = await post_callback(client, raw=b'{"x": "' + b"y" * 70_000 + b'"}')
    assert declared.status_code == 413
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        for _ in range(1_000):
            sent += 1
            yield b"y" * 16_384

    streamed = await client.post("/webhooks/payments/testpay", content=chunks(),
                                 headers=await _headers_for(b""))
    assert streamed.status_code == 413 and sent < 1_000
    assert head(live_runtime) == before


async def test_concurrent_duplicate_callbacks_record_one_payment(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    """A provider retrying while the first delivery is in flight: exactly one payment, one
    earning of points; every delivery is told it was accepted."""
    ann, order, attempt = await placed(client)
    body = callback(attempt["reference"], 7_500, event_id="evt-race")
    responses = await asyncio.gather(*(post_callback(client, body) for _ in range(8)))
    assert [r.status_code for r in responses] == [202] * 8, [r.text for r in responses]
    assert sorted(r.json()["duplicate"] for r in responses) == [False] + [True] * 7
    seen = await order_of(client, order["id"], ann.token)
    assert seen["state"] == "PAID" and len(seen["payments"]) == 1
    assert seen["paid"]["amount"] == 7_500
    assert data(await gql(client, LOYALTY, token=ann.token))["me"]["loyalty"]["pending"] == 75


async def test_concurrent_different_successes_pay_the_order_once(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann, order, attempt = await placed(client)
    other = (await request_payment(client, order["id"], ann.token, "ALIPAY"))["attempt"]
    bodies = [callback(a["reference"], 7_500) for a in (attempt, other) for _ in range(3)]
    responses = await asyncio.gather(*(post_callback(client, b) for b in bodies))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 5, [r.text for r in responses]
    seen = await order_of(client, order["id"], ann.token)
    assert len(seen["payments"]) == 1 and seen["paid"]["amount"] == 7_500


async def test_a_callback_for_a_cancelled_order_is_a_conflict(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann, order, attempt = await placed(client)
    cancel = ("mutation M($input: CancelOrderInput!) { cancelOrder(input: $input) "
              f"{{ order {{ id state }} {USER_ERRORS} }} }}")
    ok(await mutate(client, cancel, {"orderId": order["id"], "reason": "MEMBER_REQUEST"},
                    ann.token))
    before = head(live_runtime)
    late = await post_callback(client, callback(attempt["reference"], 7_500))
    assert late.status_code == 409 and "cancelled" in late.json()["error"]["message"]
    assert head(live_runtime) == before


async def test_staff_record_cash_on_delivery_with_a_reason(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client)
    order = await place(client, ann, [line("lamp", 1, 6_500)])
    payment = {"orderId": order["id"], "method": "CASH_ON_DELIVERY", "idempotencyKey": "cod-1"}
    before = head(live_runtime)
    no_reason = error_of(await mutate(client, RECORD_IN_PERSON, {**payment, "reason": " "},
                                      AGENT))
    assert no_reason["code"] == "REASON_REQUIRED"
    card = error_of(await mutate(client, RECORD_IN_PERSON, {
        **payment, "method": "CARD", "reason": "paid the courier"}, AGENT))
    assert (card["code"], card["field"]) == ("VALIDATION", "method")
    assert head(live_runtime) == before

    paid = ok(await mutate(client, RECORD_IN_PERSON, {**payment, "reason": "paid the courier"},
                           AGENT))["order"]
    assert paid["state"] == "PAID"
    assert paid["payments"] == [{"method": "CASH_ON_DELIVERY", "amount": {"amount": 7_500}}]
    after = head(live_runtime)
    retry = ok(await mutate(client, RECORD_IN_PERSON, {**payment, "reason": "paid the courier"},
                            AGENT))
    assert retry["position"] is None and head(live_runtime) == after

    shop = await place(client, ann, [line("vase", 1, 2_000)])
    in_store = ok(await mutate(client, RECORD_IN_PERSON, {
        "orderId": shop["id"], "method": "IN_STORE", "idempotencyKey": "till-9",
        "reason": "paid at the Hangzhou store till"}, AGENT))["order"]
    assert in_store["state"] == "PAID" and in_store["paid"]["amount"] == 3_000
