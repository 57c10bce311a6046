"""What one member per email costs a registration, and how a crowd racing for one address
resolves.

Three phases on one database, each with its own addresses:
- **reserved**: `MemberService.register`, which saves the member, their email's
  reservation, their loyalty account and welcome coupon in one transaction;
- **baseline**: the same aggregates saved through the same unit of work, without the
  reservation (what registration cost before the rule);
- **contended**: groups of `--concurrency` threads register one address each group at
  once; exactly one per group must win and the others get CONFLICT (checked, reported).

    python -m tests.benchmarks.registration [--postgres] [--registrations 400]
"""

from __future__ import annotations

import argparse
import threading
from datetime import timedelta
from typing import Any
from uuid import uuid5

from api.config import Settings
from api.runtime import Runtime
from api.service import Session
from domain.coupon import Coupon, CouponSource
from domain.errors import ConflictError
from domain.loyalty import LoyaltyAccount
from domain.member import Member
from domain.metadata import Role
from domain.pricing import CouponTerms
from tests.benchmarks.common import (
    LoadResult,
    benchmark_parser,
    drive_threads,
    environment_figures,
    log,
    metadata_for,
    ratio,
    run_benchmark,
)


def details(prefix: str, index: int) -> dict[str, Any]:
    return {"name": f"Bench {index}", "email": f"{prefix}{index}@example.com"}


def reserved_phase(runtime: Runtime, prefix: str, concurrency: int, total: int) -> LoadResult:
    meta = metadata_for("anonymous", Role.ANONYMOUS)

    def call(index: int) -> bool:
        runtime.members.register(details(prefix, index), meta)
        return True

    return drive_threads(concurrency, total, call)


def baseline_phase(runtime: Runtime, prefix: str, concurrency: int, total: int) -> LoadResult:
    """Registration as it was before the rule: the same events, minus the reservation."""
    meta = metadata_for("anonymous", Role.ANONYMOUS)
    rules = runtime.rules

    def call(index: int) -> bool:
        def decide(session: Session) -> Member:
            now = runtime.clock.now()
            member = session.add(Member.register(details(prefix, index), now.date(), meta))
            account = session.add(LoyaltyAccount.open(str(member.id), now, meta))
            if rules.welcome_coupon_value:
                terms = CouponTerms("fixed", rules.welcome_coupon_value,
                                    rules.welcome_coupon_min_spend)
                session.add(Coupon.issue(
                    uuid5(account.id, "welcome"), str(member.id), CouponSource.WELCOME, terms,
                    now, now + timedelta(days=rules.welcome_coupon_valid_days), "welcome",
                    now, meta,
                ))
            return member

        runtime.uow.run(decide)
        return True

    return drive_threads(concurrency, total, call)


def contended_phase(runtime: Runtime, groups: int, concurrency: int) -> tuple[LoadResult, int]:
    """`groups` rounds of `concurrency` threads registering one address: winners counted."""
    meta = metadata_for("anonymous", Role.ANONYMOUS)
    winners = 0
    lock = threading.Lock()

    def call(index: int) -> bool:
        nonlocal winners
        group = index // concurrency
        try:
            runtime.members.register(
                {"name": f"Racer {index}", "email": f"RACE{group}@example.com"}, meta)
        except ConflictError:
            return True  # the expected outcome for all but one
        with lock:
            winners += 1
        return True

    return drive_threads(concurrency, groups * concurrency, call), winners


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    runtime = Runtime(Settings.from_env(url, run_projections=False))
    try:
        if args.warmup:
            reserved_phase(runtime, "warm-r", 1, args.warmup)
            baseline_phase(runtime, "warm-b", 1, args.warmup)
        reserved = reserved_phase(runtime, "reserved", 1, args.registrations)
        log(reserved.describe("with reservation, sequential"))
        baseline = baseline_phase(runtime, "baseline", 1, args.registrations)
        log(baseline.describe("without reservation, sequential"))
        reserved_c = reserved_phase(runtime, "reserved-c", args.concurrency, args.registrations)
        log(reserved_c.describe(f"with reservation, {args.concurrency} threads"))
        baseline_c = baseline_phase(runtime, "baseline-c", args.concurrency, args.registrations)
        log(baseline_c.describe(f"without reservation, {args.concurrency} threads"))
        contended, winners = contended_phase(runtime, args.groups, args.concurrency)
        log(contended.describe(f"{args.groups} x {args.concurrency} threads racing for one "
                               f"address") + f"; {winners} winners")
        if winners != args.groups:
            raise SystemExit(f"expected {args.groups} winners, got {winners}")
    finally:
        runtime.close()
    return {
        "benchmark": "registration",
        **environment_figures(url),
        **reserved.figures("reserved", "registrations"),
        **baseline.figures("baseline", "registrations"),
        "ratio_reserved_to_baseline": ratio(reserved.per_second, baseline.per_second),
        **reserved_c.figures("reserved_concurrent", "registrations"),
        **baseline_c.figures("baseline_concurrent", "registrations"),
        "ratio_reserved_to_baseline_concurrent": ratio(
            reserved_c.per_second, baseline_c.per_second),
        **contended.figures("contended", "attempts"),
        "contended_winners": winners,
    }


def main(argv: list[str] | None = None) -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--registrations", type=int, default=400,
                        help="registrations timed in each phase (default 400)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="threads in the concurrent and contended phases (default 8)")
    parser.add_argument("--groups", type=int, default=25,
                        help="addresses raced for in the contended phase (default 25)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed registrations per side first (default 20)")
    run_benchmark(parser, run, argv)


if __name__ == "__main__":
    main()
