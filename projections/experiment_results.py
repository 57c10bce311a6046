"""`experiments` and their per-variant results: impressions, clicks, exposure, conversion.

Definitions (what the numbers mean):

- **impressions** / **clicks**: items of `ImpressionBatch.Recorded` / `ClickBatch.Recorded`
  stamped with the experiment and variant (by the service, from the experiment that ran on
  the item's placement when it was shown or clicked, and the member's deterministic
  variant). CTR = clicks / impressions.
- **exposed members**: members with at least one impression (or click) in the variant;
  each member counts once, in the one variant assignment gives them.
- **clicking members**: exposed members with at least one click.
- **conversion**: an exposed member pays (`Order.Paid`) for an order that contains a
  product they clicked in the experiment at most 7 days before the payment. The member
  counts once in **converted members** (conversion rate = converted / exposed); every such
  order counts in **conversions**, and the line totals (quantity x unit price) of the
  clicked products in it in **revenue**. Payments are attributed to every experiment in
  which the member clicked one of the order's products; refunds and later cancellations
  are not deducted (the results measure what recommendations led to, not net sales).

A payment event does not repeat the order's lines, so `Order.Placed` keeps them in
`experiment_orders` until the order is paid or cancelled — only for members already
exposed to some experiment when they order, which keeps the table to the experiments'
participants (an order placed before any exposure was not led by a recommendation).

Erasing a member (`Member.Erased`) deletes their exposures, clicks and pending orders;
the variant totals keep the counts, naming no one. Everything comes from events and these
tables only (never another projection's tables, never the clock), so a rebuild from
position zero reproduces every row.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from domain.experiments import (
    CONVERSION_WINDOW,
    ClickBatch,
    Experiment,
    ExperimentStatus,
    ImpressionBatch,
    Variant,
)
from domain.member import Member
from domain.order import Order
from projections.commerce_tables import stored, utc
from projections.engine import Handler, ReadModel
from projections.experiment_tables import (
    experiment_clicks,
    experiment_exposures,
    experiment_orders,
    experiment_variant_results,
    experiments,
)

Row = dict[str, Any]



@dataclass
class _Exposure:
    """What one batch says about one member in one experiment."""

    variant: str
    first_at: datetime
    impressions: int = 0
    clicks: int = 0
    # product_id -> latest click in the batch
    clicked: dict[str, datetime] = field(default_factory=dict)


class ExperimentResultsProjection(ReadModel):
    name = "experiment_results"
    tables = (experiments, experiment_variant_results, experiment_exposures,
              experiment_clicks, experiment_orders)

    def handlers(self) -> dict[type, Handler]:
        return {
            Experiment.Defined: self.on_defined,
            Experiment.Stopped: self.on_stopped,
            ImpressionBatch.Recorded: self.on_impressions,
            ClickBatch.Recorded: self.on_clicks,
            Order.Placed: self.on_order_placed,
            Order.Paid: self.on_order_paid,
            Order.Cancelled: self.on_order_cancelled,
            Member.Erased: self.on_member_erased,
        }

    # -- experiments ------------------------------------------------------------------------

    def on_defined(self, conn: Connection, event: Any, position: int) -> None:
        experiment_id = str(event.originator_id)
        at = utc(event.timestamp)
        variants = [Variant.from_dict(v).as_dict() for v in event.variants]
        conn.execute(insert(experiments).values(
            experiment_id=experiment_id, name=event.name, placement=event.placement,
            variants=variants, status=ExperimentStatus.RUNNING.value, defined_at=at,
            defined_by=event.meta["actor_id"], define_reason=event.meta.get("reason"),
            stopped_at=None, stopped_by=None, stop_reason=None,
            version=event.originator_version, position=position,
        ))
        conn.execute(insert(experiment_variant_results), [
            {"experiment_id": experiment_id, "variant": v["name"], "ordinal": ordinal,
             "impressions": 0, "clicks": 0, "exposed_members": 0, "clicking_members": 0,
             "converted_members": 0, "conversions": 0, "revenue": 0, "updated_at": at,
             "position": position}
            for ordinal, v in enumerate(variants)
        ])

    def on_stopped(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            update(experiments)
            .where(experiments.c.experiment_id == str(event.originator_id))
            .values(status=ExperimentStatus.STOPPED.value, stopped_at=utc(event.timestamp),
                    stopped_by=event.meta["actor_id"], stop_reason=event.reason,
                    version=event.originator_version, position=position)
        )

    # -- impressions and clicks -------------------------------------------------------------

    @staticmethod
    def _by_experiment(items: list[Row], time_key: str) -> dict[str, _Exposure]:
        found: dict[str, _Exposure] = {}
        for item in items:
            experiment_id = item.get("experiment_id")
            if not experiment_id:
                continue
            at = datetime.fromisoformat(item[time_key]).astimezone(UTC)
            exposure = found.setdefault(experiment_id, _Exposure(item["variant"], at))
            exposure.first_at = min(exposure.first_at, at)
            if time_key == "shown_at":
                exposure.impressions += 1
            else:
                exposure.clicks += 1
                previous = exposure.clicked.get(item["product_id"])
                exposure.clicked[item["product_id"]] = max(previous or at, at)
        return found

    def _feedback(self, conn: Connection, event: Any, position: int, time_key: str) -> None:
        member_id = str(event.member_id)
        for experiment_id, seen in sorted(self._by_experiment(event.items, time_key).items()):
            key = ((experiment_exposures.c.experiment_id == experiment_id)
                   & (experiment_exposures.c.member_id == member_id))
            row = conn.execute(select(experiment_exposures).where(key)).one_or_none()
            newly_exposed = row is None
            newly_clicking = seen.clicks > 0 and (row is None or row.first_clicked_at is None)
            first_click = min(seen.clicked.values()) if seen.clicked else None
            if row is None:
                conn.execute(insert(experiment_exposures).values(
                    experiment_id=experiment_id, member_id=member_id, variant=seen.variant,
                    first_shown_at=seen.first_at, first_clicked_at=first_click,
                    converted_at=None, position=position))
            else:
                values: Row = {}
                if seen.first_at < stored(row.first_shown_at):
                    values["first_shown_at"] = seen.first_at
                if first_click is not None and (row.first_clicked_at is None
                                                or first_click < stored(row.first_clicked_at)):
                    values["first_clicked_at"] = first_click
                if values:
                    conn.execute(update(experiment_exposures).where(key)
                                 .values(position=position, **values))
            for product_id, clicked_at in sorted(seen.clicked.items()):
                self._remember_click(conn, experiment_id, member_id, product_id, clicked_at,
                                     position)
            r = experiment_variant_results.c
            conn.execute(
                update(experiment_variant_results)
                .where((r.experiment_id == experiment_id) & (r.variant == seen.variant))
                .values(impressions=r.impressions + seen.impressions,
                        clicks=r.clicks + seen.clicks,
                        exposed_members=r.exposed_members + int(newly_exposed),
                        clicking_members=r.clicking_members + int(newly_clicking),
                        updated_at=utc(event.timestamp), position=position)
            )

    @staticmethod
    def _remember_click(conn: Connection, experiment_id: str, member_id: str,
                        product_id: str, clicked_at: datetime, position: int) -> None:
        c = experiment_clicks.c
        key = ((c.experiment_id == experiment_id) & (c.member_id == member_id)
               & (c.product_id == product_id))
        latest = conn.execute(select(c.last_clicked_at).where(key)).scalar_one_or_none()
        if latest is None:
            conn.execute(insert(experiment_clicks).values(
                experiment_id=experiment_id, member_id=member_id, product_id=product_id,
                last_clicked_at=clicked_at, position=position))
        elif clicked_at > stored(latest):
            conn.execute(update(experiment_clicks).where(key)
                         .values(last_clicked_at=clicked_at, position=position))

    def on_impressions(self, conn: Connection, event: Any, position: int) -> None:
        self._feedback(conn, event, position, "shown_at")

    def on_clicks(self, conn: Connection, event: Any, position: int) -> None:
        self._feedback(conn, event, position, "clicked_at")

    # -- orders -----------------------------------------------------------------------------

    def on_order_placed(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.member_id)
        exposed = conn.execute(
            select(experiment_exposures.c.experiment_id)
            .where(experiment_exposures.c.member_id == member_id).limit(1)
        ).first()
        if exposed is None:
            return
        totals: dict[str, int] = defaultdict(int)
        for line in event.lines:
            if line.get("product_id"):
                totals[str(line["product_id"])] += int(line["quantity"]) * int(line["unit_price"])
        conn.execute(insert(experiment_orders).values(
            order_id=str(event.originator_id), member_id=member_id,
            product_totals=dict(sorted(totals.items())), placed_at=utc(event.timestamp),
            position=position))

    def _pending_order(self, conn: Connection, event: Any) -> Row | None:
        row = conn.execute(select(experiment_orders).where(
            experiment_orders.c.order_id == str(event.originator_id))).one_or_none()
        if row is None:
            return None
        conn.execute(delete(experiment_orders).where(
            experiment_orders.c.order_id == str(event.originator_id)))
        return dict(row._mapping)

    def on_order_paid(self, conn: Connection, event: Any, position: int) -> None:
        order = self._pending_order(conn, event)
        if order is None:
            return
        member_id = order["member_id"]
        totals: dict[str, int] = order["product_totals"]
        paid_at = event.timestamp.astimezone(UTC)
        c = experiment_clicks.c
        clicked = conn.execute(
            select(c.experiment_id, c.product_id)
            .where((c.member_id == member_id) & c.product_id.in_(sorted(totals))
                   & (c.last_clicked_at >= paid_at - CONVERSION_WINDOW))
            .order_by(c.experiment_id, c.product_id)
        ).all()
        revenue: dict[str, int] = defaultdict(int)
        for experiment_id, product_id in clicked:
            revenue[experiment_id] += int(totals[product_id])
        for experiment_id, amount in sorted(revenue.items()):
            self._convert(conn, event, position, experiment_id, member_id, amount, paid_at)

    @staticmethod
    def _convert(conn: Connection, event: Any, position: int, experiment_id: str,
                 member_id: str, amount: int, paid_at: datetime) -> None:
        key = ((experiment_exposures.c.experiment_id == experiment_id)
               & (experiment_exposures.c.member_id == member_id))
        exposure = conn.execute(select(experiment_exposures).where(key)).one()
        first = exposure.converted_at is None
        if first:
            conn.execute(update(experiment_exposures).where(key)
                         .values(converted_at=paid_at, position=position))
        r = experiment_variant_results.c
        conn.execute(
            update(experiment_variant_results)
            .where((r.experiment_id == experiment_id) & (r.variant == exposure.variant))
            .values(converted_members=r.converted_members + int(first),
                    conversions=r.conversions + 1, revenue=r.revenue + amount,
                    updated_at=utc(event.timestamp), position=position)
        )

    def on_order_cancelled(self, conn: Connection, event: Any, position: int) -> None:
        self._pending_order(conn, event)

    # -- erasure ----------------------------------------------------------------------------

    def on_member_erased(self, conn: Connection, event: Any, position: int) -> None:
        member_id = str(event.originator_id)
        for table in (experiment_exposures, experiment_clicks, experiment_orders):
            conn.execute(delete(table).where(table.c.member_id == member_id))
