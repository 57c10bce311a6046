"""Errors described without the data they carry.

An exception's message often quotes the data that broke it: a `KeyError` names the
dictionary key, a `ValueError` the value, a database error the row (PostgreSQL's `DETAIL:
Key (email)=(ann@example.com) already exists`, SQLAlchemy's `[parameters: …]`). When the
data is an event's, that is a member's personal data, and it would land in the server log
and in `projection_tracking.last_error`, where erasure cannot reach it. So what Patron
records about a failure is its type, where it happened and, for database errors, the
structured diagnostics that name tables and constraints but never values (PostgreSQL's
sqlstate, table, column and constraint; SQLite's message, which names only the schema). The event's
position is recorded beside it, and `patron projections event NAME POSITION` shows the
event itself to an operator who may read it.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy.exc import DBAPIError

_ROOT = Path(__file__).resolve().parent.parent
# Diagnostics a PostgreSQL error carries that name the schema, never the data.
_PG_FIELDS = ("sqlstate", "table_name", "column_name", "constraint_name")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def describe(error: BaseException) -> str:
    """`Type (safe details) at file:line in function`, for logs and stored error texts."""
    text = type(error).__name__ + _database_details(error)
    origin = _origin(error.__traceback__)
    return f"{text} at {origin}" if origin else text


def _database_details(error: BaseException) -> str:
    original: Any = error.orig if isinstance(error, DBAPIError) else error
    diag = getattr(original, "diag", None)
    if diag is None:
        if type(original).__module__ == "sqlite3":
            # SQLite's messages name the schema ("NOT NULL constraint failed: t.c"), and
            # the statement's parameters are hidden (`hide_parameters` on every engine).
            return f" (sqlite3: {original})"
        if original is not error and original is not None:
            return f" ({type(original).__name__})"
        return ""
    parts = [f"{name.replace('_name', '')} {value}" for name in _PG_FIELDS
             if (value := getattr(diag, name, None))]
    kind = type(original).__name__
    return f" ({kind}; {', '.join(parts)})" if parts else f" ({kind})"


def _origin(tb: TracebackType | None) -> str | None:
    """The innermost frame of Patron's own code (a library frame when there is none)."""
    frames = traceback.extract_tb(tb)
    if not frames:
        return None
    ours = [f for f in frames if _is_ours(f.filename)] or frames
    frame = ours[-1]
    return f"{_short(frame.filename)}:{frame.lineno} in {frame.name}"


def _is_ours(filename: str) -> bool:
    path = Path(filename)
    return path.is_relative_to(_ROOT) and ".venv" not in path.parts


def _short(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(_ROOT)) if _is_ours(filename) else path.name


class RedactingFormatter(logging.Formatter):
    """Tracebacks with every frame (code is not data) but each exception by `describe`,
    never its message: the server log carries ids and locations, not personal data."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's own name)
        error = ei[1]
        if error is None:
            return ""
        chain: list[str] = []
        seen: set[int] = set()
        current: BaseException | None = error
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            frames = "".join(traceback.format_list(traceback.extract_tb(current.__traceback__)))
            chain.append(f"Traceback (most recent call last):\n{frames}{describe(current)}")
            current = current.__cause__ or current.__context__
        return "\nwhich was raised while handling:\n".join(chain)
