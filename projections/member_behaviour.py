"""`member_behaviour`: the facts member profiles are computed from (see behaviour_tables).

Attribution follows consent to personalisation, as the projection saw it at each event
(its own `behaviour_consents`, so it never depends on another projection's progress):

- A batch that names a member belongs to them, if they consent at that position (the
  service only names consenting members; checking again closes the race with a withdrawal
  recorded just before the batch).
- A batch without a member belongs to its anonymous session. When the session is linked
  to a member who consents at that moment, its behaviour so far moves to the member, and
  what the session sends later goes to them too (while they consent). Linked to a member
  who does not consent, it stays anonymous for good.
- Purchases and reviews always count as purchases and reviews (they are the shop's own
  records); they feed the member's *interests* only while the member consents.
- Withdrawing consent forgets the behaviour attributed so far: the member's interests and
  behaviour counts are deleted, their orders, purchases and reviews stay.
- Every batch counts in `behaviour_daily`, attributed or not, and so does every payment.
- Erasure deletes everything about the member here except the daily counts, and from then
  on nothing more is recorded about them.

Rebuilds are exact: every value comes from the events (their times, never the wall
clock), each handler reads the rows earlier events built and folds one event in, and the
floating-point interest arithmetic runs in the same order on every replay.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update

from domain.behaviour import BehaviourBatch, BehaviourKind, ProductReview, SessionLink
from domain.loyalty import LoyaltyAccount
from domain.loyalty_rules import LoyaltyRules
from domain.member import ConsentPurpose, Member
from domain.order import Order
from domain.profile import INTEREST_PARTS, aware, decay
from domain.segments import Segment, SegmentReview
from projections.behaviour_tables import (
    BEHAVIOUR_COUNTS,
    BEHAVIOUR_SUMS,
    BEHAVIOUR_TABLES,
    BEHAVIOUR_TIMES,
    behaviour_consents,
    behaviour_daily,
    behaviour_orders,
    behaviour_reviews,
    behaviour_sessions,
    member_activity,
    member_interests,
    member_product_purchases,
    session_interests,
)
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel
from projections.segment_membership import SegmentMembership
from projections.segment_tables import SEGMENT_TABLES

# A view's dwell counts up to two minutes: beyond that the tab was most likely left open.
DWELL_CAP_SECONDS = 120
DIMENSIONS = ("category", "brand")
PURCHASE = "purchase"

# The count column each behaviour kind adds to.
KIND_COLUMNS = {
    BehaviourKind.PRODUCT_VIEWED.value: "views",
    BehaviourKind.SEARCHED.value: "searches",
    BehaviourKind.ADDED_TO_CART.value: "cart_adds",
    BehaviourKind.REMOVED_FROM_CART.value: "cart_removes",
    BehaviourKind.WISH_LISTED.value: "wish_lists",
    BehaviourKind.SHARED.value: "shares",
}

Row = dict[str, Any]


def _earliest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


@dataclass
class Interest:
    """Decayed sums per kind of event for one category or brand, as of `as_of`."""

    parts: dict[str, float]
    as_of: datetime
    events: int
    last_event_at: datetime

    @classmethod
    def of(cls, at: datetime, amounts: Mapping[str, float]) -> Interest:
        parts = {name: float(amounts.get(name, 0.0)) for name in INTEREST_PARTS}
        return cls(parts, at, 1, at)

    @classmethod
    def from_row(cls, row: Row) -> Interest:
        return cls({name: float(row[name]) for name in INTEREST_PARTS},
                   aware(row["as_of"]), int(row["events"]),  # type: ignore[arg-type]
                   aware(row["last_event_at"]))  # type: ignore[arg-type]

    def merged(self, other: Interest, half_life_days: int) -> Interest:
        """Both decayed to the later `as_of` and added: exact, as decay is linear."""
        as_of = max(self.as_of, other.as_of)
        mine = decay((as_of - self.as_of).total_seconds(), half_life_days)
        theirs = decay((as_of - other.as_of).total_seconds(), half_life_days)
        parts = {name: self.parts[name] * mine + other.parts[name] * theirs
                 for name in INTEREST_PARTS}
        return Interest(parts, as_of, self.events + other.events,
                        max(self.last_event_at, other.last_event_at))

    def values(self) -> Row:
        return {**self.parts, "as_of": utc(self.as_of), "events": self.events,
                "last_event_at": utc(self.last_event_at)}


Interests = dict[tuple[str, str], Interest]


def _add_interest(interests: Interests, item: Mapping[str, Any], at: datetime,
                  amounts: Mapping[str, float], half_life_days: int) -> None:
    """Fold one event into the interests of its category and brand (those it names)."""
    for dimension in DIMENSIONS:
        key = item.get(dimension)
        if not key:
            continue
        entry = Interest.of(at, amounts)
        known = interests.get((dimension, key))
        interests[(dimension, key)] = (entry if known is None
                                       else known.merged(entry, half_life_days))


@dataclass
class Tally:
    """A batch's behaviour counts, ready to add to a member's or a session's row."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    channels: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first: datetime | None = None
    last: datetime | None = None
    last_cart_add: datetime | None = None

    def add_to(self, row: Row) -> None:
        for name in (*BEHAVIOUR_COUNTS, *BEHAVIOUR_SUMS):
            row[name] = int(row[name]) + self.counts.get(name, 0)
        channels = dict(row["behaviour_channels"])
        for channel, count in sorted(self.channels.items()):
            channels[channel] = channels.get(channel, 0) + count
        row["behaviour_channels"] = channels
        row["first_behaviour_at"] = _earliest(row["first_behaviour_at"], self.first)
        row["last_behaviour_at"] = _latest(row["last_behaviour_at"], self.last)
        row["last_cart_add_at"] = _latest(row["last_cart_add_at"], self.last_cart_add)

    @classmethod
    def of_row(cls, row: Row) -> Tally:
        tally = cls()
        for name in (*BEHAVIOUR_COUNTS, *BEHAVIOUR_SUMS):
            tally.counts[name] = int(row[name])
        tally.channels.update(row["behaviour_channels"])
        tally.first = row["first_behaviour_at"]
        tally.last = row["last_behaviour_at"]
        tally.last_cart_add = row["last_cart_add_at"]
        return tally


def empty_behaviour() -> Row:
    return {**{name: 0 for name in (*BEHAVIOUR_COUNTS, *BEHAVIOUR_SUMS)},
            "behaviour_channels": {}, **{name: None for name in BEHAVIOUR_TIMES}}


def _aware_row(row: Any) -> Row:
    return {key: aware(value) if isinstance(value, datetime) else value
            for key, value in row._mapping.items()}


class MemberBehaviourProjection(ReadModel):
    name = "member_behaviour"
    # Each batch of behaviour holds up to 500 events: keep transactions short.
    batch_limit = 20
    tables = (*BEHAVIOUR_TABLES, *SEGMENT_TABLES)

    def __init__(self, rules: LoyaltyRules | None = None) -> None:
        profile_rules = (rules or LoyaltyRules()).profile
        # The half-life shapes what is stored; weights and thresholds apply on reading,
        # and to segment membership as events are processed.
        self.half_life_days = profile_rules.interest_half_life_days
        self.membership = SegmentMembership(profile_rules)
        # Members whose facts the event being applied changed.
        self._touched: set[str] = set()
        super().__init__()

    def apply(self, conn: Connection, event: Any, position: int, topic: str) -> None:
        """Fold the event in, then decide the segments of every member it changed."""
        self._touched = set()
        super().apply(conn, event, position, topic)
        for member_id in sorted(self._touched):
            self.membership.member_changed(conn, member_id, event.timestamp, position)

    def handlers(self) -> dict[type, Handler]:
        return {
            Member.Registered: self.on_registered,
            Member.ConsentChanged: self.on_consent_changed,
            Member.Erased: self.on_erased,
            BehaviourBatch.Recorded: self.on_batch,
            SessionLink.Linked: self.on_linked,
            Order.Placed: self.on_order_placed,
            Order.Paid: self.on_order_paid,
            Order.Refunded: self.on_order_refunded,
            Order.Cancelled: self.on_order_cancelled,
            ProductReview.Written: self.on_review_written,
            ProductReview.Revised: self.on_review_revised,
            LoyaltyAccount.TierChanged: self.on_tier_changed,
            Segment.Defined: self.membership.on_defined,
            Segment.Updated: self.membership.on_updated,
            Segment.Archived: self.membership.on_archived,
            SegmentReview.Held: self.membership.on_review,
        }

    # -- consent and erasure ----------------------------------------------------------------

    @staticmethod
    def _consent(conn: Connection, member_id: str) -> Row | None:
        row = conn.execute(select(behaviour_consents).where(
            behaviour_consents.c.member_id == member_id)).one_or_none()
        return dict(row._mapping) if row is not None else None

    def _personalised(self, conn: Connection, member_id: str) -> bool:
        row = self._consent(conn, member_id)
        return bool(row and row["personalisation"] and not row["erased"])

    def _erased(self, conn: Connection, member_id: str) -> bool:
        row = self._consent(conn, member_id)
        return bool(row and row["erased"])

    def _set_consent(self, conn: Connection, member_id: str, **values: Any) -> None:
        key = behaviour_consents.c.member_id == member_id
        if values and conn.execute(
                update(behaviour_consents).where(key).values(**values)).rowcount:
            return
        if not values and self._consent(conn, member_id) is not None:
            return
        conn.execute(insert(behaviour_consents).values(
            member_id=member_id, **{"personalisation": False, "changed_at": None,
                                    "erased": False, **values}))

    def on_registered(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.originator_id)
        self._set_consent(conn, member_id)
        row = self._member(conn, member_id)
        row["joined_at"] = utc(event.timestamp)
        self._save_member(conn, row, position)

    def on_consent_changed(self, conn: Connection, event: Any, position: int) -> None:
        if event.purpose != ConsentPurpose.PERSONALISATION.value:
            return
        member_id = str(event.originator_id)
        if self._erased(conn, member_id):
            return
        was = self._personalised(conn, member_id)
        self._set_consent(conn, member_id, personalisation=bool(event.granted),
                          changed_at=utc(event.timestamp))
        # Interests become known (or unknown) to segment rules.
        self._touched.add(member_id)
        if was and not event.granted:
            self._forget_behaviour(conn, member_id, position)

    def _forget_behaviour(self, conn: Connection, member_id: str, position: int) -> None:
        """Consent withdrawn: the profile loses what behaviour taught it, keeps purchases."""
        conn.execute(delete(member_interests).where(member_interests.c.member_id == member_id))
        row = self._member(conn, member_id)
        row.update(empty_behaviour())
        self._save_member(conn, row, position)

    def on_erased(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.originator_id)
        for table in (member_activity, member_interests, member_product_purchases,
                      behaviour_orders, behaviour_reviews):
            conn.execute(delete(table).where(table.c.member_id == member_id))
        sessions = list(conn.scalars(select(behaviour_sessions.c.session_id).where(
            behaviour_sessions.c.member_id == member_id)))
        if sessions:
            conn.execute(delete(session_interests).where(
                session_interests.c.session_id.in_(sessions)))
            # The link stays (so later batches of the session stay anonymous), emptied.
            conn.execute(update(behaviour_sessions)
                         .where(behaviour_sessions.c.session_id.in_(sessions))
                         .values(attributed=False, position=position, **empty_behaviour()))
        self._set_consent(conn, member_id, personalisation=False, erased=True,
                          changed_at=utc(event.timestamp))
        self.membership.member_erased(conn, member_id, event.timestamp, position)

    def on_tier_changed(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.member_id)
        if self._erased(conn, member_id):
            return
        row = self._member(conn, member_id)
        row["tier"] = event.tier
        self._save_member(conn, row, position)

    # -- rows -------------------------------------------------------------------------------

    @staticmethod
    def _member(conn: Connection, member_id: str) -> Row:
        """The member's activity row (a fresh one if none yet), times made aware."""
        row = conn.execute(select(member_activity).where(
            member_activity.c.member_id == member_id)).one_or_none()
        if row is not None:
            return _aware_row(row)
        return {
            "member_id": member_id, "joined_at": None, "tier": None, **empty_behaviour(),
            "orders_placed": 0, "order_channels": {}, "last_order_at": None,
            "reviews": 0, "review_stars": 0, "review_channels": {}, "last_review_at": None,
            "purchases": 0, "purchase_total": 0, "refunded_total": 0,
            "first_purchase_at": None, "last_purchase_at": None,
            "bought_price_sum": 0, "bought_lines": 0, "products": 0, "repeat_products": 0,
            "last_activity_at": None, "position": None,
        }

    def _save_member(self, conn: Connection, row: Row, position: int) -> None:
        """Write the member's row; their segment membership is decided after the event."""
        self._touched.add(row["member_id"])
        row["last_activity_at"] = _latest(row["last_behaviour_at"], row["last_order_at"],
                                          row["last_review_at"], row["last_purchase_at"])
        fresh = row["position"] is None
        row["position"] = position
        values = {key: utc(value) if isinstance(value, datetime) else value
                  for key, value in row.items()}
        if fresh:
            conn.execute(insert(member_activity).values(**values))
        else:
            conn.execute(update(member_activity)
                         .where(member_activity.c.member_id == row["member_id"])
                         .values(**values))

    @staticmethod
    def _session(conn: Connection, session_id: str) -> Row | None:
        row = conn.execute(select(behaviour_sessions).where(
            behaviour_sessions.c.session_id == session_id)).one_or_none()
        return _aware_row(row) if row is not None else None

    @staticmethod
    def _save_session(conn: Connection, row: Row, position: int, *, fresh: bool) -> None:
        row["position"] = position
        values = {key: utc(value) if isinstance(value, datetime) else value
                  for key, value in row.items()}
        if fresh:
            conn.execute(insert(behaviour_sessions).values(**values))
        else:
            conn.execute(update(behaviour_sessions)
                         .where(behaviour_sessions.c.session_id == row["session_id"])
                         .values(**values))

    def _add_interests(self, conn: Connection, table: Table, owner: str, owner_id: str,
                       interests: Interests) -> None:
        """Merge folded interests into the owner's rows, one read and one write per key."""
        owner_column = table.c[owner]
        for (dimension, key), entry in sorted(interests.items()):
            where = ((owner_column == owner_id) & (table.c.dimension == dimension)
                     & (table.c.key == key))
            row = conn.execute(select(table).where(where)).one_or_none()
            if row is None:
                conn.execute(insert(table).values(
                    **{owner: owner_id}, dimension=dimension, key=key, **entry.values()))
                continue
            merged = Interest.from_row(dict(row._mapping)).merged(entry, self.half_life_days)
            conn.execute(update(table).where(where).values(**merged.values()))

    @staticmethod
    def _count_daily(conn: Connection, counts: Mapping[tuple[date, str], tuple[int, int]]
                     ) -> None:
        for (day, kind), (events, amount) in sorted(counts.items()):
            key = (behaviour_daily.c.day == day) & (behaviour_daily.c.kind == kind)
            moved = conn.execute(update(behaviour_daily).where(key).values(
                events=behaviour_daily.c.events + events,
                amount=behaviour_daily.c.amount + amount))
            if not moved.rowcount:
                conn.execute(insert(behaviour_daily).values(
                    day=day, kind=kind, events=events, amount=amount))

    # -- behaviour --------------------------------------------------------------------------

    def _fold(self, items: Iterable[Mapping[str, Any]], channel: str
              ) -> tuple[Tally, Interests]:
        """A batch's events as counts and interests, in the batch's order."""
        tally = Tally()
        interests: Interests = {}
        for item in items:
            column = KIND_COLUMNS.get(item["kind"])
            if column is None:  # a kind newer than this projection: daily counts only
                continue
            at = datetime.fromisoformat(item["occurred_at"]).astimezone(UTC)
            tally.counts["behaviour_events"] += 1
            tally.counts[column] += 1
            tally.channels[channel] += 1
            tally.first = _earliest(tally.first, at)
            tally.last = _latest(tally.last, at)
            amounts: dict[str, float] = {column: 1.0}
            if column == "views":
                dwell = int(item.get("dwell_seconds") or 0)
                tally.counts["dwell_seconds"] += dwell
                amounts["dwell_minutes"] = min(dwell, DWELL_CAP_SECONDS) / 60.0
                if item.get("price") is not None:
                    tally.counts["viewed_price_sum"] += int(item["price"])
                    tally.counts["viewed_price_count"] += 1
            elif column == "cart_adds":
                tally.last_cart_add = _latest(tally.last_cart_add, at)
            _add_interest(interests, item, at, amounts, self.half_life_days)
        return tally, interests

    def _owner(self, conn: Connection, event: Any) -> tuple[str, str] | None:
        """Whose behaviour a batch is: ("member", id), ("session", id) or nobody's."""
        if event.member_id:
            member_id = str(event.member_id)
            return ("member", member_id) if self._personalised(conn, member_id) else None
        session = self._session(conn, event.session_id)
        if session is None or session["member_id"] is None:
            return ("session", event.session_id)
        if session["attributed"] and self._personalised(conn, session["member_id"]):
            return ("member", session["member_id"])
        return None

    def on_batch(self, conn: Connection, event: Any, position: int) -> None:
        daily: dict[tuple[date, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
        for item in event.events:
            day = datetime.fromisoformat(item["occurred_at"]).astimezone(UTC).date()
            events, amount = daily[(day, item["kind"])]
            daily[(day, item["kind"])] = (events + 1, amount)
        self._count_daily(conn, daily)
        owner = self._owner(conn, event)
        if owner is None:
            return
        tally, interests = self._fold(event.events, event.meta["channel"])
        kind, owner_id = owner
        if kind == "member":
            row = self._member(conn, owner_id)
            tally.add_to(row)
            self._save_member(conn, row, position)
            self._add_interests(conn, member_interests, "member_id", owner_id, interests)
            return
        session = self._session(conn, owner_id)
        fresh = session is None
        if session is None:
            session = {"session_id": owner_id, "member_id": None, "attributed": False,
                       "linked_at": None, **empty_behaviour()}
        tally.add_to(session)
        self._save_session(conn, session, position, fresh=fresh)
        self._add_interests(conn, session_interests, "session_id", owner_id, interests)

    def on_linked(self, conn: Connection, event: Any, position: int) -> None:
        session_id, member_id = event.session_id, str(event.member_id)
        session = self._session(conn, session_id)
        if session is not None and session["member_id"] is not None:
            return  # linked once, to one member
        attributed = self._personalised(conn, member_id)
        if session is not None and attributed:
            row = self._member(conn, member_id)
            Tally.of_row(session).add_to(row)
            self._save_member(conn, row, position)
            moved: Interests = {
                (r.dimension, r.key): Interest.from_row(dict(r._mapping))
                for r in conn.execute(select(session_interests).where(
                    session_interests.c.session_id == session_id))
            }
            self._add_interests(conn, member_interests, "member_id", member_id, moved)
        conn.execute(delete(session_interests).where(
            session_interests.c.session_id == session_id))
        # Whatever the session did is now the member's (or aggregate-only): the row keeps
        # only the link.
        linked = {"session_id": session_id, "member_id": member_id, "attributed": attributed,
                  "linked_at": event.timestamp, **empty_behaviour()}
        self._save_session(conn, linked, position, fresh=session is None)

    # -- orders -----------------------------------------------------------------------------

    def on_order_placed(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.member_id)
        if self._erased(conn, member_id):
            return
        lines = [{"product_id": line.get("product_id"), "category": line.get("category"),
                  "brand": line.get("brand"), "quantity": line["quantity"],
                  "unit_price": line["unit_price"]} for line in event.lines]
        conn.execute(insert(behaviour_orders).values(
            order_id=str(event.originator_id), member_id=member_id, lines=lines,
            placed_at=utc(event.timestamp), paid_at=None))
        row = self._member(conn, member_id)
        row["orders_placed"] += 1
        channel = event.meta["channel"]
        row["order_channels"] = {**row["order_channels"],
                                 channel: row["order_channels"].get(channel, 0) + 1}
        row["last_order_at"] = _latest(row["last_order_at"], event.timestamp)
        self._save_member(conn, row, position)

    @staticmethod
    def _order(conn: Connection, event: Any) -> Row | None:
        row = conn.execute(select(behaviour_orders).where(
            behaviour_orders.c.order_id == str(event.originator_id))).one_or_none()
        return _aware_row(row) if row is not None else None

    def on_order_paid(self, conn: Connection, event: Any, position: int) -> None:
        at = event.timestamp.astimezone(UTC)
        self._count_daily(conn, {(at.date(), PURCHASE): (1, int(event.amount))})
        order = self._order(conn, event)
        if order is None:  # its member was erased
            return
        conn.execute(update(behaviour_orders)
                     .where(behaviour_orders.c.order_id == order["order_id"])
                     .values(paid_at=utc(at)))
        member_id = order["member_id"]
        row = self._member(conn, member_id)
        row["purchases"] += 1
        row["purchase_total"] += int(event.amount)
        row["first_purchase_at"] = _earliest(row["first_purchase_at"], at)
        row["last_purchase_at"] = _latest(row["last_purchase_at"], at)
        row["bought_price_sum"] += sum(int(line["unit_price"]) for line in order["lines"])
        row["bought_lines"] += len(order["lines"])
        products = sorted({line["product_id"] for line in order["lines"] if line["product_id"]})
        for product_id in products:
            bought = self._bought_before(conn, member_id, product_id, at)
            if bought == 0:
                row["products"] += 1
            elif bought == 1:
                row["repeat_products"] += 1
        self._save_member(conn, row, position)
        if self._personalised(conn, member_id):
            interests: Interests = {}
            for line in order["lines"]:
                _add_interest(interests, line, at, {"purchases": 1.0}, self.half_life_days)
            self._add_interests(conn, member_interests, "member_id", member_id, interests)

    @staticmethod
    def _bought_before(conn: Connection, member_id: str, product_id: str,
                       at: datetime) -> int:
        """Orders of this product before this one; counts this one in."""
        table = member_product_purchases
        key = (table.c.member_id == member_id) & (table.c.product_id == product_id)
        orders = conn.scalar(select(table.c.orders).where(key))
        if orders is None:
            conn.execute(insert(table).values(member_id=member_id, product_id=product_id,
                                              orders=1, first_at=utc(at), last_at=utc(at)))
            return 0
        conn.execute(update(table).where(key).values(orders=orders + 1, last_at=utc(at)))
        return int(orders)

    def on_order_refunded(self, conn: Connection, event: Any, position: int) -> None:
        order = self._order(conn, event)
        if order is None or order["paid_at"] is None:
            return
        row = self._member(conn, order["member_id"])
        row["purchase_total"] -= int(event.amount)
        row["refunded_total"] += int(event.amount)
        self._save_member(conn, row, position)

    def on_order_cancelled(self, conn: Connection, event: Any, position: int) -> None:
        """An unpaid order cancelled will never be a purchase: nothing to keep."""
        conn.execute(delete(behaviour_orders).where(
            (behaviour_orders.c.order_id == str(event.originator_id))
            & behaviour_orders.c.paid_at.is_(None)))

    # -- reviews ----------------------------------------------------------------------------

    def on_review_written(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.member_id)
        if self._erased(conn, member_id):
            return
        conn.execute(insert(behaviour_reviews).values(
            review_id=str(event.originator_id), member_id=member_id,
            category=event.category, brand=event.brand, stars=int(event.stars)))
        row = self._member(conn, member_id)
        row["reviews"] += 1
        row["review_stars"] += int(event.stars)
        channel = event.meta["channel"]
        row["review_channels"] = {**row["review_channels"],
                                  channel: row["review_channels"].get(channel, 0) + 1}
        row["last_review_at"] = _latest(row["last_review_at"], event.timestamp)
        self._save_member(conn, row, position)
        self._review_interest(conn, member_id, event, {"category": event.category,
                                                       "brand": event.brand},
                              {"reviews": 1.0, "review_stars": float(event.stars)})

    def on_review_revised(self, conn: Connection, event: Any, position: int) -> None:
        review = conn.execute(select(behaviour_reviews).where(
            behaviour_reviews.c.review_id == str(event.originator_id))).one_or_none()
        if review is None:  # its member was erased
            return
        delta = int(event.stars) - int(review.stars)
        if not delta:
            return
        conn.execute(update(behaviour_reviews)
                     .where(behaviour_reviews.c.review_id == review.review_id)
                     .values(stars=int(event.stars)))
        row = self._member(conn, review.member_id)
        row["review_stars"] += delta
        row["last_review_at"] = _latest(row["last_review_at"], event.timestamp)
        self._save_member(conn, row, position)
        self._review_interest(conn, review.member_id, event,
                              {"category": review.category, "brand": review.brand},
                              {"review_stars": float(delta)})

    def _review_interest(self, conn: Connection, member_id: str, event: Any,
                         item: Mapping[str, Any], amounts: Mapping[str, float]) -> None:
        if not self._personalised(conn, member_id):
            return
        interests: Interests = {}
        _add_interest(interests, item, event.timestamp.astimezone(UTC), amounts,
                      self.half_life_days)
        self._add_interests(conn, member_interests, "member_id", member_id, interests)
