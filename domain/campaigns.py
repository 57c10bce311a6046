"""The Campaign aggregate: an admin rewards the members of a segment, once each, within a
budget and a window of time.

A campaign targets one segment with one reward: a coupon (fixed or percentage, with a
minimum spend, valid for a number of days from the moment it is issued) or a number of
bonus points. The coupon's validity is *not* cut at the campaign's end: the window says
when rewards are handed out, and a member rewarded on its last day gets the same usable
coupon as one rewarded on its first (capping would spend budget on coupons nobody can use).

The budget is the most members the campaign rewards. Which members is decided at issuing
time from the segment's live membership (see api/campaigns.py); the campaign itself keeps
the set of members it has rewarded, so every `RewardsIssued` event is checked against the
whole history of the campaign: nobody is rewarded twice, even after leaving and rejoining
the segment, and the budget is never exceeded. Two issuers that decide at once both write
the campaign's next version: optimistic concurrency lets one of them save and makes the
other decide again on what the first recorded.

Launching and stopping are admin actions and need a reason. Whether a campaign is
scheduled, running or ended is a matter of the clock (its window), so it is derived, not
recorded; only stopping is an event. Every refusal is a typed error raised before an event
is triggered, so a refused command records nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.coupon import validate_terms
from domain.errors import (
    ForbiddenError,
    InvalidTransitionError,
    LimitExceededError,
    ValidationError,
)
from domain.metadata import EventMetadata, Role
from domain.pricing import CouponTerms
from domain.segments import require_admin

MAX_NAME = 100
MAX_BUDGET = 1_000_000
MAX_WINDOW = timedelta(days=366)
MAX_COUPON_VALID_DAYS = 366
# At most 1,000 currency units' worth of points (100 points = 1 unit) per member.
MAX_BONUS_POINTS = 100_000
# Members one RewardsIssued event may name: keeps events, and the transactions that
# record them together with a coupon or a credit per member, small.
MAX_CHUNK = 500
MAX_REQUEST_HASH = 64


class RewardKind(StrEnum):
    COUPON = "coupon"
    POINTS = "points"


class CampaignStatus(StrEnum):
    """What is recorded: launched, and perhaps stopped later."""

    LAUNCHED = "launched"
    STOPPED = "stopped"


class CampaignState(StrEnum):
    """What a campaign is at a moment: its status read against its window."""

    SCHEDULED = "scheduled"
    RUNNING = "running"
    ENDED = "ended"
    STOPPED = "stopped"


def state_at(status: str, starts_at: datetime, ends_at: datetime,
             now: datetime) -> CampaignState:
    """The state at `now`; shared by the aggregate and the read side so they agree."""
    if status == CampaignStatus.STOPPED:
        return CampaignState.STOPPED
    if now < starts_at:
        return CampaignState.SCHEDULED
    if now < ends_at:
        return CampaignState.RUNNING
    return CampaignState.ENDED


@dataclass(frozen=True)
class CampaignReward:
    """One reward per rewarded member: a coupon's terms and validity, or bonus points."""

    kind: RewardKind
    coupon_kind: str | None = None
    value: int | None = None
    min_spend: int | None = None
    valid_days: int | None = None
    points: int | None = None

    @property
    def terms(self) -> CouponTerms:
        if self.kind is not RewardKind.COUPON:
            raise ValueError("a points reward has no coupon terms")
        assert self.coupon_kind is not None and self.value is not None
        return CouponTerms(kind=self.coupon_kind, value=self.value,
                           min_spend=self.min_spend or 0)

    def coupon_valid_until(self, issued_at: datetime) -> datetime:
        """When a coupon issued at `issued_at` stops being usable."""
        assert self.valid_days is not None
        return issued_at + timedelta(days=self.valid_days)

    def as_dict(self) -> dict[str, Any]:
        if self.kind is RewardKind.COUPON:
            return {"kind": self.kind.value, "coupon_kind": self.coupon_kind,
                    "value": self.value, "min_spend": self.min_spend,
                    "valid_days": self.valid_days}
        return {"kind": self.kind.value, "points": self.points}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CampaignReward:
        kind = RewardKind(data["kind"])
        if kind is RewardKind.COUPON:
            return cls(kind=kind, coupon_kind=data["coupon_kind"], value=int(data["value"]),
                       min_spend=int(data["min_spend"]), valid_days=int(data["valid_days"]))
        return cls(kind=kind, points=int(data["points"]))


def _whole(value: Any, field: str, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationError(f"{what} must be a whole number from {low} to {high:,}", field)
    return value


def coupon_reward(kind: Any, value: Any, min_spend: Any, valid_days: Any) -> CampaignReward:
    """A coupon reward, checked with the same rules as every coupon (domain.coupon)."""
    try:
        terms = validate_terms(kind, value, min_spend)
    except ValidationError as error:
        raise ValidationError(error.message, f"reward.coupon.{error.field}") from None
    days = _whole(valid_days, "reward.coupon.valid_days", 1, MAX_COUPON_VALID_DAYS,
                  "a campaign coupon's validity in days")
    return CampaignReward(kind=RewardKind.COUPON, coupon_kind=terms.kind, value=terms.value,
                          min_spend=terms.min_spend, valid_days=days)


def points_reward(points: Any) -> CampaignReward:
    return CampaignReward(
        kind=RewardKind.POINTS,
        points=_whole(points, "reward.points", 1, MAX_BONUS_POINTS, "bonus points"),
    )


def validate_reward(reward: Any) -> CampaignReward:
    """A reward given as a CampaignReward or as {"coupon": {...}} / {"points": n}."""
    if isinstance(reward, CampaignReward):
        if reward.kind is RewardKind.COUPON:
            return coupon_reward(reward.coupon_kind, reward.value, reward.min_spend,
                                 reward.valid_days)
        return points_reward(reward.points)
    if not isinstance(reward, Mapping):
        raise ValidationError("give the reward: a coupon or bonus points", "reward")
    given = [key for key in ("coupon", "points") if reward.get(key) is not None]
    if len(given) != 1:
        raise ValidationError("give exactly one reward: a coupon or bonus points", "reward")
    if given == ["points"]:
        return points_reward(reward["points"])
    coupon = reward["coupon"]
    if not isinstance(coupon, Mapping):
        raise ValidationError("describe the coupon", "reward.coupon")
    return coupon_reward(coupon.get("kind"), coupon.get("value"), coupon.get("min_spend", 0),
                         coupon.get("valid_days"))


def campaign_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name the campaign", "name")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise ValidationError(f"name must be at most {MAX_NAME} characters", "name")
    return name


def validate_window(starts_at: Any, ends_at: Any, now: datetime) -> None:
    """Rewards go out from `starts_at` (which may be in the future, or past: then at once)
    until `ends_at`, which must be ahead: a campaign that is over could never reward."""
    for field, moment in (("starts_at", starts_at), ("ends_at", ends_at)):
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise ValidationError(f"{field} must be a time with a time zone", field)
    if ends_at <= starts_at:
        raise ValidationError("the campaign must end after it starts", "ends_at")
    if ends_at <= now:
        raise ValidationError("the campaign must end in the future", "ends_at")
    if ends_at - starts_at > MAX_WINDOW:
        raise ValidationError(f"a campaign runs for at most {MAX_WINDOW.days} days", "ends_at")


def member_key(value: Any) -> str:
    """A member id in its canonical text form (what every other aggregate stores)."""
    try:
        return str(value if isinstance(value, UUID) else UUID(str(value)))
    except ValueError:
        raise ValidationError(f"malformed member id {value!r}", "member_ids") from None


def reward_coupon_id(campaign_id: UUID, member_id: str) -> UUID:
    """The coupon a campaign issues a member: derived, so a repeat can only collide."""
    return uuid5(campaign_id, member_key(member_id))


def require_issuer(meta: EventMetadata) -> None:
    """Rewards are handed out by the system's issuer (or an admin); never by the members."""
    if meta.actor_role not in (Role.SYSTEM, Role.ADMIN):
        raise ForbiddenError("only the campaign issuer or an admin issues campaign rewards")


class Campaign(RecordedAggregate):
    @classmethod
    def launch(
        cls,
        campaign_id: UUID,
        name: Any,
        segment_id: Any,
        reward: Any,
        budget: Any,
        starts_at: Any,
        ends_at: Any,
        now: datetime,
        meta: EventMetadata,
        request_hash: str = "",
    ) -> Campaign:
        require_admin(meta, "launch campaigns")
        checked_name = campaign_name(name)
        try:
            segment = str(segment_id if isinstance(segment_id, UUID) else UUID(str(segment_id)))
        except ValueError:
            raise ValidationError(f"malformed segment id {segment_id!r}", "segment_id") from None
        checked_reward = validate_reward(reward)
        checked_budget = _whole(budget, "budget", 1, MAX_BUDGET,
                                "the budget (members to reward)")
        validate_window(starts_at, ends_at, now)
        meta.require_reason()
        return cls._create(
            cls.Launched, id=campaign_id, timestamp=now, name=checked_name,
            segment_id=segment, reward=checked_reward.as_dict(), budget=checked_budget,
            starts_at=starts_at.isoformat(), ends_at=ends_at.isoformat(),
            request_hash=request_hash[:MAX_REQUEST_HASH], meta=meta.as_dict(),
        )

    class Launched(Aggregate.Created):
        name: str
        segment_id: str
        reward: dict[str, Any]
        budget: int
        starts_at: str
        ends_at: str
        request_hash: str

    def __init__(self, name: str, segment_id: str, reward: dict[str, Any], budget: int,
                 starts_at: str, ends_at: str, request_hash: str,
                 meta: dict[str, Any]) -> None:
        self.name = name
        self.segment_id = segment_id
        self.reward_data = dict(reward)
        self.budget = budget
        self.starts_at = starts_at
        self.ends_at = ends_at
        # Fingerprint of the launch request, to tell a retry from a reuse of its key.
        self.request_hash = request_hash
        self.launched_by = meta
        self.status: str = CampaignStatus.LAUNCHED.value
        self.stopped_at: str | None = None
        # Every member rewarded so far, with when: the once-per-member guarantee.
        self.rewarded: dict[str, str] = {}

    # -- derived ----------------------------------------------------------------------------

    @property
    def reward(self) -> CampaignReward:
        return CampaignReward.from_dict(self.reward_data)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.rewarded)

    def state_at(self, now: datetime) -> CampaignState:
        return state_at(self.status, datetime.fromisoformat(self.starts_at),
                        datetime.fromisoformat(self.ends_at), now)

    def is_issuing(self, now: datetime) -> bool:
        """Running with budget left: rewards may go out now."""
        return self.state_at(now) is CampaignState.RUNNING and self.remaining > 0

    def has_rewarded(self, member_id: str) -> bool:
        return member_id in self.rewarded

    def unrewarded(self, member_ids: Iterable[Any]) -> list[str]:
        """The given members this campaign has not rewarded, once each, in the given order."""
        seen: set[str] = set()
        found: list[str] = []
        for value in member_ids:
            member_id = member_key(value)
            if member_id not in seen and member_id not in self.rewarded:
                seen.add(member_id)
                found.append(member_id)
        return found

    # -- commands ---------------------------------------------------------------------------

    def stop(self, now: datetime, meta: EventMetadata) -> None:
        """End the campaign early (or cancel it before it starts): nothing more is issued;
        what was issued stays issued."""
        require_admin(meta, "stop campaigns")
        state = self.state_at(now)
        if state in (CampaignState.STOPPED, CampaignState.ENDED):
            raise InvalidTransitionError(
                f"cannot stop a campaign that has {state.value}"
                if state is CampaignState.ENDED else "the campaign is already stopped",
                current_state=state.value, attempted="stop",
            )
        meta.require_reason()
        self._trigger(self.Stopped, now, meta)

    def issue(self, member_ids: Iterable[Any], now: datetime, meta: EventMetadata) -> None:
        """Record that these members get the reward now (their coupons or credits are
        recorded beside this event, in the same transaction, by the caller)."""
        require_issuer(meta)
        state = self.state_at(now)
        if state is not CampaignState.RUNNING:
            raise InvalidTransitionError(
                f"cannot issue rewards: the campaign is {state.value}",
                current_state=state.value, attempted="issue",
            )
        given = list(member_ids)
        chosen = [member_key(m) for m in given]
        if not chosen:
            raise ValidationError("name at least one member to reward", "member_ids")
        if len(chosen) > MAX_CHUNK:
            raise ValidationError(f"reward at most {MAX_CHUNK} members at once", "member_ids")
        if len(set(chosen)) != len(chosen):
            raise ValidationError("a member is named twice", "member_ids")
        again = [m for m in chosen if m in self.rewarded]
        if again:
            raise ValidationError(
                f"member {again[0]} was already rewarded by this campaign", "member_ids")
        if len(chosen) > self.remaining:
            raise LimitExceededError(
                f"{len(chosen)} rewards would exceed the budget of {self.budget} "
                f"({self.remaining} left)", "member_ids")
        self._trigger(self.RewardsIssued, now, meta, member_ids=chosen)

    # -- events -----------------------------------------------------------------------------

    class Stopped(RecordedAggregate.Event):

        def apply(self, campaign: Any) -> None:
            campaign.status = CampaignStatus.STOPPED.value
            campaign.stopped_at = self.timestamp.isoformat()

    class RewardsIssued(RecordedAggregate.Event):
        """These members were rewarded at this event's time (one coupon or credit each)."""

        member_ids: list[str]

        def apply(self, campaign: Any) -> None:
            at = self.timestamp.isoformat()
            for member_id in self.member_ids:
                campaign.rewarded[member_id] = at

