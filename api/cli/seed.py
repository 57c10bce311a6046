"""`patron seed demo`: a deterministic demo population and a year of its commerce."""

from __future__ import annotations

import click

from api.cli.common import database_option, progress, runtime_for, settings_for
from api.cli.main import main
from api.config import Settings


def demo_settings(settings: Settings) -> Settings:
    """The demo's members pay through the built-in simulator provider (the seed acts as the
    provider, signing its callbacks), never with a real provider's secret."""
    import dataclasses

    from api.config import SIMULATOR

    return dataclasses.replace(settings, payment_simulator=True, payment_provider=SIMULATOR)


@main.group()
def seed() -> None:
    """Seed data."""


@seed.command("demo")
@click.option("--members", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--seed", "seed_value", default=7, show_default=True, type=int)
@click.option("--days", default=365, show_default=True, type=click.IntRange(0, 3650),
              help="Days of commerce to simulate, ending today (0: members only).")
@database_option
def seed_demo_command(
    members: int, seed_value: int, days: int, database_url: str | None
) -> None:
    """Write a deterministic demo population, and a year of its commerce, through the real
    command path."""
    from api.demo import demo_runtime_clock, seed_demo
    from domain.clock import AdjustableClock

    clock = AdjustableClock(demo_runtime_clock(days)) if days else None
    runtime = runtime_for(demo_settings(settings_for(database_url, create=True)),
                       migrate_first=True, clock=clock)
    try:
        if days:
            with progress(days, f"simulating {days} days") as update:
                seed_demo(runtime, members=members, seed=seed_value, days=days,
                          day_progress=update)
        else:
            with progress(members, "seeding demo members") as update:
                seed_demo(runtime, members=members, seed=seed_value, progress=update)
        with progress(runtime.runner.head(), "projecting") as update:
            for name in runtime.runner.projections:
                runtime.runner.catch_up(name, progress=update)
    finally:
        runtime.close()
    click.echo(f"seeded {members} members (seed {seed_value})")
