"""Time-based rules read the runtime's clock, so tests (and later schedulers) can move it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from api.config import Settings
from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.errors import ValidationError
from domain.metadata import Channel, EventMetadata, Role


def test_what_counts_as_the_future_follows_the_clock(settings: Settings) -> None:
    clock = AdjustableClock(datetime(2024, 3, 1, 12, tzinfo=UTC))
    runtime = Runtime(settings, clock=clock)
    meta = EventMetadata("x", Role.ANONYMOUS, Channel.WEB, "c", None, uuid.uuid4().hex)
    details = {"name": "Newborn", "email": "baby@example.com", "birthday": "2024-03-05"}
    try:
        with pytest.raises(ValidationError) as rejected:
            runtime.members.register(details, meta)
        assert rejected.value.field == "birthday"
        assert runtime.runner.head() == 0

        clock.advance(timedelta(days=4))
        assert runtime.members.register(details, meta).position == runtime.runner.head() > 0
    finally:
        runtime.close()


def test_an_adjustable_clock_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError):
        AdjustableClock(datetime(2024, 3, 1))
    clock = AdjustableClock(datetime(2024, 3, 1, tzinfo=UTC))
    clock.set(datetime(2025, 1, 1, tzinfo=UTC))
    assert clock.today().isoformat() == "2025-01-01"
