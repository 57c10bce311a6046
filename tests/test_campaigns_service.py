"""Campaigns in the service layer: who is rewarded, when, and never twice. Both backends.

Members are registered and give (or withdraw) consent through the real services; segment
membership comes from the stand-in in tests/segment_stand_in.py, so each test says exactly
who is in the segment and when. Rewards are checked in the event store (coupons, loyalty
accounts, the campaign's own events), not in read models; "nothing recorded" is checked
against the event store's head.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic
from sqlalchemy import select

from api import campaigns as campaigns_module
from api.config import Settings
from api.runtime import Runtime
from domain.campaigns import Campaign, reward_coupon_id
from domain.clock import AdjustableClock
from domain.coupon import Coupon, CouponSource
from domain.errors import (
    DomainError,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
    ReasonRequiredError,
    ValidationError,
)
from domain.loyalty import LotStatus
from domain.metadata import Channel, EventMetadata, Role
from domain.segments import Segment
from projections.engine import ReadModelRunner
from projections.member_profiles import MemberProfilesProjection
from projections.tables import member_profiles
from tests.segment_stand_in import (
    admin_meta,
    archive_in_read_model,
    define_segment,
    leave_segment,
    seed_segment,
)

COUPON = {"coupon": {"kind": "percent", "value": 1_500, "min_spend": 10_000, "valid_days": 14}}
POINTS = {"points": 250}
ADMIN = admin_meta("spring reactivation")


def meta(actor: str, role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    return EventMetadata(actor, role, Channel.APP, "c", None, uuid.uuid4().hex, reason)


def refused(action: Callable[[], Any], error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as raised:
        action()
    return raised.value


class Desk:
    """The campaign admin's desk: members, a segment, campaigns, and what they received."""

    def __init__(self, runtime: Runtime, clock: AdjustableClock) -> None:
        self.rt = runtime
        self.clock = clock
        self.segment = define_segment(runtime)
        seed_segment(runtime, self.segment)

    def member(self, name: str = "Mia", consent: str | None = "email") -> str:
        member_id = str(self.rt.members.register(
            {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"},
            meta("anon", Role.ANONYMOUS)).aggregate_id)
        if consent:
            self.consent(member_id, consent, True)
        return member_id

    def consent(self, member_id: str, channel: str, granted: bool,
                purpose: str = "marketing") -> None:
        self.rt.members.set_consent(UUID(member_id), purpose, channel, granted,
                                    meta(member_id))

    def join(self, *member_ids: str) -> None:
        """The members join the segment now (a second apart, in the order given)."""
        for member_id in member_ids:
            seed_segment(self.rt, self.segment, [member_id], at=self.clock.now())
            self.clock.advance(timedelta(seconds=1))

    def launch(self, reward: Any = None, budget: int = 10, starts_in: timedelta | None = None,
               lasts: timedelta = timedelta(days=7), key: str | None = None,
               who: EventMetadata = ADMIN) -> UUID:
        now = self.clock.now()
        starts_at = now + starts_in if starts_in is not None else None
        return self.rt.campaigns.launch(
            "Spring", self.segment, reward or COUPON, budget, starts_at,
            (starts_at or now) + lasts, key or uuid.uuid4().hex, who).aggregate_id

    def campaign(self, campaign_id: UUID) -> Campaign:
        return self.rt.campaigns.get(campaign_id)

    def rewarded(self, campaign_id: UUID) -> set[str]:
        return set(self.campaign(campaign_id).rewarded)

    def tick(self) -> dict[str, int]:
        """The scheduler's campaign step, once the campaign read model is current."""
        self.rt.runner.catch_up("campaign_results")
        return self.rt.campaigns.issue_due()

    def head(self) -> int:
        return self.rt.runner.head()

    def events(self, event_class: type) -> list[Any]:
        recorder = self.rt.app.recorder
        notifications = recorder.select_notifications(  # type: ignore[attr-defined]
            start=1, limit=100_000, topics=[get_topic(event_class)])
        return [self.rt.app.mapper.to_domain_event(n) for n in notifications]

    def campaign_coupons(self, campaign_id: UUID) -> list[Any]:
        return [e for e in self.events(Coupon.Issued) if e.ref == str(campaign_id)]


@pytest.fixture
def desk(runtime: Runtime, clock: AdjustableClock) -> Desk:
    return Desk(runtime, clock)


# -- launching ------------------------------------------------------------------------------


def test_a_launch_whose_window_is_open_puts_a_coupon_in_each_wallet_at_once(desk: Desk) -> None:
    ann, bob, cai = desk.member("Ann"), desk.member("Bob"), desk.member("Cai")
    desk.join(ann, bob, cai)
    issued_at = desk.clock.now()
    result = desk.rt.campaigns.launch("Spring", desk.segment, COUPON, 10, None,
                                      issued_at + timedelta(days=7), "spring-1", ADMIN)
    campaign = desk.campaign(result.aggregate_id)
    assert set(campaign.rewarded) == {ann, bob, cai}
    assert result.position == desk.head() and result.version == campaign.version == 2
    for member in (ann, bob, cai):
        coupon = desk.rt.uow.get(Coupon, reward_coupon_id(campaign.id, member))
        assert coupon.member_id == member
        assert coupon.source == CouponSource.CAMPAIGN.value and coupon.ref == str(campaign.id)
        assert coupon.terms == {"kind": "percent", "value": 1_500, "min_spend": 10_000}
        assert coupon.valid_from == issued_at.isoformat()
        assert coupon.valid_until == (issued_at + timedelta(days=14)).isoformat()
    (issued,) = desk.events(Campaign.RewardsIssued)
    # Earliest to join the segment first; issued by the system, caused by the launch.
    assert issued.member_ids == [ann, bob, cai]
    assert issued.meta["actor_role"] == "system"
    (launched,) = desk.events(Campaign.Launched)
    assert issued.meta["causation_id"] == launched.meta["request_id"]


def test_a_points_campaign_credits_each_member_once(desk: Desk) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann, bob)
    before = {m: desk.rt.loyalty.account(UUID(m)).available for m in (ann, bob)}
    campaign_id = desk.launch(POINTS)
    for member in (ann, bob):
        account = desk.rt.loyalty.account(UUID(member))
        assert account.available == before[member] + 250
        (lot,) = [lot for lot in account.lots.values() if lot["source"] == "campaign"]
        assert (lot["points"], lot["status"], lot["ref"]) == (250, LotStatus.AVAILABLE,
                                                              str(campaign_id))
    assert desk.campaign_coupons(campaign_id) == []
    assert desk.tick() == {str(campaign_id): 0}
    assert desk.rt.loyalty.account(UUID(ann)).available == before[ann] + 250


def test_launching_needs_an_admin_a_reason_an_active_segment_and_good_input(
    desk: Desk,
) -> None:
    ends = desk.clock.now() + timedelta(days=3)

    def launch(segment: UUID = desk.segment, who: EventMetadata = ADMIN,
               **changes: Any) -> Any:
        args: dict[str, Any] = {"name": "Spring", "reward": COUPON, "budget": 5,
                                "starts_at": None, "ends_at": ends, "key": uuid.uuid4().hex}
        args.update(changes)
        return lambda: desk.rt.campaigns.launch(args["name"], segment, args["reward"],
                                                args["budget"], args["starts_at"],
                                                args["ends_at"], args["key"], who)

    head = desk.head()
    refused(launch(who=meta("agent-1", Role.AGENT, "please")), ForbiddenError)
    refused(launch(who=meta("m", Role.MEMBER)), ForbiddenError)
    refused(launch(who=admin_meta(None)), ReasonRequiredError)
    assert refused(launch(segment=uuid.uuid4()), NotFoundError).field == "segment_id"
    assert refused(launch(budget=0), ValidationError).field == "budget"
    assert refused(launch(ends_at=desk.clock.now()), ValidationError).field == "ends_at"
    assert refused(launch(reward={"points": -1}), ValidationError).field == "reward.points"
    assert refused(launch(key=" "), ValidationError).field == "idempotency_key"
    archived = define_segment(desk.rt, "Old")
    desk.rt.uow.change(Segment, archived,
                       lambda s: s.archive(desk.clock.now(), admin_meta("retired")))
    head = desk.head()
    error = refused(launch(segment=archived), InvalidTransitionError)
    assert isinstance(error, InvalidTransitionError) and error.current_state == "archived"
    assert desk.head() == head
    assert desk.events(Campaign.Launched) == []


def test_a_retried_launch_records_nothing_and_a_reused_key_is_a_conflict(desk: Desk) -> None:
    ann = desk.member("Ann")
    desk.join(ann)
    ends = desk.clock.now() + timedelta(days=3)
    first = desk.rt.campaigns.launch("Spring", desk.segment, COUPON, 5, None, ends, "k", ADMIN)
    head = desk.head()
    again = desk.rt.campaigns.launch("Spring", desk.segment, COUPON, 5, None, ends, "k", ADMIN)
    assert (again.aggregate_id, again.position) == (first.aggregate_id, None)
    refused(lambda: desk.rt.campaigns.launch("Spring", desk.segment, COUPON, 6, None, ends,
                                             "k", ADMIN), IdempotencyConflictError)
    assert desk.head() == head
    assert len(desk.campaign_coupons(first.aggregate_id)) == 1


# -- once per member, within budget -----------------------------------------------------------


def test_a_member_is_rewarded_once_even_after_leaving_and_rejoining_the_segment(
    desk: Desk,
) -> None:
    ann, bob, cai = desk.member("Ann"), desk.member("Bob"), desk.member("Cai")
    desk.join(ann, bob)
    campaign_id = desk.launch()
    assert desk.rewarded(campaign_id) == {ann, bob}
    leave_segment(desk.rt, desk.segment, ann)
    assert desk.tick() == {str(campaign_id): 0}
    desk.clock.advance(timedelta(hours=5))
    desk.join(ann, cai)  # Ann is back (a new joining time); Cai is new
    assert desk.tick() == {str(campaign_id): 1}
    assert desk.rewarded(campaign_id) == {ann, bob, cai}
    coupons = desk.campaign_coupons(campaign_id)
    assert sorted(c.member_id for c in coupons) == sorted([ann, bob, cai])
    assert desk.tick() == {str(campaign_id): 0}


def test_the_budget_is_never_exceeded_and_goes_to_the_earliest_members(desk: Desk) -> None:
    people = [desk.member(f"P{i}") for i in range(5)]
    desk.join(*people)
    campaign_id = desk.launch(budget=3)
    assert desk.rewarded(campaign_id) == set(people[:3])
    assert desk.campaign(campaign_id).remaining == 0
    desk.join(desk.member("Late"))
    assert desk.tick() == {}  # the read model shows the budget spent: not even tried
    assert desk.rt.campaigns.issue(campaign_id, ADMIN).issued == 0
    assert len(desk.campaign_coupons(campaign_id)) == 3


def test_issuing_after_a_launch_is_bounded_and_the_tick_issues_the_rest(
    desk: Desk, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(campaigns_module, "IMMEDIATE_ISSUE_LIMIT", 3)
    monkeypatch.setattr(campaigns_module, "CHUNK_SIZE", 2)
    people = [desk.member(f"P{i}") for i in range(7)]
    desk.join(*people)
    campaign_id = desk.launch(budget=6)
    assert desk.rewarded(campaign_id) == set(people[:3])
    # Chunks of two: three RewardsIssued events so far (2 + 1).
    assert [len(e.member_ids) for e in desk.events(Campaign.RewardsIssued)] == [2, 1]
    assert desk.tick() == {str(campaign_id): 3}
    assert desk.rewarded(campaign_id) == set(people[:6])


def test_concurrent_issuers_never_reward_twice_nor_beyond_the_budget(
    desk: Desk, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two servers (two runtimes on one database), two issuing threads each, at once."""
    monkeypatch.setattr(campaigns_module, "CHUNK_SIZE", 2)
    caplog.set_level(logging.INFO, logger="patron.service")
    people = [desk.member(f"P{i}") for i in range(12)]
    desk.join(*people)
    campaign_id = desk.launch(budget=7, starts_in=timedelta(hours=1))
    assert desk.rewarded(campaign_id) == set()
    desk.clock.advance(timedelta(hours=1))
    other = Runtime(settings, clock=desk.clock)
    try:
        barrier = threading.Barrier(4)
        counts: list[int] = []
        failures: list[BaseException] = []

        def issue(runtime: Runtime) -> None:
            barrier.wait()
            try:
                counts.append(runtime.campaigns.issue(campaign_id, ADMIN).issued)
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=issue, args=(rt,))
                   for rt in (desk.rt, other, desk.rt, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert failures == []
    # The issuers did collide (and the losers decided again): the race was real.
    assert any("version clash" in r.getMessage() for r in caplog.records)
    assert sum(counts) == 7
    rewarded = [m for e in desk.events(Campaign.RewardsIssued) for m in e.member_ids]
    assert len(rewarded) == len(set(rewarded)) == 7
    assert set(rewarded) <= set(people)
    coupons = desk.campaign_coupons(campaign_id)
    assert sorted(c.member_id for c in coupons) == sorted(rewarded)
    assert desk.campaign(campaign_id).remaining == 0


# -- consent ----------------------------------------------------------------------------------


def test_only_active_members_who_consent_to_marketing_are_rewarded(desk: Desk) -> None:
    sms = desk.member("Sms", consent="sms")
    push = desk.member("Push", consent="app_push")
    silent = desk.member("Silent", consent=None)
    personal_only = desk.member("Pers", consent=None)
    desk.consent(personal_only, "all", True, purpose="personalisation")
    changed_mind = desk.member("Changed")
    desk.consent(changed_mind, "email", False)
    blocked = desk.member("Blocked")
    desk.rt.members.set_status(UUID(blocked), "blocked", admin_meta("fraud"))
    erased = desk.member("Erased")
    desk.rt.members.erase(UUID(erased), admin_meta("GDPR request"))
    desk.join(sms, push, silent, personal_only, changed_mind, blocked, erased)
    campaign_id = desk.launch()
    assert desk.rewarded(campaign_id) == {sms, push}
    # Consent given later is honoured on the next tick.
    desk.consent(silent, "sms", True)
    assert desk.tick() == {str(campaign_id): 1}
    assert desk.rewarded(campaign_id) == {sms, push, silent}


def test_a_withdrawal_wins_even_while_the_read_model_still_shows_consent(
    desk: Desk,
) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann, bob)
    profiles = ReadModelRunner(desk.rt.sync_engine, desk.rt.app.recorder,  # type: ignore[arg-type]
                                desk.rt.app.mapper, [MemberProfilesProjection()])
    profiles.catch_up("member_profiles")
    campaign_id = desk.launch(starts_in=timedelta(minutes=30))
    desk.consent(ann, "email", False)  # recorded, not yet projected
    with desk.rt.sync_engine.connect() as conn:
        consents = conn.execute(select(member_profiles.c.consents).where(
            member_profiles.c.member_id == ann)).scalar_one()
    assert consents["marketing:email"]["granted"] is True  # the read model is behind
    desk.clock.advance(timedelta(minutes=30))
    assert desk.tick() == {str(campaign_id): 1}
    assert desk.rewarded(campaign_id) == {bob}
    profiles.release_leases()


def test_members_the_read_model_shows_without_consent_are_not_even_loaded(
    desk: Desk, monkeypatch: pytest.MonkeyPatch,
) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob", consent=None)
    desk.join(ann, bob)
    ReadModelRunner(desk.rt.sync_engine, desk.rt.app.recorder,  # type: ignore[arg-type]
                     desk.rt.app.mapper, [MemberProfilesProjection()]).run_once()
    campaign_id = desk.launch(starts_in=timedelta(minutes=1))
    desk.clock.advance(timedelta(minutes=1))
    assert desk.rt.campaigns.candidates(desk.campaign(campaign_id)) == [ann]


# -- the window -------------------------------------------------------------------------------


def test_nothing_is_issued_before_the_start_or_after_the_end(desk: Desk) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann)
    campaign_id = desk.launch(starts_in=timedelta(days=1), lasts=timedelta(days=2))
    assert desk.rewarded(campaign_id) == set()
    assert desk.tick() == {}
    assert desk.rt.campaigns.issue(campaign_id, ADMIN).issued == 0
    desk.clock.advance(timedelta(days=1))
    assert desk.tick() == {str(campaign_id): 1}
    desk.clock.advance(timedelta(days=2))
    desk.join(bob)
    head = desk.head()
    assert desk.tick() == {}
    assert desk.rt.campaigns.issue(campaign_id, ADMIN).issued == 0
    assert desk.head() == head and desk.rewarded(campaign_id) == {ann}


def test_stopping_halts_issuing_and_keeps_what_was_issued(desk: Desk) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann)
    campaign_id = desk.launch()
    refused(lambda: desk.rt.campaigns.stop(campaign_id, meta("agent-1", Role.AGENT, "x")),
            ForbiddenError)
    refused(lambda: desk.rt.campaigns.stop(campaign_id, admin_meta(None)), ReasonRequiredError)
    stopped = desk.rt.campaigns.stop(campaign_id, admin_meta("budget cut"))
    assert stopped.position == desk.head()
    desk.join(bob)
    assert desk.tick() == {}
    assert desk.rt.campaigns.issue(campaign_id, ADMIN).issued == 0
    assert desk.rewarded(campaign_id) == {ann}
    refused(lambda: desk.rt.campaigns.stop(campaign_id, admin_meta("again")),
            InvalidTransitionError)
    refused(lambda: desk.rt.campaigns.stop(uuid.uuid4(), admin_meta("who")), NotFoundError)
    assert len(desk.campaign_coupons(campaign_id)) == 1


def test_an_archived_segment_rewards_nobody_more(desk: Desk) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann)
    campaign_id = desk.launch()
    archive_in_read_model(desk.rt, desk.segment)
    desk.join(bob)
    archive_in_read_model(desk.rt, desk.segment)  # joining re-activated the stand-in row
    assert desk.tick() == {str(campaign_id): 0}
    assert desk.rewarded(campaign_id) == {ann}


# -- the scheduler ----------------------------------------------------------------------------


def test_the_scheduler_tick_issues_every_running_campaign(desk: Desk) -> None:
    ann, bob = desk.member("Ann"), desk.member("Bob")
    desk.join(ann, bob)
    coupons = desk.launch(starts_in=timedelta(hours=1))
    points = desk.launch(POINTS, budget=1, starts_in=timedelta(hours=1))
    desk.rt.runner.catch_up("campaign_results")
    assert desk.rt.scheduler.tick().campaign_rewards == 0
    desk.clock.advance(timedelta(hours=1))
    report = desk.rt.scheduler.tick()
    assert (report.campaign_rewards, report.errors) == (3, [])
    assert report.as_dict()["campaign_rewards"] == 3
    assert desk.rewarded(coupons) == {ann, bob} and desk.rewarded(points) == {ann}
    desk.rt.runner.catch_up("campaign_results")
    assert desk.rt.scheduler.tick().campaign_rewards == 0
