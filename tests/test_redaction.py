"""What Patron records about a failure carries ids and locations, never personal data.

A bug in a read model meets a member's data first: the error's message quotes it (a
`KeyError` its key, a database error the row). Neither the server log nor
`projection_tracking.last_error` may keep it, since erasure cannot reach either.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from sqlalchemy import Connection, text

from api.runtime import Runtime
from domain.member import Member
from projections.engine import Handler, ReadModel, ReadModelRunner
from projections.redaction import RedactingFormatter, describe
from projections.tables import member_profiles, projection_tracking
from tests.test_spine import meta

EMAIL = "mei.personal@example.com"


def raise_with_email() -> None:
    raise KeyError(EMAIL)


def test_an_error_is_described_by_its_type_and_place_not_its_message() -> None:
    try:
        raise_with_email()
    except KeyError as error:
        described = describe(error)
    assert EMAIL not in described
    assert described.startswith("KeyError at tests/test_redaction.py:")
    assert described.endswith(" in raise_with_email")


def test_the_log_formatter_keeps_the_frames_and_drops_the_messages() -> None:
    try:
        try:
            raise_with_email()
        except KeyError as error:
            raise ValueError(f"could not index {EMAIL}") from error
    except ValueError:
        record = logging.LogRecord("patron", logging.ERROR, __file__, 1, "profile %s failed",
                                   ("m-42",), sys.exc_info())
    shown = RedactingFormatter("%(levelname)s %(message)s").format(record)
    assert EMAIL not in shown
    assert shown.startswith("ERROR profile m-42 failed\nTraceback (most recent call last):")
    assert "in raise_with_email" in shown and 'raise KeyError(EMAIL)' in shown  # code, not data
    assert "ValueError at tests/test_redaction.py:" in shown
    assert "KeyError at tests/test_redaction.py:" in shown


class QuotesTheEmail(ReadModel):
    """A buggy read model: its handler fails on a member's email, as real bugs do."""

    name = "member_profiles"
    tables = (member_profiles,)

    def __init__(self, how: str) -> None:
        self.how = how
        super().__init__()

    def handlers(self) -> dict[type, Handler]:
        return {Member.Registered: self.on_registered}

    def on_registered(self, conn: Connection, event: Any, position: int) -> None:
        email = event.personal["email"]
        if self.how == "python":
            raise ValueError(f"no profile for {email}")
        # A row missing its required columns, with the email as a parameter: the
        # database's message (and SQLAlchemy's, unless told not to) quotes it.
        conn.execute(text("INSERT INTO member_profiles (member_id) VALUES (:email)"),
                     {"email": email})


@pytest.mark.parametrize("how", ["python", "database"])
def test_a_failing_read_model_records_no_personal_data(
    runtime: Runtime, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime.members.register({"name": "Mei Personal", "email": EMAIL}, meta())
    runner = ReadModelRunner(runtime.sync_engine, runtime.app.recorder,  # type: ignore[arg-type]
                             runtime.app.mapper, [QuotesTheEmail(how)])
    runner.run_once()
    with runtime.sync_engine.connect() as conn:
        recorded = conn.execute(
            projection_tracking.select().where(projection_tracking.c.name == "member_profiles")
        ).one()
    assert recorded.last_error is not None
    assert recorded.last_error.startswith("at position ")
    assert "on_registered" in recorded.last_error  # where, for the operator
    assert EMAIL not in recorded.last_error
    assert "Mei" not in recorded.last_error
    assert EMAIL not in caplog.text and "failed at position" in caplog.text
