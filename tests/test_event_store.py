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
        runtime.members.update_profile(member_id, {"region": f"Region {index}"}, meta())

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
    assert member.profile["region"] == f"Region {interval + 4}"
    assert member.personal == {"name": "Sana Ito", "email": "sana.ito@example.com"}


@pytest.mark.parametrize("backend", ["postgres"])
def test_on_postgresql_a_load_is_one_statement_and_the_same_aggregate(
    runtime: Runtime, backend: str
) -> None:
    """The latest snapshot and the events after it come in one statement, and make the
    aggregate the library's two reads make (without a snapshot, too)."""
    from eventsourcing.application import Repository, project_aggregate

    from tests.benchmarks.common import counting_statements

    interval = runtime.settings.snapshot_interval
    long_id = runtime.members.register(
        {"name": "Sana Ito", "email": "sana.ito@example.com"}, meta()).aggregate_id
    for index in range(interval + 3):
        runtime.members.update_profile(long_id, {"region": f"Region {index}"}, meta())
    short_id = runtime.members.register(
        {"name": "Ken Mori", "email": "ken@example.com"}, meta()).aggregate_id
    repository = runtime.app.repository
    for member_id in (long_id, short_id):
        with counting_statements(runtime) as seen:
            member = repository.get(member_id)
        # (Besides the data-key look-up, which the tests' settings never cache.)
        event_store = [s for s in seen
                       if "member_data_keys" not in s and s not in ("BEGIN", "ROLLBACK")]
        assert [s.split()[0] for s in event_store] == ["WITH"], seen
        library = Repository._reconstruct_aggregate(
            repository, member_id, None, project_aggregate)
        assert vars(member) == vars(library)
    assert repository.get(long_id).profile["region"] == f"Region {interval + 2}"


def test_snapshots_do_not_bring_back_erased_personal_data(runtime: Runtime) -> None:
    member_id = runtime.members.register(
        {"name": "Sana Ito", "email": "sana.ito@example.com"}, meta()
    ).aggregate_id
    for index in range(runtime.settings.snapshot_interval):
        runtime.members.update_profile(member_id, {"region": f"Region {index}"}, meta())
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


# SQLite has no NOTIFY: the SQLite default is one process, whose runner wakes its waiters.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_waiter_in_another_process_is_woken_by_the_projection_commit(
    runtime: Runtime, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two Runtimes on one database: one runs the projections, the other only waits.

    The waiter's safety-net poll is set to a minute, so only the runner's NOTIFY can wake
    it in time; and its database look-ups are counted, to show it does not poll.
    """
    import asyncio

    import api.consistency as consistency

    monkeypatch.setattr(consistency, "NOTIFIED_POLL_SECONDS", 60.0)
    looks: list[int] = []
    original_position = consistency.projections_position

    async def counted_position(engine: object, names: list[str]) -> int:
        looks.append(1)
        return await original_position(engine, names)  # type: ignore[arg-type]

    monkeypatch.setattr(consistency, "projections_position", counted_position)

    runtime.start_projections()  # the "projection process"
    waiter = Runtime(runtime.settings)  # the "API process": its runner never starts
    try:
        assert waiter.notifications is not None
        assert waiter.notifications.ensure_started(wait=5.0)
        head = runtime.runner.head()
        # Wait for a position no event has yet: the first look cannot succeed.
        waiting = asyncio.create_task(
            waiter.wait_for_read_models(head + 1, ["member_profiles"]))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        looks_before_write = len(looks)
        written = waiter.members.register(
            {"name": "Far Away", "email": "waiter@example.com"}, meta("anonymous"))
        assert written.position is not None and written.position >= head + 1
        begun = time.monotonic()
        await asyncio.wait_for(waiting, 10.0)
        woken_after = time.monotonic() - begun
        assert woken_after < 2.0, f"woken after {woken_after:.2f}s: not by NOTIFY"
        # It looked at the database once or twice after the commit arrived (its own read
        # models' notification may come in more than one batch), and did not poll.
        assert len(looks) - looks_before_write <= 3, looks
        assert len(looks) <= 6, looks
        assert waiter.notifications.reached(["member_profiles"]) >= head + 1
        # In the waiter's own process, the GraphQL-side wait returns at once now.
        begun = time.monotonic()
        await waiter.wait_for_read_models(written.position, ["member_profiles"])
        assert time.monotonic() - begun < 1.0
    finally:
        runtime.runner.stop()
        await waiter.aclose()


@pytest.mark.parametrize("backend", ["postgres"])
def test_without_pre_ping_a_command_survives_connections_killed_while_idle(
    runtime: Runtime, backend: str
) -> None:
    """Pools no longer ping on checkout: connections a database restart killed fail their
    first statement, and the command still succeeds (the event store retries its reads and
    writes; a dead key-store connection makes the command run again once)."""
    import psycopg

    from api.runtime import postgres_conninfo

    member = runtime.members.register(
        {"name": "Kai Ota", "email": "kai@example.com"}, meta("anonymous")).aggregate_id
    runtime.members.update_profile(member, {"region": "Kansai"}, meta())  # pools in use
    with psycopg.connect(postgres_conninfo(runtime.settings.database), autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 2  # the event store's and SQLAlchemy's
    result = runtime.members.update_profile(member, {"region": "Hyogo"}, meta())
    assert runtime.members.get(member).profile["region"] == "Hyogo"
    assert result.position is not None


def test_a_command_runs_again_once_on_a_dead_key_store_connection(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    original = runtime.keys._read
    failures = [2]

    def dead_then_alive(member_id: str) -> tuple[bool, bytes | None]:
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("SELECT", {}, Exception("server closed the connection"),
                                   connection_invalidated=True)
        return original(member_id)

    monkeypatch.setattr(runtime.keys, "_read", dead_then_alive)
    failures[0] = 1
    result = runtime.members.register(
        {"name": "Ren Abe", "email": "ren@example.com"}, meta("anonymous"))
    assert runtime.members.get(result.aggregate_id).personal is not None
    failures[0] = 2  # dead twice in a row: not retried again, the error reaches the caller
    with pytest.raises(OperationalError):
        runtime.members.update_profile(result.aggregate_id, {"city": "Nara"}, meta())
