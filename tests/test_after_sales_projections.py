"""The after-sales read models: the case queue, case timelines and service KPI facts.

Cases are driven through the real service (`runtime.after_sales`) on delivered orders, with
the business clock set before every command, so every duration is known to the second. A
runner of our own projects the two projections in batches of five after every step, and
each case's queue row, timeline and KPI row are compared with the aggregate they mirror,
so a handler that drifts from an `apply` fails where it drifts. The members and agents
write free text everywhere they can; none of it may reach a row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Table, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.after_sales_readmodels import (
    CaseFilter,
    CaseSort,
    CategorySatisfaction,
    Distribution,
    KpiGroup,
    KpiGrouping,
    case_cursor,
    case_timeline,
    distribution,
    get_cases,
    latest_case_position,
    list_cases,
    percentile,
    service_kpis,
)
from api.readmodels import InvalidCursorError, encode_cursor
from api.runtime import Runtime, alembic_config
from api.shipping import shipment_id_for
from domain.after_sales import AfterSalesCase, CaseState
from domain.clock import AdjustableClock
from domain.metadata import Channel, EventMetadata, Role
from projections import after_sales_tables as tables
from projections.case_queue import CaseQueueProjection
from projections.engine import ReadModelRunner
from projections.service_kpis import ServiceKpisProjection
from projections.shipping_tables import shipment_tracking
from projections.tables import metadata, projection_tracking
from tests.shop import stocked

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 24 * HOUR
PROJECTED = (tables.case_queue, tables.case_timeline, tables.service_kpis)
ADDRESS = {"recipient": "Rita Reader", "line1": "1 Road", "city": "Hangzhou",
           "postal_code": "310000", "country": "CN"}
LINES = [{"product_id": "p1", "sku": "S1", "name": "Mug", "quantity": 3, "unit_price": 1_000},
         {"product_id": "p2", "sku": "S2", "name": "Tea", "quantity": 3, "unit_price": 1_500}]

# Free text members and agents write: personal data, or notes that are not ours to copy.
SECRETS = {
    "detail": "SECRET-detail the handle snapped off",
    "evidence": "SECRET-evidence see the crack near the rim",
    "photo": "https://photos.example/SECRET-photo.jpg",
    "staff_message": "SECRET-staff-message we will look into it",
    "member_message": "SECRET-member-message thank you kindly",
    "attachment": "https://files.example/SECRET-attachment.pdf",
    "approve_note": "SECRET-approve-note looks genuine",
    "inspection": "SECRET-inspection deep scratch on the base",
    "resolve_note": "SECRET-resolve-note refunded in full",
    "follow_up": "SECRET-follow-up she was happy",
    "comment": "SECRET-comment lovely people",
    "withdraw": "SECRET-withdraw found the missing part",
}
REJECTION = "Outside the warranty period"


def hours(value: float) -> datetime:
    return T0 + timedelta(hours=value)


def aware(value: datetime | str | None) -> datetime | None:
    """Rows on SQLite come back naive, the aggregate keeps ISO strings: compare instants."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def meta(actor: str, role: Role, reason: str | None = None,
         channel: Channel = Channel.ADMIN) -> EventMetadata:
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


def agent(name: str = "agent-1", reason: str | None = None) -> EventMetadata:
    return meta(name, Role.AGENT, reason)


SYSTEM = meta("scheduler", Role.SYSTEM, channel=Channel.SYSTEM)
CARRIER = meta("carrier:sf", Role.SYSTEM, channel=Channel.SYSTEM)


def _rows(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key))]


def _dicts(conn: Connection, table: Table, **where: Any) -> list[dict[str, Any]]:
    query = select(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    return [dict(row._mapping) for row in conn.execute(query.order_by(*table.primary_key))]


def history_states(case: AfterSalesCase) -> list[str]:
    return [entry["state"] for entry in case.history]


def entered(case: AfterSalesCase, state: CaseState) -> datetime | None:
    times = [entry["at"] for entry in case.history if entry["state"] == state.value]
    return aware(times[-1]) if times else None


def seconds_between(start: datetime, end: str | None) -> float | None:
    return None if end is None else (aware(end) - start).total_seconds()  # type: ignore[operator]


@dataclass
class Desk:
    """Cases under test, named by letter, and a runner over the two after-sales projections."""

    runtime: Runtime
    clock: AdjustableClock
    cases: dict[str, UUID] = field(default_factory=dict)
    # The states each case's queue row has shown, in order, as seen after every step.
    seen: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clock.set(T0 - timedelta(days=2))
        self.runner = ReadModelRunner(
            self.runtime.sync_engine, self.runtime.app.recorder,  # type: ignore[arg-type]
            self.runtime.app.mapper, [CaseQueueProjection(), ServiceKpisProjection()],
            batch_size=5,
        )
        self.orders = 0

    def at(self, offset_hours: float) -> None:
        moment = hours(offset_hours)
        assert moment >= self.clock.now(), "business time only moves forward here"
        self.clock.set(moment)

    def member(self, name: str) -> str:
        result = self.runtime.members.register(
            {"name": name, "email": f"{name.lower()}@example.com"},
            meta("anon", Role.ANONYMOUS, channel=Channel.WEB))
        return str(result.aggregate_id)

    def delivered_order(self, member_id: str) -> UUID:
        """An order paid, shipped and delivered: its lines can be claimed by cases."""
        self.orders += 1
        own = meta(member_id, Role.MEMBER, channel=Channel.APP)
        orders = self.runtime.orders
        order = orders.place(UUID(member_id), stocked(self.runtime, LINES), None, 0,
                             f"order-{self.orders}", own).aggregate_id
        orders.pay(order, "card", orders.get(order).total, None, f"pay-{self.orders}", own)
        tracking = f"SF-OUT-{self.orders}"
        self.runtime.shipping.create(order, None, "home_delivery", "standard", None, None,
                                     ADDRESS, None, "sf", tracking, agent("packer"))
        self.runtime.shipping.record_tracking(shipment_id_for("sf", tracking), "d1",
                                              "delivered", self.clock.now(), None, None,
                                              None, CARRIER)
        return order

    def open(self, label: str, order: UUID, case_type: str, reason: str,
             lines: list[tuple[str, int]], by: EventMetadata, **extra: Any) -> UUID:
        result = self.runtime.after_sales.open(
            order, case_type, reason, extra.get("detail"), lines, extra.get("evidence"),
            extra.get("photos"), extra.get("preferred"), f"case-{label}", by)
        self.cases[label] = result.aggregate_id
        return result.aggregate_id

    def case(self, label: str) -> AfterSalesCase:
        return self.runtime.after_sales.get(self.cases[label])

    def row(self, label: str) -> dict[str, Any]:
        with self.runtime.sync_engine.connect() as conn:
            (row,) = _dicts(conn, tables.case_queue, case_id=str(self.cases[label]))
        return row

    def kpi(self, label: str) -> dict[str, Any]:
        with self.runtime.sync_engine.connect() as conn:
            (row,) = _dicts(conn, tables.service_kpis, case_id=str(self.cases[label]))
        return row

    def timeline(self, label: str) -> list[dict[str, Any]]:
        with self.runtime.sync_engine.connect() as conn:
            return _dicts(conn, tables.case_timeline, case_id=str(self.cases[label]))

    def project(self) -> None:
        self.runner.run_once()
        head = self.runner.head()
        with self.runtime.sync_engine.connect() as conn:
            tracking = conn.execute(select(projection_tracking).where(
                projection_tracking.c.name.in_(list(self.runner.projections)))).all()
            assert len(tracking) == 2
            for status in tracking:
                assert status.last_error is None, status.last_error
                assert status.position == head
            for label, case_id in self.cases.items():
                case = self.runtime.after_sales.get(case_id)
                check_case(conn, case)
                states = self.seen.setdefault(label, [])
                if not states or states[-1] != case.state:
                    states.append(case.state)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.runtime.sync_engine.connect() as conn:
            return {table.name: _rows(conn, table) for table in PROJECTED}


def check_case(conn: Connection, case: AfterSalesCase) -> None:
    """The queue row, the timeline and the KPI row equal the aggregate in what it knows."""
    (row,) = _dicts(conn, tables.case_queue, case_id=str(case.id))
    assert (row["case_number"], row["order_id"], row["member_id"]) == (
        case.case_number, case.order_id, case.member_id)
    assert (row["case_type"], row["reason"], row["lines"], row["preferred_outcome"]) == (
        case.case_type, case.reason, case.lines, case.preferred_outcome)
    assert (row["state"], row["tier"], row["team"], row["assignee"]) == (
        case.state, case.tier, case.team, case.assignee)
    assert aware(row["opened_at"]) == case.created_on
    assert row["opened_by_role"] == case.opened_by["actor_role"]
    assert aware(row["first_review_due"]) == aware(case.first_review_due)
    assert aware(row["resolution_due"]) == aware(case.resolution_due)
    assert aware(row["first_reviewed_at"]) == aware(case.first_reviewed_at)
    assert aware(row["first_response_at"]) == aware(case.first_response_at)
    assert aware(row["resolved_at"]) == aware(case.resolved_at)
    assert aware(row["closed_at"]) == entered(case, CaseState.CLOSED)
    resolution = case.resolution or {}
    assert row["outcome"] == resolution.get("outcome")
    assert row["refund"] == resolution.get("refund")
    assert row["replacement_shipment_id"] == resolution.get("shipment_id")
    parcel = case.return_parcel or {}
    assert (row["return_shipment_id"], row["return_carrier"], row["return_tracking_number"],
            row["label_url"]) == (parcel.get("shipment_id"), parcel.get("carrier"),
                                  parcel.get("tracking_number"), parcel.get("label_url"))
    inspection = case.inspection or {}
    assert (row["inspection_result"], row["disposition"]) == (inspection.get("result"),
                                                              inspection.get("disposition"))
    assert row["first_review_breached"] is ("first_review" in case.breaches)
    assert row["resolution_breached"] is ("resolution" in case.breaches)
    assert row["breached"] is bool(case.breaches)
    if not case.is_open:
        assert row["next_due_at"] is None
    elif case.first_reviewed_at is None:
        assert aware(row["next_due_at"]) == aware(case.first_review_due)
    else:
        assert aware(row["next_due_at"]) == aware(case.resolution_due)
    follow_up = case.follow_up or {}
    assert aware(row["follow_up_scheduled_for"]) == aware(follow_up.get("scheduled_for"))
    assert row["follow_up_outcome"] == follow_up.get("outcome")
    if case.rating is None:
        assert row["rating"] is None
    else:
        assert row["rating"] == {k: v for k, v in case.rating.items() if k != "comment"}
    assert row["message_count"] == len(case.messages)
    assert aware(row["last_message_at"]) == (aware(case.messages[-1]["at"]) if case.messages
                                             else None)
    assert row["version"] == case.version

    timeline = _dicts(conn, tables.case_timeline, case_id=str(case.id))
    assert [t["version"] for t in timeline] == list(range(1, case.version + 1))
    assert timeline[0]["kind"] == "opened"
    assert timeline[-1]["state"] == case.state
    states = [t["state"] for t in timeline]
    changes = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert changes == history_states(case)
    assert [aware(t["at"]) for t in timeline] == sorted(aware(t["at"]) for t in timeline)

    (kpi,) = _dicts(conn, tables.service_kpis, case_id=str(case.id))
    opened = case.created_on
    assert (kpi["team"], kpi["tier"], kpi["case_type"]) == (case.team, case.tier,
                                                           case.case_type)
    assert aware(kpi["opened_at"]) == opened
    assert kpi["opened_on"] == opened.astimezone(UTC).date()
    assert kpi["first_review_seconds"] == seconds_between(opened, case.first_reviewed_at)
    assert kpi["first_response_seconds"] == seconds_between(opened, case.first_response_at)
    assert kpi["resolution_seconds"] == seconds_between(opened, case.resolved_at)
    assert aware(kpi["resolved_at"]) == aware(case.resolved_at)
    assert kpi["first_review_breached"] is ("first_review" in case.breaches)
    assert kpi["resolution_breached"] is ("resolution" in case.breaches)
    rating = case.rating or {}
    assert (kpi["attitude"], kpi["ability"], kpi["efficiency"], kpi["category"]) == (
        rating.get("attitude"), rating.get("ability"), rating.get("efficiency"),
        rating.get("category"))
    assert aware(kpi["rated_at"]) == aware(rating.get("at"))


# -- the history ----------------------------------------------------------------------------


@dataclass
class History:
    alice: str
    bob: str
    carol: str
    orders: dict[str, UUID]


def build_history(desk: Desk) -> History:
    """Seven cases, A to G, over three days from T0 (all regular tier, team "general").

    A  return, Alice: assigned at 2h, staff reply at 3h, approved, returned, inspected,
       refunded on day 2, closed, followed up, rated 5/4/3 after_sales.
    B  refund_only, Alice: nobody reviews it for 29h (first review breached), resolution
       breached at 4d, refunded at 5d+1h, rated 2/3/1 product.
    C  exchange, opened by an agent for Alice on day 1: reassigned to team "returns",
       staff reply after 4h, the carrier reports the return, exchanged on day 2, rated
       4/4/4 product.
    D  repair, Bob: staff reply after 1h, rejected after 6h, closed.
    E  reissue, Bob: withdrawn by Bob an hour after opening.
    F  return, Alice, day 2: never reviewed (first review breached at 4d), still open.
    G  exchange, Alice, day 2: assigned an hour later, still under review.
    """
    service = desk.runtime.after_sales
    alice, bob, carol = desk.member("Alice"), desk.member("Bob"), desk.member("Carol")
    as_alice = meta(alice, Role.MEMBER, channel=Channel.APP)
    as_bob = meta(bob, Role.MEMBER, channel=Channel.APP)
    orders = {"A": desk.delivered_order(alice), "C": desk.delivered_order(alice),
              "D": desk.delivered_order(bob), "X": desk.delivered_order(carol)}
    desk.project()

    desk.at(0)
    a = desk.open("A", orders["A"], "return", "defective", [("L1", 1)], as_alice,
                  detail=SECRETS["detail"], evidence=SECRETS["evidence"],
                  photos=[SECRETS["photo"]], preferred="refunded")
    desk.project()
    desk.at(1)
    b = desk.open("B", orders["A"], "refund_only", "missing_item", [("L2", 1)], as_alice)
    desk.project()
    desk.at(2)
    service.assign(a, "agent-1", None, agent())
    desk.project()
    desk.at(3)
    service.post_message(a, SECRETS["staff_message"], [], "m1", agent())
    desk.project()
    desk.at(3.5)
    service.post_message(a, SECRETS["member_message"], [SECRETS["attachment"]], "m2",
                         as_alice)
    desk.project()
    desk.at(4)
    service.approve(a, SECRETS["approve_note"], agent())
    desk.project()
    desk.at(5)
    service.issue_return_label(a, "sf", "RET-A", "https://labels.example/RET-A.pdf", agent())
    desk.project()

    desk.at(24)
    c = desk.open("C", orders["C"], "exchange", "size_or_fit", [("L1", 1)],
                  agent("agent-2", "Alice phoned the hotline"), detail=SECRETS["detail"])
    d = desk.open("D", orders["D"], "repair", "defective", [("L1", 1)], as_bob,
                  detail=SECRETS["detail"])
    service.receive_return(a, agent())
    desk.project()
    desk.at(25)
    service.assign(c, "agent-2", None, agent("agent-2"))
    service.post_message(d, SECRETS["staff_message"], [], "m1", agent())
    service.inspect(a, "confirmed", "restock", SECRETS["inspection"], agent())
    e = desk.open("E", orders["D"], "reissue", "missing_item", [("L2", 1)], as_bob)
    desk.project()
    desk.at(26)
    service.assign(c, "agent-3", "returns", agent("lead-1", "handover to the returns desk"))
    service.withdraw(e, SECRETS["withdraw"], as_bob)
    desk.project()
    desk.at(27)
    service.approve(c, None, agent("agent-3"))
    desk.project()
    desk.at(28)
    service.post_message(c, SECRETS["staff_message"], [], "m1", agent("agent-3"))
    service.issue_return_label(c, "sf", "RET-C", None, agent("agent-3"))
    desk.project()
    desk.at(29)
    # B's first review was due at 1h + 24h: the scheduled check records the breach.
    assert service.check_sla(b, SYSTEM).aggregate_id == b
    desk.project()
    desk.at(30)
    service.approve(b, None, agent())
    service.reject(d, REJECTION, agent())
    # The carrier reports the return parcel delivered: the case moves on by itself.
    desk.runtime.shipping.record_tracking(shipment_id_for("sf", "RET-C"), "r1", "delivered",
                                          desk.clock.now(), None, None, None, CARRIER)
    desk.project()
    desk.at(31)
    service.inspect(c, "confirmed", "restock", None, agent("agent-3"))
    service.close(d, agent())
    desk.project()

    desk.at(48)
    service.resolve(a, "refunded", None, None, SECRETS["resolve_note"], agent())
    service.resolve(c, "exchanged", "sf", "EX-C", None, agent("agent-3"))
    f = desk.open("F", orders["C"], "return", "wrong_item", [("L2", 1)], as_alice)
    desk.project()
    desk.at(49)
    service.close(a, agent())
    g = desk.open("G", orders["C"], "exchange", "size_or_fit", [("L1", 1)], as_alice)
    desk.project()
    desk.at(50)
    service.schedule_follow_up(a, hours(120), agent())
    service.assign(g, "agent-2", None, agent("agent-2"))
    desk.project()
    desk.at(51)
    service.rate(c, 4, 4, 4, "product", SECRETS["comment"], as_alice)
    desk.project()

    desk.at(96)
    for label in "ABCDFG":  # only B (resolution) and F (first review) are late now
        service.check_sla(desk.cases[label], SYSTEM)
    desk.project()
    desk.at(120)
    service.record_follow_up(a, "satisfied", SECRETS["follow_up"], agent())
    service.rate(a, 5, 4, 3, "after_sales", SECRETS["comment"], as_alice)
    desk.project()
    desk.at(121)
    service.resolve(b, "refunded", None, None, None, agent())
    desk.project()
    desk.at(122)
    service.rate(b, 2, 3, 1, "product", None, as_alice)
    desk.project()
    assert {label: desk.case(label).state for label in "ABCDEFG"} == {
        "A": "closed", "B": "resolved", "C": "resolved", "D": "closed", "E": "withdrawn",
        "F": "requested", "G": "under_review"}
    assert (f, g) == (desk.cases["F"], desk.cases["G"])
    return History(alice, bob, carol, orders)


@pytest.fixture
def desk(runtime: Runtime, clock: AdjustableClock) -> Desk:
    return Desk(runtime, clock)


@pytest.fixture
async def engine(runtime: Runtime) -> AsyncIterator[AsyncEngine]:
    yield runtime.async_engine
    await runtime.async_engine.dispose()


# -- the queue ------------------------------------------------------------------------------


def test_every_state_a_case_reaches_shows_in_the_queue(desk: Desk) -> None:
    build_history(desk)
    assert desk.seen == {
        "A": ["requested", "under_review", "approved", "awaiting_return", "received",
              "inspected", "resolved", "closed"],
        "B": ["requested", "approved", "resolved"],
        "C": ["requested", "under_review", "approved", "awaiting_return", "received",
              "inspected", "resolved"],
        "D": ["requested", "rejected", "closed"],
        "E": ["requested", "withdrawn"],
        "F": ["requested"],
        "G": ["requested", "under_review"],
    }
    assert {s for states in desk.seen.values() for s in states} == {s.value for s in CaseState}


def test_queue_rows_hold_the_facts_of_each_case(desk: Desk) -> None:
    history = build_history(desk)
    a, b, c, d, e, f, g = (desk.row(label) for label in "ABCDEFG")
    case_a = desk.case("A")

    assert (a["state"], a["assignee"], a["team"], a["tier"]) == ("closed", "agent-1",
                                                                  "general", "regular")
    assert (a["order_id"], a["member_id"]) == (str(history.orders["A"]), history.alice)
    assert a["lines"] == [{"line_id": "L1", "quantity": 1}]
    assert (a["reason"], a["preferred_outcome"], a["opened_by_role"]) == (
        "defective", "refunded", "member")
    assert a["case_number"] == case_a.case_number and a["case_number"].startswith("AS-260302-")
    assert aware(a["opened_at"]) == T0
    assert aware(a["first_review_due"]) == hours(24)
    assert aware(a["resolution_due"]) == hours(7 * 24)
    assert aware(a["first_reviewed_at"]) == hours(2)
    assert aware(a["first_response_at"]) == hours(3)  # the staff reply, not the member's
    assert (a["message_count"], aware(a["last_message_at"])) == (2, hours(3.5))
    assert (a["return_carrier"], a["return_tracking_number"], a["label_url"]) == (
        "sf", "RET-A", "https://labels.example/RET-A.pdf")
    assert a["return_shipment_id"] == str(shipment_id_for("sf", "RET-A"))
    assert (a["inspection_result"], a["disposition"]) == ("confirmed", "restock")
    assert (a["outcome"], aware(a["resolved_at"]), aware(a["closed_at"])) == (
        "refunded", hours(48), hours(49))
    refund_id = f"case:{case_a.id}"
    order = desk.runtime.orders.get(history.orders["A"])
    assert a["refund"] == {"refund_id": refund_id,
                           "amount": order.refunds[refund_id]["amount"], "currency": "CNY"}
    assert a["refund"]["amount"] == 1_000
    assert a["replacement_shipment_id"] is None
    assert a["next_due_at"] is None and not a["breached"]
    assert aware(a["follow_up_scheduled_for"]) == hours(120)
    assert a["follow_up_outcome"] == "satisfied"
    assert a["rating"] == {"attitude": 5, "ability": 4, "efficiency": 3,
                           "category": "after_sales", "at": hours(120).isoformat()}

    # Approved without an assignment; both deadlines missed.
    assert (b["state"], b["assignee"], aware(b["first_reviewed_at"])) == ("resolved", None,
                                                                          hours(30))
    assert (b["first_review_breached"], b["resolution_breached"], b["breached"]) == (
        True, True, True)
    assert b["refund"]["amount"] == 1_500 and b["return_shipment_id"] is None

    # Opened by an agent, reassigned to another team, parcel back by the carrier.
    assert (c["opened_by_role"], c["assignee"], c["team"]) == ("agent", "agent-3", "returns")
    assert (c["outcome"], c["refund"]) == ("exchanged", None)
    assert c["replacement_shipment_id"] == str(desk.case("C").resolution["shipment_id"])
    assert c["replacement_shipment_id"] is not None
    assert c["rating"]["category"] == "product"

    assert (d["state"], aware(d["closed_at"]), d["outcome"]) == ("closed", hours(31), None)
    assert (e["state"], e["next_due_at"], e["closed_at"]) == ("withdrawn", None, None)
    assert (e["member_id"], e["order_id"]) == (history.bob, str(history.orders["D"]))

    # Still open: F waits for its first review (missed), G for its resolution.
    assert (f["state"], f["assignee"], aware(f["next_due_at"])) == ("requested", None,
                                                                    hours(48 + 24))
    assert (f["first_review_breached"], f["resolution_breached"], f["breached"]) == (
        True, False, True)
    assert (g["state"], g["assignee"], aware(g["next_due_at"])) == ("under_review", "agent-2",
                                                                    hours(49 + 10 * 24))
    assert not g["breached"]


def test_next_due_moves_from_first_review_to_resolution_and_clears_at_the_end(
    desk: Desk,
) -> None:
    alice = desk.member("Alice")
    order = desk.delivered_order(alice)
    service = desk.runtime.after_sales
    desk.at(0)
    case_id = desk.open("A", order, "refund_only", "missing_item", [("L1", 1)],
                        meta(alice, Role.MEMBER))
    desk.project()
    row = desk.row("A")
    assert (row["state"], aware(row["next_due_at"])) == ("requested", hours(24))
    desk.at(1)
    service.post_message(case_id, "a question", [], None, meta(alice, Role.MEMBER))
    desk.project()
    assert aware(desk.row("A")["next_due_at"]) == hours(24)  # a message is no review
    desk.at(2)
    service.approve(case_id, None, agent())
    desk.project()
    row = desk.row("A")
    assert (row["state"], aware(row["next_due_at"])) == ("approved", hours(3 * 24))
    desk.at(3)
    service.resolve(case_id, "refunded", None, None, None, agent())
    desk.project()
    assert (desk.row("A")["state"], desk.row("A")["next_due_at"]) == ("resolved", None)


def test_reassignment_moves_the_case_to_the_new_team_everywhere(desk: Desk) -> None:
    build_history(desk)
    assert desk.row("C")["team"] == desk.kpi("C")["team"] == "returns"
    assigned = [t for t in desk.timeline("C") if t["kind"] == "assigned"]
    assert [t["detail"] for t in assigned] == [
        {"agent_id": "agent-2", "team": "general", "previous_agent": None},
        {"agent_id": "agent-3", "team": "returns", "previous_agent": "agent-2"},
    ]
    assert [(t["actor_id"], t["state"]) for t in assigned] == [
        ("agent-2", "under_review"), ("lead-1", "under_review")]


# -- timelines ------------------------------------------------------------------------------


def test_the_timeline_lists_every_event_in_order_with_public_facts(desk: Desk) -> None:
    history = build_history(desk)
    timeline = desk.timeline("A")
    assert [(t["version"], t["kind"], t["state"]) for t in timeline] == [
        (1, "opened", "requested"),
        (2, "assigned", "under_review"),
        (3, "message_posted", "under_review"),
        (4, "message_posted", "under_review"),
        (5, "approved", "approved"),
        (6, "return_label_issued", "awaiting_return"),
        (7, "return_received", "received"),
        (8, "inspected", "inspected"),
        (9, "resolved", "resolved"),
        (10, "closed", "closed"),
        (11, "follow_up_scheduled", "closed"),
        (12, "follow_up_recorded", "closed"),
        (13, "rated", "closed"),
    ]
    assert [aware(t["at"]) for t in timeline] == [
        hours(h) for h in (0, 2, 3, 3.5, 4, 5, 24, 25, 48, 49, 50, 120, 120)]
    actors = [(t["actor_id"], t["actor_role"]) for t in timeline]
    assert actors[0] == actors[3] == actors[12] == (history.alice, "member")
    assert actors[1] == actors[2] == actors[4] == ("agent-1", "agent")
    details = {t["kind"]: t["detail"] for t in timeline}
    case_a = desk.case("A")
    assert details["opened"] == {
        "case_number": case_a.case_number, "case_type": "return", "reason": "defective",
        "lines": [{"line_id": "L1", "quantity": 1}], "preferred_outcome": "refunded",
        "tier": "regular", "team": "general", "first_review_due": hours(24).isoformat(),
        "resolution_due": hours(168).isoformat()}
    assert details["assigned"] == {"agent_id": "agent-1", "team": "general",
                                   "previous_agent": None}
    assert [t["detail"] for t in timeline if t["kind"] == "message_posted"] == [
        {"message_id": "m1", "from_staff": True}, {"message_id": "m2", "from_staff": False}]
    assert details["approved"] == {"first_review": False}  # the assignment was the review
    assert details["return_label_issued"] == {
        "carrier": "sf", "tracking_number": "RET-A",
        "shipment_id": str(shipment_id_for("sf", "RET-A"))}
    assert details["return_received"] == {"via": "staff"}
    assert details["inspected"] == {"result": "confirmed", "disposition": "restock"}
    assert details["resolved"] == {"outcome": "refunded", "refund": desk.row("A")["refund"],
                                   "shipment_id": None}
    assert details["closed"] == {}
    assert details["follow_up_scheduled"] == {"scheduled_for": hours(120).isoformat()}
    assert details["follow_up_recorded"] == {"outcome": "satisfied"}
    assert details["rated"] == {"attitude": 5, "ability": 4, "efficiency": 3,
                                "category": "after_sales"}

    # The other kinds, from the other cases.
    b = {t["kind"]: t for t in desk.timeline("B")}
    assert [t["detail"] for t in desk.timeline("B") if t["kind"] == "sla_breached"] == [
        {"kind": "first_review", "due": hours(25).isoformat()},
        {"kind": "resolution", "due": hours(1 + 72).isoformat()},
    ]
    assert (b["sla_breached"]["actor_id"], b["sla_breached"]["actor_role"]) == ("scheduler",
                                                                                "system")
    assert b["approved"]["detail"] == {"first_review": True}
    c = {t["kind"]: t for t in desk.timeline("C")}
    assert c["return_received"]["detail"] == {"via": "carrier"}
    assert c["return_received"]["actor_id"] == "carrier:sf"
    assert c["resolved"]["detail"] == {"outcome": "exchanged", "refund": None,
                                       "shipment_id": desk.row("C")["replacement_shipment_id"]}
    d = {t["kind"]: t for t in desk.timeline("D")}
    assert d["rejected"]["detail"] == {"reason": REJECTION, "first_review": True}
    e = [(t["kind"], t["state"], t["detail"]) for t in desk.timeline("E")]
    assert e[1:] == [("withdrawn", "withdrawn", {})]


def test_no_free_text_reaches_any_after_sales_row(desk: Desk) -> None:
    build_history(desk)
    # The texts are in the events (the aggregates read them back): they were really written.
    assert desk.case("A").personal["reason_detail"] == SECRETS["detail"]
    assert [m["body"] for m in desk.case("A").messages] == [SECRETS["staff_message"],
                                                            SECRETS["member_message"]]
    assert desk.case("A").rating["comment"] == SECRETS["comment"]
    dumped = json.dumps(desk.snapshot(), default=str)
    assert REJECTION in dumped  # the agent's decision is kept
    for name, secret in SECRETS.items():
        assert secret not in dumped, name
    assert "SECRET-" not in dumped


# -- SLA, follow-ups and ratings in the KPI facts -------------------------------------------


def test_kpi_facts_measure_each_case_from_its_opening(desk: Desk) -> None:
    build_history(desk)
    facts = {label: desk.kpi(label) for label in "ABCDEFG"}
    assert {k: (f["first_review_seconds"], f["first_response_seconds"],
                f["resolution_seconds"]) for k, f in facts.items()} == {
        "A": (2 * HOUR, 3 * HOUR, 2 * DAY),
        "B": (29 * HOUR, None, 5 * DAY),
        "C": (1 * HOUR, 4 * HOUR, 1 * DAY),
        "D": (6 * HOUR, 1 * HOUR, None),
        "E": (None, None, None),
        "F": (None, None, None),
        "G": (1 * HOUR, None, None),
    }
    assert {k: (f["first_review_breached"], f["resolution_breached"])
            for k, f in facts.items() if f["first_review_breached"] or f["resolution_breached"]
            } == {"B": (True, True), "F": (True, False)}
    assert {k: (f["attitude"], f["ability"], f["efficiency"], f["category"])
            for k, f in facts.items() if f["category"]} == {
        "A": (5, 4, 3, "after_sales"), "B": (2, 3, 1, "product"), "C": (4, 4, 4, "product")}
    assert aware(facts["A"]["rated_at"]) == hours(120)
    assert {k: f["opened_on"] for k, f in facts.items()} == {
        "A": date(2026, 3, 2), "B": date(2026, 3, 2), "C": date(2026, 3, 3),
        "D": date(2026, 3, 3), "E": date(2026, 3, 3), "F": date(2026, 3, 4),
        "G": date(2026, 3, 4)}
    assert {k: f["team"] for k, f in facts.items() if f["team"] != "general"} == {
        "C": "returns"}


# -- queries --------------------------------------------------------------------------------


async def test_get_cases_timeline_and_position(desk: Desk, engine: AsyncEngine) -> None:
    build_history(desk)
    ids = [str(desk.cases["A"]), str(desk.cases["F"]), str(uuid.uuid4())]
    found = await get_cases(engine, ids)
    assert set(found) == set(ids[:2])
    assert found[ids[0]]["state"] == "closed"
    assert found[ids[0]]["opened_at"] == T0  # aware UTC on both backends
    assert found[ids[1]]["next_due_at"] == hours(72)
    assert await get_cases(engine, []) == {}

    timeline = await case_timeline(engine, ids[0])
    assert [t["version"] for t in timeline] == list(range(1, 14))
    assert timeline[-1]["kind"] == "rated" and timeline[-1]["at"] == hours(120)
    assert await case_timeline(engine, ids[2]) == []

    assert await latest_case_position(engine, ids[0]) == desk.row("A")["position"] > 0
    assert await latest_case_position(engine, ids[2]) == 0
    # The position is the store's position of the case's latest event.
    assert desk.row("A")["position"] == desk.timeline("A")[-1]["position"]


async def _all_pages(engine: AsyncEngine, where: CaseFilter, sort: CaseSort,
                     size: int) -> list[str]:
    """Every page in turn; checks has_next and total on the way."""
    ids: list[str] = []
    after: str | None = None
    totals = set()
    while True:
        page = await list_cases(engine, where, sort, size, after)
        totals.add(page.total)
        ids.extend(row["case_id"] for row in page.rows)
        assert len(page.rows) <= size
        if not page.has_next:
            break
        assert len(page.rows) == size
        after = case_cursor(page.rows[-1], sort)
    assert totals == {len(ids)}
    return ids


async def test_sort_orders_paginate_without_gaps_or_repeats(desk: Desk,
                                                            engine: AsyncEngine) -> None:
    history = build_history(desk)
    # Three more cases opened at the same instant: equal deadlines and opening times, so
    # page boundaries fall between ties.
    desk.at(144)
    as_carol = meta(history.carol, Role.MEMBER)
    ties = [desk.open(f"X{i}", history.orders["X"], "return", "changed_mind", [("L1", 1)],
                      as_carol) for i in range(3)]
    desk.project()
    label_of = {str(case_id): label for label, case_id in desk.cases.items()}
    tied = sorted(str(t) for t in ties)
    closed_ones = sorted(str(desk.cases[k]) for k in "ABCDE")

    urgency = [str(desk.cases["F"]), *tied, str(desk.cases["G"]), *closed_ones]
    by_opening = sorted(desk.cases.values(), key=lambda i: (desk.case(label_of[str(i)])
                                                           .created_on, str(i)))
    oldest = [str(i) for i in by_opening]
    expected = {CaseSort.URGENCY: urgency, CaseSort.OLDEST: oldest,
                CaseSort.NEWEST: list(reversed(oldest))}
    assert oldest[:2] == [str(desk.cases["A"]), str(desk.cases["B"])]
    for sort, order in expected.items():
        whole = await list_cases(engine, CaseFilter(), sort, 100, None)
        assert [r["case_id"] for r in whole.rows] == order, sort
        assert (whole.has_next, whole.total) == (False, 10)
        for size in (1, 2, 3, 4):
            assert await _all_pages(engine, CaseFilter(), sort, size) == order, (sort, size)

    # A filtered listing pages within the filter.
    open_cases = await _all_pages(engine, CaseFilter(open_only=True), CaseSort.URGENCY, 2)
    assert open_cases == urgency[:5]


async def test_filters_select_the_cases_they_name(desk: Desk, engine: AsyncEngine) -> None:
    history = build_history(desk)

    async def labels(**where: Any) -> set[str]:
        page = await list_cases(engine, CaseFilter(**where), CaseSort.NEWEST, 50, None)
        assert page.total == len(page.rows)
        label_of = {str(case_id): label for label, case_id in desk.cases.items()}
        return {label_of[row["case_id"]] for row in page.rows}

    assert await labels() == set("ABCDEFG")
    assert await labels(member_id=history.bob) == {"D", "E"}
    assert await labels(order_id=str(history.orders["C"])) == {"C", "F", "G"}
    assert await labels(open_only=True) == {"F", "G"}
    assert await labels(states=("resolved", "closed")) == {"A", "B", "C", "D"}
    assert await labels(states=()) == set()
    assert await labels(case_types=("exchange", "repair")) == {"C", "D", "G"}
    assert await labels(teams=("returns",)) == {"C"}
    assert await labels(teams=("general", "returns")) == set("ABCDEFG")
    assert await labels(tiers=("regular",)) == set("ABCDEFG")
    assert await labels(tiers=("gold",)) == set()
    assert await labels(assignee="agent-3") == {"C"}
    assert await labels(unassigned=True) == {"B", "D", "E", "F"}
    assert await labels(unassigned=False) == {"A", "C", "G"}
    assert await labels(breached=True) == {"B", "F"}
    assert await labels(breached=False) == {"A", "C", "D", "E", "G"}
    assert await labels(open_only=True, unassigned=True) == {"F"}
    assert await labels(member_id=history.alice, open_only=True, breached=False) == {"G"}


async def test_a_malformed_or_foreign_cursor_is_refused(desk: Desk,
                                                        engine: AsyncEngine) -> None:
    build_history(desk)
    page = await list_cases(engine, CaseFilter(), CaseSort.NEWEST, 2, None)
    newest_cursor = case_cursor(page.rows[-1], CaseSort.NEWEST)
    bad = ["not base64 at all!", encode_cursor("urgency", "x"),
           encode_cursor("urgency", "yesterday", "id"),
           encode_cursor("urgency", "2026-03-02T09:00:00", "id"),  # no offset
           encode_cursor("urgency", 5, "id"), encode_cursor("oldest", None, "id"),
           newest_cursor]
    for cursor in bad:
        with pytest.raises(InvalidCursorError):
            await list_cases(engine, CaseFilter(), CaseSort.URGENCY, 2, cursor)
    assert issubclass(InvalidCursorError, ValueError)
    # The cursor works for the order it was made for.
    following = await list_cases(engine, CaseFilter(), CaseSort.NEWEST, 2, newest_cursor)
    assert not {r["case_id"] for r in following.rows} & {r["case_id"] for r in page.rows}


# -- KPI queries ----------------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (
        5.0, 9.0, 10.0)
    # The rank is rounded up, never to the nearest or interpolated between values.
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 90) == 6.0
    assert percentile([10.0, 20.0], 50) == 10.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
    assert distribution([None, 3.0, 1.0, None, 2.0]) == Distribution(3, 2.0, 2.0, 3.0, 3.0)
    assert distribution([None]) == Distribution(0, None, None, None, None)


async def test_service_kpis_over_the_whole_range(desk: Desk, engine: AsyncEngine) -> None:
    build_history(desk)
    (overall,) = await service_kpis(engine, T0, hours(72), KpiGrouping.NONE)
    assert overall == KpiGroup(
        key=None, cases=7, resolved=3,
        # A 3h, C 4h, D 1h: nearest rank (interpolation would give p90 = 13680).
        first_response_seconds=Distribution(3, 9_600.0, 10_800.0, 14_400.0, 14_400.0),
        # A 2d, B 5d, C 1d.
        resolution_seconds=Distribution(3, 230_400.0, 172_800.0, 432_000.0, 432_000.0),
        sla_breach_rate=pytest.approx(2 / 7),  # type: ignore[arg-type]
        first_review_breach_rate=pytest.approx(2 / 7),  # type: ignore[arg-type]
        resolution_breach_rate=pytest.approx(1 / 7),  # type: ignore[arg-type]
        ratings=3,
        attitude=pytest.approx(11 / 3),  # type: ignore[arg-type]
        ability=pytest.approx(11 / 3),  # type: ignore[arg-type]
        efficiency=pytest.approx(8 / 3),  # type: ignore[arg-type]
        by_category=[CategorySatisfaction("after_sales", 1, 4.0),
                     CategorySatisfaction("product", 2, 3.0)],
    )

    # [start, end): a case opened exactly at the end is out, one at the start is in.
    (two_days,) = await service_kpis(engine, T0, hours(48), KpiGrouping.NONE)
    assert (two_days.cases, two_days.resolved) == (5, 3)
    (later,) = await service_kpis(engine, hours(0.5), hours(49), KpiGrouping.NONE)
    assert later.cases == 5  # B, C, D, E, F
    # Any time zone names the same instants.
    shanghai = T0.astimezone(timezone(timedelta(hours=8)))
    assert shanghai.hour == 17
    (same,) = await service_kpis(engine, shanghai, hours(72), KpiGrouping.NONE)
    assert same == overall

    (empty,) = await service_kpis(engine, hours(500), hours(600), KpiGrouping.NONE)
    assert empty == KpiGroup(None, 0, 0, Distribution(0, None, None, None, None),
                             Distribution(0, None, None, None, None), None, None, None, 0,
                             None, None, None, [])
    assert await service_kpis(engine, hours(500), hours(600), KpiGrouping.DAY) == []


async def test_service_kpis_by_day_and_by_team(desk: Desk, engine: AsyncEngine) -> None:
    build_history(desk)
    none = Distribution(0, None, None, None, None)
    by_day = await service_kpis(engine, T0, hours(72), KpiGrouping.DAY)
    assert by_day == [
        KpiGroup(
            key="2026-03-02", cases=2, resolved=2,  # A and B
            first_response_seconds=Distribution(1, 10_800.0, 10_800.0, 10_800.0, 10_800.0),
            resolution_seconds=Distribution(2, 302_400.0, 172_800.0, 432_000.0, 432_000.0),
            sla_breach_rate=0.5, first_review_breach_rate=0.5, resolution_breach_rate=0.5,
            ratings=2, attitude=3.5, ability=3.5, efficiency=2.0,
            by_category=[CategorySatisfaction("after_sales", 1, 4.0),
                         CategorySatisfaction("product", 1, 2.0)],
        ),
        KpiGroup(
            key="2026-03-03", cases=3, resolved=1,  # C, D, E
            first_response_seconds=Distribution(2, 9_000.0, 3_600.0, 14_400.0, 14_400.0),
            resolution_seconds=Distribution(1, 86_400.0, 86_400.0, 86_400.0, 86_400.0),
            sla_breach_rate=0.0, first_review_breach_rate=0.0, resolution_breach_rate=0.0,
            ratings=1, attitude=4.0, ability=4.0, efficiency=4.0,
            by_category=[CategorySatisfaction("product", 1, 4.0)],
        ),
        KpiGroup(
            key="2026-03-04", cases=2, resolved=0,  # F, G
            first_response_seconds=none, resolution_seconds=none,
            sla_breach_rate=0.5, first_review_breach_rate=0.5, resolution_breach_rate=0.0,
            ratings=0, attitude=None, ability=None, efficiency=None, by_category=[],
        ),
    ]

    by_team = await service_kpis(engine, T0, hours(72), KpiGrouping.TEAM)
    assert [g.key for g in by_team] == ["general", "returns"]
    general, returns = by_team
    assert (general.cases, general.resolved, general.ratings) == (6, 2, 2)
    assert general.first_response_seconds == Distribution(2, 7_200.0, 3_600.0, 10_800.0,
                                                          10_800.0)
    assert general.resolution_seconds == Distribution(2, 302_400.0, 172_800.0, 432_000.0,
                                                      432_000.0)
    assert general.sla_breach_rate == pytest.approx(2 / 6)
    assert general.resolution_breach_rate == pytest.approx(1 / 6)
    assert general.by_category == [CategorySatisfaction("after_sales", 1, 4.0),
                                   CategorySatisfaction("product", 1, 2.0)]
    assert returns == KpiGroup(
        key="returns", cases=1, resolved=1,
        first_response_seconds=Distribution(1, 14_400.0, 14_400.0, 14_400.0, 14_400.0),
        resolution_seconds=Distribution(1, 86_400.0, 86_400.0, 86_400.0, 86_400.0),
        sla_breach_rate=0.0, first_review_breach_rate=0.0, resolution_breach_rate=0.0,
        ratings=1, attitude=4.0, ability=4.0, efficiency=4.0,
        by_category=[CategorySatisfaction("product", 1, 4.0)],
    )

    # A narrower range: day 2 only.
    teams = await service_kpis(engine, hours(24), hours(48), KpiGrouping.TEAM)
    assert [(g.key, g.cases) for g in teams] == [("general", 2), ("returns", 1)]


# -- rebuild and schema ---------------------------------------------------------------------


def test_a_rebuild_reproduces_the_tables_exactly(desk: Desk) -> None:
    build_history(desk)
    live = desk.snapshot()
    assert all(live[table.name] for table in PROJECTED)
    assert len(live["case_queue"]) == len(live["service_kpis"]) == 7
    desk.runner.batch_size = 3  # a different batching must not matter
    for name in ("case_queue", "service_kpis"):
        assert desk.runner.rebuild(name) == desk.runner.head()
    assert desk.snapshot() == live
    # A second runner finds nothing left to do, and changes nothing.
    other = ReadModelRunner(
        desk.runtime.sync_engine, desk.runtime.app.recorder,  # type: ignore[arg-type]
        desk.runtime.app.mapper, [CaseQueueProjection(), ServiceKpisProjection()])
    assert other.run_once() == 0
    other.release_leases()
    assert desk.snapshot() == live
    desk.project()


def test_the_runtime_runs_both_projections(desk: Desk) -> None:
    """`all_projections()` wires both in: the runtime's own runner builds the same rows."""
    build_history(desk)
    live = desk.snapshot()
    runner = desk.runtime.runner
    assert {"case_queue", "service_kpis"} <= set(runner.projections)
    for name in ("case_queue", "service_kpis"):
        assert runner.rebuild(name) == runner.head()
    assert desk.snapshot() == live
    desk.project()


def _differences(runtime: Runtime, names: set[str]) -> list[Any]:
    with runtime.sync_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)

    def table_of(diff: Any) -> str | None:
        item = diff[0] if isinstance(diff, list) else diff  # modify_* come as lists
        kind = item[0]
        if kind in ("add_table", "remove_table"):
            return str(item[1].name)
        if kind in ("add_column", "remove_column") or kind.startswith("modify_"):
            return str(item[2])
        table = getattr(item[1], "table", None)  # indexes and constraints
        return str(table.name) if table is not None else None

    return [diff for diff in differences if table_of(diff) in names]


MY_TABLE_NAMES = {table.name for table in PROJECTED} | {shipment_tracking.name}


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    assert _differences(runtime, MY_TABLE_NAMES) == []
    with runtime.sync_engine.connect() as conn:
        columns = {c["name"]: c for c in inspect(conn).get_columns("shipment_tracking")}
    assert "outbound" in str(columns["direction"]["default"])


def test_the_migration_downgrades_and_upgrades_again(runtime: Runtime) -> None:
    config = alembic_config(runtime.settings.database)
    command.downgrade(config, "0003")
    with runtime.sync_engine.connect() as conn:
        inspector = inspect(conn)
        assert not {t.name for t in PROJECTED} & set(inspector.get_table_names())
        assert {"direction", "case_id"}.isdisjoint(
            c["name"] for c in inspector.get_columns("shipment_tracking"))
    command.upgrade(config, "head")
    assert _differences(runtime, MY_TABLE_NAMES) == []
