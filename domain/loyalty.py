"""The LoyaltyAccount aggregate: a member's points (as lots), debt and tier.

One account per member, so every movement of a member's points is decided against the
latest version of that account: optimistic concurrency then guarantees the balance never
goes negative and no credit is lost, however many requests race.

Every credit is a lot. Order points are *pending* until the order's return window
closes; other credits are available at once. Available lots expire at the end of the
12th month after they became available, and debits consume the soonest-expiring first.
A claw-back that finds the points already spent records the shortfall as debt, which
later credits settle before anything else.
"""

from __future__ import annotations

import calendar
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import (
    IdempotencyConflictError,
    InsufficientPointsError,
    LimitExceededError,
    ValidationError,
)
from domain.loyalty_rules import LoyaltyRules, Tier
from domain.metadata import EventMetadata
from domain.validation import enum_value

ACCOUNT_NAMESPACE = uuid.UUID("3f1f6f5e-7c55-4d0e-9a56-6a4bd0d5a1c1")


def check_points(points: Any, rules: LoyaltyRules) -> None:
    """One credit or debit moves 1 to `max_points_adjustment` points (configured): a typo
    in an adjustment, or a runaway award, cannot mint a fortune or overflow a balance."""
    if not isinstance(points, int) or isinstance(points, bool) or not (
        0 < points <= rules.max_points_adjustment
    ):
        raise ValidationError(f"points must be from 1 to {rules.max_points_adjustment}",
                              "points")


class LotStatus(StrEnum):
    PENDING = "pending"
    AVAILABLE = "available"
    EXPIRED = "expired"
    CONSUMED = "consumed"
    REVERSED = "reversed"


class CreditSource(StrEnum):
    ORDER = "order"
    REVIEW = "review"
    PROFILE_COMPLETION = "profile_completion"
    BIRTHDAY = "birthday"
    CAMPAIGN = "campaign"
    ADJUSTMENT = "adjustment"
    # Points that paid for an order, given back when it is cancelled.
    POINTS_RETURNED = "points_returned"


class DebitKind(StrEnum):
    REWARD = "reward"
    ORDER_PAYMENT = "order_payment"
    ADJUSTMENT = "adjustment"



def account_id_for(member_id: str) -> uuid.UUID:
    return uuid.uuid5(ACCOUNT_NAMESPACE, f"loyalty:{member_id}")


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, _days_in_month(year, month))
    return moment.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    following = date(year + (month == 12), month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def birthdays_celebrated_on(day: date) -> tuple[str, ...]:
    """The birthdays ("MM-DD") celebrated on a day.

    Members born on 29 February celebrate on 28 February in years without one, so that
    they get their birthday bonus every year, not one year in four.
    """
    celebrated = [day.strftime("%m-%d")]
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        celebrated.append("02-29")
    return tuple(celebrated)


def expiry_for(available_at: datetime, months: int) -> datetime:
    """End of the `months`-th month after `available_at` (the first instant after it)."""
    start_of_month = available_at.astimezone(UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return add_months(start_of_month, months + 1)


class LoyaltyAccount(RecordedAggregate):
    """Points, debt and tier of one member."""

    @classmethod
    def open(cls, member_id: str, now: datetime, meta: EventMetadata) -> LoyaltyAccount:
        return cls._create(
            cls.Opened,
            id=account_id_for(member_id),
            timestamp=now,
            member_id=member_id,
            meta=meta.as_dict(),
        )

    class Opened(Aggregate.Created):
        member_id: str

    def __init__(self, member_id: str, meta: dict[str, Any]) -> None:
        self.member_id = member_id
        self.tier: str = Tier.REGULAR.value
        self.tier_since: str = ""
        self.maintenance_due: str | None = None
        self.tier_history: list[dict[str, Any]] = []
        self.spend: list[dict[str, Any]] = []
        self.lots: dict[str, dict[str, Any]] = {}
        self.debt = 0
        self.redemptions: list[dict[str, Any]] = []
        # Once-only awards and idempotency keys: marker -> request hash (or reference).
        self.markers: dict[str, str] = {}

    # -- derived ----------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return sum(
            lot["remaining"] for lot in self.lots.values() if lot["status"] == LotStatus.AVAILABLE
        )

    @property
    def pending(self) -> int:
        return sum(
            lot["remaining"] for lot in self.lots.values() if lot["status"] == LotStatus.PENDING
        )

    def qualifying_spend(self, now: datetime, rules: LoyaltyRules) -> int:
        since = add_months(now, -rules.qualifying_months)
        return sum(
            entry["amount"]
            for entry in self.spend
            if since < datetime.fromisoformat(entry["at"]) <= now
        )

    def redeemed_in_period(self, now: datetime, rules: LoyaltyRules) -> int:
        since = now - timedelta(days=rules.redemption_period_days)
        return sum(
            r["points"] for r in self.redemptions if since < datetime.fromisoformat(r["at"]) <= now
        )

    def average_paid_order(self) -> int | None:
        payments = [e["amount"] for e in self.spend if e["amount"] > 0]
        return sum(payments) // len(payments) if payments else None

    def has_marker(self, marker: str) -> bool:
        return marker in self.markers

    def already_processed(self, key: str | None, request_hash: str) -> bool:
        """True if this idempotency key was processed with the same request; a different
        request under the same key is a conflict."""
        if key is None:
            return False
        seen = self.markers.get(f"key:{key}")
        if seen is None:
            return False
        if seen != request_hash:
            raise IdempotencyConflictError(
                "this idempotency key was already used for a different request"
            )
        return True

    def _spendable_lots(self, now: datetime) -> list[dict[str, Any]]:
        """Available lots not yet past their expiry, even if the expiry is not recorded yet."""
        return [
            lot for lot in self.lots.values()
            if lot["status"] == LotStatus.AVAILABLE and lot["remaining"] > 0
            and (lot["expires_at"] is None or datetime.fromisoformat(lot["expires_at"]) > now)
        ]

    def spendable(self, now: datetime) -> int:
        return sum(lot["remaining"] for lot in self._spendable_lots(now))

    def _consumption_plan(self, points: int, now: datetime) -> list[dict[str, Any]]:
        """Soonest-expiring available lots first (ties: oldest lot first)."""
        lots = sorted(
            self._spendable_lots(now),
            key=lambda lot: (lot["expires_at"] or "9999", lot["seq"]),
        )
        plan, left = [], points
        for lot in lots:
            if left == 0:
                break
            take = min(lot["remaining"], left)
            plan.append({"lot_id": lot["lot_id"], "points": take})
            left -= take
        return plan

    # -- commands ---------------------------------------------------------------------------

    def earn_for_payment(
        self, order_id: str, paid: int, rules: LoyaltyRules, now: datetime, meta: EventMetadata
    ) -> None:
        """Pending points for a paid order, and the spend that may promote the member."""
        if f"order:{order_id}" in self.lots or any(
            e["ref"] == f"order:{order_id}" for e in self.spend
        ):
            return
        self._trigger(self.SpendRecorded, now, ref=f"order:{order_id}", amount=paid, meta=meta)
        points = rules.points_for_payment(paid, self.tier)
        if points > 0:
            self._trigger(
                self.PointsEarned, now, lot_id=f"order:{order_id}", source=CreditSource.ORDER.value,
                ref=order_id, points=points, pending=True, expires_at=None, settled_debt=0,
                meta=meta,
            )
        qualified = rules.tier_for_spend(self.qualifying_spend(now, rules))
        if list(Tier).index(Tier(qualified)) > list(Tier).index(Tier(self.tier)):
            self._trigger(
                self.TierChanged, now, member_id=self.member_id, tier=qualified.value,
                reason="promotion",
                maintenance_due=add_months(now, rules.maintenance_months).isoformat(), meta=meta,
            )

    def schedule_release(
        self, order_id: str, release_at: datetime, now: datetime, meta: EventMetadata
    ) -> bool:
        lot = self.lots.get(f"order:{order_id}")
        if lot is None or lot["status"] != LotStatus.PENDING or lot["release_at"] is not None:
            return False
        self._trigger(self.ReleaseScheduled, now, lot_id=lot["lot_id"],
                      release_at=release_at.isoformat(), meta=meta)
        return True

    def release_due(self, now: datetime, rules: LoyaltyRules, meta: EventMetadata) -> int:
        """Pending lots whose return window has closed become available; returns how many."""
        due = [
            lot for lot in self.lots.values()
            if lot["status"] == LotStatus.PENDING and lot["release_at"] is not None
            and datetime.fromisoformat(lot["release_at"]) <= now
        ]
        for lot in sorted(due, key=lambda lot: lot["seq"]):
            settle = min(self.debt, lot["remaining"])
            self._trigger(
                self.PointsReleased, now, lot_id=lot["lot_id"],
                expires_at=expiry_for(now, rules.points_expiry_months).isoformat(),
                settled_debt=settle, meta=meta,
            )
        return len(due)

    def credit(
        self,
        source: CreditSource | str,
        ref: str,
        points: int,
        rules: LoyaltyRules,
        now: datetime,
        meta: EventMetadata,
        *,
        once_marker: str | None = None,
        key: str | None = None,
        request_hash: str = "",
    ) -> bool:
        """Credit available points now; False if this award or key was already applied."""
        source_value = enum_value(CreditSource, source, "source")
        if source_value == CreditSource.ADJUSTMENT.value:
            meta.require_reason()
        if self.already_processed(key, request_hash):
            return False
        if once_marker is not None and once_marker in self.markers:
            return False
        check_points(points, rules)
        settle = min(self.debt, points)
        self._trigger(
            self.PointsEarned, now, lot_id=f"{source_value}:{self.version + 1}",
            source=source_value, ref=ref, points=points, pending=False,
            expires_at=expiry_for(now, rules.points_expiry_months).isoformat(),
            settled_debt=settle, meta=meta,
            marker=once_marker, key=f"key:{key}" if key else None, request_hash=request_hash,
        )
        return True

    def debit(
        self,
        points: int,
        kind: DebitKind | str,
        ref: str,
        rules: LoyaltyRules,
        now: datetime,
        meta: EventMetadata,
        *,
        key: str | None = None,
        request_hash: str = "",
    ) -> bool:
        """Spend available points, soonest-expiring lots first; False for a repeated key."""
        kind_value = enum_value(DebitKind, kind, "kind")
        if kind_value == DebitKind.ADJUSTMENT.value:
            meta.require_reason()
        if self.already_processed(key, request_hash):
            return False
        check_points(points, rules)
        redemption = kind_value != DebitKind.ADJUSTMENT.value
        if redemption:
            if points < rules.min_redemption_points:
                raise ValidationError(
                    f"at least {rules.min_redemption_points} points must be redeemed at once",
                    "points",
                )
            used = self.redeemed_in_period(now, rules)
            if used + points > rules.redemption_limit_per_period:
                raise LimitExceededError(
                    f"redeeming {points} points would exceed the limit of "
                    f"{rules.redemption_limit_per_period} per {rules.redemption_period_days} days "
                    f"({used} already redeemed)",
                    "points",
                )
        spendable = self.spendable(now)
        if points > spendable:
            raise InsufficientPointsError(
                f"{points} points needed but only {spendable} are available", "points"
            )
        self._trigger(
            self.PointsDebited, now, kind=kind_value, ref=ref, points=points,
            allocations=self._consumption_plan(points, now), redemption=redemption,
            key=f"key:{key}" if key else None, request_hash=request_hash, meta=meta,
        )
        return True

    def expire_due(self, now: datetime, meta: EventMetadata) -> int:
        due = [
            lot for lot in self.lots.values()
            if lot["status"] == LotStatus.AVAILABLE and lot["expires_at"] and lot["remaining"] > 0
            and datetime.fromisoformat(lot["expires_at"]) <= now
        ]
        for lot in sorted(due, key=lambda lot: lot["seq"]):
            self._trigger(self.PointsExpired, now, lot_id=lot["lot_id"],
                          points=lot["remaining"], meta=meta)
        return len(due)

    def return_points(
        self, order_id: str, target: int, rules: LoyaltyRules, now: datetime,
        meta: EventMetadata,
    ) -> int:
        """Give back points that paid for an order, up to `target` in all (see
        `Order.points_to_return`); returns how many this call gave back.

        Returned points are no longer counted as redeemed, so they do not use up the
        member's redemption limit.
        """
        returned = sum(
            lot["points"] for lot in self.lots.values()
            if lot["source"] == CreditSource.POINTS_RETURNED and lot["ref"] == order_id
        )
        owed = target - returned
        if owed <= 0:
            return 0
        self.credit(CreditSource.POINTS_RETURNED, order_id, owed, rules, now, meta)
        return owed

    def claw_back(
        self, order_id: str, refunded_total: int, paid: int, now: datetime, meta: EventMetadata,
        refund_amount: int,
    ) -> None:
        """Reverse the points earned on the refunded part of an order.

        `refunded_total` is everything refunded on the order so far; the target claw-back
        is computed from it, so rounding never drifts across partial refunds.
        """
        paid_at = next(
            (e["at"] for e in self.spend if e["ref"] == f"order:{order_id}"), None
        )
        # A refund takes back the spend of its own order, in that order's place in the window.
        self._trigger(self.SpendRecorded, now, ref=f"refund:{order_id}", amount=-refund_amount,
                      counted_at=paid_at, meta=meta)
        lot = self.lots.get(f"order:{order_id}")
        if lot is None or paid <= 0:
            return
        target = lot["points"] * min(refunded_total, paid) // paid
        owed = target - lot["clawed_back"]
        if owed <= 0:
            return
        allocations: list[dict[str, Any]] = []
        left = owed
        if lot["status"] == LotStatus.PENDING and lot["remaining"] > 0:
            take = min(lot["remaining"], left)
            allocations.append({"lot_id": lot["lot_id"], "points": take})
            left -= take
        if left:
            for allocation in self._consumption_plan(left, now):
                allocations.append(allocation)
                left -= allocation["points"]
        self._trigger(
            self.PointsClawedBack, now, order_lot_id=lot["lot_id"], order_id=order_id,
            points=owed, allocations=allocations, debt_added=left, meta=meta,
        )

    def evaluate_tier(self, now: datetime, rules: LoyaltyRules, meta: EventMetadata) -> bool:
        """Yearly maintenance: below the tier's threshold drops one tier, never more."""
        if self.maintenance_due is None or datetime.fromisoformat(self.maintenance_due) > now:
            return False
        spend = self.qualifying_spend(now, rules)
        threshold = rules.tier_rule(self.tier).threshold
        next_due = add_months(now, rules.maintenance_months).isoformat()
        if spend >= threshold:
            self._trigger(self.TierMaintained, now, spend=spend, maintenance_due=next_due,
                          meta=meta)
        else:
            lower = rules.tier_below(self.tier)
            self._trigger(
                self.TierChanged, now, member_id=self.member_id, tier=lower.value,
                reason="maintenance",
                maintenance_due=None if lower == Tier.REGULAR else next_due, meta=meta,
            )
        return True

    # -- events -----------------------------------------------------------------------------


    class SpendRecorded(RecordedAggregate.Event):
        ref: str
        amount: int
        counted_at: str | None = None

        def apply(self, account: Any) -> None:
            at = self.counted_at or self.timestamp.isoformat()
            account.spend.append({"ref": self.ref, "amount": self.amount, "at": at})

    class PointsEarned(RecordedAggregate.Event):
        lot_id: str
        source: str
        ref: str
        points: int
        pending: bool
        expires_at: str | None
        settled_debt: int
        marker: str | None = None
        key: str | None = None
        request_hash: str = ""

        def apply(self, account: Any) -> None:
            at = self.timestamp.isoformat()
            account.lots[self.lot_id] = {
                "lot_id": self.lot_id,
                "seq": len(account.lots),
                "source": self.source,
                "ref": self.ref,
                "points": self.points,
                "remaining": self.points - self.settled_debt,
                "clawed_back": 0,
                "status": (LotStatus.PENDING if self.pending else LotStatus.AVAILABLE).value,
                "earned_at": at,
                "release_at": None,
                "available_at": None if self.pending else at,
                "expires_at": self.expires_at,
            }
            account.debt -= self.settled_debt
            lot = account.lots[self.lot_id]
            if not self.pending and lot["remaining"] == 0:
                lot["status"] = LotStatus.CONSUMED.value
            if self.source == CreditSource.POINTS_RETURNED:
                # Points given back for a cancelled or refunded order were never really
                # redeemed: they come off that order's redemption.
                give_back = self.points
                for redemption in account.redemptions:
                    if redemption["ref"] == self.ref and give_back:
                        taken = min(redemption["points"], give_back)
                        redemption["points"] -= taken
                        give_back -= taken
                account.redemptions = [r for r in account.redemptions if r["points"] > 0]
            if self.marker:
                account.markers[self.marker] = self.ref
            if self.key:
                account.markers[self.key] = self.request_hash

    class ReleaseScheduled(RecordedAggregate.Event):
        lot_id: str
        release_at: str

        def apply(self, account: Any) -> None:
            account.lots[self.lot_id]["release_at"] = self.release_at

    class PointsReleased(RecordedAggregate.Event):
        lot_id: str
        expires_at: str
        settled_debt: int

        def apply(self, account: Any) -> None:
            lot = account.lots[self.lot_id]
            lot["status"] = LotStatus.AVAILABLE.value
            lot["available_at"] = self.timestamp.isoformat()
            lot["expires_at"] = self.expires_at
            lot["remaining"] -= self.settled_debt
            account.debt -= self.settled_debt
            if lot["remaining"] == 0:
                lot["status"] = LotStatus.CONSUMED.value

    class PointsDebited(RecordedAggregate.Event):
        kind: str
        ref: str
        points: int
        allocations: list[dict[str, Any]]
        redemption: bool
        key: str | None
        request_hash: str

        def apply(self, account: Any) -> None:
            for allocation in self.allocations:
                lot = account.lots[allocation["lot_id"]]
                lot["remaining"] -= allocation["points"]
                if lot["remaining"] == 0:
                    lot["status"] = LotStatus.CONSUMED.value
            if self.redemption:
                account.redemptions.append(
                    {"ref": self.ref, "points": self.points, "at": self.timestamp.isoformat()}
                )
            if self.key:
                account.markers[self.key] = self.request_hash

    class PointsExpired(RecordedAggregate.Event):
        lot_id: str
        points: int

        def apply(self, account: Any) -> None:
            lot = account.lots[self.lot_id]
            lot["remaining"] -= self.points
            lot["status"] = LotStatus.EXPIRED.value

    class PointsClawedBack(RecordedAggregate.Event):
        order_lot_id: str
        order_id: str
        points: int
        allocations: list[dict[str, Any]]
        debt_added: int

        def apply(self, account: Any) -> None:
            account.lots[self.order_lot_id]["clawed_back"] += self.points
            for allocation in self.allocations:
                lot = account.lots[allocation["lot_id"]]
                lot["remaining"] -= allocation["points"]
                if lot["remaining"] == 0:
                    lot["status"] = (
                        LotStatus.REVERSED if lot["status"] == LotStatus.PENDING
                        else LotStatus.CONSUMED
                    ).value
            account.debt += self.debt_added

    class TierChanged(RecordedAggregate.Event):
        member_id: str
        tier: str
        reason: str
        maintenance_due: str | None

        def apply(self, account: Any) -> None:
            account.tier_history.append({
                "from": account.tier, "to": self.tier, "reason": self.reason,
                "at": self.timestamp.isoformat(),
            })
            account.tier = self.tier
            account.tier_since = self.timestamp.isoformat()
            account.maintenance_due = self.maintenance_due

    class TierMaintained(RecordedAggregate.Event):
        spend: int
        maintenance_due: str

        def apply(self, account: Any) -> None:
            account.maintenance_due = self.maintenance_due
