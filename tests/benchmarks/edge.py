"""/healthz stays responsive while hostile GraphQL documents are refused (issue 14).

One real uvicorn on localhost serves the application. Hostile clients send, concurrently
and without pause, the fragment bomb of the issue (L0..L7, each spreading the previous ten
times: 10^9 selections in 726 characters) and 30 aliases of the nested members / orders /
shipments / timeline query, both anonymously; meanwhile a prober GETs /healthz at a fixed
interval and records its latency. Every hostile request must be refused with
QUERY_TOO_COSTLY (anything else counts as a failure). Before serving, the refusal of the bomb
is timed in-process (parse + limits, the work the server does per request).

Rate limits are off for the run: they would refuse the flood before the cost check, and the
point is to measure the check itself.

    python -m tests.benchmarks.edge [--postgres] [--hostile 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.queues
import time
from typing import Any

import httpx
from graphql import parse

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime
from api.schema import build_schema
from api.schema.limits import measure
from tests.benchmarks.common import (
    LiveServer,
    LoadResult,
    benchmark_parser,
    environment_figures,
    log,
    percentile,
    run_benchmark,
)
from tests.hostile_queries import COSTLY, fragment_bomb

HOSTILE = {"bomb": fragment_bomb(), "costly": COSTLY}


def offline_refusal_ms(settings: Settings, repeats: int) -> dict[str, float]:
    """Median time to parse and price each hostile document, in this process."""
    schema = build_schema(settings)._schema
    figures = {}
    for name, document in HOSTILE.items():
        times = []
        for _ in range(repeats):
            begun = time.perf_counter()
            found = measure(schema, parse(document), None, {}, settings.default_page_size,
                            settings.max_page_size)
            times.append(time.perf_counter() - begun)
            assert found.cost > settings.max_query_cost
        figures[f"{name}_parse_and_price_p50_ms"] = round(percentile(times, 50) * 1000, 3)
    return figures


async def attack(base_url: str, hostile: int, concurrency: int) -> dict[str, Any]:
    """Send `hostile` requests from `concurrency` clients, alternating the two documents."""
    results = {name: LoadResult() for name in HOSTILE}
    remaining = hostile

    async def attacker(client: httpx.AsyncClient, number: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            # By the request's number, not the client's: every client sends both documents.
            name = "bomb" if (hostile - remaining) % 2 else "costly"
            begun = time.perf_counter()
            response = await client.post("/graphql", json={"query": HOSTILE[name]})
            results[name].latencies_s.append(time.perf_counter() - begun)
            errors = response.json().get("errors") if response.status_code == 200 else None
            if not errors or errors[0].get("extensions", {}).get("code") != "QUERY_TOO_COSTLY":
                results[name].failures += 1
                if results[name].failures <= 3:
                    log(f"{name}: HTTP {response.status_code} {response.text[:200]}")

    clients = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(concurrency)]
    try:
        begun = time.perf_counter()
        await asyncio.gather(*(attacker(c, i) for i, c in enumerate(clients)))
        elapsed = time.perf_counter() - begun
    finally:
        for client in clients:
            await client.aclose()
    figures: dict[str, Any] = {
        "hostile_requests": sum(len(r.latencies_s) for r in results.values()),
        "hostile_per_s": round(hostile / elapsed, 1),
        "hostile_failures": sum(r.failures for r in results.values()),
    }
    for name, result in results.items():
        figures[f"{name}_refused_p50_ms"] = result.percentile_ms(50)
        figures[f"{name}_refused_p99_ms"] = result.percentile_ms(99)
    return figures


def attack_process(base_url: str, hostile: int, concurrency: int,
                   out: multiprocessing.queues.Queue[dict[str, Any]]) -> None:
    """The attackers run in a process of their own, as they would on another machine: in
    the server's process they would compete with it for the interpreter lock."""
    out.put(asyncio.run(attack(base_url, hostile, concurrency)))


async def probe(base_url: str, attackers: multiprocessing.Process, probes: int,
                interval: float) -> LoadResult:
    """GET /healthz every `interval` seconds while the attackers run (at most `probes`)."""
    health = LoadResult()
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for _ in range(probes):
            if not attackers.is_alive():
                break
            begun = time.perf_counter()
            response = await client.get("/healthz")
            health.latencies_s.append(time.perf_counter() - begun)
            health.failures += response.status_code != 200
            await asyncio.sleep(interval)
    return health


def drive(base_url: str, hostile: int, concurrency: int, probes: int,
          interval: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[dict[str, Any]] = context.Queue()
    attackers = context.Process(target=attack_process,
                                args=(base_url, hostile, concurrency, out), daemon=True)
    attackers.start()
    try:
        health = asyncio.run(probe(base_url, attackers, probes, interval))
        figures = out.get(timeout=600)
    finally:
        attackers.join(30)
    if not health.latencies_s:
        raise RuntimeError("the attack ended before the first probe: raise --hostile")
    return {
        **figures,
        "healthz_probes": len(health.latencies_s),
        "healthz_failures": health.failures,
        "healthz_p50_ms": health.percentile_ms(50),
        "healthz_p99_ms": health.percentile_ms(99),
        "healthz_max_ms": round(max(health.latencies_s) * 1000, 2),
    }


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env(url, rate_limit_anonymous="", rate_limit_signed_in="")
    offline = offline_refusal_ms(settings, args.repeats)
    log(f"in-process refusal: {offline}")
    runtime = Runtime(settings)
    try:
        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
            figures = drive(server.base_url, args.hostile, args.concurrency, args.probes,
                            args.probe_interval)
    finally:
        runtime.close()
    log(f"healthz p50 {figures['healthz_p50_ms']} ms, p99 {figures['healthz_p99_ms']} ms, "
        f"max {figures['healthz_max_ms']} ms while {figures['hostile_requests']} hostile "
        f"requests were refused ({figures['hostile_failures']} not as QUERY_TOO_COSTLY)")
    return {
        "benchmark": "edge",
        **environment_figures(url),
        "concurrency": args.concurrency,
        **offline,
        **figures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--hostile", type=int, default=2000,
                        help="hostile requests in all (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="concurrent hostile clients (default 8)")
    parser.add_argument("--probes", type=int, default=2000,
                        help="at most this many /healthz probes (default 2000)")
    parser.add_argument("--probe-interval", type=float, default=0.01,
                        help="seconds between /healthz probes (default 0.01)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="in-process refusals timed per document (default 50)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
