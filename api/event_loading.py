"""Loading an aggregate in one round trip on PostgreSQL: its latest snapshot and the events
after it, in one statement.

The library's repository asks the snapshot store for the latest snapshot, then the event
store for the events after it: two statements (and two pool checkouts) per aggregate, so
four of a profile update's reads. Here one statement returns both, read from one snapshot
of the database, and they are decoded by the same mapper (personal data decrypted under
the member's key, or None after erasure) and projected exactly as the library does.
A load at a given version, and SQLite, keep the library's path.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, cast

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier


class OneTripRepository(Repository[Any]):
    """A repository whose loads of the latest version cost one statement on PostgreSQL."""

    def _reconstruct_aggregate(
        self, aggregate_id: Any, version: int | None, projector_func: Any
    ) -> Any:
        snapshots = self.snapshot_store
        if version is not None or snapshots is None:
            return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
        events_recorder = self.event_store.recorder
        snapshots_recorder = snapshots.recorder
        if not (isinstance(events_recorder, PostgresAggregateRecorder)
                and isinstance(snapshots_recorder, PostgresAggregateRecorder)):
            return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
        stored_snapshots, stored_events = select_snapshot_and_events(
            events_recorder, snapshots_recorder, aggregate_id)
        aggregate = projector_func(None, chain(
            map(snapshots.mapper.to_domain_event, stored_snapshots),
            map(self.event_store.mapper.to_domain_event, stored_events),
        ))
        if aggregate is None:
            msg = f"Aggregate {aggregate_id!r} version {version!r} not found."
            raise AggregateNotFoundError(msg)
        return aggregate


@retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
def select_snapshot_and_events(
    events: PostgresAggregateRecorder, snapshots: PostgresAggregateRecorder, originator_id: Any
) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """The latest snapshot (if any) and the events after it, in one statement."""
    statement = SQL(
        "WITH s AS (SELECT originator_id, originator_version, topic, state FROM {s_schema}.{s}"
        " WHERE originator_id = %s ORDER BY originator_version DESC LIMIT 1) "
        "SELECT true AS is_snapshot, originator_id, originator_version, topic, state FROM s "
        "UNION ALL "
        "SELECT false, originator_id, originator_version, topic, state FROM {e_schema}.{e}"
        " WHERE originator_id = %s"
        " AND originator_version > COALESCE((SELECT originator_version FROM s), -1)"
    ).format(
        s_schema=Identifier(snapshots.datastore.schema),
        s=Identifier(snapshots.events_table_name),
        e_schema=Identifier(events.datastore.schema),
        e=Identifier(events.events_table_name),
    )
    with events.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (originator_id, originator_id), prepare=True)
        rows = cast(list[dict[str, Any]], curs.fetchall())
    found_snapshots: list[StoredEvent] = []
    found_events: list[StoredEvent] = []
    for row in rows:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        (found_snapshots if row["is_snapshot"] else found_events).append(stored)
    found_events.sort(key=lambda stored: stored.originator_version)
    return found_snapshots, found_events
