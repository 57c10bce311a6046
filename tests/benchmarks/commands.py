"""What the HTTP GraphQL path costs a member command, against calling the application.

The same command (`updateMemberProfile`, changing the city) is sent N times by concurrent
clients over real HTTP to a real uvicorn, and called N times directly on MemberService
from as many threads (and once more sequentially), in the same run on the same database.
The HTTP figures include everything a frontend waits for: the token check, GraphQL, the
command in a worker thread, and read-your-writes (the response waits until the read model
shows the write). The direct figures are the command alone, with the projection runner
stopped; how long the runner then takes to apply those writes is reported separately.

Each phase updates its own, freshly registered members, so no phase replays the events
another phase appended. Clients and server share this process (and its GIL).

    python -m tests.benchmarks.commands [--postgres] [--members 200] [--commands 800]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import httpx

from api.config import Settings
from api.runtime import Runtime
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

PROJECTION = "member_profiles"

UPDATE_PROFILE = """
mutation UpdateProfile($input: UpdateMemberProfileInput!) {
  updateMemberProfile(input: $input) {
    position
    member { version city }
    userErrors { field message code }
  }
}
"""


def city(index: int) -> str:
    return f"City {index}"


def direct_phase(
    runtime: Runtime, members: list[uuid.UUID], concurrency: int, total: int
) -> LoadResult:
    """`total` update_profile calls on MemberService, member `i % len(members)` each."""

    def call(index: int) -> bool:
        member_id = members[index % len(members)]
        try:
            runtime.members.update_profile(
                member_id, {"city": city(index)}, metadata_for(str(member_id))
            )
        except Exception as error:
            log(f"direct command {index} failed: {type(error).__name__}: {error}")
            return False
        return True

    return drive_threads(concurrency, total, call)


class MutationSender:
    """Sends `updateMemberProfile` as each member (their own token) and checks the answer:
    HTTP 200, no errors, and a member that already shows the new city."""

    def __init__(self, tokens: dict[uuid.UUID, str], members: list[uuid.UUID]) -> None:
        self.tokens = tokens
        self.members = members
        self._failed = FailureLog("HTTP command")

    async def __call__(self, client: httpx.AsyncClient, index: int) -> bool:
        member_id = self.members[index % len(self.members)]
        response = await client.post(
            "/graphql",
            json={"query": UPDATE_PROFILE, "variables": {"input": {"city": city(index)}}},
            headers={"Authorization": f"Bearer {self.tokens[member_id]}"},
        )
        if response.status_code != 200:
            return self._failed(index, f"HTTP {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        payload = (body.get("data") or {}).get("updateMemberProfile") or {}
        if body.get("errors") or payload.get("userErrors"):
            return self._failed(index, str(body))
        member = payload.get("member")
        if not member or member.get("city") != city(index):
            return self._failed(index, f"read-your-writes not honoured: {body}")
        return True


async def http_phase(
    base_url: str,
    tokens: dict[uuid.UUID, str],
    warmup_members: list[uuid.UUID],
    members: list[uuid.UUID],
    concurrency: int,
    total: int,
    warmup: int,
) -> LoadResult:
    async with http_clients(base_url, concurrency) as clients:
        if warmup:
            await drive_http(clients, warmup, MutationSender(tokens, warmup_members))
        return await drive_http(clients, total, MutationSender(tokens, members))


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env(url)
    runtime = Runtime(settings)
    try:
        log(f"registering 3 x {args.members} members (+{4 * args.concurrency} for warm-up) …")
        warmup_members = register_members(runtime, 4 * args.concurrency, prefix="warmup")
        sequential_members = register_members(runtime, args.members, prefix="sequential")
        concurrent_members = register_members(runtime, args.members, prefix="concurrent")
        http_members = register_members(runtime, args.members, prefix="http")

        if args.warmup:
            direct_phase(runtime, warmup_members, 1, args.warmup)
        sequential = direct_phase(runtime, sequential_members, 1, args.commands)
        log(sequential.describe("direct, sequential"))
        concurrent = direct_phase(runtime, concurrent_members, args.concurrency, args.commands)
        log(concurrent.describe(f"direct, {args.concurrency} threads"))

        # The direct writes are not in the read model yet; applying them is the work the
        # HTTP side waits for, so time it too (and start the HTTP side caught up).
        begun = time.perf_counter()
        applied = runtime.runner.catch_up(PROJECTION)
        catch_up_s = time.perf_counter() - begun
        log(f"projection caught up on {applied} events in {catch_up_s:.2f}s")
        # Every other read model too: the HTTP side must not start behind a backlog.
        while runtime.runner.run_once():
            pass

        tokens = member_tokens(settings.secret_key, warmup_members + http_members)
        http = serve_and_drive(runtime, lambda base_url: http_phase(
            base_url, tokens, warmup_members, http_members,
            args.concurrency, args.commands, args.warmup,
        ))
        log(http.describe(f"HTTP GraphQL, {args.concurrency} clients"))
    finally:
        runtime.close()

    return {
        "benchmark": "commands",
        **environment_figures(url),
        "members_per_phase": args.members,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        **http.figures("http", "commands"),
        **concurrent.figures("direct", "commands"),
        **sequential.figures("direct_sequential", "commands"),
        "ratio_http_to_direct": ratio(http.per_second, concurrent.per_second),
        "ratio_http_to_direct_sequential": ratio(http.per_second, sequential.per_second),
        "projection_catch_up_events": applied,
        "projection_catch_up_events_per_s": round(applied / catch_up_s, 1) if catch_up_s else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=200,
                        help="members updated in each phase (default 200)")
    parser.add_argument("--commands", type=int, default=800,
                        help="commands timed in each phase (default 800)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="HTTP clients and direct threads (default 8)")
    parser.add_argument("--warmup", type=int, default=40,
                        help="untimed commands before the timed ones, per side (default 40)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
