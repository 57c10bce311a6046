"""The `patron` command, one module per command group (`patron --help` lists them).

`main` is the click group; importing the command modules registers their commands on it.
"""

from api.cli import (  # noqa: F401 (each module registers its commands on `main`)
    loyalty,
    members,
    migrate,
    notifications,
    payments,
    projections,
    recommend,
    schema,
    seed,
    serve,
    token,
)
from api.cli.main import main

__all__ = ["main"]
