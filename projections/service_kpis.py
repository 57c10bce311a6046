"""`service_kpis`: one fact row per after-sales case, for service-level reports.

The row holds what the KPI queries aggregate (api/after_sales_readmodels.service_kpis):
how long the case waited for its first staff message, its first review and its
resolution, counted from its opening; which deadlines the scheduled SLA check recorded as
missed; and the member's rating. Durations are differences of event (business) times, so
a rebuild from position zero gives the same numbers to the microsecond.

This projection keeps its own copy of what it needs (opening time, team) instead of
reading `case_queue`, which another projection writes and which may be behind or ahead.
Nothing personal is read: the rating's comment stays in the event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from domain.after_sales import AfterSalesCase, SlaKind
from projections.after_sales_tables import service_kpis
from projections.commerce_tables import utc
from projections.engine import Handler, ReadModel


def _aware(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; every one stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ServiceKpisProjection(ReadModel):
    name = "service_kpis"
    tables = (service_kpis,)

    def handlers(self) -> dict[type, Handler]:
        return {
            AfterSalesCase.Opened: self.on_opened,
            AfterSalesCase.Assigned: self.on_assigned,
            AfterSalesCase.Approved: self.on_reviewed,
            AfterSalesCase.Rejected: self.on_reviewed,
            AfterSalesCase.MessagePosted: self.on_message_posted,
            AfterSalesCase.Resolved: self.on_resolved,
            AfterSalesCase.SlaBreached: self.on_sla_breached,
            AfterSalesCase.Rated: self.on_rated,
        }

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(conn: Connection, event: Any) -> dict[str, Any]:
        row = conn.execute(
            select(service_kpis).where(service_kpis.c.case_id == str(event.originator_id))
        ).one()
        return dict(row._mapping)

    @staticmethod
    def _save(conn: Connection, event: Any, position: int, **values: Any) -> None:
        conn.execute(
            update(service_kpis)
            .where(service_kpis.c.case_id == str(event.originator_id))
            .values(position=position, **values)
        )

    @staticmethod
    def _since_opening(row: dict[str, Any], event: Any) -> float:
        moment = utc(event.timestamp)
        assert moment is not None
        return (moment - _aware(row["opened_at"])).total_seconds()

    # -- handlers ---------------------------------------------------------------------------

    def on_opened(self, conn: Connection, event: Any, position: int) -> None:
        opened_at = utc(event.timestamp)
        assert opened_at is not None
        conn.execute(
            insert(service_kpis).values(
                case_id=str(event.originator_id),
                team=event.team,
                tier=event.tier,
                case_type=event.case_type,
                opened_at=opened_at,
                opened_on=opened_at.date(),
                first_response_seconds=None,
                first_review_seconds=None,
                resolution_seconds=None,
                resolved_at=None,
                first_review_breached=False,
                resolution_breached=False,
                attitude=None,
                ability=None,
                efficiency=None,
                category=None,
                rated_at=None,
                position=position,
            )
        )

    def on_assigned(self, conn: Connection, event: Any, position: int) -> None:
        # A reassignment to another team moves the case's figures to that team.
        row = self._load(conn, event)
        values: dict[str, Any] = {"team": event.team}
        if event.starts_review and row["first_review_seconds"] is None:
            values["first_review_seconds"] = self._since_opening(row, event)
        self._save(conn, event, position, **values)

    def on_reviewed(self, conn: Connection, event: Any, position: int) -> None:
        # As the aggregate: only the first review counts (a rejection after an inspection
        # is not one).
        row = self._load(conn, event)
        if row["first_review_seconds"] is None:
            self._save(conn, event, position,
                       first_review_seconds=self._since_opening(row, event))

    def on_message_posted(self, conn: Connection, event: Any, position: int) -> None:
        if not event.first_response:
            return
        row = self._load(conn, event)
        self._save(conn, event, position, first_response_seconds=self._since_opening(row, event))

    def on_resolved(self, conn: Connection, event: Any, position: int) -> None:
        row = self._load(conn, event)
        self._save(conn, event, position, resolution_seconds=self._since_opening(row, event),
                   resolved_at=utc(event.timestamp))

    def on_sla_breached(self, conn: Connection, event: Any, position: int) -> None:
        flag = ("first_review_breached" if event.kind == SlaKind.FIRST_REVIEW
                else "resolution_breached")
        self._save(conn, event, position, **{flag: True})

    def on_rated(self, conn: Connection, event: Any, position: int) -> None:
        self._save(conn, event, position, attitude=event.attitude, ability=event.ability,
                   efficiency=event.efficiency, category=event.category,
                   rated_at=utc(event.timestamp))
