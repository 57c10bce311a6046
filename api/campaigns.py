"""Commands for campaigns: launching, stopping, and issuing the rewards.

Who is rewarded is decided when rewards are issued, not at launch: a campaign rewards the
members of its segment *as it is* while the campaign runs (membership is live), each at
most once, the earliest to have joined the segment first, until the budget is spent.
Issuing runs right after a launch whose window is open (bounded by
`IMMEDIATE_ISSUE_LIMIT`, so the launch request stays quick; the scheduler issues the rest
on its next tick) and then on every scheduler tick, which also picks up members who join
the segment, or give their consent, later.

Each chunk of members is one unit of work: the campaign's `RewardsIssued` event and every
member's coupon (id derived from campaign and member) or points credit are saved in one
transaction. The campaign aggregate is the arbiter: it is loaded fresh in that unit of
work and refuses anyone it rewarded before and anything beyond its budget, and two issuers
that decide at once (two servers, or a server and cron) both write its next version, so
one of them fails on the version and decides again on what the other recorded. Nobody is
rewarded twice, and the budget is never exceeded, whatever runs concurrently.

Candidates come from read models (`segment_members`, and `member_profiles` to skip members
the read model already shows as unreachable); the decision is taken on the aggregates:
each candidate's Member is loaded in the unit of work and must be active, not erased, and
consent to marketing on at least one channel (SMS, e-mail or app push). So a consent
withdrawal recorded before the unit of work reads the member wins even while the read
models are still catching up, and a grant the read model has not seen yet only delays the
reward to a later tick.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, select

from api.commerce import account_for, check_key, request_hash
from api.service import CommandResult, Session, UnitOfWork
from domain.campaigns import MAX_CHUNK, Campaign, CampaignStatus, RewardKind, reward_coupon_id
from domain.clock import Clock
from domain.coupon import Coupon, CouponSource
from domain.errors import (
    DomainError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
)
from domain.loyalty import CreditSource
from domain.loyalty_rules import LoyaltyRules
from domain.member import MARKETING_CHANNELS, ConsentPurpose, Member, MemberStatus
from domain.metadata import Channel, EventMetadata, Role
from domain.segments import Segment, SegmentState, require_admin
from projections.campaign_tables import campaigns
from projections.segment_tables import segment_members, segments
from projections.tables import member_profiles

log = logging.getLogger("patron.campaigns")

CAMPAIGN_NAMESPACE = uuid.UUID("5d2b8f0e-1c47-4e3a-9b6d-7a0c3e9f4b12")
# Members per unit of work: one RewardsIssued event and this many coupons or credits.
CHUNK_SIZE = 100
# Issued within the launch request itself; the scheduler's next tick issues the rest.
IMMEDIATE_ISSUE_LIMIT = 1000
ISSUER = "campaign-issuer"


def reachable(member: Member) -> bool:
    """May this member be sent marketing (a campaign reward) now?"""
    return (
        not member.erased
        and member.status == MemberStatus.ACTIVE.value
        and any(member.consent_granted(ConsentPurpose.MARKETING, channel)
                for channel in MARKETING_CHANNELS)
    )


def reachable_in_read_model(row: Any) -> bool:
    """The read model's view of `reachable`: a cheap first filter, never the decision."""
    if row.status is None:  # no profile row yet: the aggregate decides
        return True
    consents = row.consents or {}
    return (
        not row.erased
        and row.status == MemberStatus.ACTIVE.value
        and any((consents.get(f"{ConsentPurpose.MARKETING.value}:{channel.value}") or {})
                .get("granted") for channel in MARKETING_CHANNELS)
    )


def issuer_meta(cause: EventMetadata | None = None, now: datetime | None = None
                ) -> EventMetadata:
    """The system issuer's metadata; after a launch it names the launch request as cause."""
    if cause is not None:
        return EventMetadata(actor_id=ISSUER, actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
                             correlation_id=cause.correlation_id,
                             causation_id=cause.request_id, request_id=cause.request_id)
    return EventMetadata(actor_id=ISSUER, actor_role=Role.SYSTEM, channel=Channel.SYSTEM,
                         correlation_id=f"campaigns-{now.isoformat() if now else 'issue'}",
                         causation_id=None, request_id=uuid.uuid4().hex)


@dataclass(frozen=True)
class IssueResult:
    """What one issuing pass over a campaign did."""

    campaign_id: UUID
    issued: int
    # Highest event position written, and the campaign's version afterwards.
    position: int | None
    version: int | None


@dataclass(frozen=True)
class _Chunk:
    issued: int
    version: int
    more: bool  # the campaign still issues (running, budget left)


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class CampaignService:
    def __init__(self, uow: UnitOfWork, clock: Clock, rules: LoyaltyRules,
                 engine: Engine) -> None:
        self.uow = uow
        self.clock = clock
        self.rules = rules
        self.engine = engine

    def campaign_id_for(self, admin_id: str, key: str) -> UUID:
        """Derived from the admin and their idempotency key, so a retry finds the campaign
        it launched and two admins' keys never meet."""
        return uuid.uuid5(CAMPAIGN_NAMESPACE, f"{admin_id}:{check_key(key)}")

    def get(self, campaign_id: UUID) -> Campaign:
        return self.uow.get(Campaign, campaign_id)

    # -- launching and stopping -------------------------------------------------------------

    def launch(
        self,
        name: Any,
        segment_id: UUID,
        reward: Any,
        budget: Any,
        starts_at: datetime | None,
        ends_at: Any,
        key: str,
        meta: EventMetadata,
    ) -> CommandResult:
        """Launch a campaign on an active segment, then issue at once if its window is open.

        The admin's idempotency key names the campaign: a retry with the same input returns the
        campaign launched first and records nothing; other input under the key is an
        IDEMPOTENCY_CONFLICT. A start left out means now.
        """
        require_admin(meta, "launch campaigns")
        campaign_id = self.campaign_id_for(meta.actor_id, key)
        now = self.clock.now()
        start = starts_at if starts_at is not None else now
        fingerprint = request_hash("launch campaign", name, str(segment_id), reward, budget,
                                   starts_at, ends_at)

        def decide(session: Session) -> Campaign:
            existing = session.find(Campaign, campaign_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different campaign")
                return existing
            segment = session.find(Segment, segment_id)
            if segment is None:
                raise NotFoundError(f"segment {segment_id} not found", "segment_id")
            if segment.state != SegmentState.ACTIVE.value:
                raise InvalidTransitionError(
                    f"cannot target a segment that is {segment.state}",
                    current_state=segment.state, field="segment_id", attempted="target")
            return session.add(Campaign.launch(
                campaign_id, name, segment_id, reward, budget, start, ends_at, now, meta,
                request_hash=fingerprint))

        launched = self.uow.result_of(self.uow.run(decide))
        if launched.position is None:
            return launched  # a retry: issuing is the scheduler's from here
        try:
            issued = self.issue(campaign_id, issuer_meta(cause=meta),
                                limit=IMMEDIATE_ISSUE_LIMIT)
        except DomainError as error:  # the launch stands; the next tick issues
            log.warning("campaign %s: issuing after launch failed: %s", campaign_id,
                        error.message)
            return launched
        if issued.position is None:
            return launched
        return CommandResult(campaign_id, issued.version or launched.version,
                             max(issued.position, launched.position))

    def stop(self, campaign_id: UUID, meta: EventMetadata) -> CommandResult:
        """Stop issuing for good (or call off a campaign not yet started)."""
        require_admin(meta, "stop campaigns")

        def decide(session: Session) -> Campaign:
            campaign = session.find(Campaign, campaign_id)
            if campaign is None:
                raise NotFoundError(f"campaign {campaign_id} not found", "campaign_id")
            campaign.stop(self.clock.now(), meta)
            return campaign

        return self.uow.result_of(self.uow.run(decide))

    # -- issuing ----------------------------------------------------------------------------

    def due_campaigns(self, now: datetime) -> list[str]:
        """Campaigns that may have rewards to issue now, by the read model (a little behind:
        the aggregate has the last word)."""
        c = campaigns.c
        moment = now.astimezone(UTC)  # SQLite compares times as text, without their offset
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(c.campaign_id).where(
                    (c.status == CampaignStatus.LAUNCHED.value) & (c.starts_at <= moment)
                    & (c.ends_at > moment)
                    & (c.issued < c.budget)
                ).order_by(c.launched_at, c.campaign_id)
            ).scalars())

    def candidates(self, campaign: Campaign) -> list[str]:
        """Current members of the campaign's segment it has not rewarded, earliest joined
        first, minus those the read models already show cannot receive marketing.

        Nobody is a candidate while the segment is archived: its membership is no longer
        kept up to date, so it no longer says who the campaign is for.
        """
        m = segment_members.c
        p = member_profiles.c
        query = (
            select(m.member_id, p.status, p.erased, p.consents)
            .select_from(segment_members.join(segments, segments.c.segment_id == m.segment_id)
                         .outerjoin(member_profiles, p.member_id == m.member_id))
            .where((m.segment_id == campaign.segment_id)
                   & (segments.c.state == SegmentState.ACTIVE.value))
            .order_by(m.joined_at, m.member_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return campaign.unrewarded(row.member_id for row in rows
                                   if reachable_in_read_model(row))

    def issue(self, campaign_id: UUID, meta: EventMetadata,
              limit: int | None = None) -> IssueResult:
        """Reward the campaign's due members now, a chunk per unit of work; returns how many
        this pass rewarded (at most `limit`)."""
        campaign = self.uow.get(Campaign, campaign_id)
        if not campaign.is_issuing(self.clock.now()):
            return IssueResult(campaign_id, 0, None, None)
        issued = 0
        position: int | None = None
        version: int | None = None
        for chunk in _chunks(self.candidates(campaign), CHUNK_SIZE):
            room = None if limit is None else limit - issued
            if room is not None and room <= 0:
                break
            outcome = self.uow.run(
                lambda session, c=chunk, r=room: self._issue_chunk(session, campaign_id, c, r,
                                                                   meta))
            issued += outcome.value.issued
            version = outcome.value.version
            if outcome.position is not None:
                position = outcome.position
            if not outcome.value.more:
                break
        return IssueResult(campaign_id, issued, position, version)

    def _issue_chunk(self, session: Session, campaign_id: UUID, chunk: list[str],
                     room: int | None, meta: EventMetadata) -> _Chunk:
        """Decide on fresh state who of `chunk` is rewarded now, and reward them."""
        now = self.clock.now()
        campaign = session.get(Campaign, campaign_id)
        if not campaign.is_issuing(now):
            return _Chunk(0, campaign.version, False)
        cap = campaign.remaining if room is None else min(room, campaign.remaining)
        chosen: list[str] = []
        for member_id in campaign.unrewarded(chunk):
            if len(chosen) >= min(cap, MAX_CHUNK):
                break
            member = session.find(Member, UUID(member_id))
            if member is not None and reachable(member):
                chosen.append(member_id)
        if not chosen:
            return _Chunk(0, campaign.version, True)
        campaign.issue(chosen, now, meta)
        reward = campaign.reward
        for member_id in chosen:
            if reward.kind is RewardKind.COUPON:
                session.add(Coupon.issue(
                    reward_coupon_id(campaign.id, member_id), member_id, CouponSource.CAMPAIGN,
                    reward.terms, now, reward.coupon_valid_until(now), str(campaign.id), now,
                    meta,
                ))
            else:
                account = account_for(session, member_id, now, meta)
                assert reward.points is not None
                account.credit(CreditSource.CAMPAIGN, str(campaign.id), reward.points,
                               self.rules, now, meta, once_marker=f"campaign:{campaign.id}")
        return _Chunk(len(chosen), campaign.version, campaign.remaining > 0)

    def issue_due(self, now: datetime | None = None,
                  meta: EventMetadata | None = None) -> dict[str, int]:
        """Issue every running campaign's due rewards (the scheduler's step); returns the
        members rewarded per campaign id. One failing campaign does not stop the others."""
        moment = now or self.clock.now()
        meta = meta or issuer_meta(now=moment)
        done: dict[str, int] = {}
        for campaign_id in self.due_campaigns(moment):
            try:
                done[campaign_id] = self.issue(UUID(campaign_id), meta).issued
            except DomainError as error:
                log.info("campaign %s: issuing skipped: %s", campaign_id, error.message)
        return done

