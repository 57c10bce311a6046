"""What every command shares: the database option, settings and runtime for a
command, and progress that shows from the first step on a terminal or not."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from api.config import ConfigurationError, Settings
from projections.database import DatabaseConfig, DatabaseURLError

database_option = click.option(
    "--database-url",
    envvar="PATRON_DATABASE_URL",
    default=None,
    help="sqlite:///PATH (default sqlite:///./patron.db) or postgresql://USER@HOST:PORT/DB",
)


@contextmanager
def progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
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


def settings_for(database_url: str | None, *, create: bool = False, **overrides: Any) -> Settings:
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


def runtime_for(settings: Settings, *, migrate_first: bool = False, clock: Any = None) -> Any:
    """A runtime on a migrated database; only commands that write data migrate first."""
    from api.runtime import Runtime, migrate

    try:
        if migrate_first:
            migrate(settings.database)
        else:
            require_migrated(settings.database)
        return Runtime(settings, clock=clock)
    except click.ClickException:
        raise
    except Exception as error:
        raise click.ClickException(
            f"cannot open {settings.database.safe_url}: {type(error).__name__}: {error}"
        ) from None


def require_migrated(database: DatabaseConfig) -> None:
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
