"""The recommender end to end: training on 100,000 interactions, then serving lists.

Setup: the deterministic synthetic shop (2,000 users, 2,000 products, 100,000
interactions with planted tastes). Its users are registered as members through the real
service. Its catalogue goes into the `products` read model and its interactions into
`recommendation_signals` as rows (a purchase for strong interactions, a one-minute view
otherwise) — written directly, because feeding 100,000 events through the API would
measure ingestion, which other benchmarks do. Every member consents to personalisation.

Training: `RecommenderService.train`, the job behind `patron recommend train`, reads those
rows, fits the hybrid, mines rules, counts context popularity, evaluates the hybrid
against popularity on a 75/25 split and stores the model. Its time and metrics are
printed.

Serving, in the same run and on one real uvicorn, with the same concurrent clients:

- **graphql**: `me { recommendations(placement: HOME, first: 10) }` with each member's
  token;
- **service**: a bare Starlette route that calls the same `RecommendationService` (same
  reads, same scoring) and returns the list as JSON: GraphQL's own cost is the difference;
- **rows**: a bare route that only reads the same read-model rows (consent, the member's
  signals, the available products) and returns their counts: the floor that the database
  puts under both.

    python -m tests.benchmarks.recommend [--postgres] [--requests 1000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import insert
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.app import create_app
from api.config import Settings
from api.recommendations import check_request
from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role
from domain.recommendation.placement import Placement
from domain.recommendation.synthetic import SyntheticConfig, generate
from projections.catalogue_tables import products
from projections.recommender_tables import recommendation_consents, recommendation_signals
from tests.benchmarks.common import (
    LiveServer,
    LoadResult,
    benchmark_parser,
    drive_http,
    environment_figures,
    http_clients,
    log,
    member_tokens,
    ratio,
    register_members,
    run_benchmark,
)

QUERY = """
query { me { recommendations(placement: HOME, first: 10) {
  modelVersion items { productId score reason { code text } } } } }
"""
# Synthetic interactions at least this strong become purchases, the rest views.
PURCHASE_FROM = 4.0

Sender = Callable[[httpx.AsyncClient, int], Awaitable[bool]]


def load_shop(runtime: Runtime, args: argparse.Namespace) -> list[uuid.UUID]:
    config = SyntheticConfig(n_users=args.users, n_items=args.items,
                             n_interactions=args.interactions)
    data = generate(config)
    log(f"generated {len(data.interactions)} interactions, {len(data.catalogue)} products")
    members = register_members(runtime, args.users, prefix="rec")
    runtime.runner.run_once()
    member_of = {user: str(members[n]) for n, user in enumerate(sorted(data.users))}
    now = datetime.now(UTC)
    with runtime.sync_engine.begin() as conn:
        conn.execute(insert(products), [{
            "product_id": p.item_id, "name": p.name, "category": p.category,
            "brand": p.brand, "price": p.price, "currency": "CNY", "released_on": p.released,
            "attributes": p.attributes, "consumable": False, "available": True,
            "availability_reason": None, "listed_at": now, "updated_at": now, "version": 1,
            "position": 0} for p in data.catalogue.values()])
        conn.execute(insert(recommendation_consents), [{
            "member_id": member, "personalisation": True, "changed_at": now, "position": 0}
            for member in member_of.values()])
        rows = [{
            "signal_id": f"bench:{n}", "member_id": member_of[row.user],
            "product_id": row.item,
            "kind": "purchase" if row.weight >= PURCHASE_FROM else "view",
            "occurred_at": row.timestamp, "stars": None,
            "dwell_seconds": None if row.weight >= PURCHASE_FROM else 60, "quantity": 1,
            "order_id": f"bench-order:{member_of[row.user][:8]}:{row.timestamp.date()}"
            if row.weight >= PURCHASE_FROM else None,
            "position": 0} for n, row in enumerate(data.interactions)]
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(recommendation_signals), rows[start:start + 10_000])
    log(f"wrote {len(rows)} signal rows for {len(member_of)} members")
    return members


def train(runtime: Runtime) -> dict[str, Any]:
    meta = EventMetadata("benchmark", Role.SYSTEM, Channel.SYSTEM, "bench", None,
                         uuid.uuid4().hex)
    begun = time.perf_counter()
    report = runtime.recommender.train(meta, progress=log)
    wall = time.perf_counter() - begun
    runtime.runner.run_once()
    log(f"trained version {report.version} in {wall:.1f}s")
    hybrid, baseline = report.metrics["hybrid"], report.metrics["popularity"]
    return {
        "train_interactions": report.interactions,
        "train_members": report.members,
        "train_products": report.products,
        "train_wall_s": round(wall, 2),
        "train_fit_and_evaluate_s": report.seconds,
        **{f"hybrid_{name}": value for name, value in hybrid.items()},
        **{f"popularity_{name}": value for name, value in baseline.items()},
        "precision_lift": ratio(hybrid["precision"], baseline["precision"]),
    }


def service_route(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    request = check_request(Placement.HOME, 10, None, None, None)

    async def serve(http: Request) -> Response:
        served = await runtime.recommendations.for_member(
            runtime.async_engine, http.path_params["member_id"], request)
        return JSONResponse({"modelVersion": served.model_version, "items": [
            {"productId": item.product_id, "score": item.score,
             "reason": {"code": item.reason_code, "text": item.reason_text}}
            for item in served.items]})

    return serve


def rows_route(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    service = runtime.recommendations

    async def rows(http: Request) -> Response:
        async with runtime.async_engine.connect() as conn:
            snapshot = await conn.run_sync(service._read, http.path_params["member_id"])
        return JSONResponse({"signals": len(snapshot.signals),
                             "products": len(snapshot.available),
                             "version": snapshot.version})

    return rows


def sender(label: str, members: list[uuid.UUID], path: str | None,
           tokens: dict[uuid.UUID, str] | None, check: Callable[[Any], bool]) -> Sender:
    failures = [0]

    async def send(client: httpx.AsyncClient, index: int) -> bool:
        member = members[index % len(members)]
        if path is None:
            assert tokens is not None
            response = await client.post("/graphql", json={"query": QUERY},
                                         headers={"Authorization": f"Bearer {tokens[member]}"})
        else:
            response = await client.get(path.format(member=member))
        good = response.status_code == 200 and check(response.json())
        if not good and failures[0] < 5:
            failures[0] += 1
            log(f"{label} request {index} failed: {response.status_code} {response.text[:300]}")
        return good

    return send


async def measure(base_url: str, senders: dict[str, Sender], args: argparse.Namespace
                  ) -> dict[str, LoadResult]:
    results: dict[str, LoadResult] = {}
    async with http_clients(base_url, args.concurrency) as clients:
        for send in senders.values():
            await drive_http(clients, args.warmup, send)
        for label, send in senders.items():
            results[label] = await drive_http(clients, args.requests, send)
            log(results[label].describe(f"{label}, {args.concurrency} clients"))
    return results


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env(url, recommender_retrain_hours=0.0)
    runtime = Runtime(settings)
    try:
        members = load_shop(runtime, args)
        figures = train(runtime)
        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        app.add_route("/bare/recommendations/{member_id}", service_route(runtime),
                      methods=["GET"])
        app.add_route("/bare/rows/{member_id}", rows_route(runtime), methods=["GET"])
        tokens = member_tokens(settings.secret_key, members)

        def full(body: Any) -> bool:
            listing = ((body.get("data") or {}).get("me") or {}).get("recommendations")
            return bool(listing and len(listing["items"]) == 10)

        senders = {
            "graphql": sender("graphql", members, None, tokens, full),
            "service": sender("service", members, "/bare/recommendations/{member}", None,
                              lambda body: len(body["items"]) == 10),
            "rows": sender("rows", members, "/bare/rows/{member}", None,
                           lambda body: body["products"] == args.items),
        }
        with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
            results = asyncio.run(measure(server.base_url, senders, args))
    finally:
        runtime.close()
    graphql, service, rows = results["graphql"], results["service"], results["rows"]
    return {
        "benchmark": "recommend",
        **environment_figures(url),
        "interactions": args.interactions, "users": args.users, "items": args.items,
        **figures,
        "concurrency": args.concurrency,
        **graphql.figures("graphql", "requests"),
        **service.figures("service", "requests"),
        **rows.figures("rows", "requests"),
        "ratio_graphql_to_service": ratio(graphql.per_second, service.per_second),
        "ratio_graphql_to_rows": ratio(graphql.per_second, rows.per_second),
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=1_000,
                        help="timed requests per side (default 1000)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="concurrent HTTP clients (default 4)")
    parser.add_argument("--warmup", type=int, default=50,
                        help="untimed requests per side first (default 50)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
