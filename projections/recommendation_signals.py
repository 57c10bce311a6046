"""`recommendation_signals`: the behaviour the recommender learns from, one row per signal.

What becomes a signal (`domain.recommendation.interactions.SignalKind`):

- a **purchase**: each product of an order, when the order is paid (an unpaid, cancelled
  order never was one), with its quantity and the order id (the basket for the cart's
  association rules);
- a **review**: its stars, replaced when the review is revised;
- a **cart add**, a **wish-list add**, a **product view** (with its dwell time): from
  behaviour batches that name a member. The behaviour service names a member only while
  they consent to personalisation; withdrawing consent deletes these three kinds and
  keeps purchases and reviews (the member profile does the same), and erasure deletes
  every row of the member.

Rows are raw, not weighted: weights and decay are applied when interactions are derived
(`derive_interactions`), so changing `[recommender]` weights needs no rebuild, and a
signal's age is always measured from the moment of use. Only events and this
projection's own tables are read, so a rebuild reproduces the rows exactly.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from domain.behaviour import BehaviourBatch, BehaviourKind, ProductReview
from domain.member import ConsentPurpose, Member
from domain.order import Order
from domain.recommendation.interactions import SignalKind
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel
from projections.recommender_tables import (
    recommendation_consents,
    recommendation_orders,
    recommendation_signals,
)

BEHAVIOUR_SIGNALS = {
    BehaviourKind.PRODUCT_VIEWED.value: SignalKind.VIEW,
    BehaviourKind.ADDED_TO_CART.value: SignalKind.CART_ADD,
    BehaviourKind.WISH_LISTED.value: SignalKind.WISH_LIST,
}
# What consent to personalisation covers: behaviour, not transactions.
CONSENTED_KINDS = tuple(kind.value for kind in BEHAVIOUR_SIGNALS.values())


class RecommendationSignalsProjection(ReadModel):
    name = "recommendation_signals"
    tables = (recommendation_signals, recommendation_orders, recommendation_consents)

    def handlers(self) -> dict[type, Handler]:
        return {
            Member.ConsentChanged: self.on_consent_changed,
            Member.Erased: self.on_erased,
            BehaviourBatch.Recorded: self.on_batch,
            Order.Placed: self.on_order_placed,
            Order.Paid: self.on_order_paid,
            Order.Cancelled: self.on_order_cancelled,
            ProductReview.Written: self.on_review,
            ProductReview.Revised: self.on_review,
        }

    # -- consent and erasure ----------------------------------------------------------------

    def on_consent_changed(self, conn: Connection, event: Any, position: int) -> None:
        if event.purpose != ConsentPurpose.PERSONALISATION.value:
            return
        member_id = str(event.originator_id)
        values = {"personalisation": bool(event.granted),
                  "changed_at": utc(event.timestamp), "position": position}
        key = recommendation_consents.c.member_id == member_id
        if not conn.execute(update(recommendation_consents).where(key).values(**values)).rowcount:
            conn.execute(insert(recommendation_consents).values(member_id=member_id, **values))
        if not event.granted:
            conn.execute(delete(recommendation_signals).where(
                (recommendation_signals.c.member_id == member_id)
                & recommendation_signals.c.kind.in_(CONSENTED_KINDS)))

    def on_erased(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.originator_id)
        for table in (recommendation_signals, recommendation_orders, recommendation_consents):
            conn.execute(delete(table).where(table.c.member_id == member_id))

    # -- behaviour --------------------------------------------------------------------------

    def on_batch(self, conn: Connection, event: Any, position: int) -> None:
        if event.member_id is None:
            return  # an anonymous session's behaviour says nothing about a member
        rows = []
        for index, item in enumerate(event.events):
            kind = BEHAVIOUR_SIGNALS.get(item["kind"])
            if kind is None or not item.get("product_id"):
                continue
            rows.append({
                "signal_id": f"{position}:{index}", "member_id": str(event.member_id),
                "product_id": item["product_id"], "kind": kind.value,
                "occurred_at": utc(datetime.fromisoformat(item["occurred_at"])),
                "stars": None, "dwell_seconds": item.get("dwell_seconds"), "quantity": 1,
                "order_id": None, "position": position,
            })
        if rows:
            conn.execute(insert(recommendation_signals), rows)

    # -- orders -----------------------------------------------------------------------------

    def on_order_placed(self, conn: Connection, event: Any, position: int) -> None:
        quantities: Counter[str] = Counter()
        for line in event.lines:
            if line.get("product_id"):
                quantities[line["product_id"]] += int(line["quantity"])
        conn.execute(insert(recommendation_orders).values(
            order_id=str(event.originator_id), member_id=str(event.member_id),
            product_ids=sorted(quantities.items()), position=position))

    def on_order_paid(self, conn: Connection, event: Any, position: int) -> None:
        order_id = str(event.originator_id)
        order = conn.execute(select(recommendation_orders).where(
            recommendation_orders.c.order_id == order_id)).one_or_none()
        if order is None:  # its member was erased, or it was paid before (a replay guard)
            return
        conn.execute(delete(recommendation_orders).where(
            recommendation_orders.c.order_id == order_id))
        rows = [{
            "signal_id": f"{position}:{index}", "member_id": order.member_id,
            "product_id": product_id, "kind": SignalKind.PURCHASE.value,
            "occurred_at": utc(event.timestamp), "stars": None, "dwell_seconds": None,
            "quantity": quantity, "order_id": order_id, "position": position,
        } for index, (product_id, quantity) in enumerate(order.product_ids)]
        if rows:
            conn.execute(insert(recommendation_signals), rows)

    def on_order_cancelled(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(delete(recommendation_orders).where(
            recommendation_orders.c.order_id == str(event.originator_id)))

    # -- reviews ----------------------------------------------------------------------------

    def on_review(self, conn: Connection, event: Any, position: int) -> None:
        """Written or revised: the review's one row holds its latest stars."""
        signal_id = f"review:{event.originator_id}"
        key = recommendation_signals.c.signal_id == signal_id
        if isinstance(event, ProductReview.Revised):
            conn.execute(update(recommendation_signals).where(key).values(
                stars=int(event.stars), occurred_at=utc(event.timestamp), position=position))
            return  # no row: the review had no product, or its member was erased
        if not event.product_id:
            return
        conn.execute(insert(recommendation_signals).values(
            signal_id=signal_id, member_id=str(event.member_id), product_id=event.product_id,
            kind=SignalKind.REVIEW.value, occurred_at=utc(event.timestamp),
            stars=int(event.stars), dwell_seconds=None, quantity=1, order_id=None,
            position=position))
