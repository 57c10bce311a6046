"""The event store: snapshots of long streams, encrypted at rest, and wake-ups on PostgreSQL."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import text

from api.personal_data import DataKeyStore
from api.runtime import Runtime
from api.service import PatronApplication
from domain.metadata import Channel, EventMetadata, Role


def meta(actor: str = "m") -> EventMetadata:
    return EventMetadata(actor, Role.MEMBER, Channel.APP, "c", None, uuid.uuid4().hex)


def test_long_streams_are_snapshotted_with_personal_data_encrypted(runtime: Runtime) -> None:
    interval = runtime.settings.snapshot_interval
    member_id = runtime.members.register(
        {"name": "Sana Ito", "email": "sana.ito@example.com"}, meta()
    ).aggregate_id
    for index in range(interval + 5):
        runtime.members.update_profile(member_id, {"city": f"City {index}"}, meta())

    assert runtime.app.snapshots is not None
    snapshots = list(runtime.app.snapshots.get(member_id))
    assert [s.originator_version for s in snapshots] == [interval]
    assert snapshots[0].state["personal"]["email"] == "sana.ito@example.com"  # decrypted on read

    with runtime.sync_engine.connect() as conn:
        table = runtime.app.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        raw = b"".join(bytes(s) for s in conn.execute(text(f"SELECT state FROM {table}")).scalars())
    assert raw and b"sana.ito@example.com" not in raw and b"Sana Ito" not in raw

    member = runtime.members.get(member_id)
    assert member.version == interval + 6
    assert member.profile["city"] == f"City {interval + 4}"
    assert member.personal == {"name": "Sana Ito", "email": "sana.ito@example.com"}


def test_snapshots_do_not_bring_back_erased_personal_data(runtime: Runtime) -> None:
    member_id = runtime.members.register(
        {"name": "Sana Ito", "email": "sana.ito@example.com"}, meta()
    ).aggregate_id
    for index in range(runtime.settings.snapshot_interval):
        runtime.members.update_profile(member_id, {"city": f"City {index}"}, meta())
    admin = EventMetadata("admin", Role.ADMIN, Channel.ADMIN, "c", None, "r", "GDPR")
    runtime.members.erase(member_id, admin)
    member = runtime.members.get(member_id)
    assert member.erased and member.personal is None
    at_snapshot = runtime.members.get(member_id, version=runtime.settings.snapshot_interval)
    assert at_snapshot.personal is None


# SQLite has no NOTIFY: its runner polls, and is nudged by writes in its own process.
@pytest.mark.parametrize("backend", ["postgres"])
def test_on_postgresql_the_runner_wakes_on_notify_rather_than_polling(
    runtime: Runtime, backend: str
) -> None:
    runtime.runner.poll_interval = 120.0  # polling alone would take two minutes
    runtime.start_projections()
    try:
        time.sleep(0.5)  # let the runner go idle and the listener subscribe
        # A writer in another "process": its writes cannot nudge this runner directly.
        other = PatronApplication(
            runtime.settings.database.eventsourcing_env(), DataKeyStore(runtime.sync_engine), 50
        )
        try:
            position = other.save(_new_member(runtime))[-1].notification.id
        finally:
            other.close()
        deadline = time.monotonic() + 10
        while runtime.runner.position("member_profiles") < position:
            assert time.monotonic() < deadline, "the runner was not woken by NOTIFY"
            time.sleep(0.05)
    finally:
        runtime.runner.stop()


def _new_member(runtime: Runtime) -> object:
    from domain.member import Member

    return Member.register({"name": "Far Away", "email": "far@example.com"},
                           runtime.clock.today(), meta())
