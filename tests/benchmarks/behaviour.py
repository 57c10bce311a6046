"""Behaviour at volume: ingestion over GraphQL against the application, the behaviour
projection's speed, and a member command's latency before and after 100,000 behaviour
events of that member.

Ingestion: C concurrent clients send `trackBehaviour` batches (B events each) over real HTTP
to a real uvicorn, each as a consenting member (their own token, so every batch is
attributed and its search words encrypted); the same batches are sent C-threaded directly
to `BehaviourService.track`, in the same run on the same database. Figures are behaviour
events per second (batches x B). Direct and HTTP both run with the projection runner
stopped (trackBehaviour waits for no read model), so their ratio is the cost of HTTP and
GraphQL; a third side, `http_live`, serves with the runner running, as in production, and
shows what the projections' competition for CPU (and, on SQLite, for the write lock)
costs. Clients and server share this process (and its GIL).

Member command latency: `MemberService.update_profile` is timed N times for one member,
then that member records H behaviour events (consent on, batches of 500 straight through
`BehaviourService.track`), then N more calls are timed. Behaviour is stored one aggregate
per batch, never in the member's stream, so the two should match; the member's version
before and after the history is reported too, to show the stream did not grow.

Projection: the read model named "member_behaviour" is rebuilt on a fresh Runtime (cold
caches) over everything the run recorded; if no projection of that name is registered,
every registered projection that handles BehaviourBatch events is rebuilt instead (and
`projection_note` says so). Reported per notification read and per behaviour event.

    python -m tests.benchmarks.behaviour [--postgres] [--clients 8] [--batches 400]
        [--batch-size 100] [--history 100000] [--latency-calls 200]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import httpx
from eventsourcing.utils import get_topic

from api.config import Settings
from api.demo import CATALOGUE
from api.runtime import Runtime
from domain.behaviour import MAX_BATCH, BehaviourBatch
from domain.member import Member
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
    percentile,
    ratio,
    register_members,
    run_benchmark,
    serve_and_drive,
)

PROJECTION = "member_behaviour"
CITIES = ("Hangzhou", "Shanghai")

TRACK = """
mutation Track($input: TrackBehaviourInput!) {
  trackBehaviour(input: $input) { accepted attributed userErrors { field message code } }
}
"""

# What a shopper does, in proportions a storefront sees: mostly looking.
PATTERN = ("product_viewed", "product_viewed", "product_viewed", "added_to_cart",
           "searched", "product_viewed", "wish_listed", "removed_from_cart", "shared",
           "product_viewed")


def behaviour(index: int) -> dict[str, Any]:
    """Behaviour event number `index`, as the service takes it."""
    kind = PATTERN[index % len(PATTERN)]
    product = CATALOGUE[index % len(CATALOGUE)]
    if kind == "searched":
        return {"kind": kind, "keywords": f"{product.category} {product.brand} {index % 97}",
                "result_count": index % 40}
    event: dict[str, Any] = {"kind": kind, "product_id": product.product_id,
                             "category": product.category, "brand": product.brand,
                             "price": product.price}
    if kind == "product_viewed":
        event["dwell_seconds"] = 5 + index % 90
    if kind == "shared":
        event["share_channel"] = "wechat"
    return event


def batch(index: int, size: int) -> list[dict[str, Any]]:
    return [behaviour(index * size + i) for i in range(size)]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def graphql_batch(index: int, size: int) -> list[dict[str, Any]]:
    """The same events as GraphQL variables: camelCase fields, enum names in capitals."""
    return [
        {_camel(k): (v.upper() if k in ("kind", "share_channel") else v)
         for k, v in event.items()}
        for event in batch(index, size)
    ]


def consenting_members(runtime: Runtime, count: int, prefix: str) -> list[uuid.UUID]:
    members = register_members(runtime, count, prefix=prefix)
    for member in members:
        runtime.members.set_consent(member, "personalisation", "all", True,
                                    metadata_for(str(member)))
    return members


# -- ingestion ------------------------------------------------------------------------------


def direct_phase(runtime: Runtime, members: list[uuid.UUID], concurrency: int, total: int,
                 size: int, label: str) -> LoadResult:
    """`total` batches of `size` events on BehaviourService, member `i % len(members)`."""
    bodies = [batch(i, size) for i in range(total)]

    def call(index: int) -> bool:
        member = members[index % len(members)]
        try:
            result = runtime.behaviour.track(member, None, bodies[index], f"{label}-{index}",
                                             metadata_for(str(member)))
        except Exception as error:
            log(f"direct batch {index} failed: {type(error).__name__}: {error}")
            return False
        return result.accepted == size and result.attributed

    return drive_threads(concurrency, total, call)


class BatchSender:
    """Sends a `trackBehaviour` batch as each member and checks the answer: HTTP 200, no
    errors, every event accepted and attributed to the member."""

    def __init__(self, tokens: dict[uuid.UUID, str], members: list[uuid.UUID], total: int,
                 size: int, label: str) -> None:
        self.tokens = tokens
        self.members = members
        self.size = size
        self.label = label
        self.bodies = [graphql_batch(i, size) for i in range(total)]
        self._failed = FailureLog("HTTP batch")

    async def __call__(self, client: httpx.AsyncClient, index: int) -> bool:
        member = self.members[index % len(self.members)]
        variables = {"input": {"events": self.bodies[index],
                               "batchKey": f"{self.label}-{index}"}}
        response = await client.post(
            "/graphql", json={"query": TRACK, "variables": variables},
            headers={"Authorization": f"Bearer {self.tokens[member]}"},
        )
        if response.status_code != 200:
            return self._failed(index, f"HTTP {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        payload = (body.get("data") or {}).get("trackBehaviour") or {}
        if body.get("errors") or payload.get("userErrors"):
            return self._failed(index, str(body))
        if payload.get("accepted") != self.size or payload.get("attributed") is not True:
            return self._failed(index, f"not recorded as sent: {payload}")
        return True


async def http_phase(base_url: str, tokens: dict[uuid.UUID, str], members: list[uuid.UUID],
                     args: argparse.Namespace, label: str) -> LoadResult:
    async with http_clients(base_url, args.clients) as clients:
        if args.warmup:
            await drive_http(clients, args.warmup, BatchSender(
                tokens, members, args.warmup, args.batch_size, f"warm-{label}"))
        return await drive_http(clients, args.batches, BatchSender(
            tokens, members, args.batches, args.batch_size, label))


def event_figures(result: LoadResult, prefix: str, size: int) -> dict[str, Any]:
    """Batch figures (latency per batch) plus events per second."""
    return {
        **result.figures(prefix, "batches"),
        f"{prefix}_events_per_s": round(result.per_second * size, 1),
    }


def ingestion_figures(args: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], int]:
    """The figures, and how many behaviour events the phase recorded.

    Three sides: direct and HTTP with the projection runner stopped (trackBehaviour waits
    for no read model, so this compares the API's cost with the command's alone), then
    HTTP again with the runner running and catching up, as a server runs (its projections
    then compete for the CPU and, on SQLite, for the one write lock).
    """
    runtime = Runtime(settings)
    try:
        log(f"registering 3 x {args.clients} consenting members …")
        direct_members = consenting_members(runtime, args.clients, "direct")
        http_members = consenting_members(runtime, args.clients, "http")
        live_members = consenting_members(runtime, args.clients, "live")
        if args.warmup:
            direct_phase(runtime, direct_members, args.clients, args.warmup, args.batch_size,
                         "warm-direct")
        direct = direct_phase(runtime, direct_members, args.clients, args.batches,
                              args.batch_size, "direct")
        log(direct.describe(f"direct batches of {args.batch_size}, {args.clients} threads"))
        tokens = member_tokens(settings.secret_key, http_members + live_members)
        http = serve_and_drive(runtime, lambda base_url: http_phase(
            base_url, tokens, http_members, args, "http"), run_projections=False)
        log(http.describe(f"HTTP trackBehaviour batches of {args.batch_size}, "
                          f"{args.clients} clients, projections stopped"))

        # What the two phases wrote, applied by every projection: the live side starts
        # caught up.
        begun = time.perf_counter()
        for name in runtime.projection_names:
            try:
                runtime.runner.catch_up(name)
            except Exception as error:  # reported, and the runner retries it while serving
                log(f"projection {name} failed to catch up: {type(error).__name__}: {error}")
        catch_up_s = time.perf_counter() - begun
        log(f"projections caught up in {catch_up_s:.2f}s")
        live = serve_and_drive(runtime, lambda base_url: http_phase(
            base_url, tokens, live_members, args, "live"))
        log(live.describe(f"HTTP trackBehaviour batches of {args.batch_size}, "
                          f"{args.clients} clients, projections running"))
    finally:
        runtime.close()
    succeeded = sum(r.operations - r.failures for r in (direct, http, live))
    recorded = (3 * args.warmup + succeeded) * args.batch_size
    figures = {
        "clients": args.clients,
        "batch_size": args.batch_size,
        "batches_per_side": args.batches,
        **event_figures(http, "http", args.batch_size),
        **event_figures(direct, "direct", args.batch_size),
        "ratio_http_to_direct": ratio(http.per_second, direct.per_second),
        **event_figures(live, "http_live", args.batch_size),
        "ratio_http_live_to_direct": ratio(live.per_second, direct.per_second),
        "catch_up_before_live_s": round(catch_up_s, 3),
    }
    return figures, recorded


# -- member command latency -----------------------------------------------------------------


def time_profile_updates(runtime: Runtime, member: uuid.UUID, calls: int,
                         offset: int) -> list[float]:
    latencies = []
    for index in range(calls):
        changes = {"city": CITIES[(offset + index) % 2]}
        begun = time.perf_counter()
        runtime.members.update_profile(member, changes, metadata_for(str(member)))
        latencies.append(time.perf_counter() - begun)
    return latencies


def ms(latencies: list[float], q: float) -> float | None:
    return round(percentile(latencies, q) * 1000, 3) if latencies else None


def latency_figures(args: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], int]:
    runtime = Runtime(settings)  # the projection runner is not started: commands alone
    try:
        (member,) = consenting_members(runtime, 1, "busy")
        time_profile_updates(runtime, member, args.latency_warmup, 0)
        before = time_profile_updates(runtime, member, args.latency_calls, 1)
        version_before = runtime.uow.get(Member, member).version
        log(f"update_profile before: p50 {ms(before, 50)} ms, p99 {ms(before, 99)} ms")

        batches = -(-args.history // MAX_BATCH)
        log(f"recording {args.history} behaviour events for the member in {batches} "
            f"batches …")
        written = 0
        begun = time.perf_counter()
        for index in range(batches):
            size = min(MAX_BATCH, args.history - written)
            result = runtime.behaviour.track(member, None, batch(index, size),
                                             f"history-{index}", metadata_for(str(member)))
            assert result.attributed and result.accepted == size
            written += size
        history_s = time.perf_counter() - begun
        log(f"history recorded in {history_s:.1f}s")
        version_after_history = runtime.uow.get(Member, member).version

        time_profile_updates(runtime, member, args.latency_warmup, 0)
        after = time_profile_updates(runtime, member, args.latency_calls, 1)
        log(f"update_profile after: p50 {ms(after, 50)} ms, p99 {ms(after, 99)} ms")
    finally:
        runtime.close()
    figures = {
        "member_behaviour_events": written,
        "history_write_events_per_s": round(written / history_s, 1) if history_s else None,
        "member_command_calls": args.latency_calls,
        "member_command_before_p50_ms": ms(before, 50),
        "member_command_before_p99_ms": ms(before, 99),
        "member_command_after_p50_ms": ms(after, 50),
        "member_command_after_p99_ms": ms(after, 99),
        "ratio_after_to_before_p50": ratio(percentile(after, 50), percentile(before, 50)),
        "member_version_before_history": version_before,
        "member_version_after_history": version_after_history,
    }
    return figures, written


# -- projection -----------------------------------------------------------------------------


def projection_figures(settings: Settings, behaviour_events: int) -> dict[str, Any]:
    runtime = Runtime(settings)
    try:
        topic = get_topic(BehaviourBatch.Recorded)
        if PROJECTION in runtime.projection_names:
            names, note = [PROJECTION], None
        else:
            names = [name for name, projection in runtime.runner.projections.items()
                     if projection.handles(topic)]
            note = (f"no projection named {PROJECTION!r} is registered; rebuilt the "
                    f"projections handling BehaviourBatch events instead: {names or 'none'}")
            log(note)
        read, elapsed, failure = 0, 0.0, None
        for name in names:
            log(f"rebuilding {name} …")
            begun = time.perf_counter()
            try:
                read += runtime.runner.rebuild(name)
            except Exception as error:  # the figures say so rather than vanish
                failure = f"{name}: {type(error).__name__}: {str(error)[:300]}"
                log(f"rebuild failed: {failure}")
            elapsed += time.perf_counter() - begun
    finally:
        runtime.close()
    if failure is not None:
        names, note = [], f"{note + '; ' if note else ''}rebuild failed: {failure}"
        read, elapsed = 0, 0.0
    if names:
        log(f"rebuilt {names}: {read} notifications ({behaviour_events} behaviour events) "
            f"in {elapsed:.2f}s")
    return {
        "projections_rebuilt": names,
        "projection_note": note,
        "projection_notifications": read,
        "projection_behaviour_events": behaviour_events if names else 0,
        "projection_rebuild_s": round(elapsed, 3),
        "projection_notifications_per_s": round(read / elapsed, 1) if elapsed else None,
        "projection_events_per_s": round(behaviour_events / elapsed, 1) if elapsed else None,
    }


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise SystemExit(f"--batch-size must be 1 to {MAX_BATCH}")
    # No scheduler ticking in the server while it is measured.
    settings = Settings.from_env(url, scheduler_interval=0.0)
    ingestion, ingested = ingestion_figures(args, settings)
    latency, history = latency_figures(args, settings)
    projection = projection_figures(settings, ingested + history)
    return {"benchmark": "behaviour", **environment_figures(url), **ingestion, **latency,
            **projection}


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--clients", type=int, default=8,
                        help="HTTP clients and direct threads (default 8)")
    parser.add_argument("--batches", type=int, default=400,
                        help="batches timed on each side (default 400)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help=f"events per batch, 1 to {MAX_BATCH} (default 100)")
    parser.add_argument("--warmup", type=int, default=16,
                        help="untimed batches before the timed ones, per side (default 16)")
    parser.add_argument("--history", type=int, default=100_000,
                        help="behaviour events the busy member records (default 100000)")
    parser.add_argument("--latency-calls", type=int, default=200,
                        help="update_profile calls timed before and after (default 200)")
    parser.add_argument("--latency-warmup", type=int, default=20,
                        help="untimed update_profile calls before each timing (default 20)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
