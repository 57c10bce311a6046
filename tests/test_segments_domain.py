"""The Segment aggregate: admins define, change and archive rules over member profiles.

Pure domain: no storage. A refused command raises a typed error and leaves the segment
with no new events, which is what "records nothing" means once the service saves it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import (
    ForbiddenError,
    InvalidTransitionError,
    ReasonRequiredError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role
from domain.segment_rules import SegmentRuleError, parse_rule
from domain.segments import Segment, SegmentState

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
RULE = "tier in [Gold, Platinum] and last purchase within 30 days"


def meta(role: Role = Role.ADMIN, reason: str | None = "spring campaign") -> EventMetadata:
    return EventMetadata("admin-1", role, Channel.ADMIN, "corr", None, uuid.uuid4().hex,
                         reason)


ADMIN = meta()


def define(**overrides: Any) -> Segment:
    args: dict[str, Any] = dict(
        segment_id=uuid.uuid4(), name="  Recent VIPs ", description="Gold and up, active",
        rule_text=RULE, now=T0, meta=ADMIN,
    )
    args.update(overrides)
    return Segment.define(**args)


def pending(segment: Segment) -> list[Any]:
    return list(segment.collect_events())


def test_defining_stores_the_canonical_rule_and_who_defined_it_why() -> None:
    segment = define()
    assert segment.name == "Recent VIPs"
    assert segment.description == "Gold and up, active"
    assert segment.rule == "tier in [gold, platinum] and last_purchase within 30 days"
    assert parse_rule(segment.rule).text == segment.rule
    assert segment.state == SegmentState.ACTIVE and segment.is_active
    (event,) = pending(segment)
    assert isinstance(event, Segment.Defined)
    assert event.timestamp == T0
    assert event.rule == segment.rule
    assert event.meta["actor_role"] == "admin" and event.meta["reason"] == "spring campaign"


def test_a_blank_description_is_none() -> None:
    assert define(description="   ").description is None
    assert define(description=None).description is None


@pytest.mark.parametrize("role", [Role.MEMBER, Role.AGENT, Role.AUDITOR, Role.SYSTEM,
                                  Role.ANONYMOUS])
def test_only_admins_define_segments(role: Role) -> None:
    with pytest.raises(ForbiddenError):
        define(meta=meta(role))


def test_defining_needs_a_reason() -> None:
    with pytest.raises(ReasonRequiredError):
        define(meta=meta(reason="  "))


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"description": "x" * 1001}, "description"),
    ({"description": 3}, "description"),
    ({"rule_text": "tier > 3"}, "rule"),
    ({"rule_text": ""}, "rule"),
    ({"rule_text": None}, "rule"),
])
def test_bad_input_defines_nothing(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        define(**overrides)
    assert caught.value.field == field


def test_a_malformed_rule_is_reported_with_its_position() -> None:
    with pytest.raises(SegmentRuleError) as caught:
        define(rule_text="tier in [gold,\n  platnum]")
    assert (caught.value.line, caught.value.column) == (2, 3)
    assert "did you mean 'platinum'" in caught.value.message


def test_a_name_of_100_characters_is_accepted() -> None:
    assert define(name="x" * 100).name == "x" * 100


# -- update ---------------------------------------------------------------------------------


def test_updating_records_the_new_state_and_what_changed() -> None:
    segment = define()
    pending(segment)
    later = T0 + timedelta(days=1)
    assert segment.update(rule_text="tier = platinum", now=later, meta=ADMIN)
    assert segment.rule == "tier = platinum"
    (event,) = pending(segment)
    assert isinstance(event, Segment.Updated)
    assert (event.changed, event.name, event.rule, event.timestamp) == (
        ["rule"], "Recent VIPs", "tier = platinum", later)
    assert segment.update(name="VIPs", description="", now=later, meta=ADMIN)
    assert (segment.name, segment.description) == ("VIPs", None)
    (event,) = pending(segment)
    assert event.changed == ["name", "description"]


def test_an_update_that_changes_nothing_records_nothing() -> None:
    segment = define()
    pending(segment)
    # The same rule spelt differently is the same rule.
    respelt = "TIER IN [gold, platinum] AND (last_purchase within 30 days)"
    assert not segment.update(name="Recent VIPs", description=" Gold and up, active ",
                              rule_text=respelt, now=T0, meta=ADMIN)
    assert not segment.update(now=T0, meta=ADMIN)
    # Nothing to record, so nothing to justify either.
    assert not segment.update(name="Recent VIPs", now=T0, meta=meta(reason=None))
    assert pending(segment) == []


@pytest.mark.parametrize("role", [Role.MEMBER, Role.AGENT, Role.SYSTEM])
def test_only_admins_update_segments(role: Role) -> None:
    segment = define()
    pending(segment)
    with pytest.raises(ForbiddenError):
        segment.update(name="Mine", now=T0, meta=meta(role))
    assert pending(segment) == []


def test_updating_needs_a_reason() -> None:
    segment = define()
    pending(segment)
    with pytest.raises(ReasonRequiredError):
        segment.update(name="Other", now=T0, meta=meta(reason=None))
    assert segment.name == "Recent VIPs" and pending(segment) == []


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": " "}, "name"),
    ({"rule_text": "tier within 3 days"}, "rule"),
    ({"name": "Fine", "rule_text": "purchases >"}, "rule"),
])
def test_a_bad_update_records_nothing_and_changes_nothing(changes: dict[str, Any],
                                                          field: str) -> None:
    segment = define()
    pending(segment)
    with pytest.raises(ValidationError) as caught:
        segment.update(**changes, now=T0, meta=ADMIN)
    assert caught.value.field == field
    assert segment.name == "Recent VIPs"
    assert pending(segment) == []


# -- archive --------------------------------------------------------------------------------


def test_archiving_ends_the_segments_changes() -> None:
    segment = define()
    pending(segment)
    later = T0 + timedelta(days=3)
    segment.archive(later, ADMIN)
    assert segment.state == SegmentState.ARCHIVED and not segment.is_active
    assert segment.archived_at == later.isoformat()
    (event,) = pending(segment)
    assert isinstance(event, Segment.Archived) and event.meta["reason"] == "spring campaign"
    with pytest.raises(InvalidTransitionError) as caught:
        segment.update(name="Back", now=later, meta=ADMIN)
    assert caught.value.current_state == "archived"
    # Even an update that would change nothing is refused: the segment is closed.
    with pytest.raises(InvalidTransitionError):
        segment.update(now=later, meta=ADMIN)
    with pytest.raises(InvalidTransitionError):
        segment.archive(later, ADMIN)
    assert pending(segment) == []


def test_only_admins_archive_and_with_a_reason() -> None:
    segment = define()
    pending(segment)
    with pytest.raises(ForbiddenError):
        segment.archive(T0, meta(Role.AGENT))
    with pytest.raises(ReasonRequiredError):
        segment.archive(T0, meta(reason=None))
    assert segment.is_active and pending(segment) == []


def test_replaying_the_events_rebuilds_the_segment() -> None:
    segment = define()
    segment.update(rule_text="purchases > 2", now=T0, meta=ADMIN)
    segment.archive(T0, ADMIN)
    events = pending(segment)
    copy: Any = None
    for event in events:
        copy = event.mutate(copy)
    assert (copy.name, copy.rule, copy.state, copy.version) == (
        segment.name, "purchases > 2", "archived", 3)
