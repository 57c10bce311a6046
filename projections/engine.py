"""The projection engine: follows the event store's global order into read-model tables.

Exactly once, without distributed transactions: a batch's rows and the projection's new
tracking position are written in one database transaction, and that transaction starts
with a *conditional* update of the position (`WHERE position = <the one we read>`). If two
runners ever raced for the same batch, the second one's update matches no row and its whole
transaction is rolled back, so no event is applied twice; a crash before commit leaves the
old position, so no event is lost. A lease in the tracking row (leader election) keeps a
second runner idle instead of wasting work, but correctness never depends on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from eventsourcing.utils import get_topic
from sqlalchemy import Connection, Engine, Table, delete, insert, select, update

from projections.tables import projection_tracking

log = logging.getLogger("patron.projections")

Handler = Callable[[Connection, Any, int], None]


class Projection:
    """A read model: the tables it owns and a handler per event class it cares about."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    # At most this many notifications per transaction (None: the runner's batch size).
    # A projection whose events are heavy sets it, so that on SQLite its transactions do
    # not hold the database's single write lock long enough to stall commands.
    batch_limit: ClassVar[int | None] = None

    def handlers(self) -> dict[type, Handler]:
        raise NotImplementedError

    def __init__(self) -> None:
        self._by_topic = {get_topic(cls): handler for cls, handler in self.handlers().items()}

    def handles(self, topic: str) -> bool:
        return topic in self._by_topic

    def apply(self, conn: Connection, event: Any, position: int, topic: str) -> None:
        self._by_topic[topic](conn, event, position)


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    position: int
    head: int
    lag: int
    events_applied: int
    updated_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None


class LostRaceError(Exception):
    """Another runner moved the position first; this batch is rolled back untouched."""


class ProjectionRunner:
    def __init__(
        self,
        engine: Engine,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        lease_seconds: float = 15.0,
        listen_conninfo: str | None = None,
        owner: str | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.mapper = mapper
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=lease_seconds)
        self.listen_conninfo = listen_conninfo
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_commit = on_commit
        # Positions this runner has committed: lets waiters in this process skip the database.
        self.applied: dict[str, int] = {}
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self.ensure_tracking_rows()

    # -- bookkeeping ----------------------------------------------------------------------

    def ensure_tracking_rows(self) -> None:
        with self.engine.begin() as conn:
            known = set(conn.scalars(select(projection_tracking.c.name)))
            for name in self.projections:
                if name not in known:
                    conn.execute(
                        insert(projection_tracking).values(
                            name=name, position=0, events_applied=0
                        )
                    )

    def position(self, name: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    select(projection_tracking.c.position).where(
                        projection_tracking.c.name == name
                    )
                )
                or 0
            )

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def status(self) -> list[ProjectionStatus]:
        head = self.head()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(projection_tracking).where(
                    projection_tracking.c.name.in_(list(self.projections))
                )
            ).all()
        return [
            ProjectionStatus(
                name=row.name,
                position=row.position,
                head=head,
                lag=max(head - row.position, 0),
                events_applied=row.events_applied,
                updated_at=row.updated_at,
                last_error=row.last_error,
                last_error_at=row.last_error_at,
                lease_owner=row.lease_owner,
                lease_expires_at=row.lease_expires_at,
            )
            for row in sorted(rows, key=lambda r: r.name)
        ]

    def _acquire_lease(self, name: str, *, force: bool = False) -> bool:
        now = datetime.now(UTC)
        condition = projection_tracking.c.name == name
        if not force:
            condition = condition & (
                projection_tracking.c.lease_owner.is_(None)
                | (projection_tracking.c.lease_owner == self.owner)
                | (projection_tracking.c.lease_expires_at < now)
            )
        with self.engine.begin() as conn:
            result = conn.execute(
                update(projection_tracking)
                .where(condition)
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease)
            )
        return result.rowcount == 1

    def release_leases(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(projection_tracking)
                .where(projection_tracking.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def _record_error(self, name: str, error: BaseException) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(projection_tracking)
                .where(projection_tracking.c.name == name)
                .values(last_error=f"{type(error).__name__}: {error}"[:2000],
                        last_error_at=datetime.now(UTC))
            )

    # -- processing -----------------------------------------------------------------------

    def process_batch(self, name: str) -> int:
        """Apply the next batch of events for one projection; return how many were read."""
        projection = self.projections[name]
        start = self.position(name)
        notifications = self.recorder.select_notifications(
            start=start + 1, limit=min(self.batch_size, projection.batch_limit or self.batch_size)
        )
        if not notifications:
            return 0
        try:
            self._apply_batch(projection, start, notifications)
        except LostRaceError:
            log.info("projection %s: another runner applied position %s first", name, start)
            return 0
        self.applied[name] = notifications[-1].id
        if self.on_commit is not None:
            self.on_commit()
        return len(notifications)

    def _apply_batch(
        self, projection: Projection, start: int, notifications: Sequence[Notification]
    ) -> None:
        last = notifications[-1].id
        with self.engine.begin() as conn:
            # The conditional update comes first: it takes the row lock (PostgreSQL) or the
            # write lock (SQLite) before any read-model row is touched.
            moved = conn.execute(
                update(projection_tracking)
                .where(
                    (projection_tracking.c.name == projection.name)
                    & (projection_tracking.c.position == start)
                )
                .values(
                    position=last,
                    events_applied=projection_tracking.c.events_applied + len(notifications),
                    updated_at=datetime.now(UTC),
                    last_error=None,
                    last_error_at=None,
                )
            )
            if moved.rowcount != 1:
                raise LostRaceError()
            for notification in notifications:
                if projection.handles(notification.topic):
                    event = self.mapper.to_domain_event(notification)
                    projection.apply(conn, event, notification.id, notification.topic)

    def catch_up(self, name: str, progress: Callable[[int], None] | None = None) -> int:
        """Process until the projection has reached the head it saw; return events read."""
        total = 0
        while True:
            count = self.process_batch(name)
            if count == 0:
                return total
            total += count
            if progress:
                progress(count)

    def rebuild(self, name: str, progress: Callable[[int], None] | None = None) -> int:
        """Empty the projection's tables and replay it from position zero.

        Takes the lease by force, so a live runner elsewhere stands by; the reset itself is
        one transaction, so a concurrent batch of that runner is rolled back, not mixed in.
        """
        projection = self.projections[name]
        self._acquire_lease(name, force=True)
        with self.engine.begin() as conn:
            for table in reversed(projection.tables):
                conn.execute(delete(table))
            conn.execute(
                update(projection_tracking)
                .where(projection_tracking.c.name == name)
                .values(position=0, events_applied=0, last_error=None, last_error_at=None)
            )
        self.applied[name] = 0
        try:
            return self.catch_up(name, progress)
        finally:
            self.release_leases()

    def run_once(self) -> int:
        """One pass over every projection this runner leads; returns events read."""
        total = 0
        for name in self.projections:
            if not self._acquire_lease(name):
                continue
            try:
                total += self.catch_up(name)
            except Exception as error:  # a bad event must not kill the runner
                log.exception("projection %s failed; will retry", name)
                self._record_error(name, error)
        return total

    # -- background operation -------------------------------------------------------------

    def nudge(self) -> None:
        """Called after a local write so the runner does not wait for the next poll."""
        self._wakeup.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="projections", daemon=True)
        self._thread.start()
        if self.listen_conninfo:
            self._listener = threading.Thread(
                target=self._listen_for_notifications, name="projections-listen", daemon=True
            )
            self._listener.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wakeup.set()
        for thread in (self._thread, self._listener):
            if thread is not None:
                thread.join(timeout)
        self._thread = None
        self._listener = None
        try:
            self.release_leases()
        except Exception:  # the database may already be gone at shutdown
            log.warning("could not release projection leases", exc_info=True)

    def applied_everywhere(self) -> int | None:
        """The position every projection has reached by this runner's own hand, if known."""
        if not self.running or set(self.applied) != set(self.projections):
            return None
        return min(self.applied.values())

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_forever(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                self.run_once()
                backoff = self.poll_interval
            except Exception:
                log.exception("projection runner pass failed")
                backoff = min(backoff * 2, 30.0)
            self._wakeup.wait(backoff)
            self._wakeup.clear()

    def _listen_for_notifications(self) -> None:
        """PostgreSQL: wake on NOTIFY from the event store instead of busy polling."""
        import psycopg
        from psycopg import sql

        channel = getattr(self.recorder, "channel_name", "stored_events")
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.listen_conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wakeup.set()
            except Exception:
                log.warning("LISTEN connection lost; retrying", exc_info=True)
                time.sleep(1.0)
