"""Reading ratings in the MovieLens `u.data` format, so users can benchmark the
recommender on public data sets they have (the project ships none).

One rating a line: user id, item id, rating, Unix timestamp, separated by tabs. A
malformed line stops the read with its line number rather than being skipped: a silently
shortened data set gives figures that look plausible and are wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from domain.recommendation.interactions import Interaction

__all__ = ["MovieLensFormatError", "parse_movielens", "read_movielens"]


class MovieLensFormatError(ValueError):
    """A line that is not `user<TAB>item<TAB>rating<TAB>timestamp`; says which and why."""

    def __init__(self, line_number: int, line: str, problem: str) -> None:
        super().__init__(f"line {line_number}: {problem}: {line[:80]!r}")
        self.line_number = line_number
        self.line = line
        self.problem = problem


def _parse_line(number: int, line: str, separator: str) -> Interaction:
    fields = line.split(separator)
    if len(fields) != 4:
        raise MovieLensFormatError(
            number, line, f"expected 4 fields separated by {separator!r}, found {len(fields)}"
        )
    user, item, rating_text, timestamp_text = (f.strip() for f in fields)
    if not user or not item:
        raise MovieLensFormatError(number, line, "empty user or item id")
    try:
        rating = float(rating_text)
    except ValueError:
        raise MovieLensFormatError(
            number, line, f"rating {rating_text!r} is not a number"
        ) from None
    if not math.isfinite(rating):
        raise MovieLensFormatError(number, line, f"rating {rating_text!r} is not finite")
    try:
        seconds = int(timestamp_text)
        timestamp = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise MovieLensFormatError(
            number, line, f"timestamp {timestamp_text!r} is not Unix seconds"
        ) from None
    return Interaction(user, item, rating, timestamp)


def parse_movielens(lines: Iterable[str], separator: str = "\t") -> list[Interaction]:
    """Interactions from lines of text; blank lines (a trailing newline) are ignored.

    `separator` is a tab for `u.data`; `"::"` reads MovieLens 1M's `ratings.dat`. A user
    who rated the same item twice keeps both lines: deduplication is the caller's choice.
    """
    interactions = []
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        interactions.append(_parse_line(number, line, separator))
    return interactions


def read_movielens(
    source: str | os.PathLike[str] | TextIO, separator: str = "\t"
) -> list[Interaction]:
    """Interactions from a file path or an open text stream in the `u.data` format."""
    if isinstance(source, str | os.PathLike):
        with open(source, encoding="utf-8", errors="strict") as stream:
            return parse_movielens(stream, separator)
    return parse_movielens(source, separator)
