"""Time-driven work: the events that become due as the clock moves.

Pending points whose return window closed become available, lots expire, tiers are
maintained, birthdays are celebrated, delivered orders complete, late parcels are flagged
and after-sales cases past their SLA record the breach, and running campaigns reward
the members of their segments. The scheduler finds
candidates in the read models (cheap, and possibly a little behind) and asks the
aggregates to act; the aggregates decide from their own state, so each due event is
recorded once even when several schedulers (servers, cron's `patron loyalty tick`) run.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, func, select

from api.after_sales import AfterSalesService
from api.campaigns import CampaignService
from api.commerce import LoyaltyService, OrderService
from api.outbound import OutboundDispatcher
from api.recommender import RecommenderService
from api.segments import SegmentService
from api.shipping import STALL_AFTER, ShippingService
from domain.after_sales import OPEN_STATES
from domain.clock import Clock
from domain.errors import DomainError
from domain.loyalty import birthdays_celebrated_on
from domain.loyalty_rules import LoyaltyRules
from domain.metadata import Channel, EventMetadata, Role
from domain.segments import SegmentState
from domain.shipment import FINAL, Direction
from projections.after_sales_tables import case_queue
from projections.commerce_tables import loyalty_accounts, loyalty_lots, orders
from projections.segment_tables import segments
from projections.shipping_tables import shipment_tracking
from projections.tables import member_profiles

log = logging.getLogger("patron.scheduler")


@dataclass
class TickReport:
    at: datetime
    accounts_settled: int = 0
    birthdays: int = 0
    orders_completed: int = 0
    shipments_checked: int = 0
    cases_checked: int = 0
    segment_reviews: int = 0
    campaign_rewards: int = 0
    models_trained: int = 0
    notices_sent: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "accounts_settled": self.accounts_settled,
            "birthdays": self.birthdays,
            "orders_completed": self.orders_completed,
            "shipments_checked": self.shipments_checked,
            "cases_checked": self.cases_checked,
            "segment_reviews": self.segment_reviews,
            "campaign_rewards": self.campaign_rewards,
            "models_trained": self.models_trained,
            "notices_sent": self.notices_sent,
            "errors": self.errors,
        }


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        rules: LoyaltyRules,
        loyalty: LoyaltyService,
        orders: OrderService,
        shipping: ShippingService,
        after_sales: AfterSalesService,
        outbound: OutboundDispatcher,
        segments: SegmentService,
        campaigns: CampaignService | None = None,
        recommender: RecommenderService | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.rules = rules
        self.loyalty = loyalty
        self.orders = orders
        self.shipping = shipping
        self.after_sales = after_sales
        self.outbound = outbound
        self.segments = segments
        self.campaigns = campaigns
        self.recommender = recommender
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _meta(self, now: datetime) -> EventMetadata:
        return EventMetadata(
            actor_id="scheduler",
            actor_role=Role.SYSTEM,
            channel=Channel.SYSTEM,
            correlation_id=f"tick-{now.isoformat()}",
            causation_id=None,
            request_id=uuid.uuid4().hex,
        )

    def due_accounts(self, now: datetime) -> list[str]:
        with self.engine.connect() as conn:
            lots = conn.execute(
                select(loyalty_lots.c.member_id).distinct().where(
                    ((loyalty_lots.c.status == "pending") & (loyalty_lots.c.release_at <= now))
                    | ((loyalty_lots.c.status == "available")
                       & (loyalty_lots.c.expires_at <= now))
                )
            ).scalars().all()
            tiers = conn.execute(
                select(loyalty_accounts.c.member_id).where(
                    loyalty_accounts.c.maintenance_due <= now
                )
            ).scalars().all()
        return sorted(set(lots) | set(tiers))

    def birthdays(self, now: datetime) -> list[str]:
        celebrated = birthdays_celebrated_on(now.date())
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                month_day = func.strftime("%m-%d", member_profiles.c.birthday)
            else:
                month_day = func.to_char(member_profiles.c.birthday, "MM-DD")
            return list(conn.execute(
                select(member_profiles.c.member_id).where(
                    (month_day.in_(celebrated))
                    & (member_profiles.c.erased.is_(False))
                    & (member_profiles.c.status == "active")
                )
            ).scalars())

    def completable_orders(self, now: datetime) -> list[str]:
        closed_before = now - timedelta(days=self.rules.return_window_days)
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(orders.c.order_id).where(
                    (orders.c.state == "delivered") & (orders.c.delivered_at <= closed_before)
                )
            ).scalars())

    def shipments_to_check(self, now: datetime) -> list[str]:
        """Parcels not yet arrived that are past their promise or have not moved lately."""
        quiet_since = now - STALL_AFTER
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(shipment_tracking.c.shipment_id).where(
                    shipment_tracking.c.status.not_in([s.value for s in FINAL])
                    & (shipment_tracking.c.reshipped_as.is_(None))
                    # Return parcels travel at the member's pace; their case has the SLA.
                    & (shipment_tracking.c.direction == Direction.OUTBOUND.value)
                    & ((shipment_tracking.c.promised_by < now)
                       | (shipment_tracking.c.updated_at < quiet_since))
                )
            ).scalars())

    def cases_past_sla(self, now: datetime) -> list[str]:
        """Cases that missed a deadline not yet recorded as breached.

        Open cases past a due time, and cases reviewed or resolved late (the check may not
        have run while they were open).
        """
        q = case_queue.c
        open_states = [s.value for s in OPEN_STATES]
        review_missed = (~q.first_review_breached) & (q.first_review_due < now) & (
            q.first_reviewed_at.is_(None) | (q.first_reviewed_at > q.first_review_due)
        )
        resolution_missed = (~q.resolution_breached) & (q.resolution_due < now) & (
            q.state.in_(open_states) | (q.resolved_at > q.resolution_due)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(q.case_id).where(review_missed | resolution_missed)
            ).scalars())

    def active_segments(self) -> int:
        """Without an active segment there is nothing to review (and no event to record)."""
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(segments).where(
                segments.c.state == SegmentState.ACTIVE.value)) or 0)

    def tick(self) -> TickReport:
        now = self.clock.now()
        report = TickReport(at=now)
        meta = self._meta(now)
        for member_id in self.due_accounts(now):
            self._attempt(report, "settle", member_id,
                          lambda m=member_id: self.loyalty.settle_due(UUID(m), meta))
            report.accounts_settled += 1
        for member_id in self.birthdays(now):
            self._attempt(report, "birthday", member_id,
                          lambda m=member_id: self.loyalty.celebrate_birthday(UUID(m), meta))
            report.birthdays += 1
        for order_id in self.completable_orders(now):
            self._attempt(report, "complete", order_id,
                          lambda o=order_id: self.orders.complete(UUID(o), meta))
            report.orders_completed += 1
        for shipment_id in self.shipments_to_check(now):
            self._attempt(report, "check shipment", shipment_id,
                          lambda s=shipment_id: self.shipping.check_exceptions(UUID(s), meta))
            report.shipments_checked += 1
        for case_id in self.cases_past_sla(now):
            self._attempt(report, "check case SLA", case_id,
                          lambda c=case_id: self.after_sales.check_sla(UUID(c), meta))
            report.cases_checked += 1

        if self.active_segments():

            def review_segments() -> None:
                if self.segments.hold_review(meta):
                    report.segment_reviews += 1

            self._attempt(report, "segment review", "now", review_segments)
        if self.campaigns is not None:
            campaigns = self.campaigns
            for campaign_id in campaigns.due_campaigns(now):

                def issue(c: str = campaign_id) -> None:
                    report.campaign_rewards += campaigns.issue(UUID(c), meta).issued

                self._attempt(report, "issue campaign", campaign_id, issue)
        if self.recommender is not None and self.recommender.retrain_hours > 0:
            recommender = self.recommender

            def train() -> None:
                # Last, as it takes longest; once per interval across all servers.
                if recommender.train_if_due(meta) is not None:
                    report.models_trained += 1

            self._attempt(report, "recommender training", "now", train)
        try:
            for _ in range(50):  # drain a backlog, in bounded rounds
                sent = self.outbound.dispatch_due(limit=100)
                report.notices_sent += sent
                if sent < 100:
                    break
        except Exception as error:
            log.exception("scheduler: outbound dispatch failed")
            report.errors.append(f"outbound: {type(error).__name__}: {error}")
        return report

    @staticmethod
    def _attempt(report: TickReport, what: str, ref: str, action: Any) -> None:
        try:
            action()
        except DomainError as error:
            # Another scheduler got there first, or the read model was behind: not a fault.
            log.info("scheduler: %s %s skipped: %s", what, ref, error.message)
        except Exception as error:  # one bad item must not stop the rest
            log.exception("scheduler: %s %s failed", what, ref)
            report.errors.append(f"{what} {ref}: {type(error).__name__}: {error}")

    def start(self, interval: float) -> None:
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:
                    log.exception("scheduler tick failed")

        self._thread = threading.Thread(target=loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
