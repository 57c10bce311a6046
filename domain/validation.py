"""Checks several aggregates share: one wording of each error, wherever it is raised."""

from __future__ import annotations

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
