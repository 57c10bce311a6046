"""The Segment aggregate: a named rule over member profiles that admins define and evolve.

A segment stores its rule as canonical text (see domain.segment_rules), parsed and checked
when it is defined or changed, so a rule that is stored always parses and two spellings
of one rule are one rule. Membership itself is not here: it is live, computed by a
projection from the rule and the profiles.

Segments steer who receives campaigns, so only admins define, change or archive them, and
like every admin mutation each needs a reason an auditor can read later. An update that
changes nothing (the same name, description and rule, however spelt) records nothing.
An archived segment is kept for the history of the campaigns that used it but can no
longer change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import ForbiddenError, InvalidTransitionError, ValidationError
from domain.metadata import EventMetadata, Role
from domain.profile import MemberProfile
from domain.segment_rules import Facts, parse_rule

REVIEW_NAMESPACE = UUID("6f0c2e55-9a1b-4d43-8a57-0c1d5e3b7a21")

MAX_NAME = 100
MAX_DESCRIPTION = 1000


class SegmentState(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


def segment_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name the segment", "name")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise ValidationError(f"name must be at most {MAX_NAME} characters", "name")
    return name


def segment_description(value: Any) -> str | None:
    """Optional prose; blank is no description."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("description must be text", "description")
    text = value.strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationError(
            f"description must be at most {MAX_DESCRIPTION} characters", "description")
    return text or None


def require_admin(meta: EventMetadata, attempted: str) -> None:
    if meta.actor_role is not Role.ADMIN:
        raise ForbiddenError(f"only admins may {attempted}")


class Segment(RecordedAggregate):
    @classmethod
    def define(cls, segment_id: UUID, name: Any, description: Any, rule_text: Any,
               now: datetime, meta: EventMetadata) -> Segment:
        require_admin(meta, "define segments")
        checked_name = segment_name(name)
        checked_description = segment_description(description)
        rule = parse_rule(rule_text)
        meta.require_reason()
        return cls._create(
            cls.Defined, id=segment_id, timestamp=now, name=checked_name,
            description=checked_description, rule=rule.text, meta=meta.as_dict(),
        )

    class Defined(Aggregate.Created):
        name: str
        description: str | None
        rule: str

    def __init__(self, name: str, description: str | None, rule: str,
                 meta: dict[str, Any]) -> None:
        self.name = name
        self.description = description
        # Canonical text: parse_rule(self.rule).text == self.rule.
        self.rule = rule
        self.defined_by = meta
        self.state: str = SegmentState.ACTIVE.value
        self.archived_at: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state == SegmentState.ACTIVE

    def _require_active(self, attempted: str) -> None:
        if not self.is_active:
            raise InvalidTransitionError(
                f"cannot {attempted} a segment that is {self.state}",
                current_state=self.state, attempted=attempted,
            )

    # -- commands ---------------------------------------------------------------------------

    def update(self, name: Any = None, description: Any = None, rule_text: Any = None, *,
               now: datetime, meta: EventMetadata) -> bool:
        """Change what is given (None keeps it; a blank description removes it).

        False, recording nothing, when the result is what the segment already is.
        """
        require_admin(meta, "change segments")
        self._require_active("update")
        new_name = self.name if name is None else segment_name(name)
        new_description = (self.description if description is None
                           else segment_description(description))
        new_rule = self.rule if rule_text is None else parse_rule(rule_text).text
        changed = [field for field, old, new in (
            ("name", self.name, new_name), ("description", self.description, new_description),
            ("rule", self.rule, new_rule)) if old != new]
        if not changed:
            return False
        meta.require_reason()
        self._trigger(
            self.Updated, now, meta, name=new_name, description=new_description, rule=new_rule,
            changed=changed,
        )
        return True

    def archive(self, now: datetime, meta: EventMetadata) -> None:
        require_admin(meta, "archive segments")
        self._require_active("archive")
        meta.require_reason()
        self._trigger(self.Archived, now, meta)

    # -- events -----------------------------------------------------------------------------

    class Updated(RecordedAggregate.Event):
        """The segment as it now is, and which of name, description and rule changed."""

        name: str
        description: str | None
        rule: str
        changed: list[str]

        def apply(self, segment: Any) -> None:
            segment.name = self.name
            segment.description = self.description
            segment.rule = self.rule

    class Archived(RecordedAggregate.Event):

        def apply(self, segment: Any) -> None:
            segment.state = SegmentState.ARCHIVED.value
            segment.archived_at = self.timestamp.isoformat()


def review_slot(now: datetime, interval_minutes: int) -> datetime:
    """The start of the review interval `now` falls in (intervals counted from the epoch)."""
    seconds = interval_minutes * 60
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    elapsed = int((now.astimezone(UTC) - epoch).total_seconds())
    return epoch + timedelta(seconds=elapsed - elapsed % seconds)


class SegmentReview(RecordedAggregate):
    """A moment at which every member is evaluated against every active segment.

    Membership follows a member's own events as they are projected, but some facts change
    with no event at all: interests decay, "within 30 days" stops holding, a quiet member
    turns dormant, and RFM quintiles move as *other* members buy. Recording the review as
    an event (one per interval, its id derived from the interval so that two schedulers
    record it once) lets the projection apply those changes at a time that every rebuild
    sees again, instead of at whatever moment a clock happened to fire.
    """

    @classmethod
    def hold(cls, slot: datetime, interval_minutes: int, now: datetime,
             meta: EventMetadata) -> SegmentReview:
        return cls._create(cls.Held, id=cls.id_for(slot), timestamp=now,
                           slot=slot.isoformat(), interval_minutes=interval_minutes,
                           meta=meta.as_dict())

    @staticmethod
    def id_for(slot: datetime) -> UUID:
        return uuid5(REVIEW_NAMESPACE, f"segment-review:{slot.astimezone(UTC).isoformat()}")

    class Held(Aggregate.Created):
        slot: str
        interval_minutes: int

    def __init__(self, slot: str, interval_minutes: int, meta: dict[str, Any]) -> None:
        self.slot = slot
        self.interval_minutes = interval_minutes


def facts_from_profile(profile: MemberProfile, tier: str | None) -> Facts:
    """What a segment rule sees of a member: their profile and loyalty tier.

    The one place that decides how each profile figure maps to a rule field:

    - total_spent is the profile's purchase_total, which is already net of refunds.
    - Interests are the listed (top) categories and brands with their share; one outside
      the listed top has share 0 for a rule. Without consent to personalisation the profile
      has no interests, and the rule sees them as unknown (None), so no interest condition,
      negated or not, selects such a member.
    - RFM scores, the last purchase, average order value and repurchase rate are missing
      (None) until a first purchase.
    """
    rfm = profile.rfm
    interests = None
    if profile.personalised:
        interests = {
            **{("category", s.key): s.share for s in profile.category_interests},
            **{("brand", s.key): s.share for s in profile.brand_interests},
        }
    return Facts(
        tier=str(tier) if tier else None,
        lifecycle=str(profile.lifecycle.name),
        shopper_type=str(profile.shopper_type.name),
        price_band=str(profile.price_band) if profile.price_band else None,
        purchases=profile.purchases,
        orders_placed=profile.orders_placed,
        reviews=profile.reviews,
        total_spent=profile.purchase_total,
        average_order_value=profile.average_order_value,
        repurchase_rate=profile.repurchase_rate,
        purchases_per_30_days=profile.purchases_per_30_days,
        rfm_recency=rfm.recency if rfm else None,
        rfm_frequency=rfm.frequency if rfm else None,
        rfm_monetary=rfm.monetary if rfm else None,
        last_purchase=profile.last_purchase_at,
        last_activity=profile.last_activity_at,
        joined=profile.joined_at,
        interests=interests,
        tags=frozenset(str(tag.name) for tag in profile.tags),
    )
