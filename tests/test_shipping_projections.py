"""Shipment tracking and notification projections mirror their events and rebuild exactly.

Members come from the member service (their consents and erasure are the real commands);
parcels are driven through the Shipment aggregate directly, with explicit carrier and
business times, so out-of-order and repeated carrier updates are precise. A runner of our
own projects in batches of five after every save, and each parcel's row is compared with
the aggregate it mirrors, so a handler that drifts from an `apply` fails where it drifts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from eventsourcing.domain import Aggregate
from sqlalchemy import Connection, Table, select, update

from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role
from domain.shipment import Shipment
from projections.engine import ReadModelRunner
from projections.notifications import NotificationsProjection
from projections.shipment_tracking import ShipmentTrackingProjection
from projections.shipping_tables import (
    notification_consents,
    notification_erasures,
    notification_outbox,
    notification_shipments,
    notification_webhooks,
    notifications,
    shipment_tracking,
)
from projections.tables import metadata, projection_tracking
from tests.shop import stocked

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ADDRESS = {"recipient": "Alice Liddell", "line1": "88 Secret Garden Lane", "city": "Hangzhou",
           "postal_code": "310000", "country": "CN"}
GIFT_MESSAGE = "Happy birthday, dear Alice"
PROJECTED = (shipment_tracking, notifications, notification_consents, notification_shipments,
             notification_erasures)
MY_TABLES = (*PROJECTED, notification_outbox, notification_webhooks)


def meta(actor: str = "system", role: Role = Role.SYSTEM, reason: str | None = None,
         channel: Channel = Channel.SYSTEM) -> EventMetadata:
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


SYSTEM = meta()
CARRIER = meta("carrier:sf")
AGENT = meta("agent-1", Role.AGENT, "complaint handled", Channel.ADMIN)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Rows on SQLite come back naive, the aggregate keeps ISO strings: compare instants."""
    if value is None or value == "":
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _dicts(conn: Connection, table: Table, **where: Any) -> list[dict[str, Any]]:
    query = select(table)
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    key = list(table.primary_key.columns)
    return [dict(row._mapping) for row in conn.execute(query.order_by(*key))]


def _rows(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key))]


def ship(member_id: str, at_time: datetime, *, method: str = "home_delivery",
         pickup_point: str | None = None, tracking: str | None = None,
         personal: dict[str, Any] | None = None, replaces: str | None = None,
         shipment_id: UUID | None = None) -> Shipment:
    return Shipment.create(
        shipment_id or uuid.uuid4(), str(uuid.uuid4()), member_id,
        [{"line_id": "L1", "quantity": 2}], method, "standard", False, pickup_point, None,
        at_time + timedelta(days=3), {"gift_wrap": True, "eco": False}, personal, "SF",
        tracking or f"SF{uuid.uuid4().hex[:10]}", at_time, SYSTEM, replaces=replaces,
    )


@dataclass
class World:
    """Parcels under test and a runner over the two shipping projections."""

    runtime: Runtime
    shipments: list[Shipment] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.runner = ReadModelRunner(
            self.runtime.sync_engine, self.runtime.app.recorder,  # type: ignore[arg-type]
            self.runtime.app.mapper,
            [ShipmentTrackingProjection(), NotificationsProjection()],
            batch_size=5,
        )

    def member(self, name: str, consents: tuple[str, ...] = ()) -> str:
        members = self.runtime.members
        member_id = members.register({"name": name, "email": f"{name.lower()}@example.com"},
                                     meta("anon", Role.ANONYMOUS, channel=Channel.WEB))
        for channel in consents:
            self.consent(str(member_id.aggregate_id), channel, True)
        self.project()
        return str(member_id.aggregate_id)

    def consent(self, member_id: str, channel: str, granted: bool) -> None:
        self.runtime.members.set_consent(UUID(member_id), "marketing", channel, granted,
                                         meta(member_id, Role.MEMBER, channel=Channel.APP))
        self.project()

    def commit(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            if isinstance(aggregate, Shipment) and aggregate not in self.shipments:
                self.shipments.append(aggregate)
        self.runtime.app.save(*aggregates)
        self.project()

    def project(self) -> None:
        self.runner.run_once()
        self.check_at_head()
        with self.runtime.sync_engine.connect() as conn:
            for shipment in self.shipments:
                check_shipment(conn, shipment)

    def check_at_head(self) -> None:
        head = self.runner.head()
        with self.runtime.sync_engine.connect() as conn:
            rows = conn.execute(select(projection_tracking).where(
                projection_tracking.c.name.in_(list(self.runner.projections)))).all()
        assert len(rows) == 2
        for row in rows:
            assert row.last_error is None, row.last_error
            assert row.position == head

    def snapshot(self, tables: tuple[Table, ...] = MY_TABLES) -> dict[str, Any]:
        with self.runtime.sync_engine.connect() as conn:
            return {table.name: _rows(conn, table) for table in tables}

    def notices(self, member_id: str) -> list[dict[str, Any]]:
        with self.runtime.sync_engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(notifications).where(notifications.c.member_id == member_id)
                .order_by(notifications.c.position))]

    def outbox(self, member_id: str) -> list[dict[str, Any]]:
        with self.runtime.sync_engine.connect() as conn:
            return _dicts(conn, notification_outbox, member_id=member_id)


def check_shipment(conn: Connection, shipment: Shipment) -> None:
    """The row equals the aggregate in everything the aggregate knows."""
    (row,) = _dicts(conn, shipment_tracking, shipment_id=str(shipment.id))
    assert (row["status"], row["method"], row["pickup_point"], row["window"]) == (
        shipment.status, shipment.method, shipment.pickup_point, shipment.window)
    assert row["timeline"] == shipment.timeline
    assert as_utc(row["status_at"]) == as_utc(shipment.status_at)
    assert as_utc(row["eta"]) == as_utc(shipment.eta)
    assert as_utc(row["promised_by"]) == as_utc(shipment.promised_by)
    assert {e["kind"]: e["detail"] for e in row["open_exceptions"]} == shipment.open_exceptions
    if shipment.open_exceptions:
        assert row["exception_state"] == "open"
    else:
        assert row["exception_state"] in ("none", "resolved")
    # The row also keeps what the member wrote (the aggregate keeps no personal text).
    rating = {k: v for k, v in (row["rating"] or {}).items() if k != "comment"}
    assert (rating or None) == shipment.rating
    assert row["rated"] is (shipment.rating is not None)
    if shipment.complaint is None:
        assert row["complaint"] is None
    else:
        assert {k: row["complaint"][k] for k in shipment.complaint} == shipment.complaint
    assert (row["replaces"], row["reshipped_as"]) == (shipment.replaces, shipment.reshipped_as)
    assert (row["order_id"], row["member_id"], row["items"]) == (
        shipment.order_id, shipment.member_id, shipment.items)
    assert (row["carrier"], row["tracking_number"]) == (shipment.carrier,
                                                        shipment.tracking_number)
    assert row["packaging"] == shipment.packaging
    assert row["version"] == shipment.version
    assert as_utc(row["created_at"]) == shipment.created_on


# -- the history ----------------------------------------------------------------------------


@dataclass
class History:
    alice: str
    bob: str
    carol: str
    home: Shipment
    pickup: Shipment
    replacement: Shipment
    returned: Shipment


def build_history(world: World) -> History:
    alice = world.member("Alice", consents=("sms", "email"))
    bob = world.member("Bob")
    carol = world.member("Carol", consents=("app_push",))

    # Alice's parcel: rescheduled before dispatch, carrier updates out of order and twice,
    # a failed attempt (an exception), resolved by a new window, delivered, rated, a
    # complaint answered two hours later.
    home = ship(alice, T0, personal={"address": ADDRESS, "gift_message": GIFT_MESSAGE})
    world.commit(home)
    window = {"start": at(2.5).isoformat(), "end": at(2.75).isoformat()}
    home.change_delivery_options("scheduled", None, window, {"address": ADDRESS}, at(0.1),
                                 SYSTEM)
    world.commit(home)
    assert home.record_tracking("u1", "picked_up", at(0.5), "Hangzhou hub", None, None, at(0.5),
                                CARRIER)
    assert home.record_tracking("u3", "in_transit", at(1.5), "Shanghai hub", None, None,
                                at(1.6), CARRIER)
    world.commit(home)
    # Older than u3, arriving after it: slotted into the timeline, the status stays.
    assert home.record_tracking("u2", "in_transit", at(1.0), "Jiaxing", "sorted", None,
                                at(1.7), CARRIER)
    assert not home.record_tracking("u1", "picked_up", at(0.5), "Hangzhou hub", None, None,
                                    at(1.7), CARRIER)  # the carrier's retry: recorded once
    world.commit(home)
    assert home.status == "in_transit"
    assert home.record_tracking("u4", "out_for_delivery", at(2.0), "Shanghai", None, at(2.6),
                                at(2.0), CARRIER)
    world.commit(home)
    assert home.record_tracking("u5", "delivery_attempt_failed", at(2.2), "Shanghai",
                                "nobody home", None, at(2.2), CARRIER)
    world.commit(home)
    assert home.open_exceptions == {"failed_attempt": "nobody home"}

    # Alice withdraws SMS consent: later notices reach her by email (and inbox) only.
    world.consent(alice, "sms", False)
    new_window = {"start": at(4.0).isoformat(), "end": at(4.25).isoformat()}
    home.resolve_exception("reschedule", None, new_window, at(4.25), at(2.3), meta(alice))
    world.commit(home)
    assert home.record_tracking("u6", "delivered", at(4.1), "Shanghai", "front door", None,
                                at(4.1), CARRIER)
    world.commit(home)
    # An older out-for-delivery scan arrives after the delivery: timeline only.
    assert home.record_tracking("u7", "out_for_delivery", at(4.05), "Shanghai", None, None,
                                at(4.2), CARRIER)
    world.commit(home)
    assert home.status == "delivered"
    home.rate(5, 4, 3, "Box a bit dented", at(4.5), meta(alice))
    home.file_complaint("The box was dented", at(5), meta(alice))
    world.commit(home)
    home.answer_complaint("Sorry! A voucher is on its way.", at(5) + timedelta(hours=2), AGENT)
    world.commit(home)

    # Bob's pickup parcel stalls: late and no movement; he asks for a new parcel.
    pickup = ship(bob, T0, method="pickup_point", pickup_point="PP-SH-01")
    world.commit(pickup)
    assert pickup.record_tracking("b1", "picked_up", at(0.2), None, None, None, at(0.2),
                                  CARRIER)
    world.commit(pickup)
    assert pickup.check_for_exceptions(at(4), timedelta(hours=48), SYSTEM) == 2
    world.commit(pickup)
    pickup.resolve_exception("reship", None, None, at(7), at(4.1), meta(bob))
    replacement = ship(bob, at(4.1), method="pickup_point", pickup_point="PP-SH-01",
                       tracking=f"{pickup.tracking_number}-R", replaces=str(pickup.id))
    pickup.mark_reshipped(str(replacement.id), at(4.1), meta(bob))
    world.commit(pickup, replacement)
    assert replacement.record_tracking("r1", "ready_for_pickup", at(5), "PP-SH-01", None,
                                       None, at(5), CARRIER)
    world.commit(replacement)
    assert replacement.record_tracking("r2", "collected", at(5.5), "PP-SH-01", None, None,
                                       at(5.5), CARRIER)
    world.commit(replacement)

    # Carol's parcel is delayed; she is erased; the parcel then goes back to the sender.
    returned = ship(carol, T0)
    world.commit(returned)
    assert returned.record_tracking("c1", "picked_up", at(0.3), None, None, None, at(0.3),
                                    CARRIER)
    assert returned.record_tracking("c2", "delayed", at(1), "Customs", None, at(6), at(1),
                                    CARRIER)
    world.commit(returned)
    world.runtime.members.erase(UUID(carol), meta("admin-1", Role.ADMIN, "GDPR request",
                                                  Channel.ADMIN))
    world.project()
    assert returned.record_tracking("c3", "returned_to_sender", at(8), "Customs", None, None,
                                    at(8), CARRIER)
    world.commit(returned)
    return History(alice, bob, carol, home, pickup, replacement, returned)


# -- tests ----------------------------------------------------------------------------------


def test_rows_mirror_each_parcel(runtime: Runtime) -> None:
    world = World(runtime)
    history = build_history(world)
    with runtime.sync_engine.connect() as conn:
        (home,) = _dicts(conn, shipment_tracking, shipment_id=str(history.home.id))
        (pickup,) = _dicts(conn, shipment_tracking, shipment_id=str(history.pickup.id))
        (replacement,) = _dicts(conn, shipment_tracking,
                                shipment_id=str(history.replacement.id))
        (returned,) = _dicts(conn, shipment_tracking, shipment_id=str(history.returned.id))

    # In the order things happened, each update once; the late scan did not undo delivery.
    assert [e["update_id"] for e in home["timeline"]] == ["u1", "u2", "u3", "u4", "u5", "u7",
                                                          "u6"]
    assert home["status"] == "delivered"
    assert as_utc(home["status_at"]) == as_utc(home["delivered_at"]) == at(4.1)
    assert as_utc(home["eta"]) == as_utc(home["promised_by"]) == at(4.25)
    assert home["method"] == "scheduled"
    assert home["window"] == {"start": at(4.0).isoformat(), "end": at(4.25).isoformat()}
    assert home["exception_state"] == "resolved" and home["open_exceptions"] == []
    assert [(r["resolution"], r["exceptions"]) for r in home["resolutions"]] == [
        ("reschedule", ["failed_attempt"])]
    assert home["rated"] and home["rating"]["speed"] == 5
    assert home["complaint"]["response_seconds"] == 7200
    assert home["complaint"]["answered_by"] == "agent-1"
    assert home["packaging"] == {"gift_wrap": True, "eco": False}

    assert pickup["reshipped_as"] == str(history.replacement.id)
    assert [(r["resolution"], r["exceptions"]) for r in pickup["resolutions"]] == [
        ("reship", ["late", "no_movement"])]
    assert replacement["replaces"] == str(history.pickup.id)
    assert replacement["status"] == "collected"
    assert as_utc(replacement["delivered_at"]) == at(5.5)
    assert not replacement["rated"]

    # A final status closes what was open, and the parcel's row outlives the erasure.
    assert returned["status"] == "returned_to_sender"
    assert returned["exception_state"] == "resolved" and returned["open_exceptions"] == []
    assert returned["delivered_at"] is None
    assert as_utc(returned["eta"]) == at(6)


def test_no_personal_data_reaches_a_read_model(runtime: Runtime) -> None:
    world = World(runtime)
    build_history(world)
    dumped = json.dumps(world.snapshot(), default=str)
    for secret in (ADDRESS["line1"], ADDRESS["recipient"], GIFT_MESSAGE, "alice@example.com",
                   "Alice"):
        assert secret not in dumped


def test_notices_go_to_the_channels_consented_at_the_time(runtime: Runtime) -> None:
    world = World(runtime)
    history = build_history(world)
    home_id = str(history.home.id)
    alice = world.notices(history.alice)
    both, email = ["inbox", "sms", "email"], ["inbox", "email"]
    assert [(n["topic"], n["kind"], n["channels"]) for n in alice] == [
        ("shipment.label_created", "milestone", both),
        ("shipment.picked_up", "milestone", both),
        ("shipment.out_for_delivery", "milestone", both),
        ("shipment.delivery_attempt_failed", "milestone", both),
        ("shipment.exception", "exception", both),
        # SMS consent withdrawn here.
        ("shipment.rescheduled", "exception", email),
        ("shipment.delivered", "milestone", email),
    ]
    assert all(n["shipment_id"] == home_id and n["order_id"] == history.home.order_id
               for n in alice)
    versions = [int(n["notification_id"].split(":")[1]) for n in alice]
    assert all(n["notification_id"].startswith(f"{home_id}:") for n in alice)
    assert versions == sorted(versions)
    assert as_utc(alice[-1]["created_at"]) == at(4.1)
    assert "Shanghai" in alice[-1]["body"] and "SF" in alice[-1]["body"]
    assert alice[4]["title"] == "Your parcel could not be delivered"
    assert "nobody home" in alice[4]["body"]

    outbox = world.outbox(history.alice)
    expected = {(n["notification_id"], channel) for n in alice for channel in n["channels"]
                if channel != "inbox"}
    assert {(o["notification_id"], o["channel"]) for o in outbox} == expected
    assert len(outbox) == 5 * 2 + 2
    for row in outbox:
        assert (row["status"], row["attempts"], row["sent_at"]) == ("pending", 0, None)
        assert as_utc(row["next_attempt_at"]) == as_utc(row["created_at"])
        notice = next(n for n in alice if n["notification_id"] == row["notification_id"])
        assert row["payload"]["topic"] == notice["topic"]
        assert row["payload"]["channel"] == row["channel"]
        assert (row["payload"]["title"], row["payload"]["body"]) == (notice["title"],
                                                                      notice["body"])

    # Bob consented to nothing: inbox only, nothing to send.
    bob = world.notices(history.bob)
    assert [n["topic"] for n in bob] == [
        "shipment.label_created", "shipment.picked_up", "shipment.exception",
        "shipment.exception", "shipment.reshipped",
        "shipment.label_created", "shipment.ready_for_pickup", "shipment.collected",
    ]
    assert {tuple(n["channels"]) for n in bob} == {("inbox",)}
    assert world.outbox(history.bob) == []
    with runtime.sync_engine.connect() as conn:
        consents = _dicts(conn, notification_consents, member_id=history.alice)
    assert [(c["channel"], c["granted"]) for c in consents] == [("email", True), ("sms", False)]


def test_erasure_removes_a_members_notices_and_stops_sending(runtime: Runtime) -> None:
    world = World(runtime)
    history = build_history(world)
    assert world.notices(history.carol) == []
    with runtime.sync_engine.connect() as conn:
        assert _dicts(conn, notification_consents, member_id=history.carol) == []
        assert _dicts(conn, notification_shipments, member_id=history.carol) == []
        (erasure,) = _dicts(conn, notification_erasures, member_id=history.carol)
    assert erasure["erased_at"] is not None
    # Queued before the erasure (label, pickup, delay, exception): never sent, unreadable.
    outbox = world.outbox(history.carol)
    assert len(outbox) == 4
    assert {(o["channel"], o["status"]) for o in outbox} == {("app_push", "cancelled")}
    assert all(o["payload"] == {} for o in outbox)
    # Nothing was queued for the return to sender, after the erasure.
    assert not any(o["notification_id"].endswith(f":{history.returned.version}")
                   for o in outbox)
    # The other members are untouched.
    assert len(world.notices(history.alice)) == 7


def test_a_rebuild_reproduces_the_tables_and_queues_nothing_again(runtime: Runtime) -> None:
    world = World(runtime)
    build_history(world)
    # A dispatcher sent some of the queue in the meantime: a rebuild must keep that record.
    with runtime.sync_engine.begin() as conn:
        conn.execute(update(notification_outbox)
                     .where(notification_outbox.c.channel == "sms")
                     .values(status="sent", attempts=1, sent_at=at(30)))
    live = world.snapshot()
    assert all(live[table.name] for table in PROJECTED)
    assert any(row for row in live["notification_outbox"])
    world.runner.batch_size = 3  # a different batching must not matter
    for name in ("shipment_tracking", "notifications"):
        assert world.runner.rebuild(name) == world.runner.head()
    assert world.snapshot() == live
    world.project()


def test_the_migration_creates_these_tables_as_declared(runtime: Runtime) -> None:
    names = {table.name for table in MY_TABLES}
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

    mine = [diff for diff in differences if table_of(diff) in names]
    assert mine == []


def test_parcels_created_through_the_service_are_projected(
    runtime: Runtime,
) -> None:
    """The real commands: an order paid and shipped with an address and a gift message."""
    world = World(runtime)
    member = world.member("Dora", consents=("email",))
    own = meta(member, Role.MEMBER, channel=Channel.APP)
    lines = [{"product_id": "p1", "sku": "S1", "name": "Mug", "quantity": 2,
              "unit_price": 3_000}]
    order = runtime.orders.place(UUID(member), stocked(runtime, lines), None, 0, "k1",
                                 own).aggregate_id
    runtime.orders.pay(order, "card", runtime.orders.get(order).total, None, "pay-1", own)
    staff = meta("agent-7", Role.AGENT, "packed", Channel.ADMIN)
    created = runtime.shipping.create(
        order, None, "home_delivery", "standard", None, None, ADDRESS,
        {"gift_wrap": True, "gift_message": GIFT_MESSAGE}, "sf", "SF-777", staff)
    shipment_id = created.aggregate_id
    now = runtime.clock.now()
    runtime.shipping.record_tracking(shipment_id, "s1", "picked_up", now, "Hangzhou", None,
                                     None, CARRIER)
    runtime.shipping.record_tracking(shipment_id, "s2", "delivered", now, "Hangzhou", None,
                                     None, CARRIER)
    world.shipments.append(runtime.shipping.get(shipment_id))
    world.project()
    with runtime.sync_engine.connect() as conn:
        (row,) = _dicts(conn, shipment_tracking, shipment_id=str(shipment_id))
    assert (row["carrier"], row["tracking_number"], row["status"]) == ("sf", "SF-777",
                                                                       "delivered")
    assert row["order_id"] == str(order) and row["member_id"] == member
    assert [n["topic"] for n in world.notices(member)] == [
        "shipment.label_created", "shipment.picked_up", "shipment.delivered"]
    assert {o["channel"] for o in world.outbox(member)} == {"email"}
    dumped = json.dumps(world.snapshot(), default=str)
    for secret in (ADDRESS["line1"], ADDRESS["recipient"], GIFT_MESSAGE):
        assert secret not in dumped


def test_pickup_switches_and_parcels_that_move_after_an_erasure(runtime: Runtime) -> None:
    world = World(runtime)
    dora = world.member("Dora", consents=("email",))
    # Not a marketing channel: the notifications' copy of consents ignores it.
    runtime.members.set_consent(UUID(dora), "personalisation", "all", True,
                                meta(dora, Role.MEMBER, channel=Channel.APP))
    parcel = ship(dora, T0)
    world.commit(parcel)
    assert parcel.record_tracking("d1", "out_for_delivery", at(1), None, None, None, at(1),
                                  CARRIER)
    assert parcel.record_tracking("d2", "delivery_attempt_failed", at(1.2), None, None, None,
                                  at(1.2), CARRIER)
    world.commit(parcel)
    parcel.resolve_exception("switch_to_pickup", "PP-HZ-01", None, at(3), at(1.3), meta(dora))
    world.commit(parcel)
    with runtime.sync_engine.connect() as conn:
        (row,) = _dicts(conn, shipment_tracking, shipment_id=str(parcel.id))
        assert [c["channel"] for c in _dicts(conn, notification_consents,
                                              member_id=dora)] == ["email"]
    assert (row["method"], row["pickup_point"], row["window"]) == ("pickup_point", "PP-HZ-01",
                                                                   None)
    notices = world.notices(dora)
    assert notices[-1]["topic"] == "shipment.switched_to_pickup"
    assert "PP-HZ-01" in notices[-1]["body"]

    runtime.members.erase(UUID(dora), meta("admin-1", Role.ADMIN, "GDPR request",
                                           Channel.ADMIN))
    world.project()
    # The parcel keeps moving, and a second one (paid before the erasure) is sent: the
    # tracking rows follow, but no notice is recorded or queued for an erased member.
    assert parcel.check_for_exceptions(at(4), timedelta(hours=48), SYSTEM) >= 1
    world.commit(parcel)
    parcel.resolve_exception("reschedule", None, {"start": at(5).isoformat(),
                                                  "end": at(5.2).isoformat()},
                             at(5.2), at(4.1), SYSTEM)
    late = ship(dora, at(4.2))
    world.commit(parcel, late)
    assert late.record_tracking("e1", "picked_up", at(4.3), None, None, None, at(4.3), CARRIER)
    world.commit(late)
    assert world.notices(dora) == []
    assert {o["status"] for o in world.outbox(dora)} == {"cancelled"}
    with runtime.sync_engine.connect() as conn:
        assert _dicts(conn, notification_shipments, member_id=dora) == []
        (row,) = _dicts(conn, shipment_tracking, shipment_id=str(late.id))
    assert row["status"] == "picked_up"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9999-12-31T23:59:59-23:59", datetime.max.replace(tzinfo=UTC)),
        ("0001-01-01T00:00:00+14:00", datetime.min.replace(tzinfo=UTC)),
        ("2200-12-31T23:59:59-13:59", datetime(2201, 1, 1, 13, 58, 59, tzinfo=UTC)),
    ],
)
def test_read_model_times_never_overflow(value: str, expected: datetime) -> None:
    """Issue 14: an `eta` at the end of the calendar with a -23:59 offset stopped the
    shipment_tracking projection with an OverflowError. The edges refuse such times now,
    and the projections' conversion clamps instead of failing on any stored value."""
    from projections.commerce_tables import iso, utc

    assert utc(value) == expected
    assert iso(datetime.fromisoformat(value)) == expected.isoformat()
