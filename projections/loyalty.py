"""Loyalty read models: accounts, lots, the points ledger, spend and tier history.

The account row mirrors the aggregate: after every event its `available`, `pending` and
`debt` equal `LoyaltyAccount.available`, `.pending` and `.debt`, because each handler does
to the lot rows exactly what the event's `apply` does to the aggregate's lots, and books
every change of a balance as one ledger entry carrying its cause. Each entry changes one
bucket's balance by its signed `points`; the debt bucket's balance is minus the debt, so
for every bucket the sum of its entries is its balance, which the tests check.

Everything comes from the event and the rows earlier events built (never the wall clock),
so a rebuild from position zero reproduces all five tables exactly.

Batched (see projections/batch_work.py): a batch reads its accounts, the lots of the
members whose lots it touches, and the highest ledger / spend / tier-history entry per
member with one SELECT per table, applies every event in memory, and writes accounts and
lots back with one bulk upsert each and the new entries with one executemany INSERT each.

The tier lives in `loyalty_accounts.tier`; `member_profiles.tier` is not written here (a
rebuild of member_profiles would reset it), see MemberProfilesProjection for that column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.loyalty import CreditSource, LotStatus, LoyaltyAccount
from domain.loyalty_rules import Tier
from projections.batch_work import BatchWork
from projections.commerce_tables import (
    loyalty_accounts,
    loyalty_ledger,
    loyalty_lots,
    loyalty_spend,
    tier_history,
    utc,
)
from projections.engine import Handler, ReadModel

AVAILABLE = "available"
PENDING = "pending"
DEBT = "debt"

EXPIRY = "expiry"
REVERSAL = "reversal"


def bucket_of(status: str) -> str | None:
    """The balance a lot's remaining points count towards (None: no balance at all)."""
    if status == LotStatus.AVAILABLE.value:
        return AVAILABLE
    if status == LotStatus.PENDING.value:
        return PENDING
    return None


class _Books:
    """One account's balances while one event is applied: every movement becomes an entry.

    Entries are numbered per member from the ledger's highest entry, so numbering depends
    only on the events before this one, as a rebuild requires.
    """

    def __init__(self, work: BatchWork, event: Any, account: dict[str, Any]) -> None:
        self.work = work
        self.event = event
        self.account = account
        self.member_id: str = account["member_id"]
        self.available: int = account["available"]
        self.pending: int = account["pending"]
        self.debt: int = account["debt"]

    def move(
        self,
        kind: str,
        bucket: str | None,
        points: int,
        cause: str,
        ref: str | None,
        lot_id: str | None,
    ) -> None:
        """Book `points` (signed) to `bucket`; a zero or bucketless change moves nothing."""
        if points == 0 or bucket is None:
            return
        if bucket == AVAILABLE:
            self.available += points
        elif bucket == PENDING:
            self.pending += points
        else:
            self.debt -= points
        self.work.append(loyalty_ledger, {
            "member_id": self.member_id,
            "entry": self.work.next_number(loyalty_ledger, "entry", "member_id", self.member_id),
            "at": utc(self.event.timestamp),
            "kind": kind,
            "points": points,
            "bucket": bucket,
            "cause": cause,
            "ref": ref,
            "lot_id": lot_id,
            "available_after": self.available,
            "pending_after": self.pending,
            "debt_after": self.debt,
            "actor_id": self.event.meta.get("actor_id"),
            "reason": self.event.meta.get("reason"),
        })

    def settle_debt(self, bucket: str, points: int, cause: str, ref: str, lot_id: str) -> None:
        """Points of a new credit pay off debt: out of the credit's bucket, into debt's.

        Two entries, so that each changes one balance and the pair nets to zero; the cause
        is the credit that paid (the debt itself was booked with cause `reversal`).
        """
        self.move("debt_settled", bucket, -points, cause, ref, lot_id)
        self.move("debt_settled", DEBT, points, cause, ref, lot_id)

    def balances(self) -> dict[str, int]:
        return {"available": self.available, "pending": self.pending, "debt": self.debt}


class LoyaltyProjection(ReadModel):
    name = "loyalty"
    tables = (loyalty_accounts, loyalty_lots, loyalty_ledger, loyalty_spend, tier_history)
    batched = True

    def handlers(self) -> dict[type, Handler]:
        return {
            LoyaltyAccount.Opened: self.on_opened,
            LoyaltyAccount.SpendRecorded: self.on_spend_recorded,
            LoyaltyAccount.PointsEarned: self.on_points_earned,
            LoyaltyAccount.ReleaseScheduled: self.on_release_scheduled,
            LoyaltyAccount.PointsReleased: self.on_points_released,
            LoyaltyAccount.PointsDebited: self.on_points_debited,
            LoyaltyAccount.PointsExpired: self.on_points_expired,
            LoyaltyAccount.PointsClawedBack: self.on_points_clawed_back,
            LoyaltyAccount.TierChanged: self.on_tier_changed,
            LoyaltyAccount.TierMaintained: self.on_tier_maintained,
        }

    # -- the batch --------------------------------------------------------------------------

    def prepare(self, work: BatchWork, events: Sequence[tuple[Any, int]]) -> None:
        opened = [event.member_id for event, _ in events
                  if isinstance(event, LoyaltyAccount.Opened)]
        work.prefetch(loyalty_accounts, opened)
        work.prefetch_where(
            loyalty_accounts, "account_id", {str(event.originator_id) for event, _ in events}
        )
        member_of = {
            row["account_id"]: row["member_id"]
            for account_id in {str(event.originator_id) for event, _ in events}
            for row in work.find(loyalty_accounts, "account_id", account_id)
        }
        member_of.update({
            str(event.originator_id): event.member_id for event, _ in events
            if isinstance(event, LoyaltyAccount.Opened)
        })
        needs: dict[Any, set[str]] = {}
        for event, _ in events:
            member_id = member_of.get(str(event.originator_id))
            if member_id is None:
                continue  # the handler reports the missing account
            for table in _TABLES_READ.get(type(event), ()):
                needs.setdefault(table, set()).add(member_id)
        for table, members in needs.items():
            if table is loyalty_lots:
                work.prefetch_where(loyalty_lots, "member_id", members)
            else:
                work.prefetch_max(table, "entry", "member_id", members)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _account(work: BatchWork, event: Any) -> dict[str, Any]:
        found = work.find(loyalty_accounts, "account_id", str(event.originator_id))
        if len(found) != 1:
            raise LookupError(f"loyalty account {event.originator_id} is not projected")
        return found[0]

    @staticmethod
    def _save_account(
        work: BatchWork, event: Any, position: int, account: dict[str, Any], **values: Any
    ) -> None:
        work.upsert(loyalty_accounts, {
            **account,
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
            **values,
        })

    def _save_books(
        self, books: _Books, position: int, **values: Any
    ) -> None:
        self._save_account(
            books.work, books.event, position, books.account, **books.balances(), **values
        )

    @staticmethod
    def _lot(work: BatchWork, member_id: str, lot_id: str) -> dict[str, Any] | None:
        return work.get(loyalty_lots, (member_id, lot_id))

    def _require_lot(self, work: BatchWork, member_id: str, lot_id: str) -> dict[str, Any]:
        lot = self._lot(work, member_id, lot_id)
        if lot is None:
            raise LookupError(f"loyalty lot {lot_id!r} of member {member_id} is not projected")
        return lot

    @staticmethod
    def _update_lot(work: BatchWork, member_id: str, lot_id: str, **values: Any) -> None:
        work.update(loyalty_lots, (member_id, lot_id), **values)

    @staticmethod
    def _next_entry(work: BatchWork, table: Any, member_id: str) -> int:
        return work.next_number(table, "entry", "member_id", member_id)

    # -- handlers ---------------------------------------------------------------------------

    def on_opened(self, work: BatchWork, event: Any, position: int) -> None:
        work.insert(loyalty_accounts, {
            "member_id": event.member_id,
            "account_id": str(event.originator_id),
            "tier": Tier.REGULAR.value,
            "tier_since": None,
            "maintenance_due": None,
            "available": 0,
            "pending": 0,
            "debt": 0,
            "lifetime_earned": 0,
            "lifetime_redeemed": 0,
            "lifetime_expired": 0,
            "updated_at": utc(event.timestamp),
            "version": event.originator_version,
            "position": position,
        })

    def on_spend_recorded(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        member_id = account["member_id"]
        # A refund's spend counts where its order's payment counted (`counted_at`), so the
        # rolling tier window drops both together.
        counted_at = getattr(event, "counted_at", None) or event.timestamp
        work.append(loyalty_spend, {
            "member_id": member_id,
            "entry": self._next_entry(work, loyalty_spend, member_id),
            "at": utc(counted_at),
            "amount": event.amount,
            "ref": event.ref,
        })
        self._save_account(work, event, position, account)

    def on_points_earned(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        books = _Books(work, event, account)
        member_id = books.member_id
        status = (LotStatus.PENDING if event.pending else LotStatus.AVAILABLE).value
        bucket = PENDING if event.pending else AVAILABLE
        # The aggregate numbers lots by how many it holds, and a reused lot id replaces the
        # lot: mirror both, taking the replaced lot's points out of its balance first.
        seq = work.count(loyalty_lots, "member_id", member_id)
        replaced = self._lot(work, member_id, event.lot_id)
        remaining = event.points - event.settled_debt
        if not event.pending and remaining == 0:  # all of it went to the debt
            status = LotStatus.CONSUMED.value
        values = {
            "source": event.source,
            "ref": event.ref,
            "points": event.points,
            "remaining": remaining,
            "clawed_back": 0,
            "status": status,
            "earned_at": utc(event.timestamp),
            "release_at": None,
            "available_at": None if event.pending else utc(event.timestamp),
            "expires_at": utc(event.expires_at),
            "seq": seq,
        }
        if replaced is not None:
            books.move("superseded", bucket_of(replaced["status"]), -replaced["remaining"],
                       replaced["source"], replaced["ref"], event.lot_id)
            self._update_lot(work, member_id, event.lot_id, **values)
        else:
            work.insert(loyalty_lots, {"member_id": member_id, "lot_id": event.lot_id, **values})
        books.move("earned", bucket, event.points, event.source, event.ref, event.lot_id)
        if event.settled_debt:
            books.settle_debt(bucket, event.settled_debt, event.source, event.ref, event.lot_id)
        if event.source == CreditSource.POINTS_RETURNED.value:
            # Points that paid for a cancelled order come back: that undoes a redemption,
            # it earns nothing.
            totals = {"lifetime_redeemed": account["lifetime_redeemed"] - event.points}
        else:
            totals = {"lifetime_earned": account["lifetime_earned"] + event.points}
        self._save_books(books, position, **totals)

    def on_release_scheduled(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        self._update_lot(
            work, account["member_id"], event.lot_id, release_at=utc(event.release_at)
        )
        self._save_account(work, event, position, account)

    def on_points_released(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        books = _Books(work, event, account)
        lot = self._require_lot(work, books.member_id, event.lot_id)
        before = bucket_of(lot["status"])
        if before != AVAILABLE:
            books.move("released", before, -lot["remaining"], lot["source"], lot["ref"],
                       event.lot_id)
            books.move("released", AVAILABLE, lot["remaining"], lot["source"], lot["ref"],
                       event.lot_id)
        if event.settled_debt:
            books.settle_debt(AVAILABLE, event.settled_debt, lot["source"], lot["ref"],
                              event.lot_id)
        remaining = lot["remaining"] - event.settled_debt
        self._update_lot(
            work, books.member_id, event.lot_id,
            status=(LotStatus.AVAILABLE if remaining else LotStatus.CONSUMED).value,
            available_at=utc(event.timestamp),
            expires_at=utc(event.expires_at),
            remaining=remaining,
        )
        self._save_books(books, position)

    def on_points_debited(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        books = _Books(work, event, account)
        for allocation in event.allocations:
            lot = self._require_lot(work, books.member_id, allocation["lot_id"])
            remaining = lot["remaining"] - allocation["points"]
            books.move("debited", bucket_of(lot["status"]), -allocation["points"], event.kind,
                       event.ref, allocation["lot_id"])
            values: dict[str, Any] = {"remaining": remaining}
            if remaining == 0:
                values["status"] = LotStatus.CONSUMED.value
            self._update_lot(work, books.member_id, allocation["lot_id"], **values)
        redeemed = account["lifetime_redeemed"] + (event.points if event.redemption else 0)
        self._save_books(books, position, lifetime_redeemed=redeemed)

    def on_points_expired(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        books = _Books(work, event, account)
        lot = self._require_lot(work, books.member_id, event.lot_id)
        remaining = lot["remaining"] - event.points
        # The lot leaves its balance entirely: what expires is all that was left of it.
        books.move("expired", bucket_of(lot["status"]), -lot["remaining"], EXPIRY, lot["ref"],
                   event.lot_id)
        self._update_lot(
            work, books.member_id, event.lot_id,
            remaining=remaining, status=LotStatus.EXPIRED.value,
        )
        self._save_books(
            books, position, lifetime_expired=account["lifetime_expired"] + event.points
        )

    def on_points_clawed_back(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        books = _Books(work, event, account)
        order_lot = self._require_lot(work, books.member_id, event.order_lot_id)
        self._update_lot(
            work, books.member_id, event.order_lot_id,
            clawed_back=order_lot["clawed_back"] + event.points,
        )
        for allocation in event.allocations:
            lot = self._require_lot(work, books.member_id, allocation["lot_id"])
            remaining = lot["remaining"] - allocation["points"]
            books.move("clawed_back", bucket_of(lot["status"]), -allocation["points"],
                       REVERSAL, event.order_id, allocation["lot_id"])
            values: dict[str, Any] = {"remaining": remaining}
            if remaining == 0:
                values["status"] = (
                    LotStatus.REVERSED if lot["status"] == LotStatus.PENDING.value
                    else LotStatus.CONSUMED
                ).value
            self._update_lot(work, books.member_id, allocation["lot_id"], **values)
        # What could not be taken back from any lot is owed, and later credits settle it.
        books.move("clawed_back", DEBT, -event.debt_added, REVERSAL, event.order_id,
                   event.order_lot_id)
        self._save_books(
            books, position, lifetime_earned=account["lifetime_earned"] - event.points
        )

    def on_tier_changed(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        member_id = account["member_id"]
        work.append(tier_history, {
            "member_id": member_id,
            "entry": self._next_entry(work, tier_history, member_id),
            "at": utc(event.timestamp),
            "from_tier": account["tier"],
            "to_tier": event.tier,
            "reason": event.reason,
        })
        self._save_account(
            work, event, position, account,
            tier=event.tier,
            tier_since=utc(event.timestamp),
            maintenance_due=utc(event.maintenance_due),
        )

    def on_tier_maintained(self, work: BatchWork, event: Any, position: int) -> None:
        account = self._account(work, event)
        self._save_account(
            work, event, position, account, maintenance_due=utc(event.maintenance_due)
        )


# What each event reads besides its account (prefetched per batch for its members).
_TABLES_READ: dict[type, tuple[Any, ...]] = {
    LoyaltyAccount.SpendRecorded: (loyalty_spend,),
    LoyaltyAccount.PointsEarned: (loyalty_lots, loyalty_ledger),
    LoyaltyAccount.ReleaseScheduled: (loyalty_lots,),
    LoyaltyAccount.PointsReleased: (loyalty_lots, loyalty_ledger),
    LoyaltyAccount.PointsDebited: (loyalty_lots, loyalty_ledger),
    LoyaltyAccount.PointsExpired: (loyalty_lots, loyalty_ledger),
    LoyaltyAccount.PointsClawedBack: (loyalty_lots, loyalty_ledger),
    LoyaltyAccount.TierChanged: (tier_history,),
}
