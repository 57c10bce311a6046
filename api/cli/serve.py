"""`patron serve`: the API with uvicorn, migrated first on SQLite, seeded on request."""

from __future__ import annotations

import click

from api.cli.common import database_option, progress, require_migrated, runtime_for, settings_for
from api.cli.main import main
from api.cli.seed import demo_settings
from api.config import Settings


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@database_option
@click.option("--demo", is_flag=True, help="Seed demo members if the database has none.")
@click.option(
    "--projections/--no-projections",
    default=True,
    show_default=True,
    help="Run the projection runner inside the server (or use `patron projections run`).",
)
def serve(host: str, port: int, database_url: str | None, demo: bool, projections: bool) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql in a browser)."""
    import uvicorn

    from api.app import create_app
    from api.runtime import migrate

    settings = settings_for(database_url, create=True, run_projections=projections)
    click.echo(f"database: {settings.database.safe_url}")
    click.echo(f"signing key: {settings.secret_key_source}")
    if settings.database.is_sqlite or demo:
        migrate(settings.database)
    else:
        require_migrated(settings.database)
    if demo:
        _seed_if_empty(settings)
    app = create_app(settings, migrate_on_start=False)
    click.echo(f"GraphiQL: http://{host}:{port}/graphql")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _seed_if_empty(settings: Settings, members: int = 50, seed: int = 7) -> None:
    from sqlalchemy import func, select

    from api.demo import DEMO_DAYS, demo_runtime_clock, seed_demo
    from domain.clock import AdjustableClock
    from projections.tables import member_profiles

    clock = AdjustableClock(demo_runtime_clock(DEMO_DAYS))
    runtime = runtime_for(demo_settings(settings), migrate_first=True, clock=clock)
    try:
        head = runtime.runner.head()
        with runtime.sync_engine.connect() as conn:
            existing = conn.scalar(select(func.count()).select_from(member_profiles))
        if head or existing:
            click.echo("demo: the database already has events; not seeding")
            return
        with progress(DEMO_DAYS, "seeding a demo year") as update:
            seed_demo(runtime, members=members, seed=seed, day_progress=update)
        runtime.runner.run_once()
    finally:
        runtime.close()
