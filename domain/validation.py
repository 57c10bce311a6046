"""Checks several aggregates share: one wording of each error, wherever it is raised."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.errors import ValidationError


def enum_value(enum: type[StrEnum], value: Any, field: str) -> str:
    """The member of `enum` that `value` names, or an error listing the allowed values."""
    try:
        return str(enum(value).value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)  # type: ignore[attr-defined]
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
