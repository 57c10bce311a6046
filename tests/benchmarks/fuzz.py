"""Fuzz a served Patron with N schema-aware requests; fail on any 5xx, INTERNAL or write
from a rejected request (issue 14).

A real uvicorn on 127.0.0.1 serves a fresh database (PostgreSQL with --postgres), with its
projections running as in production. The requests (tests/fuzzing.py) are hypothesis-graphql
documents for every root query and mutation under every role — valid-shaped and with one
schema violation, derandomized — and the corpus of malformed argument values for every
root field, interleaved, N in all. They are sent one at a time, reading the event store's
head before and after each, so a request that returned errors yet recorded an event is
caught. Bounded: each request times out (--timeout), and the run stops after
--max-minutes with what it has.

The figures (last line of stdout, JSON): requests, HTTP statuses, error codes, and the
three counts that must be 0 — `server_errors`, `internal_errors`, `writes_from_rejected`.
The exit status is 1 if any is not 0 (the first problems are printed to stderr).

    python -m tests.benchmarks.fuzz --postgres [--requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from api.app import create_app
from api.auth import mint_token
from api.config import Settings
from api.runtime import Runtime
from api.schema import build_schema
from domain.metadata import Role
from projections.tables import projection_tracking
from tests.benchmarks.common import (
    LiveServer,
    benchmark_parser,
    emit,
    environment_figures,
    fresh_database,
    log,
)
from tests.fuzzing import ROLES, FuzzRequest, Tally, corpus, generated, root_fields


def requests_for(settings: Settings, total: int) -> list[FuzzRequest]:
    """Half generated documents, half corpus, interleaved; `total` in all."""
    schema = build_schema(settings)._schema
    per_role = max(1, -(-total // (2 * len(ROLES) * len(root_fields(schema)))))
    log(f"generating documents ({per_role} per root field and role) …")
    documents = generated(schema, per_role=per_role)
    malformed = corpus(schema, settings.max_input_length, limit=max(total - len(documents),
                                                                    total // 2))
    log(f"{len(documents)} generated documents, {len(malformed)} malformed values")
    mixed = [r for pair in itertools.zip_longest(documents, malformed) for r in pair if r]
    return list(itertools.islice(itertools.cycle(mixed), total))


async def fuzz(base_url: str, runtime: Runtime, requests: list[FuzzRequest],
               timeout: float, deadline: float) -> tuple[Tally, float]:
    settings = runtime.settings
    tally = Tally()
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        registered = await client.post("/graphql", json={
            "query": "mutation R($input: RegisterMemberInput!) { registerMember(input: $input)"
                     " { token userErrors { field } } }",
            "variables": {"input": {"name": "Fuzz Member", "email": "fuzz@example.com"}}})
        tokens: dict[Role, str | None] = {
            Role.ANONYMOUS: None,
            Role.MEMBER: registered.json()["data"]["registerMember"]["token"],
            Role.AGENT: mint_token(settings.secret_key, Role.AGENT, "agent-fuzz"),
            Role.ADMIN: mint_token(settings.secret_key, Role.ADMIN, "admin-fuzz"),
            Role.AUDITOR: mint_token(settings.secret_key, Role.AUDITOR, "auditor-fuzz",
                                     scopes=("pii",)),
        }
        begun = time.perf_counter()
        for index, request in enumerate(requests):
            if time.monotonic() > deadline:
                log(f"stopping at the time limit after {index} requests")
                break
            headers = {"content-type": "application/json"}
            if tokens[request.role]:
                headers["Authorization"] = f"Bearer {tokens[request.role]}"
            before = runtime.app.recorder.max_notification_id() or 0
            try:
                response = await client.post("/graphql", content=request.body(),
                                             headers=headers)
                status, text = response.status_code, response.text
            except httpx.TimeoutException:
                status, text = 599, "timed out"
            except httpx.TransportError as error:
                status, text = 598, f"transport error: {error!r}"
            after = runtime.app.recorder.max_notification_id() or 0
            for problem in tally.add(request, status, text, before, after):
                log(f"PROBLEM {request.label} as {request.role.value}: {problem}")
            if (index + 1) % 1000 == 0:
                log(f"{index + 1}/{len(requests)} requests, {len(tally.problems)} problems")
        elapsed = time.perf_counter() - begun
        # No projection may be the first to find bad data: every read model reaches the head.
        head = runtime.app.recorder.max_notification_id() or 0
        reached = await asyncio.to_thread(read_models_reach, runtime, head, 60.0)
        if reached < head:
            tally.problems.append(f"read models stuck at {reached}, the head is {head}")
        return tally, elapsed


def read_models_reach(runtime: Runtime, head: int, timeout: float) -> int:
    """The position every projection reached, once it is `head` or `timeout` passed (read
    with the sync engine: the async one belongs to the server's loop)."""
    deadline = time.monotonic() + timeout
    while True:
        with runtime.sync_engine.connect() as conn:
            reached = int(conn.scalar(
                select(func.min(projection_tracking.c.position)).where(
                    projection_tracking.c.name.in_(runtime.projection_names))) or 0)
        if reached >= head or time.monotonic() > deadline:
            return reached
        time.sleep(0.2)


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    # No scheduler: its writes (due loyalty events, retraining) would be taken for writes
    # of the request under way. No rate limits: one client sending thousands of requests
    # would otherwise mostly measure the limiter (tests/test_edge.py covers it).
    settings = Settings.from_env(url, scheduler_interval=0.0, recommender_retrain_hours=0.0,
                                 rate_limit_anonymous="", rate_limit_signed_in="")
    runtime = Runtime(settings)
    try:
        requests = requests_for(settings, args.requests)
        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=True)
        deadline = time.monotonic() + args.max_minutes * 60
        with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
            tally, elapsed = asyncio.run(fuzz(server.base_url, runtime, requests,
                                              args.timeout, deadline))
    finally:
        runtime.close()
    return {
        "benchmark": "fuzz",
        **environment_figures(url),
        "requests": tally.requests,
        "elapsed_s": round(elapsed, 1),
        "requests_per_s": round(tally.requests / elapsed, 1) if elapsed else None,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "answered_without_errors": tally.answered_without_errors,
        "codes": dict(sorted(tally.codes.items())),
        "server_errors": tally.server_errors,
        "internal_errors": tally.internal_errors,
        "writes_from_rejected": tally.writes_from_rejected,
        "problems": len(tally.problems),
        "first_problems": tally.problems[:10],
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--requests", type=int, default=10_000,
                        help="requests to send, one at a time (default 10000)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one request may take (default 30)")
    parser.add_argument("--max-minutes", type=float, default=90.0,
                        help="stop sending after this long (default 90)")
    args = parser.parse_args(argv)
    with fresh_database(args) as url:
        figures = run(args, url)
    emit(figures)
    if figures["problems"]:
        for problem in figures["first_problems"]:
            log(f"problem: {problem}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
