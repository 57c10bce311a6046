"""What a checkout (place an order, then pay it) costs over GraphQL, against the application;
and how fast the loyalty projection rebuilds a demo year, against merely decoding it.

Checkout: N concurrent clients send `placeOrder`, then `payOrder` (which opens a payment
attempt for the amount due), then the payment provider's signed callback to
`POST /webhooks/payments/simulator` (what `patron payments simulate` sends), then query the
order, which must show it paid, over real HTTP to a real uvicorn, each as its member (their
own token); the same steps are run N times directly (OrderService.place, PaymentService
request, and the in-process signed callback through the same verification and service code
as the webhook) from as many threads and once more sequentially, in the same run on the same
database. The HTTP figures include what a frontend and provider wait for: token check,
GraphQL, signature check, the commands in a worker thread and read-your-writes (each answer
already shows the order placed, and the member's query after the callback shows it paid).
The direct figures are the commands alone, with the projection runner stopped; how long
the runner then takes to apply those writes is reported separately.
Each phase checks out for its own freshly registered members, so a phase never reloads
accounts another phase grew. Clients and server share this process (and its GIL).

Rebuild: a demo year (`api.demo.seed_demo`, a Runtime on an AdjustableClock) is seeded
first; then `runner.rebuild("loyalty")` is timed on a fresh Runtime, and, as the floor,
reading the same notifications in the same batches and decoding those the loyalty
projection handles, without applying them, on another fresh Runtime.

    python -m tests.benchmarks.checkout [--postgres] [--members 200] [--checkouts 800]
        [--demo-members 50] [--demo-days 365]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from api.config import SIMULATOR, Settings, simulator_secret
from api.demo import CATALOGUE, demo_runtime_clock, seed_demo
from api.payment_simulator import pay_in_process
from api.payment_webhooks import callback_body
from api.runtime import Runtime
from api.signing import signed_headers
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.benchmarks.common import (
    FailureLog,
    LoadResult,
    benchmark_parser,
    drive_http,
    drive_threads,
    environment_figures,
    http_clients,
    log,
    member_tokens,
    metadata_for,
    ratio,
    register_members,
    run_benchmark,
    serve_and_drive,
)

PROJECTION = "loyalty"
METHOD = "alipay"
# ¥282 in three lines: free shipping, never flagged as abnormal, and a few checkouts per
# member stay below the silver threshold, so every phase prices at the same tier.
BASKET_PRODUCTS = ("P-4001", "P-8001", "P-9001")

PLACE_ORDER = """
mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) {
    order { id state pricing { total { amount } } }
    userErrors { field message code }
  }
}
"""

PAY_ORDER = """
mutation Pay($input: PayOrderInput!) {
  payOrder(input: $input) {
    order { id state }
    attempt { reference amount { amount currency } }
    userErrors { field message code }
  }
}
"""

ORDER = "query O($id: ID!) { order(id: $id) { id state paid { amount } } }"
PROVIDER = SIMULATOR


def provider_callback(reference: str, amount: int, currency: str) -> bytes:
    """What the provider posts once it has collected the amount."""
    return callback_body(f"evt_{uuid.uuid4().hex}", reference, "succeeded", amount, currency,
                         datetime.now(UTC))


def list_basket(runtime: Runtime) -> None:
    """List the basket's products (as the demo's admin does) unless they are listed: orders
    are priced by the catalogue, which each checkout reads in its unit of work."""
    admin = metadata_for("benchmark-admin", Role.ADMIN, "benchmark catalogue")
    for product in CATALOGUE:
        if product.product_id in BASKET_PRODUCTS and not runtime.catalogue.find(
                product.product_id):
            runtime.catalogue.upsert({
                "product_id": product.product_id, "name": product.name,
                "category": product.category, "brand": product.brand,
                "price": product.price, "currency": runtime.rules.currency}, admin)


def basket() -> list[dict[str, Any]]:
    """What a member asks for: products and quantities (the catalogue prices them)."""
    return [{"product_id": product_id, "quantity": 1} for product_id in BASKET_PRODUCTS]


def graphql_basket() -> list[dict[str, Any]]:
    return [{"productId": line["product_id"], "quantity": line["quantity"]}
            for line in basket()]


# -- checkout -------------------------------------------------------------------------------


def direct_phase(
    runtime: Runtime, members: list[uuid.UUID], concurrency: int, total: int, label: str
) -> LoadResult:
    """`total` checkouts on OrderService, for member `i % len(members)` each."""
    lines = basket()

    def call(index: int) -> bool:
        member_id = members[index % len(members)]
        try:
            placed = runtime.orders.place(
                member_id, lines, None, 0, f"{label}-{index}", metadata_for(str(member_id))
            )
            answer = pay_in_process(runtime, placed.aggregate_id, METHOD,
                                    f"{label}-{index}-pay", metadata_for(str(member_id)))
            if answer["recorded"] != "paid":
                raise RuntimeError(f"the callback did not pay order {placed.aggregate_id}")
        except Exception as error:
            log(f"direct checkout {index} failed: {type(error).__name__}: {error}")
            return False
        return True

    return drive_threads(concurrency, total, call)


class CheckoutSender:
    """Places and pays an order as each member and checks both answers: HTTP 200, no
    errors, and an order that already shows the state the mutation moved it to."""

    def __init__(self, tokens: dict[uuid.UUID, str], members: list[uuid.UUID], label: str,
                 provider_secret: str) -> None:
        self.tokens = tokens
        self.provider_secret = provider_secret
        self.members = members
        self.label = label
        self.lines = graphql_basket()
        self._failed = FailureLog("HTTP checkout")

    async def _send(
        self, client: httpx.AsyncClient, token: str, query: str, name: str,
        variables: dict[str, Any],
    ) -> tuple[dict[str, Any] | None, str]:
        response = await client.post(
            "/graphql", json={"query": query, "variables": {"input": variables}},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            return None, f"{name}: HTTP {response.status_code}: {response.text}"
        body: dict[str, Any] = response.json()
        payload = (body.get("data") or {}).get(name) or {}
        if body.get("errors") or payload.get("userErrors") or not payload.get("order"):
            return None, f"{name}: {body}"
        return payload, ""

    async def __call__(self, client: httpx.AsyncClient, index: int) -> bool:
        member_id = self.members[index % len(self.members)]
        token = self.tokens[member_id]
        key = f"{self.label}-{index}"
        placed, why = await self._send(
            client, token, PLACE_ORDER, "placeOrder",
            {"lines": self.lines, "idempotencyKey": key},
        )
        if placed is None:
            return self._failed(index, why)
        order = placed["order"]
        if order["state"] != "PLACED":
            return self._failed(index, f"read-your-writes not honoured: {order}")
        amount = order["pricing"]["total"]["amount"]
        asked, why = await self._send(
            client, token, PAY_ORDER, "payOrder",
            {"orderId": order["id"], "method": METHOD.upper(), "idempotencyKey": f"{key}-pay"},
        )
        if asked is None:
            return self._failed(index, why)
        attempt = asked["attempt"]
        if attempt["amount"]["amount"] != amount:
            return self._failed(index, f"attempt for another amount: {attempt}")
        body = provider_callback(attempt["reference"], amount, attempt["amount"]["currency"])
        confirmed = await client.post(
            f"/webhooks/payments/{PROVIDER}", content=body,
            headers={"Content-Type": "application/json",
                     **signed_headers(self.provider_secret, body)},
        )
        if confirmed.status_code != 202:
            return self._failed(index, f"callback: HTTP {confirmed.status_code}: "
                                       f"{confirmed.text}")
        response = await client.post(
            "/graphql", json={"query": ORDER, "variables": {"id": order["id"]}},
            headers={"Authorization": f"Bearer {token}"},
        )
        paid = ((response.json().get("data") or {}).get("order") or {}
                if response.status_code == 200 else {})
        if paid.get("state") != "PAID" or paid["paid"]["amount"] != amount:
            return self._failed(index, f"read-your-writes not honoured: {response.text}")
        return True


async def http_phase(
    base_url: str,
    tokens: dict[uuid.UUID, str],
    warmup_members: list[uuid.UUID],
    members: list[uuid.UUID],
    concurrency: int,
    total: int,
    warmup: int,
    provider_secret: str,
) -> LoadResult:
    async with http_clients(base_url, concurrency) as clients:
        if warmup:
            await drive_http(clients, warmup, CheckoutSender(tokens, warmup_members,
                                                             "warm-http", provider_secret))
        return await drive_http(clients, total, CheckoutSender(tokens, members, "http",
                                                               provider_secret))


def checkout_figures(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        list_basket(runtime)
        log(f"registering 3 x {args.members} members (+{4 * args.concurrency} for warm-up) …")
        warmup_members = register_members(runtime, 4 * args.concurrency, prefix="warmup")
        sequential_members = register_members(runtime, args.members, prefix="sequential")
        concurrent_members = register_members(runtime, args.members, prefix="concurrent")
        http_members = register_members(runtime, args.members, prefix="http")

        if args.warmup:
            direct_phase(runtime, warmup_members, 1, args.warmup, "warm-direct")
        sequential = direct_phase(runtime, sequential_members, 1, args.checkouts, "sequential")
        log(sequential.describe("direct checkouts, sequential"))
        concurrent = direct_phase(
            runtime, concurrent_members, args.concurrency, args.checkouts, "concurrent"
        )
        log(concurrent.describe(f"direct checkouts, {args.concurrency} threads"))

        # Applying the direct writes is the work the HTTP side waits for: time it too (and
        # start the HTTP side caught up).
        begun = time.perf_counter()
        # Every projection starts from the same position (the demo's head), so each reads
        # the same events.
        names = list(runtime.runner.projections)
        read = sum(runtime.runner.catch_up(name) for name in names)
        catch_up_s = time.perf_counter() - begun
        applied = read // len(names)
        log(f"{len(names)} projections caught up on {applied} events in {catch_up_s:.2f}s")

        tokens = member_tokens(settings.secret_key, warmup_members + http_members)
        http = serve_and_drive(runtime, lambda base_url: http_phase(
            base_url, tokens, warmup_members, http_members,
            args.concurrency, args.checkouts, args.warmup, simulator_secret(settings.secret_key),
        ))
        log(http.describe(f"HTTP GraphQL checkouts, {args.concurrency} clients"))
    finally:
        runtime.close()
    return {
        "members_per_phase": args.members,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        **http.figures("http", "checkouts"),
        **concurrent.figures("direct", "checkouts"),
        **sequential.figures("direct_sequential", "checkouts"),
        "ratio_http_to_direct": ratio(http.per_second, concurrent.per_second),
        "ratio_http_to_direct_sequential": ratio(http.per_second, sequential.per_second),
        "projections": len(names),
        "projection_catch_up_events": applied,
        "projection_catch_up_events_per_s": per_second(applied, catch_up_s),
    }


# -- rebuild --------------------------------------------------------------------------------


def read_and_decode(runtime: Runtime, batch_size: int) -> tuple[int, int]:
    """Read every notification in batches, as the runner does, and decode those the loyalty
    projection handles, without applying them; returns (read, decoded)."""
    recorder = runtime.app.recorder
    mapper = runtime.app.mapper
    projection = runtime.runner.projections[PROJECTION]
    start, read, decoded = 1, 0, 0
    while True:
        notifications = recorder.select_notifications(start=start, limit=batch_size)
        if not notifications:
            return read, decoded
        for notification in notifications:
            if projection.handles(notification.topic):
                mapper.to_domain_event(notification)
                decoded += 1
        read += len(notifications)
        start = notifications[-1].id + 1


def rebuild_figures(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    demo = Runtime(settings, clock=AdjustableClock(demo_runtime_clock(args.demo_days)))
    try:
        log(f"seeding a demo of {args.demo_members} members over {args.demo_days} days …")
        begun = time.perf_counter()
        seed_demo(demo, members=args.demo_members, seed=args.seed, days=args.demo_days)
        seed_s = time.perf_counter() - begun
        head = demo.runner.head()
        log(f"demo seeded: head position {head} after {seed_s:.1f}s")
    finally:
        demo.close()

    runtime = Runtime(settings)
    try:
        log(f"rebuilding {PROJECTION} …")
        begun = time.perf_counter()
        events = runtime.runner.rebuild(PROJECTION)
        rebuild_s = time.perf_counter() - begun
    finally:
        runtime.close()
    runtime = Runtime(settings)
    try:
        log("reading + decoding the same notifications …")
        begun = time.perf_counter()
        read, decoded = read_and_decode(runtime, settings.projection_batch_size)
        read_decode_s = time.perf_counter() - begun
    finally:
        runtime.close()
    if read != events:
        log(f"WARNING: the rebuild read {events} notifications but the read pass saw {read}")
    log(f"rebuild: {events} notifications ({decoded} loyalty events) in {rebuild_s:.2f}s; "
        f"read + decode: {read_decode_s:.2f}s")
    return {
        "demo_members": args.demo_members,
        "demo_days": args.demo_days,
        "demo_seed_s": round(seed_s, 2),
        "demo_events": head,
        "loyalty_events": decoded,
        "batch_size": settings.projection_batch_size,
        "loyalty_rebuild_s": round(rebuild_s, 3),
        "loyalty_rebuild_events_per_s": per_second(events, rebuild_s),
        "loyalty_rebuild_loyalty_events_per_s": per_second(decoded, rebuild_s),
        "read_decode_s": round(read_decode_s, 3),
        "read_decode_events_per_s": per_second(read, read_decode_s),
        "ratio_rebuild_to_read_decode": ratio(
            per_second(events, rebuild_s), per_second(read, read_decode_s)
        ),
    }


def per_second(count: int, elapsed: float) -> float:
    return round(count / elapsed, 1) if elapsed else 0.0


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    # No scheduler ticking in the server while it is measured.
    # Payments are confirmed by the simulator provider's signed callbacks.
    settings = Settings.from_env(url, scheduler_interval=0.0, payment_simulator=True,
                                 payment_provider=PROVIDER)
    rebuild = rebuild_figures(args, settings)
    checkout = checkout_figures(args, settings)
    return {"benchmark": "checkout", **environment_figures(url), **checkout, **rebuild}


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=200,
                        help="members checking out in each phase (default 200)")
    parser.add_argument("--checkouts", type=int, default=800,
                        help="checkouts (place + pay) timed in each phase (default 800)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="HTTP clients and direct threads (default 8)")
    parser.add_argument("--warmup", type=int, default=40,
                        help="untimed checkouts before the timed ones, per side (default 40)")
    parser.add_argument("--demo-members", type=int, default=50,
                        help="members of the demo year rebuilt (default 50)")
    parser.add_argument("--demo-days", type=int, default=365,
                        help="days the demo simulates (default 365)")
    parser.add_argument("--seed", type=int, default=7, help="demo seed (default 7)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
