"""What GraphQL costs a single-member read, against a bare JSON route doing the same read.

Both sides are served by one real uvicorn on localhost and hit by the same concurrent
httpx clients, in the same run: `member(id)` through GraphQL with an admin token, and a
plain Starlette route that runs the same read-model query (`get_member_profiles`, the one
the resolver uses, on the same async engine) and returns the same six fields as JSON. The
bare route checks no token; verifying the JWT is part of what the GraphQL side pays.

A third, smaller series against `/healthz` (no database, no GraphQL) shows the floor that
HTTP, uvicorn and the clients in this same process put under both.

    python -m tests.benchmarks.member_query [--postgres] [--requests 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.app import create_app
from api.auth import mint_token
from api.config import Settings
from api.readmodels import get_member_profiles
from api.runtime import Runtime
from api.schema.common import encode_id
from domain.metadata import Role
from tests.benchmarks.common import (
    LiveServer,
    LoadResult,
    benchmark_parser,
    drive_http,
    environment_figures,
    http_clients,
    log,
    ratio,
    register_members,
    run_benchmark,
)

PROJECTION = "member_profiles"
FIELDS = ("name", "email", "city", "status", "tier", "version")

MEMBER_QUERY = """
query Member($id: ID!) {
  member(id: $id) { name email city status tier version }
}
"""

Sender = Callable[[httpx.AsyncClient, int], Awaitable[bool]]


def bare_member_route(runtime: Runtime) -> Callable[[Request], Awaitable[Response]]:
    """The least a server must do to answer the same question: one query, one JSON body."""

    async def bare_member(request: Request) -> Response:
        member_id = request.path_params["member_id"]
        rows = await get_member_profiles(runtime.async_engine, [member_id])
        row = rows.get(member_id)
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({field: row[field] for field in FIELDS})

    return bare_member


class Checker:
    """Counts a response as good only if it is 200 and carries the expected member."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.reported = 0

    def failed(self, index: int, why: str) -> bool:
        if self.reported < 5:
            log(f"{self.label} request {index} failed: {why[:300]}")
        self.reported += 1
        return False


def graphql_sender(members: list[uuid.UUID], emails: dict[uuid.UUID, str], token: str) -> Sender:
    checker = Checker("GraphQL")
    headers = {"Authorization": f"Bearer {token}"}
    global_ids = {member_id: str(encode_id("Member", str(member_id))) for member_id in members}

    async def send(client: httpx.AsyncClient, index: int) -> bool:
        member_id = members[index % len(members)]
        response = await client.post(
            "/graphql",
            json={"query": MEMBER_QUERY, "variables": {"id": global_ids[member_id]}},
            headers=headers,
        )
        if response.status_code != 200:
            return checker.failed(index, f"HTTP {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        member = (body.get("data") or {}).get("member")
        if body.get("errors") or not member or member.get("email") != emails[member_id]:
            return checker.failed(index, str(body))
        return True

    return send


def bare_sender(members: list[uuid.UUID], emails: dict[uuid.UUID, str]) -> Sender:
    checker = Checker("bare")

    async def send(client: httpx.AsyncClient, index: int) -> bool:
        member_id = members[index % len(members)]
        response = await client.get(f"/bare/members/{member_id}")
        if response.status_code != 200:
            return checker.failed(index, f"HTTP {response.status_code}: {response.text}")
        if response.json().get("email") != emails[member_id]:
            return checker.failed(index, response.text)
        return True

    return send


def healthz_sender() -> Sender:
    checker = Checker("healthz")

    async def send(client: httpx.AsyncClient, index: int) -> bool:
        response = await client.get("/healthz")
        if response.status_code != 200:
            return checker.failed(index, f"HTTP {response.status_code}")
        return True

    return send


async def measure(
    base_url: str,
    senders: dict[str, Sender],
    concurrency: int,
    requests: int,
    floor_requests: int,
    warmup: int,
) -> dict[str, LoadResult]:
    """Warm every side up, then time each in turn with the same clients."""
    results: dict[str, LoadResult] = {}
    async with http_clients(base_url, concurrency) as clients:
        for send in senders.values():
            await drive_http(clients, warmup, send)
        for label, send in senders.items():
            count = floor_requests if label == "floor" else requests
            results[label] = await drive_http(clients, count, send)
            log(results[label].describe(f"{label}, {concurrency} clients"))
    return results


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env(url)
    runtime = Runtime(settings)
    try:
        log(f"registering {args.members} members …")
        members = register_members(runtime, args.members, prefix="query")
        emails = {member_id: f"query{i}@example.com" for i, member_id in enumerate(members)}
        runtime.runner.catch_up(PROJECTION)

        app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
        app.add_route("/bare/members/{member_id}", bare_member_route(runtime), methods=["GET"])
        token = mint_token(settings.secret_key, Role.ADMIN)
        senders = {
            "graphql": graphql_sender(members, emails, token),
            "bare": bare_sender(members, emails),
            "floor": healthz_sender(),
        }
        with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
            results = asyncio.run(
                measure(
                    server.base_url, senders, args.concurrency, args.requests,
                    max(args.requests // 4, 1), args.warmup,
                )
            )
    finally:
        runtime.close()

    graphql, bare, floor = results["graphql"], results["bare"], results["floor"]
    return {
        "benchmark": "member_query",
        **environment_figures(url),
        "members": args.members,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        **graphql.figures("graphql", "requests"),
        **bare.figures("bare", "requests"),
        **floor.figures("healthz", "requests"),
        "ratio_graphql_to_bare": ratio(graphql.per_second, bare.per_second),
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=200,
                        help="members registered and read in turn (default 200)")
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed requests per side (default 2000; /healthz gets a quarter)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="concurrent HTTP clients (default 8)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="untimed requests per side before timing (default 100)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
