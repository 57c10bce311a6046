"""The `patron` command: serve, migrate, run projections, mint tokens, seed demo data."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from api.auth import PII_SCOPE, mint_token, parse_duration
from api.config import ConfigurationError, Settings
from domain.metadata import Role
from projections.database import DatabaseConfig, DatabaseURLError

database_option = click.option(
    "--database-url",
    envvar="PATRON_DATABASE_URL",
    default=None,
    help="sqlite:///PATH (default sqlite:///./patron.db) or postgresql://USER@HOST:PORT/DB",
)


@contextmanager
def _progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """Report progress from the first step, on a terminal or not.

    On a terminal this is click's progress bar. Elsewhere (a container's log, CI, `nohup`)
    click prints the label once and then nothing until the end, so a long seed looks hung;
    there we write a line to stderr at every tenth of the way, with the elapsed time.
    """
    if sys.stderr.isatty() or sys.stdout.isatty():
        with click.progressbar(length=length, label=label) as bar:
            yield bar.update
        return
    started = time.monotonic()
    done = 0
    reported = -1
    click.echo(f"{label}: 0/{length}", err=True)

    def update(steps: int) -> None:
        nonlocal done, reported
        done += steps
        tenth = done * 10 // max(length, 1)
        if tenth > reported and done < length:
            reported = tenth
            click.echo(f"{label}: {done}/{length} after {time.monotonic() - started:.0f} s",
                       err=True)

    yield update
    click.echo(f"{label}: {done}/{length} in {time.monotonic() - started:.0f} s", err=True)


def _settings(database_url: str | None, *, create: bool = False, **overrides: Any) -> Settings:
    """The settings a command runs with.

    Only commands that create a database (`serve`, `seed demo`) may start on a SQLite file
    that does not exist. Any other command run from the wrong directory would otherwise
    create an empty database and a new signing key beside it, and then mint tokens or
    report figures that the real server knows nothing about.
    """
    try:
        if not create:
            database = DatabaseConfig.from_env(database_url)
            if database.is_sqlite and not database.sqlite_path.exists():
                raise click.ClickException(
                    f"there is no Patron database at {database.sqlite_path}; run this command "
                    "in the server's directory, or point at the server's database with "
                    "--database-url sqlite:///PATH/TO/patron.db (or PATRON_DATABASE_URL)"
                )
        return Settings.from_env(database_url, **overrides)
    except (ConfigurationError, DatabaseURLError) as error:
        raise click.ClickException(str(error)) from None


def _runtime(settings: Settings, *, migrate_first: bool = False, clock: Any = None) -> Any:
    """A runtime on a migrated database; only commands that write data migrate first."""
    from api.runtime import Runtime, migrate

    try:
        if migrate_first:
            migrate(settings.database)
        else:
            _require_migrated(settings.database)
        return Runtime(settings, clock=clock)
    except click.ClickException:
        raise
    except Exception as error:
        raise click.ClickException(
            f"cannot open {settings.database.safe_url}: {type(error).__name__}: {error}"
        ) from None


def _require_migrated(database: DatabaseConfig) -> None:
    from api.runtime import migrations_current

    engine = database.create_sync_engine()
    try:
        current = migrations_current(engine, database)
    finally:
        engine.dispose()
    if not current:
        raise click.ClickException(
            f"{database.safe_url} is not migrated to the current schema: run `patron migrate`"
        )


@click.group()
@click.option("--log-level", default="INFO", envvar="PATRON_LOG_LEVEL", show_default=True)
def main(log_level: str) -> None:
    """Patron: a member-centric e-commerce backend (GraphQL over an event-sourced core)."""
    from projections.redaction import RedactingFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


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

    settings = _settings(database_url, create=True, run_projections=projections)
    click.echo(f"database: {settings.database.safe_url}")
    click.echo(f"signing key: {settings.secret_key_source}")
    if settings.database.is_sqlite or demo:
        migrate(settings.database)
    else:
        _require_migrated(settings.database)
    if demo:
        _seed_if_empty(settings)
    app = create_app(settings, migrate_on_start=False)
    click.echo(f"GraphiQL: http://{host}:{port}/graphql")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _demo_settings(settings: Settings) -> Settings:
    """The demo's members pay through the built-in simulator provider (the seed acts as the
    provider, signing its callbacks), never with a real provider's secret."""
    import dataclasses

    from api.config import SIMULATOR

    return dataclasses.replace(settings, payment_simulator=True, payment_provider=SIMULATOR)


def _seed_if_empty(settings: Settings, members: int = 50, seed: int = 7) -> None:
    from sqlalchemy import func, select

    from api.demo import DEMO_DAYS, demo_runtime_clock, seed_demo
    from domain.clock import AdjustableClock
    from projections.tables import member_profiles

    clock = AdjustableClock(demo_runtime_clock(DEMO_DAYS))
    runtime = _runtime(_demo_settings(settings), migrate_first=True, clock=clock)
    try:
        head = runtime.runner.head()
        with runtime.sync_engine.connect() as conn:
            existing = conn.scalar(select(func.count()).select_from(member_profiles))
        if head or existing:
            click.echo("demo: the database already has events; not seeding")
            return
        with _progress(DEMO_DAYS, "seeding a demo year") as update:
            seed_demo(runtime, members=members, seed=seed, day_progress=update)
        runtime.runner.run_once()
    finally:
        runtime.close()


@main.command()
@database_option
def migrate(database_url: str | None) -> None:
    """Apply database migrations (read models and event store tables)."""
    from api.runtime import migrate as apply

    try:
        database = DatabaseConfig.from_env(database_url)
        apply(database)
    except DatabaseURLError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"migrated {database.safe_url}")


@main.group()
def projections() -> None:
    """Inspect, run and rebuild projections (read models)."""


@projections.command("status")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def projections_status(database_url: str | None, as_json: bool) -> None:
    """Position, lag and last error per projection."""
    runtime = _runtime(_settings(database_url))
    try:
        statuses = runtime.runner.status()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps([s.__dict__ for s in statuses], default=str, indent=2))
        return
    click.echo(f"{'projection':<20} {'position':>10} {'head':>10} {'lag':>8}  last error")
    for s in statuses:
        error = f"{s.last_error} ({s.last_error_at})" if s.last_error else "-"
        click.echo(f"{s.name:<20} {s.position:>10} {s.head:>10} {s.lag:>8}  {error}")
    skipped = [(s.name, skip) for s in statuses for skip in s.skipped]
    if skipped:
        click.echo("")
        click.echo("skipped events:")
        for name, (position, reason, by, at) in skipped:
            click.echo(f"  {name} at position {position}, by {by} on {at}: {reason}")


@projections.command("skip")
@click.argument("name")
@click.argument("position", type=click.IntRange(min=1))
@click.option("--reason", required=True, help="Why this event is skipped (kept in status).")
@click.option("--by", "skipped_by", default=None,
              help="Who decides (default: the operating-system user).")
@database_option
def projections_skip(
    name: str, position: int, reason: str, skipped_by: str | None, database_url: str | None
) -> None:
    """Let projection NAME pass over the event at POSITION (after inspecting it).

    Only that read model skips it, now and in every rebuild; the skip and its reason show
    in `patron projections status`. A running runner picks it up on its next attempt.
    """
    import getpass

    from projections.engine import SkipRefusedError

    runtime = _runtime(_settings(database_url))
    try:
        topic = runtime.runner.skip(name, position, reason, skipped_by or getpass.getuser())
    except SkipRefusedError as error:
        raise click.ClickException(str(error)) from None
    finally:
        runtime.close()
    click.echo(f"{name} will skip the event at position {position} ({topic})")


@projections.command("event")
@click.argument("position", type=click.IntRange(min=1))
@database_option
def projections_event(position: int, database_url: str | None) -> None:
    """Show what the event at POSITION is (type, aggregate, version, time), to decide a skip.

    Ids and metadata only: the event's personal data stays encrypted under the member's key.
    """
    runtime = _runtime(_settings(database_url))
    try:
        found = runtime.app.recorder.select_notifications(start=position, limit=1, stop=position)
        if not found:
            raise click.ClickException(f"there is no event at position {position}")
        notification = found[0]
        handled_by = [n for n, p in runtime.runner.projections.items()
                      if p.handles(notification.topic)]
        event = runtime.app.mapper.to_domain_event(notification)
        click.echo(f"position:   {position}")
        click.echo(f"type:       {notification.topic}")
        click.echo(f"aggregate:  {notification.originator_id} version "
                   f"{notification.originator_version}")
        click.echo(f"recorded:   {getattr(event, 'timestamp', '-')}")
        click.echo(f"handled by: {', '.join(handled_by) or '-'}")
    finally:
        runtime.close()


@projections.command("run")
@database_option
def projections_run(database_url: str | None) -> None:
    """Run the projection runner in this process until interrupted."""
    import signal
    import threading

    runtime = _runtime(_settings(database_url))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    where = runtime.settings.database.safe_url
    click.echo(f"projection runner {runtime.runner.owner} following {where}")
    runtime.start_projections()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()


@projections.command("rebuild")
@click.argument("name", required=False)
@database_option
def projections_rebuild(name: str | None, database_url: str | None) -> None:
    """Rebuild NAME (or every projection) from position zero."""
    runtime = _runtime(_settings(database_url))
    try:
        names = [name] if name else list(runtime.runner.projections)
        unknown = [n for n in names if n not in runtime.runner.projections]
        if unknown:
            known = ", ".join(runtime.runner.projections)
            raise click.ClickException(f"unknown projection {unknown[0]!r}; known: {known}")
        head = runtime.runner.head()
        for projection in names:
            with _progress(head, f"rebuilding {projection}") as update:
                applied = runtime.runner.rebuild(projection, progress=update)
            click.echo(f"{projection}: replayed {applied} events")
    finally:
        runtime.close()


@main.command()
@click.option(
    "--role", required=True, type=click.Choice(["member", "agent", "admin", "auditor"])
)
@click.option("--member-id", default=None, help="Required for --role member.")
@click.option("--subject", default=None, help="Staff id to record as the actor.")
@click.option("--expires", default="1h", show_default=True, help="e.g. 30m, 12h, 7d")
@click.option("--pii", is_flag=True, help="Auditors: allow unmasked personal data.")
@database_option
def token(
    role: str,
    member_id: str | None,
    subject: str | None,
    expires: str,
    pii: bool,
    database_url: str | None,
) -> None:
    """Mint a bearer token for development."""
    settings = _settings(database_url)
    try:
        value = mint_token(
            settings.secret_key,
            Role(role),
            member_id if role == "member" else subject,
            parse_duration(expires),
            (PII_SCOPE,) if pii else (),
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(value)


@main.group()
def loyalty() -> None:
    """Loyalty operations."""


@loyalty.command("tick")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def loyalty_tick(database_url: str | None, as_json: bool) -> None:
    """Emit every due event once (releases, expiries, tier maintenance, birthdays, order
    completion): for cron-style operation beside or instead of the in-server scheduler."""
    runtime = _runtime(_settings(database_url))
    try:
        report = runtime.scheduler.tick()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        click.echo(
            f"{report.at.isoformat()}: settled {report.accounts_settled} accounts, "
            f"{report.birthdays} birthdays, completed {report.orders_completed} orders"
        )
    if report.errors:
        raise click.ClickException("; ".join(report.errors))


@main.group()
def members() -> None:
    """Member maintenance."""


@members.command("reserve-emails")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def members_reserve_emails(database_url: str | None, as_json: bool) -> None:
    """Reserve every member's email (one member per email): run once after upgrading a
    database whose members registered before reservations existed; safe to run again.

    Members are taken in registration order, so the first to register an address keeps
    it; later members with the same address are listed by id (never by address) as
    conflicts for staff to resolve, and the command then exits with status 1."""
    from api.service import ReservationOutcome

    runtime = _runtime(_settings(database_url))
    try:
        report = runtime.members.reserve_all_emails()
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps({outcome.value: ids for outcome, ids in report.items()}))
    else:
        click.echo(", ".join(f"{len(ids)} {outcome.value}" for outcome, ids in report.items()))
        for member_id in report[ReservationOutcome.CONFLICT]:
            click.echo(f"conflict: member {member_id} uses an email an earlier member holds")
    if report[ReservationOutcome.CONFLICT]:
        sys.exit(1)


@main.group()
def payments() -> None:
    """Payment provider operations for development and the demo."""


def _order_uuid(order_id: str) -> Any:
    """An order id as printed by the API: its UUID or its global id (`Order:<uuid>`)."""
    import uuid

    from strawberry.relay import GlobalID

    try:
        return uuid.UUID(order_id)
    except ValueError:
        pass
    try:
        global_id = GlobalID.from_id(order_id)
        if global_id.type_name == "Order":
            return uuid.UUID(global_id.node_id)
    except Exception:
        pass
    raise click.BadParameter(f"{order_id!r} is not an order id", param_hint="ORDER_ID")


@payments.command("simulate")
@click.argument("order_id")
@click.option("--outcome", type=click.Choice(["succeeded", "failed"]), required=True)
@click.option("--amount", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Minor units the provider reports (default: the attempt's amount due).")
@click.option("--reference", default=None,
              help="The attempt's provider reference (default: the order's latest attempt).")
@click.option("--failure-reason", default=None, help="With --outcome failed.")
@click.option("--url", default=None,
              help="POST to this running server (e.g. http://127.0.0.1:8000); default: "
                   "deliver in-process through the same verification and service code.")
@database_option
def payments_simulate(order_id: str, outcome: str, amount: int | None, reference: str | None,
                      failure_reason: str | None, url: str | None,
                      database_url: str | None) -> None:
    """Sign and send the payment provider's callback for ORDER_ID's payment attempt, exactly
    as the provider would (HMAC-SHA256 over timestamp and body, api/signing.py)."""
    from api.payment_simulator import SimulationError, simulate

    target = _order_uuid(order_id)
    runtime = _runtime(_settings(database_url))
    try:
        status, answer = simulate(runtime, target, outcome, amount, reference=reference,
                                  failure_reason=failure_reason, url=url)
    except SimulationError as error:
        raise click.ClickException(error.message) from None
    finally:
        runtime.close()
    click.echo(json.dumps({"status": status, **answer}))
    if status != 202:
        raise click.ClickException(f"the callback was refused with HTTP {status}")


@main.group()
def notifications() -> None:
    """Where member notices are delivered besides the in-app inbox."""


@notifications.command("add-webhook")
@click.argument("url")
@click.option("--secret", required=True, help="Shared secret for X-Patron-Signature (16+ chars).")
@database_option
def notifications_add_webhook(url: str, secret: str, database_url: str | None) -> None:
    """Deliver every notice to URL as signed JSON, with retries and back-off."""
    from api.outbound import register_webhook

    runtime = _runtime(_settings(database_url))
    try:
        webhook_id = register_webhook(runtime.sync_engine, url, secret)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    finally:
        runtime.close()
    click.echo(f"registered webhook {webhook_id} for {url}")


@notifications.command("remove-webhook")
@click.argument("webhook_id")
@database_option
def notifications_remove_webhook(webhook_id: str, database_url: str | None) -> None:
    """Stop delivering notices to a registered webhook."""
    from api.outbound import deactivate_webhook

    runtime = _runtime(_settings(database_url))
    try:
        found = deactivate_webhook(runtime.sync_engine, webhook_id)
    finally:
        runtime.close()
    if not found:
        raise click.ClickException(f"no webhook {webhook_id}")
    click.echo(f"webhook {webhook_id} deactivated")


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
    runtime = _runtime(_demo_settings(_settings(database_url, create=True)),
                       migrate_first=True, clock=clock)
    try:
        if days:
            with _progress(days, f"simulating {days} days") as update:
                seed_demo(runtime, members=members, seed=seed_value, days=days,
                          day_progress=update)
        else:
            with _progress(members, "seeding demo members") as update:
                seed_demo(runtime, members=members, seed=seed_value, progress=update)
        with _progress(runtime.runner.head(), "projecting") as update:
            for name in runtime.runner.projections:
                runtime.runner.catch_up(name, progress=update)
    finally:
        runtime.close()
    click.echo(f"seeded {members} members (seed {seed_value})")


@loyalty.command("liability")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def loyalty_liability(database_url: str | None, as_json: bool) -> None:
    """The points the shop owes its members (available, pending, debt), by tier and by
    expiry, with their value at the redemption rate: the figures of `pointsLiability`."""
    import asyncio

    from api.commerce_readmodels import points_liability

    runtime = _runtime(_settings(database_url))
    try:
        book = asyncio.run(points_liability(runtime.async_engine))
        rules = runtime.rules
    finally:
        runtime.close()

    def worth(points: int) -> str:
        value = rules.points_value(points)
        return f"{value // rules.minor_units_per_unit}.{value % rules.minor_units_per_unit:02d}"

    report = {
        "position": book.position,
        "currency": rules.currency,
        "total": {**vars(book.total), "available_value": rules.points_value(book.total.available),
                  "pending_value": rules.points_value(book.total.pending)},
        "by_tier": {tier: vars(bucket) for tier, bucket in book.by_tier.items()},
        "by_expiry": [{"expires_at": e.expires_at.isoformat() if e.expires_at else None,
                       "points": e.points, "value": rules.points_value(e.points)}
                      for e in book.by_expiry],
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    total = book.total
    click.echo(f"as of position {book.position}: {total.members} accounts, "
               f"{total.available} available ({worth(total.available)} {rules.currency}), "
               f"{total.pending} pending ({worth(total.pending)} {rules.currency}), "
               f"{total.debt} owed by members")
    for tier, bucket in book.by_tier.items():
        click.echo(f"  {tier:<9} {bucket.members:>7} accounts {bucket.available:>12} available "
                   f"{bucket.pending:>10} pending {bucket.debt:>8} debt")
    for entry in book.by_expiry:
        when = entry.expires_at.date().isoformat() if entry.expires_at else "never"
        click.echo(f"  expiring {when}: {entry.points} ({worth(entry.points)} "
                   f"{rules.currency})")


@main.group()
def recommend() -> None:
    """Train, evaluate and switch recommender models."""


def _cli_meta(reason: str) -> Any:
    """An operator at the console acts as an admin, named after their login."""
    import getpass
    import uuid

    from domain.metadata import Channel, EventMetadata

    return EventMetadata(actor_id=f"cli:{getpass.getuser()}", actor_role=Role.ADMIN,
                         channel=Channel.SYSTEM, correlation_id=f"cli-{uuid.uuid4().hex}",
                         causation_id=None, request_id=uuid.uuid4().hex, reason=reason)


@recommend.command("train")
@database_option
@click.option("--reason", default="trained from the command line", show_default=True)
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Serve the new version at once.")
@click.option("--force", is_flag=True,
              help="Activate it even if it loses to the popularity baseline (with --reason).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def recommend_train(database_url: str | None, reason: str, activate: bool, force: bool,
                    as_json: bool) -> None:
    """Train a model version on the read models as they are now (progress on stderr)."""
    runtime = _runtime(_settings(database_url))
    try:
        runtime.runner.run_once()  # train on everything recorded so far
        report = runtime.recommender.train(
            _cli_meta(reason), activate=activate, force=force,
            progress=lambda message: click.echo(f"  {message}", err=True))
    except Exception as error:
        raise click.ClickException(f"training failed: {error}") from None
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    hybrid = report.metrics.get("hybrid") or {}
    baseline = report.metrics.get("popularity") or {}
    click.echo(f"version {report.version} ({'active' if report.activated else 'not active'}): "
               f"{report.interactions} interactions, {report.members} members, "
               f"{report.products} products, {report.seconds:.1f}s")
    if hybrid:
        k = report.metrics["k"]
        click.echo(f"  precision@{k} {hybrid['precision']:.4f} vs popularity "
                   f"{baseline.get('precision', 0):.4f}; recall@{k} {hybrid['recall']:.4f}; "
                   f"NDCG@{k} {hybrid['ndcg']:.4f}")
    if report.note:
        click.echo(f"  {report.note}")


@recommend.command("evaluate")
@database_option
@click.option("--ratings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A MovieLens u.data file (user, item, rating, timestamp; tab-separated).")
@click.option("--synthetic", is_flag=True,
              help="The built-in synthetic shop (100,000 interactions, planted tastes).")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--split", "split_kind", type=click.Choice(["random", "temporal"]),
              default="random", show_default=True)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--relevance-threshold", type=float, default=None,
              help="Count only held-out interactions this strong as relevant (e.g. 4).")
@click.option("--items", "items_path", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Item metadata for --ratings: a CSV/TSV with a header (item_id, title, "
                   "categories, brand, price, released) or MovieLens' u.item.")
@click.option("--diversity", type=click.FloatRange(0.0), default=None,
              help="Fix the served model's popularity penalty instead of choosing it on "
                   "validation.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def recommend_evaluate(database_url: str | None, ratings: str | None, synthetic: bool, k: int,
                       split_kind: str, seed: int, relevance_threshold: float | None,
                       items_path: str | None, diversity: float | None,
                       as_json: bool) -> None:
    """Offline evaluation against the popularity baseline: the shop's own behaviour by
    default, a MovieLens file with --ratings (and item metadata with --items), or the
    synthetic shop with --synthetic. Precision and coverage are always reported
    together; "served" names the model the shop serves (the hybrid)."""
    from domain.recommendation.evaluation import default_models, evaluate
    from domain.recommendation.items import read_items
    from domain.recommendation.models import HybridModel

    if ratings and synthetic:
        raise click.UsageError("choose --ratings or --synthetic, not both")
    if items_path and not ratings:
        raise click.UsageError("--items describes the items of --ratings; give both")
    try:
        interactions, catalogue, source = _evaluation_data(database_url, ratings, synthetic)
        if items_path:
            catalogue = dict(read_items(items_path))
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if not interactions:
        raise click.ClickException(f"{source} holds no interactions to evaluate")
    served: list[HybridModel] = []

    def hybrid() -> HybridModel:
        served.append(HybridModel(diversity=diversity, k=k, seed=seed))
        return served[-1]

    models = {**default_models(catalogue or None), "hybrid": hybrid}
    report = evaluate(interactions, catalogue or None, models, k=k, split_kind=split_kind,
                      seed=seed, relevance_threshold=relevance_threshold,
                      progress=lambda message: click.echo(f"  {message}", err=True))
    tuning = served[-1].tuning if served else {}
    if as_json:
        click.echo(json.dumps({"source": source, "k": report.k, "split": report.split,
                               "seed": report.seed, "items": report.items,
                               "served": "hybrid", "served_tuning": tuning,
                               **{name: result.figures()
                                  for name, result in report.results.items()}}))
        return
    click.echo(f"{source}: {report.train_interactions} training and {report.test_interactions}"
               f" held-out interactions, {report.items} items; {report.split} split, seed "
               f"{report.seed}; novelty = {report.novelty_definition}")
    click.echo(report.table())
    if "skipped" in tuning:
        click.echo(f"served: hybrid, not tuned: {tuning['skipped']}")
    elif tuning:
        click.echo(f"served: hybrid, chosen on validation: weights {tuning['weights']}, "
                   f"EASE λ {tuning['ease_l2']}, diversity {tuning['diversity']}")


def _evaluation_data(database_url: str | None, ratings: str | None,
                     synthetic: bool) -> tuple[list[Any], dict[str, Any], str]:
    from domain.recommendation.interactions import derive_interactions
    from domain.recommendation.movielens import read_movielens
    from domain.recommendation.synthetic import generate

    if ratings:
        return read_movielens(ratings), {}, ratings
    if synthetic:
        data = generate()
        return list(data.interactions), dict(data.catalogue), "synthetic shop"
    from api.recommender import read_training_data

    settings = _settings(database_url)
    runtime = _runtime(settings)
    try:
        with runtime.sync_engine.connect() as conn:
            data = read_training_data(conn)
        now = runtime.clock.now()
    finally:
        runtime.close()
    interactions = derive_interactions(data.signals, now, settings.recommender_weights)
    return interactions, data.catalogue, settings.database.safe_url


@recommend.command("models")
@database_option
def recommend_models(database_url: str | None) -> None:
    """Every trained version, newest first, with its state and offline precision."""
    runtime = _runtime(_settings(database_url))
    try:
        versions = runtime.recommender.versions()
    finally:
        runtime.close()
    if not versions:
        click.echo("no model has been trained yet: run `patron recommend train`")
    for row in reversed(versions):
        precision = (row["metrics"] or {}).get("hybrid", {}).get("precision")
        shown = "-" if precision is None else f"{precision:.4f}"
        click.echo(f"v{row['version']:<4} {row['state']:<8} trained "
                   f"{row['trained_at']:%Y-%m-%d %H:%M} by {row['trained_by']}: "
                   f"{row['interactions']} interactions, precision {shown}")


@recommend.command("activate")
@click.argument("version", type=click.IntRange(1))
@click.option("--reason", required=True, help="Why (recorded for auditors).")
@click.option("--force", is_flag=True,
              help="Serve it even if it lost to the popularity baseline.")
@database_option
def recommend_activate(version: int, reason: str, force: bool, database_url: str | None) -> None:
    """Serve VERSION from now on (a newer one, or an older one to roll back)."""
    from domain.errors import DomainError

    runtime = _runtime(_settings(database_url))
    try:
        runtime.recommender.activate(version, _cli_meta(reason), force=force)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        runtime.close()
    click.echo(f"version {version} serves now")


@main.command("export-schema")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export_schema(output: Path | None) -> None:
    """Print the GraphQL schema (SDL), or write it to --output."""
    from api.schema import export_sdl

    sdl = export_sdl()
    if output:
        output.write_text(sdl)
        click.echo(f"wrote {output}")
    else:
        sys.stdout.write(sdl)


if __name__ == "__main__":
    main()
