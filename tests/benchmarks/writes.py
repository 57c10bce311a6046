"""The write path: direct commands/s with 1/2/4/8 writers against eventsourcing's bare save,
and the SQL statements one command sends.

* commands: `MemberService.update_profile` (load the member, decide, encrypt the personal
  part, save), called directly from 1, 2, 4 and 8 threads, the projection runner stopped.
* baseline: the same number of threads each saving one event at a time with a plain
  `eventsourcing` Application on the same database (the library's own settings, an
  aggregate held in memory: no load, no encryption): the floor of one write.
* statements: every statement one warm command sends to the database, counted at psycopg
  (on PostgreSQL: queries, BEGIN/COMMIT/ROLLBACK and pool pre-pings alike) or at
  SQLAlchemy's and the sqlite3 cursors (SQLite).

Each writer updates its own members, so writers do not clash on versions. The script only
uses `Runtime`, `MemberService` and `runtime.app`, so it runs unchanged against older code:

    python -m tests.benchmarks.writes [--postgres] [--members 64] [--commands 400]
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from api.config import Settings
from api.runtime import Runtime
from tests.benchmarks.common import (
    LoadResult,
    benchmark_parser,
    counting_statements,
    drive_threads,
    environment_figures,
    log,
    metadata_for,
    ratio,
    register_members,
    run_benchmark,
)

WRITERS = (1, 2, 4, 8)


class Tally(Aggregate):
    """The baseline's aggregate: one small event per save."""

    def __init__(self) -> None:
        self.count = 0

    @event("Counted")
    def count_one(self, city: str) -> None:
        self.count += 1


def command_phase(
    runtime: Runtime, members: list[uuid.UUID], writers: int, total: int
) -> LoadResult:
    def call(index: int) -> bool:
        # Writer w (index % writers on a round robin) keeps to its own slice of members.
        member = members[index % len(members)]
        try:
            runtime.members.update_profile(
                member, {"city": f"City {index}"}, metadata_for(str(member)))
        except Exception as error:
            log(f"command {index} failed: {type(error).__name__}: {error}")
            return False
        return True

    return drive_threads(writers, total, call)


def bare_phase(app: Application, writers: int, total: int) -> LoadResult:
    tallies = [Tally() for _ in range(64)]
    app.save(*tallies)

    def call(index: int) -> bool:
        # 64 aggregates, each touched by one thread at a time (index % 64 is taken in turn).
        tally = tallies[index % len(tallies)]
        tally.count_one(f"City {index}")
        try:
            app.save(tally)
        except Exception as error:
            log(f"bare save {index} failed: {type(error).__name__}: {error}")
            return False
        return True

    return drive_threads(writers, total, call)


def bare_env(runtime: Runtime) -> dict[str, str]:
    """The same database, with the library's own defaults (no pre-ping, no snapshots)."""
    env = dict(runtime.settings.database.eventsourcing_env())
    env.pop("POSTGRES_PRE_PING", None)
    return env


def statements_per_command(runtime: Runtime, member: uuid.UUID) -> dict[str, Any]:
    for _ in range(3):  # warm: keys cached, pools filled, statements prepared
        runtime.members.update_profile(member, {"city": "Warm"}, metadata_for(str(member)))
    with counting_statements(runtime) as seen:
        runtime.members.update_profile(member, {"city": "Counted"}, metadata_for(str(member)))
    kinds: dict[str, int] = {}
    for statement in seen:
        kind = statement.split()[0].upper() if statement.strip() else "(empty: pre-ping)"
        kinds[kind] = kinds.get(kind, 0) + 1
    log(f"one warm command: {len(seen)} statements {kinds}")
    log("  " + " | ".join(seen))
    return {"statements_per_command": len(seen), "statements_per_command_by_kind": kinds}


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    runtime = Runtime(Settings.from_env(url))
    figures: dict[str, Any] = {"benchmark": "writes", **environment_figures(url)}
    bare: Application[Any] = Application(env=bare_env(runtime))
    try:
        members = register_members(runtime, args.members)
        figures.update(statements_per_command(runtime, members[0]))
        # Untimed warm-up of both sides.
        command_phase(runtime, members, 2, 40)
        bare_phase(bare, 2, 40)
        for writers in WRITERS:
            commands = command_phase(runtime, members, writers, args.commands)
            log(commands.describe(f"direct commands, {writers} writer(s)"))
            baseline = bare_phase(bare, writers, args.commands)
            log(baseline.describe(f"bare eventsourcing save, {writers} writer(s)"))
            figures.update(commands.figures(f"direct_{writers}w", "commands"))
            figures.update(baseline.figures(f"bare_{writers}w", "saves"))
            figures[f"ratio_direct_to_bare_{writers}w"] = ratio(
                commands.per_second, baseline.per_second)
    finally:
        bare.close()
        runtime.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=64,
                        help="members updated, round robin (default 64)")
    parser.add_argument("--commands", type=int, default=400,
                        help="commands (and bare saves) timed per writer count (default 400)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
