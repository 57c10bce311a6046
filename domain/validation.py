"""Checks several aggregates share: one wording of each error, wherever it is raised.

It also holds the rules for what any text or moment may be before it is recorded
(`text_problem`, `moment_problem`, `refuse_unstorable`). The API applies them to every
argument before a resolver runs; the event store applies them again to every event it
records, so no path (CLI, service call, a forgotten resolver) can store a value that a read
model later cannot hold: PostgreSQL text cannot contain NUL, JSON cannot carry a lone
surrogate, and a moment in the year 9999 with a negative offset overflows when converted to
UTC. A projection must never be the first place bad data is discovered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.errors import ValidationError

# Control characters (C0 except tab and newline, DEL, C1) and lone UTF-16 surrogates,
# which JSON can spell (\ud800) but no UTF-8 text column can store.
_UNSTORABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Business dates and times: a birthday, a delivery window, a report's range.
EARLIEST_YEAR = 1900
LATEST_YEAR = 2200


def text_problem(value: str, max_length: int | None = None) -> str | None:
    """Why `value` may not be recorded, or None: it holds a control character (other than
    newline and tab) or a lone surrogate, or it is longer than `max_length`."""
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters"
    found = _UNSTORABLE.search(value)
    if found:
        return (f"must not contain control characters (found U+{ord(found.group()):04X} at "
                f"character {found.start()})")
    return None


def moment_problem(value: date) -> str | None:
    """Why a business date or time may not be recorded, or None: outside the years
    1900-2200 (in UTC, for a time), or a time without a time zone."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return "must include a time zone offset (e.g. 2024-05-01T09:00:00+08:00)"
        try:
            year = value.astimezone(UTC).year
        except OverflowError:
            year = value.year
        if not EARLIEST_YEAR <= min(year, value.year) <= max(year, value.year) <= LATEST_YEAR:
            return f"must be within the years {EARLIEST_YEAR} to {LATEST_YEAR}"
        return None
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        return f"must be within the years {EARLIEST_YEAR} to {LATEST_YEAR}"
    return None


def text_value(value: Any, field: str, max_length: int | None = None) -> str:
    """`value` if it is text that may be recorded, else a ValidationError naming `field`."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field)
    problem = text_problem(value, max_length)
    if problem:
        raise ValidationError(f"{field} {problem}", field)
    return value


def refuse_unstorable(state: Any, path: str = "") -> None:
    """Raise a ValidationError naming the first text (key or value) or moment in `state`
    (an event's attributes: nested mappings, lists and tuples) that may not be recorded.

    Texts are checked for control characters only (their lengths are each rule's own
    business); dates and times against `moment_problem`, except that a time without a zone
    is left to the rule that made it (the event store records what it is given).
    Every event passes here, so the common case (nothing wrong) takes one quick pass that
    builds no paths; only a value found wrong is looked for again, to be named.
    """
    if _storable(state):
        return
    stack: list[tuple[str, Any]] = [(path, state)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise ValidationError(f"{where or 'text'} {problem}", where or None)
        elif isinstance(value, date):
            problem = _moment(value)
            if problem:
                raise ValidationError(f"{where or 'moment'} {problem}", where or None)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and text_problem(key):
                    raise ValidationError(f"{name} is not an acceptable name", where or None)
                stack.append((name, item))
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((f"{where}.{index}" if where else str(index), item)
                         for index, item in enumerate(value))


def _moment(value: date) -> str | None:
    if isinstance(value, datetime) and value.tzinfo is None:
        return None
    return moment_problem(value)


def _storable(value: Any) -> bool:
    """Whether nothing in `value` breaks a rule (see `refuse_unstorable`), quickly."""
    stack = [value]
    search = _UNSTORABLE.search
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if search(item):
                return False
        elif kind is dict:
            for key, inner in item.items():
                if type(key) is str and search(key):
                    return False
                stack.append(inner)
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif isinstance(item, date):
            if _moment(item):
                return False
        elif isinstance(item, str | Mapping | list | tuple | set | frozenset):
            return False  # a subclass or another container: let the full pass judge it
    return True


def enum_value(enum: type[StrEnum], value: Any, field: str) -> str:
    """The member of `enum` that `value` names, or an error listing the allowed values."""
    try:
        return str(enum(value).value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise ValidationError(f"{field} must be one of: {allowed}", field) from None


def rating_value(value: Any, field: str) -> int:
    """A satisfaction score: a whole number of stars from 1 to 5."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        raise ValidationError(f"{field} is rated from 1 to 5", field)
    return value


# Business times (when something happened, when a parcel is due) outside these years are
# mistakes or attacks; inside them, converting between any two real-world offsets (at most
# 14 hours from UTC) can never overflow a datetime or a database column.
EARLIEST_YEAR = 1900
LATEST_YEAR = 2200
MAX_UTC_OFFSET = timedelta(hours=14)


def business_time(moment: datetime, field: str) -> datetime:
    """`moment` if it is a sane business time: zoned, real-world offset, years 1900-2200."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValidationError(f"{field} must include a time zone", field)
    if abs(offset) > MAX_UTC_OFFSET:
        raise ValidationError(f"{field} has a UTC offset beyond ±14:00", field)
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValidationError(
            f"{field} must be between the years {EARLIEST_YEAR} and {LATEST_YEAR}", field
        )
    return moment
