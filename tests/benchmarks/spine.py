"""The projection spine: SQL statements per pass, and commit → visible latency.

Two figures, each taken after every projection has caught up (so no backlog skews them):

* statements: one new event (a profile update) is recorded, then one runner pass
  (`run_once`) applies it to every read model; every SQL statement the pass sends is
  counted, including COMMIT/ROLLBACK and pool pre-pings. On PostgreSQL every psycopg
  statement is counted (SQLAlchemy and the event store both use psycopg); on SQLite the
  SQLAlchemy side is counted through its cursor events plus the event store's reads.
* visible: the background runner follows live writes from 1 and from 8 writer threads
  (direct `update_profile` commands); for each write, the time from its commit to the
  moment the runner in this process reports every projection at or past its position.

The script only uses `Runtime`, `runner.run_once`, `runner.applied` and `start_projections`,
so it runs unchanged against older code to give a baseline:

    python -m tests.benchmarks.spine [--postgres] [--writes 300]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from api.config import Settings
from api.runtime import Runtime
from tests.benchmarks.common import (
    LoadResult,
    benchmark_parser,
    counting_statements,
    environment_figures,
    log,
    metadata_for,
    register_members,
    run_benchmark,
)


def statements_for_one_event(runtime: Runtime, member: uuid.UUID) -> dict[str, Any]:
    runtime.runner.run_once()  # caught up
    runtime.runner.run_once()  # and warm (leases held, connections open)
    runtime.members.update_profile(member, {"city": "Counted"}, metadata_for(str(member)))
    with counting_statements(runtime) as seen:
        begun = time.perf_counter()
        runtime.runner.run_once()
        elapsed = time.perf_counter() - begun
    kinds: dict[str, int] = {}
    for statement in seen:
        kind = statement.split()[0].upper() if statement else "?"
        kinds[kind] = kinds.get(kind, 0) + 1
    log(f"one pass over one new event: {len(seen)} statements in {elapsed * 1000:.1f} ms "
        f"{kinds}")
    return {"statements_per_pass": len(seen), "pass_ms": round(elapsed * 1000, 2),
            "statements_by_kind": kinds}


def everywhere(runtime: Runtime) -> int:
    applied = dict(runtime.runner.applied)
    if set(applied) != set(runtime.runner.projections):
        return 0
    return min(applied.values())


def visible_latency(
    runtime: Runtime, members: list[uuid.UUID], writers: int, writes: int
) -> LoadResult:
    """Commit → visible in every read model, as seen by the runner in this process."""
    result = LoadResult()
    lock = threading.Lock()
    pending: list[tuple[int, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() or pending:
            reached = everywhere(runtime)
            now = time.perf_counter()
            with lock:
                still = []
                for position, committed in pending:
                    if reached >= position:
                        result.latencies_s.append(now - committed)
                    else:
                        still.append((position, committed))
                pending[:] = still
            time.sleep(0.0005)

    def write(worker: int) -> None:
        for index in range(worker, writes, writers):
            member = members[index % len(members)]
            outcome = runtime.members.update_profile(
                member, {"city": f"City {index}"}, metadata_for(str(member)))
            with lock:
                pending.append((outcome.position or 0, time.perf_counter()))
            result.operations += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    begun = time.perf_counter()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed_s = time.perf_counter() - begun
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    watcher.join()
    result.failures = len(pending)
    return result


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    runtime = Runtime(Settings.from_env(url))
    figures: dict[str, Any] = {"benchmark": "spine", **environment_figures(url)}
    try:
        members = register_members(runtime, args.members)
        log("catching up every projection …")
        while runtime.runner.run_once():
            pass
        figures.update(statements_for_one_event(runtime, members[0]))
        runtime.start_projections()
        time.sleep(0.5)
        for writers in (1, 8):
            latency = visible_latency(runtime, members, writers, args.writes)
            log(latency.describe(f"commit → visible, {writers} writer(s)"))
            figures.update(latency.figures(f"visible_{writers}w", "writes"))
    finally:
        runtime.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--writes", type=int, default=300,
                        help="writes timed per writer count (default 300)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
