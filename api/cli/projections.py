"""`patron projections status|skip|event|run|rebuild`: the read models' runner, by hand."""

from __future__ import annotations

import json

import click

from api.cli.common import database_option, progress, runtime_for, settings_for
from api.cli.main import main


@main.group()
def projections() -> None:
    """Inspect, run and rebuild projections (read models)."""


@projections.command("status")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def projections_status(database_url: str | None, as_json: bool) -> None:
    """Position, lag and last error per projection."""
    runtime = runtime_for(settings_for(database_url))
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

    runtime = runtime_for(settings_for(database_url))
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
    runtime = runtime_for(settings_for(database_url))
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

    runtime = runtime_for(settings_for(database_url))
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
    runtime = runtime_for(settings_for(database_url))
    try:
        names = [name] if name else list(runtime.runner.projections)
        unknown = [n for n in names if n not in runtime.runner.projections]
        if unknown:
            known = ", ".join(runtime.runner.projections)
            raise click.ClickException(f"unknown projection {unknown[0]!r}; known: {known}")
        head = runtime.runner.head()
        for projection in names:
            with progress(head, f"rebuilding {projection}") as update:
                applied = runtime.runner.rebuild(projection, progress=update)
            click.echo(f"{projection}: replayed {applied} events")
    finally:
        runtime.close()
