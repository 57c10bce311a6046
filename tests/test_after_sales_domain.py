"""The AfterSalesCase aggregate: its transitions, their guards, and who may do what.

Pure domain: no storage. A refused command raises a typed error and leaves the case with
no new events, which is what "records nothing" means once the service saves it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.after_sales import (
    AfterSalesCase,
    CaseState,
    case_number_for,
)
from domain.errors import (
    ForbiddenError,
    InvalidTransitionError,
    ReasonRequiredError,
    ValidationError,
)
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MEMBER_ID = str(uuid.uuid4())
REASONS = LoyaltyRules().case_reasons


def meta(actor: str, role: Role, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "corr", None, uuid.uuid4().hex, reason)


MEMBER = meta(MEMBER_ID, Role.MEMBER)
STRANGER = meta(str(uuid.uuid4()), Role.MEMBER)
AGENT = meta("agent-1", Role.AGENT)
SYSTEM = meta("scheduler", Role.SYSTEM)


def open_case(case_type: str = "return", **overrides: Any) -> AfterSalesCase:
    args: dict[str, Any] = dict(
        case_id=uuid.uuid4(), order_id=str(uuid.uuid4()), member_id=MEMBER_ID,
        case_type=case_type, reason="defective", allowed_reasons=REASONS,
        reason_detail="The handle came off", lines=[{"line_id": "L1", "quantity": 1}],
        evidence_notes=None, photo_urls=["https://photos.example/1.jpg"],
        preferred_outcome=None, tier="gold", team="general",
        first_review_due=T0 + timedelta(hours=12), resolution_due=T0 + timedelta(days=7),
        request_hash="h", now=T0, meta=MEMBER,
    )
    args.update(overrides)
    return AfterSalesCase.open(**args)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# Each step takes the case one state further along the path of a return.
STEPS: dict[str, Callable[[AfterSalesCase], Any]] = {
    "assign": lambda c: c.assign("agent-1", None, at(1), AGENT),
    "approve": lambda c: c.approve(None, at(2), AGENT),
    "issue_return_label": lambda c: c.issue_return_label("s1", "sf", "RET1", None, at(3), AGENT),
    "return_received": lambda c: c.return_received("staff", at(4), AGENT),
    "inspect": lambda c: c.inspect("confirmed", "restock", None, at(5), AGENT),
    "resolve": lambda c: c.resolve("refunded", {"refund_id": "r", "amount": 1}, None, None,
                                   at(6), AGENT),
    "close": lambda c: c.close(at(7), AGENT),
}
PATH = [CaseState.UNDER_REVIEW, CaseState.APPROVED, CaseState.AWAITING_RETURN,
        CaseState.RECEIVED, CaseState.INSPECTED, CaseState.RESOLVED, CaseState.CLOSED]


def case_in(state: CaseState, case_type: str = "return") -> AfterSalesCase:
    case = open_case(case_type)
    if state == CaseState.REQUESTED:
        return case
    if state == CaseState.REJECTED:
        case.reject("Out of warranty", at(1), AGENT)
        return case
    if state == CaseState.WITHDRAWN:
        case.withdraw(None, at(1), MEMBER)
        return case
    for (_name, step), reached in zip(STEPS.items(), PATH, strict=True):
        step(case)
        if reached == state:
            return case
    raise AssertionError(state)


def test_opening_records_the_claim_with_sla_due_times_and_a_readable_number() -> None:
    case = open_case(preferred_outcome="refunded")
    assert case.state == CaseState.REQUESTED
    assert case.case_number == case_number_for(case.id, T0)
    assert case.case_number.startswith("AS-260504-") and len(case.case_number) == 20
    assert case.first_review_due == at(12).isoformat()
    assert case.personal == {"reason_detail": "The handle came off",
                             "photo_urls": ["https://photos.example/1.jpg"]}
    assert case.preferred_outcome == "refunded"


@pytest.mark.parametrize(("overrides", "field"), [
    ({"case_type": "swap"}, "type"),
    ({"reason": "bored"}, "reason"),
    ({"preferred_outcome": "repaired"}, "preferred_outcome"),  # a return ends in a refund
    ({"photo_urls": ["ftp://photos.example/1.jpg"]}, "photo_urls"),
    ({"photo_urls": ["https://p.example/x"] * 11}, "photo_urls"),
    ({"reason_detail": "x" * 2001}, "reason_detail"),
])
def test_bad_input_opens_nothing(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        open_case(**overrides)
    assert error.value.field == field


# Which commands each state accepts; everything else is an invalid transition.
ALLOWED: dict[str, set[CaseState]] = {
    "assign": {CaseState.REQUESTED, CaseState.UNDER_REVIEW, CaseState.APPROVED,
               CaseState.AWAITING_RETURN, CaseState.RECEIVED, CaseState.INSPECTED},
    "approve": {CaseState.REQUESTED, CaseState.UNDER_REVIEW},
    "reject": {CaseState.REQUESTED, CaseState.UNDER_REVIEW},
    "issue_return_label": {CaseState.APPROVED},
    "return_received": {CaseState.AWAITING_RETURN},
    "inspect": {CaseState.RECEIVED},
    "resolve": {CaseState.INSPECTED},
    "withdraw": {CaseState.REQUESTED, CaseState.UNDER_REVIEW, CaseState.APPROVED,
                 CaseState.AWAITING_RETURN, CaseState.RECEIVED, CaseState.INSPECTED},
    "close": {CaseState.RESOLVED, CaseState.REJECTED},
}
# A parcel reported received twice (by its carrier and by a person) is received once.
ALREADY_DONE: dict[str, set[CaseState]] = {
    "return_received": {CaseState.RECEIVED, CaseState.INSPECTED, CaseState.RESOLVED,
                        CaseState.CLOSED},
}
COMMANDS: dict[str, Callable[[AfterSalesCase], Any]] = {
    "assign": lambda c: c.assign("agent-2", None, at(10), meta("agent-2", Role.AGENT, "shift")),
    "approve": lambda c: c.approve(None, at(10), AGENT),
    "reject": lambda c: c.reject("Not covered", at(10), AGENT),
    "issue_return_label": lambda c: c.issue_return_label("s2", "sf", "RET2", None, at(10),
                                                         AGENT),
    "return_received": lambda c: c.return_received("staff", at(10), AGENT),
    "inspect": lambda c: c.inspect("confirmed", "scrap", None, at(10), AGENT),
    "resolve": lambda c: c.resolve("refunded", {"refund_id": "r2", "amount": 1}, None, None,
                                   at(10), AGENT),
    "withdraw": lambda c: c.withdraw(None, at(10), MEMBER),
    "close": lambda c: c.close(at(10), AGENT),
}


@pytest.mark.parametrize("state", list(CaseState))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_transition_is_allowed_only_from_its_states(
    command: str, state: CaseState
) -> None:
    case = case_in(state)
    before = case.version
    if state in ALLOWED[command]:
        COMMANDS[command](case)
        assert case.version > before
        return
    if state in ALREADY_DONE.get(command, set()):
        assert COMMANDS[command](case) is False
        assert case.version == before
        return
    with pytest.raises(InvalidTransitionError) as error:
        COMMANDS[command](case)
    assert error.value.current_state == state.value
    assert case.version == before
    assert not any(e.originator_version > before for e in case.collect_events()
                   if e.originator_version is not None)


def test_a_case_without_a_return_parcel_is_resolved_straight_after_approval() -> None:
    case = case_in(CaseState.APPROVED, "refund_only")
    with pytest.raises(InvalidTransitionError):
        case.issue_return_label("s", "sf", "RET", None, at(3), AGENT)
    with pytest.raises(ValidationError, match="can end as: refunded"):
        case.resolve("reissued", None, "s", None, at(3), AGENT)
    case.resolve("refunded", {"refund_id": "r", "amount": 5}, None, None, at(3), AGENT)
    assert case.state == CaseState.RESOLVED

    reissue = case_in(CaseState.APPROVED, "reissue")
    with pytest.raises(ValidationError, match="parcel"):
        reissue.resolve("reissued", None, None, None, at(3), AGENT)
    reissue.resolve("reissued", None, "parcel-1", None, at(3), AGENT)
    assert reissue.resolution == {"outcome": "reissued", "refund": None,
                                  "shipment_id": "parcel-1", "note": None}


def test_an_inspection_that_does_not_confirm_the_claim_leads_to_rejection() -> None:
    case = case_in(CaseState.RECEIVED, "repair")
    case.inspect("not_confirmed", "restock", "Works as designed", at(5), AGENT)
    with pytest.raises(InvalidTransitionError, match="did not confirm"):
        case.resolve("repaired", None, "parcel", None, at(6), AGENT)
    case.reject("Inspection found no defect", at(6), AGENT)
    assert case.state == CaseState.REJECTED
    with pytest.raises(ValidationError):
        case_in(CaseState.RECEIVED).inspect("confirmed", "burn", None, at(5), AGENT)


def test_only_the_member_and_staff_act_on_a_case_and_only_staff_work_it() -> None:
    case = open_case()
    with pytest.raises(ForbiddenError):
        case.require_party(STRANGER)
    with pytest.raises(ForbiddenError):
        case.post_message("m1", "Hello?", None, at(1), STRANGER)
    with pytest.raises(ForbiddenError):
        case.withdraw(None, at(1), STRANGER)
    for command in ("approve", "reject", "assign", "close"):
        with pytest.raises(ForbiddenError):
            {"approve": lambda: case.approve(None, at(1), MEMBER),
             "reject": lambda: case.reject("no", at(1), MEMBER),
             "assign": lambda: case.assign(MEMBER_ID, None, at(1), MEMBER),
             "close": lambda: case.close(at(1), MEMBER)}[command]()
    assert case.version == 1
    with pytest.raises(ReasonRequiredError):
        case.withdraw(None, at(1), AGENT)  # staff withdraw on the member's word, on record
    case.withdraw("Member phoned to cancel", at(1), meta("agent-1", Role.AGENT, "phone call"))
    assert case.state == CaseState.WITHDRAWN


def test_the_first_assignment_starts_the_review_and_reassignment_needs_a_reason() -> None:
    case = open_case()
    assert case.assign("agent-1", None, at(1), AGENT) is True
    assert (case.state, case.assignee, case.first_reviewed_at) == (
        CaseState.UNDER_REVIEW, "agent-1", at(1).isoformat())
    assert case.assign("agent-1", None, at(2), AGENT) is False  # a retry records nothing
    with pytest.raises(ReasonRequiredError):
        case.assign("agent-2", None, at(2), AGENT)
    case.assign("agent-2", "returns-desk", at(2), meta("lead", Role.ADMIN, "holiday cover"))
    assert (case.assignee, case.team, case.first_reviewed_at) == (
        "agent-2", "returns-desk", at(1).isoformat())
    with pytest.raises(ValidationError):
        case.reject("   ", at(3), AGENT)


def test_the_conversation_measures_the_first_staff_response() -> None:
    case = open_case()
    case.post_message("m1", "Any news?", None, at(1), MEMBER)
    assert case.first_response_at is None
    case.post_message("m2", "Looking now", ["https://files.example/label.pdf"], at(3), AGENT)
    case.post_message("m3", "Found it", None, at(4), AGENT)
    assert case.first_response_at == at(3).isoformat()
    assert case.post_message("m2", "Looking now", None, at(5), AGENT) is False
    assert [m["message_id"] for m in case.messages] == ["m1", "m2", "m3"]
    assert case.messages[1]["attachments"] == ["https://files.example/label.pdf"]
    with pytest.raises(ValidationError):
        case.post_message("m4", "  ", [], at(5), MEMBER)
    with pytest.raises(ValidationError):
        case.post_message("m4", "see", ["javascript:alert(1)"], at(5), MEMBER)
    case.withdraw(None, at(6), MEMBER)
    with pytest.raises(InvalidTransitionError):
        case.post_message("m5", "Wait", None, at(7), MEMBER)


def test_sla_breaches_are_recorded_once_each_and_only_when_a_deadline_is_missed() -> None:
    case = open_case()  # first review due at +12h, resolution at +7 days
    assert case.check_sla(at(11), SYSTEM) == []
    assert case.check_sla(at(13), SYSTEM) == ["first_review"]
    assert case.check_sla(at(14), SYSTEM) == []
    assert case.check_sla(at(24 * 8), SYSTEM) == ["resolution"]
    assert set(case.breaches) == {"first_review", "resolution"}

    on_time = open_case()
    on_time.assign("agent-1", None, at(2), AGENT)
    assert on_time.check_sla(at(100), SYSTEM) == []

    reviewed_late = open_case()
    reviewed_late.approve(None, at(20), AGENT)  # nobody checked while it was late
    assert reviewed_late.check_sla(at(21), SYSTEM) == ["first_review"]

    resolved_in_time = case_in(CaseState.RESOLVED, "return")
    assert resolved_in_time.check_sla(at(24 * 30), SYSTEM) == []


def test_follow_up_and_rating_come_after_resolution_once() -> None:
    case = case_in(CaseState.INSPECTED)
    with pytest.raises(InvalidTransitionError):
        case.rate(5, 5, 5, "product", None, at(6), MEMBER)
    with pytest.raises(InvalidTransitionError):
        case.schedule_follow_up(at(48), at(6), AGENT)
    STEPS["resolve"](case)
    with pytest.raises(ValidationError):
        case.schedule_follow_up(at(1), at(7), AGENT)  # in the past
    case.schedule_follow_up(at(48), at(7), AGENT)
    case.record_follow_up("satisfied", "Happy with the refund", at(49), AGENT)
    with pytest.raises(InvalidTransitionError):
        case.record_follow_up("satisfied", None, at(50), AGENT)
    assert case.follow_up == {"scheduled_for": at(48).isoformat(), "outcome": "satisfied",
                              "note": "Happy with the refund",
                              "recorded_at": at(49).isoformat()}

    with pytest.raises(ForbiddenError):
        case.rate(5, 5, 5, "product", None, at(8), AGENT)  # the member's own opinion
    with pytest.raises(ValidationError):
        case.rate(6, 5, 5, "product", None, at(8), MEMBER)
    with pytest.raises(ValidationError):
        case.rate(5, 5, 5, "weather", None, at(8), MEMBER)
    case.rate(4, 5, 3, "logistics", "Slow courier", at(8), MEMBER)
    with pytest.raises(InvalidTransitionError):
        case.rate(1, 1, 1, "logistics", None, at(9), MEMBER)
    assert case.rating is not None and case.rating["efficiency"] == 3
