"""The Campaign aggregate: launched and stopped by admins with a reason, rewarding each
member once, within its budget and its window.

Pure domain: no storage. A refused command raises a typed error and leaves the campaign
with no new events, which is what "records nothing" means once the service saves it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.campaigns import (
    MAX_CHUNK,
    Campaign,
    CampaignReward,
    CampaignState,
    RewardKind,
    reward_coupon_id,
    validate_reward,
)
from domain.errors import (
    DomainError,
    ForbiddenError,
    InvalidTransitionError,
    LimitExceededError,
    ReasonRequiredError,
    ValidationError,
)
from domain.metadata import Channel, EventMetadata, Role

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
START = T0 + timedelta(days=1)
END = T0 + timedelta(days=8)
SEGMENT = uuid.uuid4()
COUPON = {"coupon": {"kind": "fixed", "value": 1_000, "min_spend": 5_000, "valid_days": 14}}
POINTS = {"points": 300}


def meta(role: Role = Role.ADMIN, reason: str | None = "summer push") -> EventMetadata:
    return EventMetadata(f"{role.value}-1", role, Channel.ADMIN, "corr", None,
                         uuid.uuid4().hex, reason)


ADMIN = meta()
SYSTEM = EventMetadata("campaign-issuer", Role.SYSTEM, Channel.SYSTEM, "corr", None, "r")


def members(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def launch(**overrides: Any) -> Campaign:
    args: dict[str, Any] = dict(
        campaign_id=uuid.uuid4(), name="  Summer coupons ", segment_id=SEGMENT, reward=COUPON,
        budget=3, starts_at=START, ends_at=END, now=T0, meta=ADMIN,
    )
    args.update(overrides)
    return Campaign.launch(**args)


def launched(**overrides: Any) -> Campaign:
    """A launched campaign whose launch event is already saved."""
    campaign = launch(**overrides)
    pending(campaign)
    return campaign


def pending(campaign: Campaign) -> list[Any]:
    return list(campaign.collect_events())


def refused(action: Any, error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as caught:
        action()
    return caught.value


# -- launching ------------------------------------------------------------------------------


def test_launching_records_what_the_admin_asked_and_why() -> None:
    campaign = launch()
    (event,) = pending(campaign)
    assert isinstance(event, Campaign.Launched)
    assert event.timestamp == T0
    assert event.meta["reason"] == "summer push" and event.meta["actor_role"] == "admin"
    assert campaign.name == "Summer coupons"
    assert campaign.segment_id == str(SEGMENT)
    assert campaign.reward == CampaignReward(kind=RewardKind.COUPON, coupon_kind="fixed",
                                             value=1_000, min_spend=5_000, valid_days=14)
    assert (campaign.budget, campaign.remaining) == (3, 3)
    assert campaign.state_at(T0) is CampaignState.SCHEDULED
    assert campaign.state_at(START) is CampaignState.RUNNING
    assert campaign.state_at(END - timedelta(microseconds=1)) is CampaignState.RUNNING
    assert campaign.state_at(END) is CampaignState.ENDED


def test_a_points_reward_and_a_start_in_the_past_are_accepted() -> None:
    campaign = launch(reward=POINTS, starts_at=T0 - timedelta(hours=1))
    assert campaign.reward == CampaignReward(kind=RewardKind.POINTS, points=300)
    assert campaign.state_at(T0) is CampaignState.RUNNING


def test_only_admins_launch_and_only_with_a_reason() -> None:
    for role in (Role.AGENT, Role.MEMBER, Role.AUDITOR, Role.SYSTEM, Role.ANONYMOUS):
        refused(lambda r=role: launch(meta=meta(r)), ForbiddenError)
    refused(lambda: launch(meta=meta(reason=None)), ReasonRequiredError)
    refused(lambda: launch(meta=meta(reason="   ")), ReasonRequiredError)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": "  "}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": None}, "name"),
    ({"segment_id": "not-a-uuid"}, "segment_id"),
    ({"reward": {}}, "reward"),
    ({"reward": {"points": 5, "coupon": COUPON["coupon"]}}, "reward"),
    ({"reward": "coupon"}, "reward"),
    ({"reward": {"points": 0}}, "reward.points"),
    ({"reward": {"points": 100_001}}, "reward.points"),
    ({"reward": {"points": True}}, "reward.points"),
    ({"reward": {"points": 2.5}}, "reward.points"),
    ({"reward": {"coupon": {**COUPON["coupon"], "kind": "gift"}}}, "reward.coupon.kind"),
    ({"reward": {"coupon": {**COUPON["coupon"], "value": 0}}}, "reward.coupon.value"),
    ({"reward": {"coupon": {**COUPON["coupon"], "kind": "percent", "value": 10_001}}},
     "reward.coupon.value"),
    ({"reward": {"coupon": {**COUPON["coupon"], "min_spend": -1}}}, "reward.coupon.min_spend"),
    ({"reward": {"coupon": {**COUPON["coupon"], "valid_days": 0}}}, "reward.coupon.valid_days"),
    ({"reward": {"coupon": {**COUPON["coupon"], "valid_days": None}}},
     "reward.coupon.valid_days"),
    ({"budget": 0}, "budget"),
    ({"budget": -4}, "budget"),
    ({"budget": 1_000_001}, "budget"),
    ({"budget": "10"}, "budget"),
    ({"starts_at": START.replace(tzinfo=None)}, "starts_at"),
    ({"ends_at": END.replace(tzinfo=None)}, "ends_at"),
    ({"ends_at": START}, "ends_at"),
    ({"ends_at": START - timedelta(hours=1)}, "ends_at"),
    ({"starts_at": T0 - timedelta(days=3), "ends_at": T0}, "ends_at"),
    ({"ends_at": START + timedelta(days=367)}, "ends_at"),
])
def test_bad_input_is_refused_with_the_field_at_fault(overrides: dict[str, Any],
                                                      field: str) -> None:
    error = refused(lambda: launch(**overrides), ValidationError)
    assert error.field == field


def test_a_non_admin_is_refused_before_their_input_is_even_read() -> None:
    refused(lambda: launch(meta=meta(Role.AGENT), budget=0), ForbiddenError)


def test_a_reward_given_as_a_value_is_checked_like_one_given_as_input() -> None:
    good = CampaignReward(kind=RewardKind.POINTS, points=50)
    assert validate_reward(good) == good
    bad = CampaignReward(kind=RewardKind.COUPON, coupon_kind="fixed", value=-1, min_spend=0,
                         valid_days=3)
    assert refused(lambda: validate_reward(bad), ValidationError).field == "reward.coupon.value"
    assert CampaignReward.from_dict(good.as_dict()) == good


# -- issuing --------------------------------------------------------------------------------


def test_issuing_records_the_members_rewarded_once_each() -> None:
    campaign = launched()
    first, second = members(2)
    campaign.issue([first], START, SYSTEM)
    campaign.issue([uuid.UUID(second)], START + timedelta(hours=1), SYSTEM)
    events = pending(campaign)
    assert [type(e) for e in events] == [Campaign.RewardsIssued, Campaign.RewardsIssued]
    assert events[0].member_ids == [first] and events[1].member_ids == [second]
    assert campaign.rewarded == {first: START.isoformat(),
                                 second: (START + timedelta(hours=1)).isoformat()}
    assert campaign.remaining == 1
    # Already rewarded, however it is spelt: refused, nothing recorded.
    error = refused(lambda: campaign.issue([first.upper()], START, SYSTEM), ValidationError)
    assert error.field == "member_ids"
    assert pending(campaign) == []


def test_unrewarded_filters_out_repeats_and_members_already_rewarded() -> None:
    campaign = launched()
    a, b, c = members(3)
    campaign.issue([a], START, SYSTEM)
    assert campaign.unrewarded([b, a, b.upper(), c]) == [b, c]
    assert campaign.has_rewarded(a) and not campaign.has_rewarded(b)


def test_the_budget_is_never_exceeded() -> None:
    campaign = launched(budget=3)
    a, b, c, d = members(4)
    error = refused(lambda: campaign.issue([a, b, c, d], START, SYSTEM), LimitExceededError)
    assert error.field == "member_ids"
    campaign.issue([a, b], START, SYSTEM)
    refused(lambda: campaign.issue([c, d], START, SYSTEM), LimitExceededError)
    campaign.issue([c], START, SYSTEM)
    assert campaign.remaining == 0 and not campaign.is_issuing(START)
    refused(lambda: campaign.issue([d], START, SYSTEM), LimitExceededError)
    assert len(pending(campaign)) == 2


def test_issuing_happens_only_inside_the_window() -> None:
    campaign = launched()
    (member,) = members(1)
    for moment, state in ((T0, "scheduled"), (START - timedelta(microseconds=1), "scheduled"),
                          (END, "ended"), (END + timedelta(days=1), "ended")):
        error = refused(lambda m=moment: campaign.issue([member], m, SYSTEM),
                        InvalidTransitionError)
        assert isinstance(error, InvalidTransitionError) and error.current_state == state
    assert not campaign.is_issuing(T0) and campaign.is_issuing(START)
    campaign.issue([member], END - timedelta(seconds=1), SYSTEM)
    assert len(pending(campaign)) == 1


def test_bad_issues_are_refused_and_record_nothing() -> None:
    campaign = launched(budget=MAX_CHUNK + 10)
    (member,) = members(1)
    assert refused(lambda: campaign.issue([], START, SYSTEM), ValidationError).field == (
        "member_ids")
    refused(lambda: campaign.issue([member, member], START, SYSTEM), ValidationError)
    refused(lambda: campaign.issue(["nobody"], START, SYSTEM), ValidationError)
    refused(lambda: campaign.issue(members(MAX_CHUNK + 1), START, SYSTEM), ValidationError)
    for role in (Role.MEMBER, Role.AGENT, Role.AUDITOR):
        refused(lambda r=role: campaign.issue([member], START, meta(r)), ForbiddenError)
    assert pending(campaign) == [] and campaign.rewarded == {}


def test_coupon_ids_are_derived_from_campaign_and_member() -> None:
    campaign_id = uuid.uuid4()
    (member,) = members(1)
    assert reward_coupon_id(campaign_id, member) == uuid.uuid5(campaign_id, member)
    assert reward_coupon_id(campaign_id, member.upper()) == reward_coupon_id(campaign_id, member)
    assert reward_coupon_id(uuid.uuid4(), member) != reward_coupon_id(campaign_id, member)


# -- stopping -------------------------------------------------------------------------------


def test_stopping_halts_issuing_for_good() -> None:
    campaign = launched()
    a, b = members(2)
    campaign.issue([a], START, SYSTEM)
    campaign.stop(START + timedelta(hours=2), ADMIN)
    events = pending(campaign)
    assert isinstance(events[-1], Campaign.Stopped)
    assert events[-1].meta["reason"] == "summer push"
    assert campaign.state_at(START + timedelta(hours=2)) is CampaignState.STOPPED
    assert campaign.state_at(T0) is CampaignState.STOPPED
    error = refused(lambda: campaign.issue([b], START + timedelta(hours=3), SYSTEM),
                    InvalidTransitionError)
    assert isinstance(error, InvalidTransitionError) and error.current_state == "stopped"
    refused(lambda: campaign.stop(START + timedelta(hours=3), ADMIN), InvalidTransitionError)
    assert campaign.rewarded == {a: START.isoformat()}  # what was issued stays issued
    assert pending(campaign) == []


def test_a_scheduled_campaign_can_be_called_off_but_an_ended_one_cannot_be_stopped() -> None:
    scheduled = launched()
    scheduled.stop(T0 + timedelta(minutes=5), ADMIN)
    assert len(pending(scheduled)) == 1
    ended = launched()
    error = refused(lambda: ended.stop(END, ADMIN), InvalidTransitionError)
    assert isinstance(error, InvalidTransitionError) and error.current_state == "ended"


def test_only_admins_stop_and_only_with_a_reason() -> None:
    campaign = launched()
    for role in (Role.AGENT, Role.MEMBER, Role.AUDITOR, Role.SYSTEM):
        refused(lambda r=role: campaign.stop(START, meta(r)), ForbiddenError)
    refused(lambda: campaign.stop(START, meta(reason=None)), ReasonRequiredError)
    assert pending(campaign) == []
    assert campaign.state_at(START) is CampaignState.RUNNING
