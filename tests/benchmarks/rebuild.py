"""How fast a projection rebuild goes, against the floor of merely reading the events.

A rebuild reads every notification, decodes it (decrypting personal data with the member's
data key) and applies it to the read model. Reading and decoding the same notifications in
the same batch size, without applying them, is the least any rebuild must do; the ratio of
the two shows how much of a rebuild is spent in the projection's own SQL and bookkeeping.

Each side is timed on a fresh Runtime, so it starts with a cold data-key cache, as after a
restart. Unless --no-warm is given, both are timed again on a runtime whose key cache holds
every key and does not expire, which isolates the cost of fetching keys.

Then, unless --demo-members is 0, a demo year (`api.demo.seed_demo`) is seeded into a
second database and rebuilt three ways, each beside reading and decoding the same events
(the notifications the rebuilt read models handle, fetched with their topic filter, in the
runner's batch size, on a fresh runtime): `member_profiles` alone, `loyalty` alone, and
every projection at once (all reset, then one shared pass, as after a fresh deploy).

    python -m tests.benchmarks.rebuild [--postgres] [--members 2000] [--setup batched|commands]
        [--demo-members 50] [--demo-days 365]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import delete, func, select, update

from api.config import Settings
from api.demo import demo_runtime_clock, seed_demo
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.member import Member
from domain.metadata import Role
from projections.tables import member_profiles, projection_tracking
from tests.benchmarks.common import (
    benchmark_parser,
    environment_figures,
    fresh_database,
    log,
    metadata_for,
    ratio,
    register_members,
    run_benchmark,
)

PROJECTION = "member_profiles"
REASON = "benchmark"
# Long enough that no key expires during a warm run.
WARM_KEY_CACHE_SECONDS = 24 * 3600.0
EVENTS_PER_MEMBER = 10

PROFILE = {"city": "Shanghai", "occupation": "engineer"}
PERSONAL = {"phone": "+86 13800000000", "birthday": "1990-05-17"}
TASTES = {"categories": ["books", "outdoor"], "brands": ["lumen"], "ui": {"theme": "dark"}}
DELIVERY = {
    "delivery": {
        "time_window": "evening",
        "packaging": ["eco"],
        "default_address": {
            "recipient": "Bench Member", "line1": "1 Bench Road", "city": "Shanghai",
            "country": "CN",
        },
    }
}


def member_history(runtime: Runtime, member_id: uuid.UUID, batched: bool) -> None:
    """Nine commands after registration, touching every handler of the projection and
    putting personal data (encrypted) into three of the ten events.

    Batched, the nine domain commands are decided on one loaded aggregate and saved in one
    unit of work (the same events, in the same order, through the same mapper and
    recorder); unbatched, each is its own MemberService command, load and save.
    """
    mid = str(member_id)
    admin = "bench-admin"
    today = runtime.clock.today()
    commands: list[tuple[Callable[[Member], None], Callable[[], Any]]] = [
        (
            lambda m: m.update_profile(PROFILE, today, metadata_for(mid)),
            lambda: runtime.members.update_profile(member_id, PROFILE, metadata_for(mid)),
        ),
        (
            lambda m: m.update_profile(PERSONAL, today, metadata_for(mid)),
            lambda: runtime.members.update_profile(member_id, PERSONAL, metadata_for(mid)),
        ),
        (
            lambda m: m.set_preferences(TASTES, metadata_for(mid)),
            lambda: runtime.members.set_preferences(member_id, TASTES, metadata_for(mid)),
        ),
        (
            lambda m: m.set_preferences(DELIVERY, metadata_for(mid)),
            lambda: runtime.members.set_preferences(member_id, DELIVERY, metadata_for(mid)),
        ),
        (
            lambda m: m.set_consent("marketing", "sms", True, metadata_for(mid)),
            lambda: runtime.members.set_consent(
                member_id, "marketing", "sms", True, metadata_for(mid)
            ),
        ),
        (
            lambda m: m.set_consent("personalisation", "all", True, metadata_for(mid)),
            lambda: runtime.members.set_consent(
                member_id, "personalisation", "all", True, metadata_for(mid)
            ),
        ),
        (
            lambda m: m.tag("vip", metadata_for(admin, Role.ADMIN, REASON)),
            lambda: runtime.members.tag(member_id, "vip", metadata_for(admin, Role.ADMIN, REASON)),
        ),
        (
            lambda m: m.untag("vip", metadata_for(admin, Role.ADMIN, REASON)),
            lambda: runtime.members.untag(
                member_id, "vip", metadata_for(admin, Role.ADMIN, REASON)
            ),
        ),
        (
            lambda m: m.set_status("blocked", metadata_for(admin, Role.ADMIN, REASON)),
            lambda: runtime.members.set_status(
                member_id, "blocked", metadata_for(admin, Role.ADMIN, REASON)
            ),
        ),
    ]
    if batched:

        def decide(member: Member) -> None:
            for on_aggregate, _ in commands:
                on_aggregate(member)

        runtime.uow.change(Member, member_id, decide)
    else:
        for _, through_service in commands:
            through_service()


def write_events(runtime: Runtime, members: int, threads: int, batched: bool) -> None:
    """Register members through MemberService, then give each its history.

    Threads work on disjoint members, so they never clash on an aggregate; the setup is not
    what is measured.
    """
    ids = register_members(runtime, members, prefix="rebuild")
    done = 0
    lock = threading.Lock()

    def history(member_id: uuid.UUID) -> None:
        nonlocal done
        member_history(runtime, member_id, batched)
        with lock:
            done += 1
            if done % 500 == 0:
                log(f"wrote histories of {done}/{members} members")

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        for future in [pool.submit(history, member_id) for member_id in ids]:
            future.result()


def read_notifications(runtime: Runtime, batch_size: int, decode: bool) -> int:
    """Read every notification in batches as the runner does; decode each if asked."""
    recorder = runtime.app.recorder
    mapper = runtime.app.mapper
    start = 1
    count = 0
    while True:
        notifications = recorder.select_notifications(start=start, limit=batch_size)
        if not notifications:
            return count
        if decode:
            # As the runner does: the batch's data keys in one query, when the mapper can.
            prefetch = getattr(mapper, "prefetch_keys", None)
            projection = runtime.runner.projections[PROJECTION]
            if prefetch is not None:
                prefetch({owner for notification in notifications
                          if (owner := projection.data_key_owner(notification))})
            for notification in notifications:
                mapper.to_domain_event(notification)
        count += len(notifications)
        start = notifications[-1].id + 1


def timed(label: str, work: Callable[[], int]) -> tuple[int, float]:
    log(f"{label} …")
    begun = time.perf_counter()
    count = work()
    elapsed = time.perf_counter() - begun
    log(f"{label}: {count} events in {elapsed:.2f}s = {count / elapsed:.0f} events/s")
    return count, elapsed


def rebuild(runtime: Runtime) -> int:
    applied = 0

    def progress(count: int) -> None:
        nonlocal applied
        before, applied = applied, applied + count
        if applied // 5000 != before // 5000:
            log(f"  rebuild applied {applied} events")

    return runtime.runner.rebuild(PROJECTION, progress)


def profile_count(runtime: Runtime) -> int:
    with runtime.sync_engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(member_profiles)) or 0)


def per_second(count: int, elapsed: float) -> float:
    return round(count / elapsed, 1) if elapsed else 0.0


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    settings = Settings.from_env(url)
    batch = settings.projection_batch_size

    setup = Runtime(settings)
    try:
        log(
            f"writing the history of {args.members} members "
            f"({args.members * EVENTS_PER_MEMBER} events, {args.setup} setup) …"
        )
        begun = time.perf_counter()
        write_events(setup, args.members, args.setup_threads, args.setup == "batched")
        setup_s = time.perf_counter() - begun
        head = setup.runner.head()
        log(f"setup: head position {head} after {setup_s:.1f}s")
    finally:
        setup.close()

    # Cold: a fresh runtime per side, so neither profits from keys the other fetched.
    cold = Runtime(settings)
    try:
        events, rebuild_s = timed("rebuild (cold key cache)", lambda: rebuild(cold))
        profiles = profile_count(cold)
    finally:
        cold.close()
    cold = Runtime(settings)
    try:
        read_events, read_s = timed(
            "read only", lambda: read_notifications(cold, batch, decode=False)
        )
        decoded, read_decode_s = timed(
            "read + decode (cold key cache)", lambda: read_notifications(cold, batch, decode=True)
        )
    finally:
        cold.close()

    figures: dict[str, Any] = {
        "benchmark": "rebuild",
        **environment_figures(url),
        "members": args.members,
        "setup": args.setup,
        "events": events,
        "batch_size": batch,
        "data_key_cache_seconds": settings.data_key_cache_seconds,
        "setup_s": round(setup_s, 2),
        "profiles_after_rebuild": profiles,
        "rebuild_s": round(rebuild_s, 3),
        "rebuild_events_per_s": per_second(events, rebuild_s),
        "read_decode_s": round(read_decode_s, 3),
        "read_decode_events_per_s": per_second(decoded, read_decode_s),
        "read_only_events_per_s": per_second(read_events, read_s),
        "ratio_rebuild_to_read_decode": ratio(
            per_second(events, rebuild_s), per_second(decoded, read_decode_s)
        ),
    }
    if decoded != events or read_events != events:
        log(f"WARNING: rebuild read {events} events but the read pass saw {decoded}")

    if args.warm:
        warm_settings = Settings.from_env(url, data_key_cache_seconds=WARM_KEY_CACHE_SECONDS)
        warm = Runtime(warm_settings)
        try:
            timed("filling the key cache", lambda: read_notifications(warm, batch, decode=True))
            warm_decoded, warm_read_decode_s = timed(
                "read + decode (warm key cache)",
                lambda: read_notifications(warm, batch, decode=True),
            )
            warm_events, warm_rebuild_s = timed("rebuild (warm key cache)", lambda: rebuild(warm))
        finally:
            warm.close()
        figures.update(
            {
                "warm_rebuild_events_per_s": per_second(warm_events, warm_rebuild_s),
                "warm_read_decode_events_per_s": per_second(warm_decoded, warm_read_decode_s),
                "warm_ratio_rebuild_to_read_decode": ratio(
                    per_second(warm_events, warm_rebuild_s),
                    per_second(warm_decoded, warm_read_decode_s),
                ),
                "ratio_cold_to_warm_rebuild": ratio(
                    per_second(events, rebuild_s), per_second(warm_events, warm_rebuild_s)
                ),
            }
        )
    return figures


# -- a demo year ----------------------------------------------------------------------------

DEMO_REBUILDS = ("member_profiles", "loyalty", "all")


def read_and_decode_for(runtime: Runtime, names: list[str], batch_size: int) -> int:
    """Read the notifications `names` handle (the runner's topic filter and batch size) and
    decode each, applying nothing: the floor of rebuilding those read models. Data keys are
    fetched per batch as the runner fetches them, so the floor is not inflated by key
    look-ups the runner no longer makes."""
    recorder = runtime.app.recorder
    mapper = runtime.app.mapper
    topics = sorted(set().union(*(runtime.runner.projections[n].topics for n in names)))
    start, decoded = 1, 0
    while True:
        notifications = recorder.select_notifications(
            start=start, limit=batch_size, topics=topics
        )
        if not notifications:
            return decoded
        # As the runner does: the batch's data keys in one query, when the mapper can.
        prefetch = getattr(mapper, "prefetch_keys", None)
        if prefetch is not None:
            prefetch({
                owner for notification in notifications for name in names
                if runtime.runner.projections[name].handles(notification.topic)
                and (owner := runtime.runner.projections[name].data_key_owner(notification))
            })
        for notification in notifications:
            mapper.to_domain_event(notification)
        decoded += len(notifications)
        start = notifications[-1].id + 1


def rebuild_all(runtime: Runtime) -> int:
    """Reset every read model (tables emptied, position zero), then replay them together in
    the shared pass; returns the notifications they handled."""
    runner = runtime.runner
    names = list(runner.projections)
    with runtime.sync_engine.begin() as conn:
        for name in names:
            for table in reversed(runner.projections[name].tables):
                conn.execute(delete(table))
        conn.execute(
            update(projection_tracking)
            .where(projection_tracking.c.name.in_(names))
            .values(position=0, events_applied=0, last_error=None, last_error_at=None)
        )
    runner.applied.clear()
    runner.run_once()
    runner.release_leases()
    failing = runner.failing()
    if failing:
        raise RuntimeError(f"read models failed during the rebuild: {failing}")
    return handled_by(runtime, names)


def handled_by(runtime: Runtime, names: list[str]) -> int:
    topics = sorted(set().union(*(runtime.runner.projections[n].topics for n in names)))
    recorder = runtime.app.recorder
    start, count = 1, 0
    while True:
        found = recorder.select_notifications(start=start, limit=5000, topics=topics)
        if not found:
            return count
        count += len(found)
        start = found[-1].id + 1


def demo_figures(args: argparse.Namespace, url: str) -> dict[str, Any]:
    # The demo pays through the built-in simulator; its scheduler is driven by seed_demo.
    settings = Settings.from_env(url, scheduler_interval=0.0, payment_simulator=True)
    batch = settings.projection_batch_size
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
    figures: dict[str, Any] = {
        "demo_members": args.demo_members,
        "demo_days": args.demo_days,
        "demo_seed_s": round(seed_s, 2),
        "demo_events": head,
    }
    for which in DEMO_REBUILDS:
        runtime = Runtime(settings)
        try:
            names = list(runtime.runner.projections) if which == "all" else [which]
            if which == "all":
                _, rebuild_s = timed("demo: rebuild of every projection",
                                     lambda: rebuild_all(runtime))  # noqa: B023
                events = handled_by(runtime, names)
            else:
                events, rebuild_s = timed(f"demo: rebuild of {which}",
                                          lambda: runtime.runner.rebuild(which))  # noqa: B023
                # rebuild() counts positions passed; the events are those it handles.
                events = handled_by(runtime, names)
        finally:
            runtime.close()
        runtime = Runtime(settings)
        try:
            decoded, read_decode_s = timed(
                f"demo: read + decode for {which}",
                lambda: read_and_decode_for(runtime, names, batch),  # noqa: B023
            )
        finally:
            runtime.close()
        if decoded != events:
            log(f"WARNING: {which}: rebuild handled {events} events, the read pass {decoded}")
        rebuild_rate = per_second(events, rebuild_s)
        read_rate = per_second(decoded, read_decode_s)
        log(f"demo {which}: rebuild {rebuild_rate:.0f} events/s, read + decode "
            f"{read_rate:.0f} events/s ({events} events)")
        figures.update({
            f"demo_{which}_events": events,
            f"demo_{which}_rebuild_s": round(rebuild_s, 3),
            f"demo_{which}_rebuild_events_per_s": rebuild_rate,
            f"demo_{which}_read_decode_events_per_s": read_rate,
            f"demo_{which}_ratio_rebuild_to_read_decode": ratio(rebuild_rate, read_rate),
        })
    return figures


def run_all(args: argparse.Namespace, url: str) -> dict[str, Any]:
    figures = run(args, url)
    if args.demo_members:
        # The demo year gets a throw-away database of its own, on the same backend.
        demo_args = argparse.Namespace(**vars(args))
        if not args.postgres and not str(url).startswith("postgresql"):
            demo_args.database_url = None
        with fresh_database(demo_args) as demo_url:
            figures.update(demo_figures(args, demo_url))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--members", type=int, default=2000,
                        help="members to write; each has 10 events (default 2000)")
    parser.add_argument(
        "--setup",
        choices=("batched", "commands"),
        default="batched",
        help="batched: one unit of work per member history (fast); commands: one "
        "MemberService call per event (a several times slower setup)",
    )
    parser.add_argument("--setup-threads", type=int, default=1,
                        help="threads writing member histories during setup (default 1: more "
                        "threads were slower on both backends)")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="skip the runs with a warm data-key cache")
    parser.add_argument("--demo-members", type=int, default=50,
                        help="members of the demo year rebuilt (default 50; 0 skips it)")
    parser.add_argument("--demo-days", type=int, default=365,
                        help="days the demo simulates (default 365)")
    parser.add_argument("--seed", type=int, default=7, help="demo seed (default 7)")
    run_benchmark(parser, run_all, argv)


if __name__ == "__main__":
    main()
