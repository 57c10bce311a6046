"""What a carrier tracking update costs through the signed webhook, against calling the
application; and how long a member following the order waits to see it.

Throughput: N concurrent clients POST signed tracking updates (`/webhooks/carriers/sf`,
HMAC-SHA256 of timestamp and body, api/signing.py) over real HTTP to a real uvicorn; the
same number of
`ShippingService.record_tracking` calls are made directly from as many threads, in the same
run on the same database. Each update has its own `update_id`; each parcel's statuses cycle
picked_up → in_transit → out_for_delivery with a later carrier time each round and never
reach delivered, so every parcel stays open and no update is a repeat. The HTTP figures
include what a carrier waits for: signature check, parsing, the read-model lookup of the
tracking number and the command in a worker thread (the webhook answers 202 without waiting
for the read models). The direct figures are the command alone, with the projection runner
stopped. Each side tracks its own parcels (one per member, each of a paid order), so neither
replays the updates the other appended.

Latency: K members each follow their order with a real websocket (`shipmentUpdated` over
graphql-transport-ws, the token in `connection_init`). After the current state arrives, R
signed updates are posted, spread over the K parcels, one at a time per parcel (all parcels
at once), each after a random pause of up to one subscription poll interval (seeded), so
updates land at random points of the poll cycle rather than in step with it. For each, the
time the webhook answered 202 and the time the first `next` message whose timeline shows
the update arrived are taken: the difference is what the member waits after the carrier is
told "accepted" (the projection applying the update, plus the subscription's poll of the
read model). Updates not seen within --timeout are missed.
Clients and server share this process (and its GIL).

    python -m tests.benchmarks.tracking [--postgres] [--shipments 200] [--updates 800]
        [--concurrency 8] [--subscribers 8] [--latency-updates 100] [--timeout 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import websockets
from websockets.typing import Subprotocol

from api.app import create_app
from api.config import Settings
from api.payment_simulator import pay_in_process
from api.runtime import Runtime
from api.schema.common import encode_id
from api.schema.shipments import POLL_SECONDS
from api.signing import signed_headers
from domain.metadata import Channel, EventMetadata, Role
from tests.benchmarks.common import (
    LiveServer,
    LoadResult,
    benchmark_parser,
    drive_http,
    drive_threads,
    environment_figures,
    http_clients,
    log,
    member_tokens,
    metadata_for,
    percentile,
    ratio,
    register_members,
    run_benchmark,
)

T = TypeVar("T")

CARRIER = "sf"
SECRET = "sf-benchmark-webhook-secret-0123456789"
PROTOCOL = "graphql-transport-ws"
STATUSES = ("picked_up", "in_transit", "out_for_delivery")
ADDRESS = {"recipient": "Bench Member", "line1": "88 Nanshan Rd", "city": "Hangzhou",
           "country": "CN"}
# The kettle every benchmark order asks for; the catalogue prices it (listed in setup).
KETTLE = {"product_id": "P-1", "name": "Kettle", "price": 12_000}
LINES = [{"product_id": KETTLE["product_id"], "quantity": 1}]
SHIPMENT_UPDATED = """
subscription S($orderId: ID!) {
  shipmentUpdated(orderId: $orderId) { id status version timeline { updateId } }
}
"""


@dataclass(frozen=True)
class Parcel:
    member_id: uuid.UUID
    order_id: uuid.UUID
    shipment_id: uuid.UUID
    tracking_number: str


def carrier_meta(parcel: Parcel, update_id: str) -> EventMetadata:
    """What the webhook records as the metadata of a carrier's update."""
    return EventMetadata(
        actor_id=f"carrier:{CARRIER}", actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
        correlation_id=f"carrier:{CARRIER}:{parcel.tracking_number}",
        causation_id=update_id, request_id=uuid.uuid4().hex,
    )


# -- setup ----------------------------------------------------------------------------------


def ship_parcels(runtime: Runtime, count: int, label: str) -> list[Parcel]:
    """`count` members, each with a paid order in one parcel (tracking numbers unique)."""
    members = register_members(runtime, count, prefix=label)
    runtime.catalogue.upsert({**KETTLE, "currency": runtime.rules.currency},
                             metadata_for("benchmark-admin", Role.ADMIN, "benchmark catalogue"))
    parcels: list[Parcel] = []
    for index, member_id in enumerate(members):
        own = metadata_for(str(member_id))
        order_id = runtime.orders.place(
            member_id, LINES, None, 0, f"{label}-{index}", own
        ).aggregate_id
        pay_in_process(runtime, order_id, "alipay", f"{label}-{index}-pay", own)
        tracking_number = f"SF-{label.upper()}-{index:06d}"
        shipment_id = runtime.shipping.create(
            order_id, None, "home_delivery", "standard", None, None, ADDRESS, None,
            CARRIER.upper(), tracking_number, metadata_for("agent-1", Role.AGENT, "packed"),
        ).aggregate_id
        parcels.append(Parcel(member_id, order_id, shipment_id, tracking_number))
    return parcels


# -- updates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatePlan:
    """Update number `index` goes to parcel `index % len(parcels)`; a parcel's rounds cycle
    through STATUSES with a carrier time one second later each round (from `base`)."""

    parcels: list[Parcel]
    label: str
    base: datetime
    first_round: int = 0

    def parcel(self, index: int) -> Parcel:
        return self.parcels[index % len(self.parcels)]

    def body(self, index: int) -> dict[str, Any]:
        parcel = self.parcel(index)
        round_ = self.first_round + index // len(self.parcels)
        return {
            "update_id": f"{self.label}-{index}",
            "tracking_number": parcel.tracking_number,
            "status": STATUSES[round_ % len(STATUSES)],
            "occurred_at": (self.base + timedelta(seconds=round_)).isoformat(),
            "location": "Hangzhou hub",
        }

    def after(self, count: int, label: str) -> UpdatePlan:
        """The plan that continues this one after `count` updates, with later rounds."""
        rounds = -(-count // len(self.parcels))
        return dataclasses.replace(self, label=label, first_round=self.first_round + rounds)


def direct_phase(runtime: Runtime, plan: UpdatePlan, concurrency: int, total: int
                 ) -> LoadResult:
    """`total` record_tracking calls on ShippingService, as the webhook would make them."""

    def call(index: int) -> bool:
        body = plan.body(index)
        parcel = plan.parcel(index)
        try:
            runtime.shipping.record_tracking(
                parcel.shipment_id, body["update_id"], body["status"],
                datetime.fromisoformat(body["occurred_at"]), body["location"], None, None,
                carrier_meta(parcel, body["update_id"]),
            )
        except Exception as error:
            log(f"direct update {index} failed: {type(error).__name__}: {error}")
            return False
        return True

    return drive_threads(concurrency, total, call)


def signed(body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {"Content-Type": "application/json", **signed_headers(SECRET, raw)}


class WebhookSender:
    """POSTs update `index` of the plan, signed; anything but 202 (not a repeat) fails."""

    def __init__(self, plan: UpdatePlan) -> None:
        self.plan = plan
        self.reported = 0

    async def __call__(self, client: httpx.AsyncClient, index: int) -> bool:
        raw, headers = signed(self.plan.body(index))
        response = await client.post(f"/webhooks/carriers/{CARRIER}", content=raw,
                                     headers=headers)
        if response.status_code == 202 and not response.json().get("duplicate"):
            return True
        if self.reported < 5:
            log(f"webhook update {index} failed: HTTP {response.status_code}: "
                f"{response.text[:300]}")
        self.reported += 1
        return False


# -- latency to a subscriber ----------------------------------------------------------------


@dataclass
class LatencyResult:
    latencies_s: list[float] = field(default_factory=list)
    from_sent_s: list[float] = field(default_factory=list)
    missed: int = 0
    rejected: int = 0
    elapsed_s: float = 0.0

    def figures(self, subscribers: int, timeout: float) -> dict[str, Any]:
        def ms(values: list[float], q: float) -> float | None:
            return round(percentile(values, q) * 1000, 3) if values else None

        return {
            "subscribers": subscribers,
            "notify_updates": len(self.latencies_s) + self.missed + self.rejected,
            "notify_received": len(self.latencies_s),
            "notify_missed": self.missed,
            "notify_rejected": self.rejected,
            "notify_timeout_s": timeout,
            "notify_elapsed_s": round(self.elapsed_s, 3),
            "notify_p50_ms": ms(self.latencies_s, 50),
            "notify_p99_ms": ms(self.latencies_s, 99),
            "notify_max_ms": ms(self.latencies_s, 100),
            "notify_from_sent_p50_ms": ms(self.from_sent_s, 50),
            "notify_from_sent_p99_ms": ms(self.from_sent_s, 99),
        }


class Subscriber:
    """One member's websocket following their order: notes when each update id is first
    shown (the arrival time of the message whose timeline first includes it)."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.seen: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.first = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, token: str, order_id: uuid.UUID) -> Subscriber:
        socket = await websockets.connect(url, subprotocols=[Subprotocol(PROTOCOL)])
        await socket.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {token}"}}))
        ack = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack}")
        await socket.send(json.dumps({"id": "op", "type": "subscribe", "payload": {
            "query": SHIPMENT_UPDATED,
            "variables": {"orderId": encode_id("Order", str(order_id))},
        }}))
        subscriber = cls(socket)
        subscriber._reader = asyncio.create_task(subscriber._read())
        return subscriber

    async def _read(self) -> None:
        async for raw in self.socket:
            arrived = time.perf_counter()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "ping":
                await self.socket.send(json.dumps({"type": "pong"}))
                continue
            if kind != "next" or message["payload"].get("errors"):
                error = RuntimeError(f"unexpected message: {str(message)[:300]}")
                if not self.first.done():
                    self.first.set_exception(error)
                log(str(error))
                continue
            shipment = message["payload"]["data"]["shipmentUpdated"]
            for update in shipment["timeline"]:
                update_id = update["updateId"]
                if update_id in self.seen:
                    continue
                self.seen[update_id] = arrived
                waiter = self.waiting.pop(update_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(arrived)
            if not self.first.done():
                self.first.set_result(shipment)

    def expect(self, update_id: str) -> asyncio.Future[float]:
        """A future for the arrival of `update_id`: ask before sending, so none is lost."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[update_id] = waiter
        return waiter

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.send(json.dumps({"id": "op", "type": "complete"}))
        await self.socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader


async def latency_phase(
    base_url: str, tokens: dict[uuid.UUID, str], plan: UpdatePlan, total: int,
    timeout: float, seed: int,
) -> LatencyResult:
    url = base_url.replace("http://", "ws://", 1) + "/graphql"
    result = LatencyResult()
    pauses = random.Random(seed)
    subscribers = [
        await Subscriber.open(url, tokens[parcel.member_id], parcel.order_id)
        for parcel in plan.parcels
    ]
    try:
        for subscriber in subscribers:  # the parcels as they are now
            await asyncio.wait_for(subscriber.first, timeout)
        log(f"{len(subscribers)} subscriptions open, current state received")
        async with http_clients(base_url, len(subscribers)) as clients:

            async def follow(slot: int) -> None:
                """Updates slot, slot + K, … all go to parcel `slot`: one in flight each."""
                client, subscriber = clients[slot], subscribers[slot]
                for index in range(slot, total, len(subscribers)):
                    # Out of step with the subscription's polls, as a carrier would be.
                    await asyncio.sleep(pauses.uniform(0, POLL_SECONDS))
                    body = plan.body(index)
                    arrival = subscriber.expect(body["update_id"])
                    raw, headers = signed(body)
                    sent = time.perf_counter()
                    response = await client.post(f"/webhooks/carriers/{CARRIER}",
                                                 content=raw, headers=headers)
                    accepted = time.perf_counter()
                    if response.status_code != 202:
                        log(f"latency update {index}: HTTP {response.status_code}: "
                            f"{response.text[:300]}")
                        result.rejected += 1
                        subscriber.waiting.pop(body["update_id"], None)
                        continue
                    try:
                        notified = await asyncio.wait_for(arrival, timeout)
                    except TimeoutError:
                        result.missed += 1
                        subscriber.waiting.pop(body["update_id"], None)
                        continue
                    result.latencies_s.append(notified - accepted)
                    result.from_sent_s.append(notified - sent)

            begun = time.perf_counter()
            await asyncio.gather(*(follow(slot) for slot in range(len(subscribers))))
            result.elapsed_s = time.perf_counter() - begun
    finally:
        await asyncio.gather(*(subscriber.close() for subscriber in subscribers))
    return result


# -- the run --------------------------------------------------------------------------------


def serve(runtime: Runtime, drive: Callable[[str], Awaitable[T]]) -> T:
    """Serve the runtime's API (webhooks included) on a real socket, projections running."""
    app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
    runtime.start_projections()
    with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
        return asyncio.run(drive(server.base_url))


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    if min(args.shipments, args.concurrency, args.subscribers) < 1:
        raise SystemExit("--shipments, --concurrency and --subscribers must be at least 1")
    # No scheduler ticking in the server while it is measured (it would also flag parcels).
    # Orders are paid through the simulator provider's signed callback.
    settings = dataclasses.replace(Settings.from_env(url), carrier_secrets={CARRIER: SECRET},
                                   scheduler_interval=0.0, payment_simulator=True,
                                   payment_provider="")
    runtime = Runtime(settings)
    try:
        log(f"shipping 2 x {args.shipments} + {args.subscribers} parcels …")
        begun = time.perf_counter()
        direct_parcels = ship_parcels(runtime, args.shipments, "direct")
        http_parcels = ship_parcels(runtime, args.shipments, "http")
        followed_parcels = ship_parcels(runtime, args.subscribers, "followed")
        setup_s = time.perf_counter() - begun
        log(f"parcels shipped in {setup_s:.1f}s")

        # Carrier times in the past, one second per round, never ahead of the clock, and
        # after the parcels existed (the webhook refuses updates from more than a day before).
        rounds = -(-(args.warmup + args.updates) // args.shipments)
        rounds = max(rounds, -(-args.latency_updates // args.subscribers))
        base = runtime.clock.now() - timedelta(seconds=rounds + 5)
        direct_warm = UpdatePlan(direct_parcels, "direct-warm", base)
        direct_plan = direct_warm.after(args.warmup, "direct")
        http_warm = UpdatePlan(http_parcels, "http-warm", base)
        http_plan = http_warm.after(args.warmup, "http")
        followed_plan = UpdatePlan(followed_parcels, "followed", base)

        if args.warmup:
            direct_phase(runtime, direct_warm, args.concurrency, args.warmup)
        direct = direct_phase(runtime, direct_plan, args.concurrency, args.updates)
        log(direct.describe(f"direct record_tracking, {args.concurrency} threads"))

        # The webhook finds parcels through the read model: catch every projection up
        # (the direct updates included) before serving.
        begun = time.perf_counter()
        applied = max(runtime.runner.catch_up(name) for name in runtime.projection_names)
        catch_up_s = time.perf_counter() - begun
        log(f"projections caught up on {applied} events in {catch_up_s:.2f}s")

        tokens = member_tokens(settings.secret_key, [p.member_id for p in followed_parcels])

        async def drive(base_url: str) -> tuple[LoadResult, LatencyResult]:
            async with http_clients(base_url, args.concurrency) as clients:
                if args.warmup:
                    await drive_http(clients, args.warmup, WebhookSender(http_warm))
                http = await drive_http(clients, args.updates, WebhookSender(http_plan))
            log(http.describe(f"HTTP webhook updates, {args.concurrency} clients"))
            latency = await latency_phase(base_url, tokens, followed_plan,
                                          args.latency_updates, args.timeout, args.seed)
            shown = latency.figures(args.subscribers, args.timeout)
            log(f"subscribers: {shown['notify_received']} of {args.latency_updates} updates "
                f"seen, p50 {shown['notify_p50_ms']} ms, p99 {shown['notify_p99_ms']} ms "
                f"after the 202; missed {latency.missed}, rejected {latency.rejected}")
            return http, latency

        http, latency = serve(runtime, drive)
    finally:
        runtime.close()

    return {
        "benchmark": "tracking",
        **environment_figures(url),
        "shipments_per_phase": args.shipments,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "setup_s": round(setup_s, 2),
        **http.figures("http", "updates"),
        **direct.figures("direct", "updates"),
        "ratio_http_to_direct": ratio(http.per_second, direct.per_second),
        "projection_catch_up_events": applied,
        "projection_catch_up_s": round(catch_up_s, 3),
        **latency.figures(args.subscribers, args.timeout),
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--shipments", type=int, default=200,
                        help="parcels tracked in each throughput phase (default 200)")
    parser.add_argument("--updates", type=int, default=800,
                        help="tracking updates timed in each throughput phase (default 800)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="HTTP clients and direct threads (default 8)")
    parser.add_argument("--warmup", type=int, default=40,
                        help="untimed updates before the timed ones, per side (default 40)")
    parser.add_argument("--subscribers", type=int, default=8,
                        help="members following their order over a websocket (default 8)")
    parser.add_argument("--latency-updates", type=int, default=100,
                        help="updates timed to their subscriber (default 100)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds after which an update not seen is missed (default 5)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the pauses between latency updates (default 7)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
