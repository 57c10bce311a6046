"""`patron export-schema`: the GraphQL schema as SDL (committed as schema.graphql)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from api.cli.main import main


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
