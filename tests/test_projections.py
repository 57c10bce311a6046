"""The projection engine: exactly once, in order, rebuildable, and safe with two runners."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, select

from api.runtime import Runtime, all_projections
from domain.metadata import Channel, EventMetadata, Role
from projections.batch_work import BatchWork
from projections.engine import ReadModelRunner
from projections.member_profiles import MemberProfilesProjection
from projections.tables import member_profiles, member_tags, projection_tracking


def meta(role: Role = Role.MEMBER, channel: Channel = Channel.WEB, reason: str | None = None,
         actor: str = "tester") -> EventMetadata:
    return EventMetadata(actor, role, channel, "corr", None, uuid.uuid4().hex, reason)


ADMIN = meta(Role.ADMIN, Channel.ADMIN, "test fixture", actor="admin-1")


def populate(runtime: Runtime, members: int = 12) -> list[uuid.UUID]:
    """A history that touches every handler of member_profiles."""
    ids = []
    for index in range(members):
        channel = [Channel.WEB, Channel.APP, Channel.STORE][index % 3]
        result = runtime.members.register(
            {"name": f"Member {index}", "email": f"m{index}@example.com", "city": "Hangzhou"},
            meta(channel=channel),
        )
        member_id = result.aggregate_id
        ids.append(member_id)
        own = meta(channel=channel, actor=str(member_id))
        runtime.members.update_profile(member_id, {"city": f"City {index % 4}"}, own)
        runtime.members.set_preferences(
            member_id,
            {"categories": ["books"], "delivery": {"default_address": {
                "recipient": "R", "line1": f"{index} Road", "city": "C", "country": "CN"}}},
            own,
        )
        runtime.members.set_consent(member_id, "marketing", "email", index % 2 == 0, own)
        if index % 3 == 0:
            runtime.members.tag(member_id, "vip", ADMIN)
        if index % 4 == 0:
            runtime.members.tag(member_id, "wholesale", ADMIN)
            runtime.members.untag(member_id, "wholesale", ADMIN)
        if index % 5 == 0:
            runtime.members.set_status(member_id, "blocked", ADMIN)
        if index == 7:
            runtime.members.erase(member_id, ADMIN)
    return ids


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    with runtime.sync_engine.connect() as conn:
        return {
            "member_profiles": _rows(conn, member_profiles, "member_id"),
            "member_tags": _rows(conn, member_tags, "member_id", "tag"),
        }


def _rows(conn: Connection, table: Any, *order: str) -> list[tuple[Any, ...]]:
    query = select(table).order_by(*[table.c[name] for name in order])
    return [tuple(row) for row in conn.execute(query)]


def tracking(runtime: Runtime, name: str = "member_profiles") -> Any:
    with runtime.sync_engine.connect() as conn:
        return conn.execute(
            select(projection_tracking).where(projection_tracking.c.name == name)
        ).one()


def runner_with(runtime: Runtime, projection: MemberProfilesProjection, **kwargs: Any) -> (
    ReadModelRunner
):
    return ReadModelRunner(
        runtime.sync_engine, runtime.app.recorder, runtime.app.mapper, [projection],  # type: ignore[arg-type]
        **kwargs,
    )


def test_a_rebuild_reproduces_the_live_tables_exactly(runtime: Runtime) -> None:
    populate(runtime)
    runtime.runner.batch_size = 7  # live processing in many small batches
    runtime.runner.run_once()
    live = snapshot(runtime)
    assert len(live["member_profiles"]) == 12
    assert tracking(runtime).position == runtime.runner.head()

    runtime.runner.batch_size = 500
    replayed = runtime.runner.rebuild("member_profiles")
    assert replayed == runtime.runner.head()
    assert snapshot(runtime) == live


def test_events_are_applied_exactly_once_in_batches(runtime: Runtime) -> None:
    populate(runtime, members=3)
    runtime.runner.batch_size = 4
    # A batch is the next 4 events the read model handles (the event store's topic filter
    # skips the others), so it ends at the position of the 4th of them.
    projection = runtime.runner.projections["member_profiles"]
    handled = [n.id for n in runtime.app.recorder.select_notifications(1, 1000)
               if projection.handles(n.topic)]
    first = runtime.runner.process_batch("member_profiles")
    assert first == tracking(runtime).position == handled[3]
    runtime.runner.catch_up("member_profiles")
    row = tracking(runtime)
    assert row.position == row.events_applied == runtime.runner.head()
    assert runtime.runner.process_batch("member_profiles") == 0


class FailsOnce(MemberProfilesProjection):
    """Raises in the middle of a batch, the first time it sees the Nth tag event."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.seen = 0
        self.failed = False

    def on_tagged(self, conn: Connection, event: Any, position: int) -> None:
        self.seen += 1
        if not self.failed and self.seen == self.fail_at:
            self.failed = True
            raise RuntimeError("simulated crash in the middle of a batch")
        super().on_tagged(conn, event, position)


def test_a_projection_that_crashes_mid_batch_resumes_and_equals_a_clean_rebuild(
    runtime: Runtime,
) -> None:
    populate(runtime)
    faulty = FailsOnce(fail_at=4)
    runner = runner_with(runtime, faulty, batch_size=10)
    runner.run_once()
    crashed = tracking(runtime)
    assert faulty.failed
    # Where it failed, not the message (which may quote an event's personal data).
    assert crashed.last_error and "RuntimeError at tests/test_projections.py:" in crashed.last_error
    assert 0 < crashed.position < runtime.runner.head()  # earlier batches stayed committed
    with runtime.sync_engine.connect() as conn:  # nothing of the failed batch leaked
        applied_profiles = conn.execute(select(member_profiles.c.position)).scalars().all()
    assert max(applied_profiles) <= crashed.position

    runner.run_once()  # "restart": the same runner picks up from the committed position
    resumed = tracking(runtime)
    assert resumed.last_error is None
    assert resumed.position == resumed.events_applied == runtime.runner.head()
    after_crash = snapshot(runtime)

    runtime.runner.rebuild("member_profiles")
    assert snapshot(runtime) == after_crash


def test_a_crash_in_the_middle_of_a_flush_commits_nothing_of_the_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """member_profiles writes its batch with bulk upserts at the end: the process dies
    after the profiles and tags of a batch are written, before the commit."""
    populate(runtime)
    real_upsert_many = BatchWork._upsert_many
    crash = {"tag_flushes": 0, "failed": False}

    def upsert_then_crash(work: BatchWork, table: Any, rows: list[dict[str, Any]]) -> None:
        real_upsert_many(work, table, rows)
        if table is member_tags and not crash["failed"]:
            crash["tag_flushes"] += 1
            if crash["tag_flushes"] == 2:
                crash["failed"] = True
                raise RuntimeError("simulated crash in the middle of a flush")

    monkeypatch.setattr(BatchWork, "_upsert_many", upsert_then_crash)
    runner = runner_with(runtime, MemberProfilesProjection(), batch_size=6)
    runner.run_once()
    crashed = tracking(runtime)
    assert crash["failed"]
    assert crashed.last_error and "in upsert_then_crash" in crashed.last_error
    assert 0 < crashed.position < runtime.runner.head()
    with runtime.sync_engine.connect() as conn:
        applied = conn.execute(select(member_profiles.c.position)).scalars().all()
    assert max(applied) <= crashed.position  # nothing of the failed batch leaked

    runner.run_once()
    resumed = tracking(runtime)
    assert resumed.last_error is None
    assert resumed.position == resumed.events_applied == runtime.runner.head()
    after_crash = snapshot(runtime)
    runtime.runner.rebuild("member_profiles")
    assert snapshot(runtime) == after_crash


def test_two_runners_racing_never_apply_an_event_twice(runtime: Runtime) -> None:
    populate(runtime)
    runners = [runner_with(runtime, MemberProfilesProjection(), batch_size=3) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(runner: ReadModelRunner) -> None:
        try:
            barrier.wait()
            # catch_up bypasses the lease on purpose: only the conditional update protects us.
            runner.catch_up("member_profiles")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    row = tracking(runtime)
    assert row.position == row.events_applied == runtime.runner.head()
    raced = snapshot(runtime)
    runtime.runner.rebuild("member_profiles")
    assert snapshot(runtime) == raced


def test_only_the_lease_holder_processes(runtime: Runtime) -> None:
    populate(runtime, members=2)
    leader = runner_with(runtime, MemberProfilesProjection(), owner="leader")
    follower = runner_with(runtime, MemberProfilesProjection(), owner="follower")
    assert leader.run_once() == runtime.runner.head()
    before = runtime.runner.head()
    runtime.members.register({"name": "Late", "email": "late@example.com"}, meta())
    assert follower.run_once() == 0  # the leader's lease is still valid
    assert tracking(runtime).lease_owner == "leader"
    leader.release_leases()
    assert follower.run_once() == runtime.runner.head() - before


def test_status_reports_position_lag_and_errors(runtime: Runtime) -> None:
    populate(runtime, members=2)
    statuses = runtime.runner.status()
    assert [s.name for s in statuses] == sorted(p.name for p in all_projections())
    for status in statuses:
        assert status.position == 0 and status.lag == status.head == runtime.runner.head()
    runtime.runner.run_once()
    for status in runtime.runner.status():
        assert status.lag == 0 and status.last_error is None


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_the_background_runner_follows_new_events(runtime: Runtime, batch_size: int) -> None:
    runtime.runner.batch_size = batch_size
    runtime.start_projections()
    try:
        result = runtime.members.register({"name": "Bo", "email": "bo@example.com"}, meta())
        deadline = threading.Event()
        for _ in range(200):
            if tracking(runtime).position >= (result.position or 0):
                break
            deadline.wait(0.05)
        assert tracking(runtime).position == result.position
    finally:
        runtime.runner.stop()
    with runtime.sync_engine.connect() as conn:
        name = conn.scalar(select(member_profiles.c.name))
    assert name == "Bo"
