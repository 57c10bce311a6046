"""Commands on segments, and the periodic review that keeps membership current with time.

A segment's id is derived from the admin and their idempotency key, so a retried
defineSegment finds the segment it created instead of defining a second one; reusing the
key for a different segment is an IDEMPOTENCY_CONFLICT.
"""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from api.commerce import check_key
from api.service import CommandResult, Session, UnitOfWork
from domain.clock import Clock
from domain.errors import IdempotencyConflictError
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import EventMetadata
from domain.segment_rules import parse_rule
from domain.segments import Segment, SegmentReview, require_admin, review_slot, segment_name

SEGMENT_NAMESPACE = uuid.UUID("2b9d4f61-3c7e-4a85-b0d2-8e1f6a4c9d37")


class SegmentService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules

    def get(self, segment_id: UUID) -> Segment:
        return self.uow.get(Segment, segment_id)

    def define(self, name: Any, description: Any, rule: Any, key: str,
               meta: EventMetadata) -> CommandResult:
        require_admin(meta, "define segments")
        segment_id = uuid.uuid5(SEGMENT_NAMESPACE, f"{meta.actor_id}:{check_key(key)}")

        def decide(session: Session) -> Segment:
            existing = session.find(Segment, segment_id)
            if existing is not None:
                same = (existing.name == segment_name(name)
                        and existing.rule == parse_rule(rule).text)
                if not same:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different segment")
                return existing
            return session.add(Segment.define(segment_id, name, description, rule,
                                              self.clock.now(), meta))

        return self.uow.result_of(self.uow.run(decide))

    def update(self, segment_id: UUID, name: Any, description: Any, rule: Any,
               meta: EventMetadata) -> CommandResult:
        return self.uow.change(
            Segment, segment_id,
            lambda segment: segment.update(name, description, rule, now=self.clock.now(),
                                           meta=meta))

    def archive(self, segment_id: UUID, meta: EventMetadata) -> CommandResult:
        return self.uow.change(
            Segment, segment_id, lambda segment: segment.archive(self.clock.now(), meta))

    def hold_review(self, meta: EventMetadata) -> bool:
        """Record this interval's review unless it is recorded already: True if recorded.

        Its id comes from the interval, so schedulers on several servers record it once.
        """
        interval = self.rules.profile.segment_review_minutes
        now = self.clock.now()
        slot = review_slot(now, interval)
        review_id = SegmentReview.id_for(slot)

        def decide(session: Session) -> bool:
            if session.find(SegmentReview, review_id) is not None:
                return False
            session.add(SegmentReview.hold(slot, interval, now, meta))
            return True

        return self.uow.run(decide).value
