"""The projection spine: one pass follows the event store's global order into every read model.

One pass, not one per read model. The runner reads each batch of notifications once (only
the topics some read model handles, through the event store's own topic filter), decodes
each event once, and hands it to every read model that handles its topic. Read models at
the same position advance together, in one database transaction per batch; a read model
that lags (new, rebuilt, or recovering from a failure) catches up on its own cursor and
joins the others when it reaches their position.

Exactly once, without distributed transactions: a batch's rows and the new positions are
written in one transaction that starts with a *conditional* update of every read model's
position (`WHERE position = <the one it was at>`). If two runners ever raced for a batch,
the second one's update matches no row for that read model, so it applies nothing for it;
a crash before commit leaves the old positions, so no event is lost. A lease per read
model (leader election, renewed on a timer, not per batch) keeps a second runner idle
instead of wasting work, but correctness never depends on it.

A read model whose handler raises stops alone: the batch is rolled back, redone without
it, and the failing one is retried on its own cursor with exponential back-off (a log line
per step), so the others and the readers who do not read it carry on.

Our classes are `ReadModel` and `ReadModelRunner`, so they do not shadow the `eventsourcing`
library's own `ReadModel` and `ReadModelRunner`.
"""

from __future__ import annotations

import logging
import os
import re
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

from projections.batch_work import BatchWork
from projections.redaction import describe
from projections.tables import projection_skips, projection_tracking

log = logging.getLogger("patron.projections")

# A handler gets the connection, or a batched read model's `BatchWork`.
Handler = Callable[[Any, Any, int], None]

# How long a failing read model waits before its next attempt: doubles from the first
# step up to the last, and resets once it applies a batch again.
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0


class ReadModel:
    """A read model: the tables it owns and a handler per event class it cares about."""

    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    # At most this many notifications per transaction (None: the runner's batch size).
    # A read model whose events are heavy sets it, so that on SQLite its transactions do
    # not hold the database's single write lock long enough to stall commands.
    batch_limit: ClassVar[int | None] = None
    # Batched read models get a `BatchWork` (see projections/batch_work.py) instead of the
    # connection: `prepare` prefetches the batch's rows, handlers change them in memory,
    # and the runner flushes them with bulk statements before the batch commits.
    batched: ClassVar[bool] = False

    def handlers(self) -> dict[type, Handler]:
        raise NotImplementedError

    def prepare(self, work: BatchWork, events: Sequence[tuple[Any, int]]) -> None:
        """Batched read models: prefetch the rows these (event, position) pairs need."""

    def data_key_owner(self, notification: Notification) -> str | None:
        """The member whose data key decoding this notification needs, if it may carry
        personal data: the runner fetches the keys of a whole batch in one query."""
        return None

    def __init__(self) -> None:
        self._by_topic = {get_topic(cls): handler for cls, handler in self.handlers().items()}

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._by_topic)

    def handles(self, topic: str) -> bool:
        return topic in self._by_topic

    def apply(self, conn: Connection, event: Any, position: int, topic: str) -> None:
        self._by_topic[topic](conn, event, position)


def _cut_for_batch_limits(
    group: Sequence[ReadModel], notifications: Sequence[Notification]
) -> int | None:
    """Where to end a shared batch so no read model gets more of its own events than its
    `batch_limit`; None if the whole batch fits. Others are not held to the limit of a
    heavy read model unless its events are actually in the batch."""
    limited = [p for p in group if p.batch_limit]
    if not limited:
        return None
    counts = dict.fromkeys((p.name for p in limited), 0)
    for index, notification in enumerate(notifications):
        for projection in limited:
            if projection.handles(notification.topic):
                counts[projection.name] += 1
                if counts[projection.name] > (projection.batch_limit or 0):
                    return index
    return None


def failing_position(last_error: str | None) -> int | None:
    """The event position a recorded error names ("at position N: ..."), if any."""
    match = re.match(r"at position (\d+):", last_error or "")
    return int(match.group(1)) if match else None


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
    # Events an operator told this read model to pass over: (position, reason, by, at).
    skipped: tuple[tuple[int, str, str, datetime], ...] = ()


class SkipRefusedError(ValueError):
    """A skip that would not make sense (unknown read model, event already applied...)."""


class LostRaceError(Exception):
    """Another runner moved the position first; this batch is rolled back untouched."""


class ReadModelFailedError(Exception):
    """A read model's handler raised on the event at `position`."""

    def __init__(self, name: str, position: int, error: BaseException) -> None:
        super().__init__(f"read model {name} failed at position {position}")
        self.name = name
        self.position = position
        self.error = error


@dataclass
class _Failing:
    attempts: int
    position: int
    retry_at: float


class ReadModelRunner:
    def __init__(
        self,
        engine: Engine,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        projections: Sequence[ReadModel],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        lease_seconds: float = 15.0,
        listen_conninfo: str | None = None,
        owner: str | None = None,
        on_commit: Callable[[], None] | None = None,
        announce: Callable[[Connection, Sequence[str], int], None] | None = None,
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
        # Called inside each batch's transaction (PostgreSQL: a NOTIFY, sent on commit).
        self.announce = announce
        # Positions this runner knows each read model has reached (it committed them, or
        # read them while leading): lets waiters in this process skip the database.
        self.applied: dict[str, int] = {}
        # Read models this runner leads, and when their leases were last renewed.
        self._led: set[str] = set()
        self._leases_renewed = 0.0
        self._failing: dict[str, _Failing] = {}
        self._skips: dict[str, frozenset[int]] = {}
        self._skips_loaded = False
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
        return self._positions([name])[name]

    def _positions(self, names: Sequence[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(projection_tracking.c.name, projection_tracking.c.position).where(
                    projection_tracking.c.name.in_(list(names))
                )
            ).all()
        found = {row.name: int(row.position or 0) for row in rows}
        return {name: found.get(name, 0) for name in names}

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
            skips = conn.execute(
                select(projection_skips).order_by(projection_skips.c.position)
            ).all()
        skipped: dict[str, list[tuple[int, str, str, datetime]]] = {}
        for skip in skips:
            skipped.setdefault(skip.name, []).append(
                (skip.position, skip.reason, skip.skipped_by, skip.skipped_at)
            )
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
                skipped=tuple(skipped.get(row.name, ())),
            )
            for row in sorted(rows, key=lambda r: r.name)
        ]

    def _acquire_lease(self, name: str, *, force: bool = False) -> bool:
        return name in self._take_leases([name], force=force)

    def _take_leases(self, names: Sequence[str], *, force: bool = False) -> set[str]:
        """Take or renew the leases of `names` in one statement; return those now held."""
        now = datetime.now(UTC)
        condition = projection_tracking.c.name.in_(list(names))
        if not force:
            condition = condition & (
                projection_tracking.c.lease_owner.is_(None)
                | (projection_tracking.c.lease_owner == self.owner)
                | (projection_tracking.c.lease_expires_at < now)
            )
        with self.engine.begin() as conn:
            held = conn.execute(
                update(projection_tracking)
                .where(condition)
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease)
                .returning(projection_tracking.c.name)
            ).scalars().all()
        return set(held)

    def _leases(self) -> set[str]:
        """The read models this runner leads, renewing the leases on a timer.

        Held leases are renewed once a third of their term has passed, not per batch;
        leases held by nobody (or by a runner that let them expire) are tried each pass,
        which costs a statement only while this runner stands by.
        """
        now = time.monotonic()
        if now - self._leases_renewed >= self.lease.total_seconds() / 3:
            held = self._take_leases(list(self.projections))
            for name in held - self._led:
                self.applied.pop(name, None)  # someone else may have moved it meanwhile
            self._led = held
            self._leases_renewed = now
        elif len(self._led) < len(self.projections):
            gained = self._take_leases([n for n in self.projections if n not in self._led])
            for name in gained:
                self.applied.pop(name, None)
            self._led |= gained
        return self._led

    def release_leases(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(projection_tracking)
                .where(projection_tracking.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            )
        self._led = set()
        self._leases_renewed = 0.0

    def _record_error(self, name: str, position: int, error: BaseException) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(projection_tracking)
                .where(projection_tracking.c.name == name)
                .values(
                    last_error=f"at position {position}: {describe(error)}"[:2000],
                    last_error_at=datetime.now(UTC),
                )
            )

    def _failed(self, failure: ReadModelFailedError) -> None:
        """Record the failure and schedule the next attempt (exponential back-off)."""
        previous = self._failing.get(failure.name)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        self._failing[failure.name] = _Failing(
            attempts, failure.position, time.monotonic() + delay
        )
        # Never the error's message: it may quote an event's (personal) data.
        log.error(
            "projection %s failed at position %s (attempt %s, %s); others carry on, "
            "retrying it in %.0fs",
            failure.name, failure.position, attempts, describe(failure.error), delay,
        )
        try:
            self._record_error(failure.name, failure.position, failure.error)
        except Exception:
            log.warning("could not record the failure of projection %s", failure.name,
                        exc_info=True)
        if self.on_commit is not None:  # waiters stop waiting for the failing read model
            self.on_commit()

    def skip(self, name: str, position: int, reason: str, by: str) -> str:
        """Record that read model `name` passes over the event at `position`; return its topic.

        Only an event it has not applied yet, that exists, and that it handles; the reason
        is kept and shown in status. The runner picks the skip up on its next attempt.
        """
        if name not in self.projections:
            raise SkipRefusedError(f"unknown projection {name!r}")
        if not reason.strip():
            raise SkipRefusedError("a reason is required")
        current = self.position(name)
        if position <= current:
            raise SkipRefusedError(
                f"{name} has already passed position {position} (it is at {current})")
        found = self.recorder.select_notifications(start=position, limit=1, stop=position)
        if not found:
            raise SkipRefusedError(f"there is no event at position {position}")
        topic = found[0].topic
        if not self.projections[name].handles(topic):
            raise SkipRefusedError(f"{name} does not handle the event at {position} ({topic})")
        with self.engine.begin() as conn:
            exists = conn.scalar(select(projection_skips.c.position).where(
                (projection_skips.c.name == name) & (projection_skips.c.position == position)))
            if exists is None:
                conn.execute(insert(projection_skips).values(
                    name=name, position=position, topic=topic, reason=reason.strip()[:2000],
                    skipped_by=by[:200], skipped_at=datetime.now(UTC)))
        log.warning("projection %s will skip the event at position %s (%s) by %s",
                    name, position, topic, by)
        self._skips_loaded = False
        failing = self._failing.get(name)
        if failing is not None:
            failing.retry_at = 0.0  # retry now
        self._wakeup.set()
        return topic

    def _skips_for(self, names: Sequence[str]) -> dict[str, frozenset[int]]:
        """Recorded skips; reloaded when something may have changed (a failure, a skip)."""
        if not self._skips_loaded or any(name in self._failing for name in names):
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(projection_skips.c.name, projection_skips.c.position)
                ).all()
            skips: dict[str, set[int]] = {}
            for row in rows:
                skips.setdefault(row.name, set()).add(int(row.position))
            self._skips = {name: frozenset(found) for name, found in skips.items()}
            self._skips_loaded = True
        return {name: self._skips.get(name, frozenset()) for name in names}

    def failing(self) -> dict[str, int]:
        """Read models this runner is backing off from, with the position that failed."""
        return {name: state.position for name, state in self._failing.items()}

    # -- processing -----------------------------------------------------------------------

    def _advance(
        self, names: Sequence[str], start: int, stop: int, *, isolate: bool = True
    ) -> dict[str, int]:
        """Move the read models at `start` towards `stop` by one batch, together.

        Returns the new position of each read model that moved. A read model whose handler
        raises is taken out and the batch redone for the rest (`isolate`), or the failure
        is raised (`isolate=False`, for explicit catch-up and rebuilds).
        """
        group = [self.projections[name] for name in names]
        limit = self.batch_size
        topics = sorted(set().union(*(p.topics for p in group)))
        notifications = list(
            self.recorder.select_notifications(
                start=start + 1, limit=limit, stop=stop, topics=topics
            )
            if topics
            else []
        )
        # A full batch ends at its last event; a short one has seen every event up to
        # `stop` that any of these read models handles, so they all move past `stop`.
        end = notifications[-1].id if len(notifications) == limit else stop
        cut = _cut_for_batch_limits(group, notifications)
        if cut is not None:
            notifications = notifications[:cut]
            end = notifications[-1].id
        while group:
            try:
                moved = self._apply_batch(group, start, end, notifications)
            except ReadModelFailedError as failure:
                if not isolate:
                    raise
                self._failed(failure)
                group = [p for p in group if p.name != failure.name]
                continue
            for name in moved:
                self.applied[name] = end
                if self._failing.pop(name, None) is not None:
                    log.info("projection %s recovered at position %s", name, end)
            if moved and self.on_commit is not None:
                self.on_commit()
            return {name: end for name in moved}
        return {}

    def _apply_batch(
        self,
        group: Sequence[ReadModel],
        start: int,
        end: int,
        notifications: Sequence[Notification],
    ) -> list[str]:
        names = [p.name for p in group]
        with self.engine.begin() as conn:
            # The conditional update comes first: it takes the row locks (PostgreSQL) or
            # the write lock (SQLite) before any read-model row is touched. Each row moves
            # only if it is still where this runner found it.
            moved = set(
                conn.execute(
                    update(projection_tracking)
                    .where(
                        projection_tracking.c.name.in_(names)
                        & (projection_tracking.c.position == start)
                    )
                    .values(
                        position=end,
                        events_applied=projection_tracking.c.events_applied + (end - start),
                        updated_at=datetime.now(UTC),
                        last_error=None,
                        last_error_at=None,
                    )
                    .returning(projection_tracking.c.name)
                ).scalars()
            )
            if moved and self.announce is not None:
                self.announce(conn, sorted(moved), end)
            for name in set(names) - moved:
                log.info("projection %s: another runner applied position %s first", name, start)
                self.applied.pop(name, None)
            targets = [p for p in group if p.name in moved]
            skips = self._skips_for([p.name for p in targets])
            pending: list[tuple[Notification, list[ReadModel]]] = []
            for notification in notifications:
                handlers = [p for p in targets if p.handles(notification.topic)
                            and notification.id not in skips[p.name]]
                if handlers:  # an event no read model here handles is never decoded
                    pending.append((notification, handlers))
            self._prefetch_data_keys(pending)
            decoded = [
                (notification, self.mapper.to_domain_event(notification), handlers)
                for notification, handlers in pending  # decoded once for all
            ]
            works = self._prepare_works(conn, targets, decoded)
            for notification, event, handlers in decoded:
                for projection in handlers:
                    try:
                        projection.apply(works.get(projection.name, conn), event,
                                         notification.id, notification.topic)
                    except Exception as error:
                        raise ReadModelFailedError(
                            projection.name, notification.id, error
                        ) from error
            # Batched read models write what they changed, still in this transaction.
            for name, work in works.items():
                try:
                    work.flush()
                except Exception as error:
                    last = max((n.id for n, _e, h in decoded
                                if any(p.name == name for p in h)), default=end)
                    raise ReadModelFailedError(name, last, error) from error
        return [name for name in names if name in moved]

    def _prefetch_data_keys(
        self, pending: Sequence[tuple[Notification, Sequence[ReadModel]]]
    ) -> None:
        """Fetch the data keys the batch's decoding needs in one query, not one per member."""
        prefetch = getattr(self.mapper, "prefetch_keys", None)
        if prefetch is None:
            return
        owners = {
            owner
            for notification, handlers in pending
            for projection in handlers
            if (owner := projection.data_key_owner(notification)) is not None
        }
        if owners:
            prefetch(owners)

    @staticmethod
    def _prepare_works(
        conn: Connection,
        targets: Sequence[ReadModel],
        decoded: Sequence[tuple[Notification, Any, Sequence[ReadModel]]],
    ) -> dict[str, BatchWork]:
        """A unit of work per batched read model, its rows prefetched for the batch."""
        works: dict[str, BatchWork] = {}
        for projection in targets:
            if not projection.batched:
                continue
            events = [(event, notification.id) for notification, event, handlers in decoded
                      if projection in handlers]
            if not events:
                continue
            work = BatchWork(conn, projection.tables)
            try:
                projection.prepare(work, events)
            except Exception as error:
                raise ReadModelFailedError(projection.name, events[0][1], error) from error
            works[projection.name] = work
        return works

    def process_batch(self, name: str) -> int:
        """Apply the next batch of one read model on its own cursor; return positions passed.

        Errors propagate (after being recorded), so an operator's catch-up or rebuild
        stops at the failing event.
        """
        start = self.position(name)
        head = self.head()
        if head <= start:
            return 0
        try:
            moved = self._advance([name], start, head, isolate=False)
        except ReadModelFailedError as failure:
            self._record_error(failure.name, failure.position, failure.error)
            raise failure.error from None
        return moved[name] - start if name in moved else 0

    def catch_up(self, name: str, progress: Callable[[int], None] | None = None) -> int:
        """Process until the read model has reached the head it saw; return positions passed."""
        total = 0
        while True:
            count = self.process_batch(name)
            if count == 0:
                return total
            total += count
            if progress:
                progress(count)

    def rebuild(self, name: str, progress: Callable[[int], None] | None = None) -> int:
        """Empty the read model's tables and replay it from position zero.

        Takes the lease by force, so a live runner elsewhere stands by; the reset itself is
        one transaction, so a concurrent batch of that runner is rolled back, not mixed in.
        Once rebuilt, the read model is at the others' position and joins the shared pass.
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
        self._failing.pop(name, None)
        try:
            return self.catch_up(name, progress)
        finally:
            self.release_leases()

    def run_once(self, *, respect_backoff: bool = False) -> int:
        """Passes over every read model this runner leads until they reach the head.

        Returns how far the pass moved the read models (the largest advance, in event-store
        positions). A read model that fails is left out for the rest of this call; the
        background loop (`respect_backoff`) also waits out its back-off before retrying.
        """
        advanced: dict[str, int] = {}
        failed_now: set[str] = set()
        while True:
            led = self._leases()
            now = time.monotonic()
            active = [
                name for name in self.projections
                if name in led and name not in failed_now
                and not (respect_backoff and name in self._failing
                         and self._failing[name].retry_at > now)
            ]
            if not active:
                break
            attempts = {name: state.attempts for name, state in self._failing.items()}
            moved = self._pass(active)
            failed_now |= {
                name for name, state in self._failing.items()
                if state.attempts != attempts.get(name)
            }
            if not moved:
                break
            for name, delta in moved.items():
                advanced[name] = advanced.get(name, 0) + delta
        return max(advanced.values(), default=0)

    def _pass(self, names: Sequence[str]) -> dict[str, int]:
        """One batch for every group of read models at the same position; returns advances."""
        head = self.head()
        unknown = [name for name in names if name not in self.applied]
        if unknown:
            self.applied.update(self._positions(unknown))
        groups: dict[int, list[str]] = {}
        for name in names:
            groups.setdefault(self.applied[name], []).append(name)
        starts = sorted(groups)
        moved: dict[str, int] = {}
        for index, start in enumerate(starts):
            if start >= head:
                continue
            # A lagging group stops at the next group's position, where it joins it for
            # the rest of this pass.
            following = starts[index + 1] if index + 1 < len(starts) else None
            stop = min(following, head) if following is not None else head
            for name, end in self._advance(groups[start], start, stop).items():
                moved[name] = moved.get(name, 0) + end - start
                if end == following:
                    groups[following].append(name)
        return moved

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

    def reached(self, names: Sequence[str]) -> int | None:
        """The position all of `names` have reached by this runner's hand, if it knows.

        None when this runner is not running or does not lead one of them: then only the
        database knows (another process runs it).
        """
        if not self.running:
            return None
        led = self._led
        positions = []
        for name in names:
            if name not in led or name not in self.applied:
                return None
            positions.append(self.applied[name])
        return min(positions, default=None)

    def applied_everywhere(self) -> int | None:
        """The position every read model has reached by this runner's own hand, if known."""
        return self.reached(list(self.projections))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_forever(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            try:
                self.run_once(respect_backoff=True)
                backoff = self.poll_interval
            except Exception:
                log.exception("projection runner pass failed")
                backoff = min(backoff * 2, 30.0)
            wait = backoff
            if self._failing:  # wake for the next retry of a failing read model
                soonest = min(f.retry_at for f in self._failing.values()) - time.monotonic()
                wait = max(min(wait, soonest), 0.01)
            self._wakeup.wait(wait)
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
