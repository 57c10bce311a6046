"""Commands for behaviour tracking, session links and product reviews.

Behaviour is stored one aggregate per batch (see domain/behaviour.py), so recording it
never loads or grows the Member aggregate's stream: the member is only *read* (from its
snapshot) to learn their current consent. A member's commands therefore keep their speed
however much behaviour the member produces.

Attribution follows the member's consent to personalisation *at the time the batch is
recorded*. With consent the batch names the member (and their search words are encrypted
under the member's key). Without it the batch is recorded as an anonymous one-off: a fresh
random session id that nothing can link back, and metadata that does not name the member,
so it counts in aggregate statistics only and can never be attached to the member later,
not even if they consent afterwards. A change of consent takes effect from the next batch.

Batches are idempotent: the batch id derives from the sender (member or session) and the
batch key, so a resent batch finds the first one and records nothing; the same key with a
different content is an IDEMPOTENCY_CONFLICT.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from api.commerce import LoyaltyService, check_key, request_hash, reviewable_line
from api.service import CommandResult, Session, UnitOfWork
from domain.behaviour import (
    BehaviourBatch,
    ProductReview,
    SessionLink,
    validate_batch,
    validate_session_id,
)
from domain.clock import Clock
from domain.errors import (
    ErasedError,
    IdempotencyConflictError,
    InvalidTransitionError,
    ValidationError,
)
from domain.loyalty_rules import LoyaltyRules
from domain.member import ConsentChannel, ConsentPurpose, Member, MemberStatus
from domain.metadata import EventMetadata, Role

# One namespace per kind of derived id, so that no session id or batch key can be chosen
# to make one kind's id collide with another's.
BATCH_NAMESPACE = uuid.UUID("5d3f9a7e-2c41-4b8e-9f06-7a1b3c5d8e20")
LINK_NAMESPACE = uuid.UUID("a4c8e1f2-6b3d-4e59-8a70-1f2e3d4c5b61")
REVIEW_NAMESPACE = uuid.UUID("e7b2d4c6-9a81-4f3e-b5d0-2c6a8e4f1b93")
# Session ids the service invents for unattributed member batches; clients may not use
# them, so such a session can never be linked (or tracked into) by anyone.
ANONYMOUS_SESSION_PREFIX = "anon:"


@dataclass(frozen=True)
class TrackResult(CommandResult):
    """A recorded (or re-sent) batch: how many events it holds and whether it names the
    member. A re-sent batch answers as the first one did, with no position."""

    accepted: int
    attributed: bool


@dataclass(frozen=True)
class LinkResult(CommandResult):
    """False when the member does not consent to personalisation: nothing is recorded."""

    linked: bool


@dataclass(frozen=True)
class ReviewResult(CommandResult):
    """The review as it now stands and the points this command credited (0 for a revision,
    a retry, or a review without text)."""

    points_awarded: int
    stars: int
    text: str | None
    product_id: str | None
    order_id: str
    line_id: str


def client_session_id(value: Any) -> str:
    """A session id sent by a client: well-formed, and not one the service reserves."""
    session_id = validate_session_id(value)
    if session_id.startswith(ANONYMOUS_SESSION_PREFIX):
        raise ValidationError(
            f"session ids starting with {ANONYMOUS_SESSION_PREFIX!r} are reserved", "session_id"
        )
    return session_id


def personalisation_allowed(member: Member) -> bool:
    """Whether behaviour may be attached to this member now.

    Personalisation consent is recorded for channel "all" (domain/member.py refuses any
    other channel for it). A closed account has nothing left to personalise, so its
    behaviour is treated like a non-consenting member's.
    """
    return (
        member.status != MemberStatus.CLOSED.value
        and member.consent_granted(ConsentPurpose.PERSONALISATION, ConsentChannel.ALL)
    )


def unattributed(meta: EventMetadata) -> EventMetadata:
    """Metadata for a batch that must not lead back to the member who sent it: no actor id
    and no client-supplied correlation (which could tie it to the member's other events);
    the channel and the request id stay, for operations."""
    return EventMetadata(
        actor_id="anonymous",
        actor_role=Role.ANONYMOUS,
        channel=meta.channel,
        correlation_id=meta.request_id,
        causation_id=None,
        request_id=meta.request_id,
    )


def _require_not_erased(member: Member) -> None:
    if member.erased:
        raise ErasedError("member has been erased")


class BehaviourService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules,
                 loyalty: LoyaltyService) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules
        self.loyalty = loyalty

    # -- tracking ---------------------------------------------------------------------------

    def batch_id_for(self, member_id: UUID | None, session_id: str | None, key: str) -> UUID:
        """The batch's id, from its sender and key: members and sessions have separate key
        spaces, so a session named like a member id cannot pre-empt the member's batches."""
        sender = f"member:{member_id}" if member_id is not None else f"session:{session_id}"
        try:
            checked = check_key(key)
        except ValidationError as error:
            raise ValidationError(error.message.replace("an idempotency key", "a batch key"),
                                  "batch_key") from None
        return uuid.uuid5(BATCH_NAMESPACE, f"{sender}:{checked}")

    def track(
        self,
        member_id: UUID | None,
        session_id: str | None,
        items: Sequence[Mapping[str, Any]],
        batch_key: str,
        meta: EventMetadata,
    ) -> TrackResult:
        """Record a batch of up to 500 behaviour events, for a member or a session.

        Anonymous senders (member_id None) must name their session. A member's batch is
        attributed to them only with their current consent to personalisation; an erased
        member is refused (ERASED) rather than silently counted.
        """
        if member_id is None and session_id is None:
            raise ValidationError("anonymous behaviour needs a session id", "session_id")
        session = client_session_id(session_id) if session_id is not None else None
        batch_id = self.batch_id_for(member_id, session, batch_key)
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise ValidationError("events must be a list of behaviour events", "events")
        # The content as sent (not as normalised: a missing time defaults to "now", which
        # differs on a resend), so a resend is recognised by its fingerprint.
        fingerprint = request_hash(
            "track", session, [dict(i) if isinstance(i, Mapping) else i for i in items]
        )

        def decide(s: Session) -> BehaviourBatch:
            existing = s.find(BehaviourBatch, batch_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    conflict = IdempotencyConflictError(
                        "this batch key was already used for a different batch"
                    )
                    conflict.field = "batch_key"
                    raise conflict
                return existing
            now = self.clock.now()
            events = validate_batch(items, now)
            if member_id is None:
                return s.add(BehaviourBatch.record(
                    batch_id, None, session, events, fingerprint, now, meta))
            member = s.get(Member, member_id)
            _require_not_erased(member)
            if personalisation_allowed(member):
                return s.add(BehaviourBatch.record(
                    batch_id, str(member_id), session, events, fingerprint, now, meta))
            # Not the caller's session either: it may be linked to the member later.
            anonymous = f"{ANONYMOUS_SESSION_PREFIX}{uuid.uuid4().hex}"
            return s.add(BehaviourBatch.record(
                batch_id, None, anonymous, events, fingerprint, now, unattributed(meta)))

        outcome = self.uow.run(decide)
        batch = outcome.value
        return TrackResult(batch.id, batch.version, outcome.position, accepted=batch.count,
                           attributed=batch.member_id is not None)

    # -- sessions ---------------------------------------------------------------------------

    def link_id_for(self, session_id: str) -> UUID:
        return uuid.uuid5(LINK_NAMESPACE, session_id)

    def link_session(self, session_id: str, member_id: UUID,
                     meta: EventMetadata) -> LinkResult:
        """Tie an anonymous session to the member who signed in during it: once, to one.

        Linking again to the same member is a retry and records nothing; to another member
        it is a CONFLICT. Without consent to personalisation nothing is recorded (linked is
        false): the session's behaviour stays anonymous, as the member's own would be.
        """
        checked = client_session_id(session_id)
        link_id = self.link_id_for(checked)

        def decide(s: Session) -> tuple[SessionLink | None, bool]:
            existing = s.find(SessionLink, link_id)
            if existing is not None:
                existing.check_member(str(member_id))
                return existing, True
            member = s.get(Member, member_id)
            _require_not_erased(member)
            if not personalisation_allowed(member):
                return None, False
            return s.add(SessionLink.link(link_id, checked, str(member_id), self.clock.now(),
                                          meta)), True

        outcome = self.uow.run(decide)
        link, linked = outcome.value
        return LinkResult(link_id, link.version if link else 0, outcome.position, linked=linked)

    # -- reviews ----------------------------------------------------------------------------

    def review_id_for(self, order_id: UUID, line_id: str) -> UUID:
        return uuid.uuid5(REVIEW_NAMESPACE, f"{order_id}:{line_id}")

    def review_product(
        self,
        member_id: UUID,
        order_id: UUID,
        line_id: str,
        stars: int,
        text: str | None,
        meta: EventMetadata,
    ) -> ReviewResult:
        """Write (or revise) the member's review of a delivered line they bought.

        The review and its points are one unit of work: the first version of the review
        that has text earns the line's review points, once, through the same once-per-line
        award as `LoyaltyService.award_review`; two concurrent reviews of one line clash on
        the review's version and the retry finds the points already credited.
        """
        review_id = self.review_id_for(order_id, line_id)

        def decide(s: Session) -> tuple[ProductReview, int]:
            now = self.clock.now()
            member = s.get(Member, member_id)
            _require_not_erased(member)
            if member.status != MemberStatus.ACTIVE.value:
                raise InvalidTransitionError(
                    f"a {member.status} member cannot review products",
                    current_state=member.status, attempted="review",
                )
            _order, line = reviewable_line(s, member_id, order_id, line_id)
            review = s.find(ProductReview, review_id)
            if review is None:
                review = s.add(ProductReview.write(
                    review_id, str(member_id), str(order_id), line, stars, text, now, meta))
            else:
                review.revise(stars, text, now, meta)
            points = 0
            if review.has_text and self.rules.review_points > 0:
                points = self.loyalty.award_review_points(s, member_id, order_id, line_id,
                                                          now, meta)
            return review, points

        outcome = self.uow.run(decide)
        review, points = outcome.value
        return ReviewResult(
            review.id, review.version, outcome.position, points_awarded=points,
            stars=review.stars, text=review.text, product_id=review.product_id,
            order_id=review.order_id, line_id=review.line_id,
        )
