"""Read-your-writes: a client's next query waits until the read models include its writes.

Every write returns its event-store position. A client may send the highest position it
has written in `X-Patron-Min-Position`; the server also remembers, per subject, the last
position it wrote in this process. A query waits (bounded) only for the projections whose
tables it actually reads to reach that position (a query reading nothing a projection
writes does not wait), then answers; past the bound it fails with a typed error. The
projection runner in this process wakes waiters when it commits. When projections run in
another process, on PostgreSQL each projection commit sends NOTIFY on
`patron_projections` and a LISTEN connection here wakes the waiters (they look at the
tracking table when told their position is reached, and once a second as a safety net);
on SQLite (single-process by default) such a waiter polls the tracking table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Table, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ClauseElement, TextClause
from sqlalchemy.sql.util import find_tables
from sqlalchemy.util import await_only

from projections.tables import projection_tracking

log = logging.getLogger("patron.consistency")


class ProjectionLagError(Exception):
    def __init__(self, wanted: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"read models have reached position {reached} but your writes go up to {wanted}; "
            f"they did not catch up within {timeout:g}s, try again shortly"
        )
        self.wanted = wanted
        self.reached = reached


class WriteTracker:
    """Highest position written per subject, in this process (bounded in size)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()
        self.capacity = capacity

    def record(self, subject: str, position: int | None) -> None:
        if position is None:
            return
        with self._lock:
            if len(self._positions) >= self.capacity and subject not in self._positions:
                self._positions.pop(next(iter(self._positions)))
            if position > self._positions.get(subject, 0):
                self._positions[subject] = position

    def last(self, subject: str) -> int:
        with self._lock:
            return self._positions.get(subject, 0)


async def projections_position(engine: AsyncEngine, names: list[str]) -> int:
    """The position every projection has reached (the slowest one)."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(func.min(projection_tracking.c.position)).where(
                projection_tracking.c.name.in_(names)
            )
        )
    return int(value or 0)


# Cross-process fallback: how often a waiter looks at projection_tracking when no runner
# in this process leads the projections it waits for (SQLite, or no LISTEN connection).
DATABASE_POLL_SECONDS = 0.05
# With a LISTEN connection (PostgreSQL), waiters are woken by the runner's NOTIFY; they
# still look at the database this often as a safety net (a notification lost with a
# dropped connection).
NOTIFIED_POLL_SECONDS = 1.0

# The channel each projection batch's commit notifies on PostgreSQL; the payload is JSON,
# {"position": P, "names": [...]}: those read models have reached P.
PROJECTIONS_CHANNEL = "patron_projections"


def announce_on_commit(conn: Connection, names: Sequence[str], position: int) -> None:
    """Inside a projection batch's transaction: NOTIFY, delivered when it commits (and
    never if it rolls back)."""
    payload = json.dumps({"position": position, "names": list(names)}, separators=(",", ":"))
    conn.execute(select(func.pg_notify(PROJECTIONS_CHANNEL, payload)))


class ProjectionNotifications:
    """PostgreSQL: LISTENs for the projection runners' commits, in any process.

    A thread holds one connection in LISTEN; each notification records how far the named
    read models have got (a hint: a waiter that sees its position reached confirms it in
    the database once) and wakes this process's waiters through `changes`. Started the
    first time a waiter needs it: a process whose own runner leads every read model never
    opens the connection.
    """

    def __init__(self, conninfo: str, changes: ReadModelChanges) -> None:
        self.conninfo = conninfo
        self.changes = changes
        self.positions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def ensure_started(self, wait: float = 2.0) -> bool:
        """Start the listener if needed; True once it is LISTENing (waits up to `wait`)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._listen, name="projections-notifications", daemon=True)
                self._thread.start()
        return self._listening.wait(wait) if wait else self.listening

    def reached(self, names: Sequence[str]) -> int | None:
        """The position all of `names` have reached according to notifications, if known."""
        with self._lock:
            known = [self.positions.get(name) for name in names]
        if not known or any(position is None for position in known):
            return None
        return min(position for position in known if position is not None)

    def _received(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            position = int(message["position"])
            names = [str(name) for name in message["names"]]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable projection notification %r", payload[:200])
            names, position = [], 0
        with self._lock:
            for name in names:
                # A rebuild moves a read model back: the latest commit is the truth.
                self.positions[name] = position
        self.changes.notify()

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PROJECTIONS_CHANNEL)))
                    self._listening.set()
                    # Whatever was committed before LISTEN took effect: waiters look again.
                    self.changes.notify()
                    while not self._stop.is_set():
                        for notification in conn.notifies(timeout=0.5, stop_after=1):
                            self._received(notification.payload)
            except Exception:
                log.warning("projection LISTEN connection lost; retrying", exc_info=True)
            self._listening.clear()
            with self._lock:
                self.positions.clear()  # notifications may have been missed meanwhile
            self.changes.notify()  # waiters fall back to polling until it is back
            self._stop.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


async def wait_for_position(
    engine: AsyncEngine,
    names: list[str] | Callable[[], list[str]],
    wanted: int,
    timeout: float,
    local: Callable[[list[str]], int | None] = lambda _names: None,
    changes: ReadModelChanges | None = None,
    notifications: ProjectionNotifications | None = None,
) -> None:
    """Return once every projection in `names` has reached `wanted`, or raise ProjectionLagError.

    `local` reports what a runner in this process has committed (None if no runner here
    leads them all): then the waiter costs no round trip and sleeps until the runner's
    commit wakes it through `changes`. Otherwise the database, the truth when projections
    run in another process, is consulted: on PostgreSQL when `notifications` (LISTEN) says
    the position is reached (and at NOTIFIED_POLL_SECONDS as a safety net), else polled.
    `names` may be a function, asked again at each wake-up (the set can shrink while
    waiting, e.g. when a read model starts failing).
    """
    if wanted <= 0:
        return
    changes = changes or ReadModelChanges()
    deadline = time.monotonic() + timeout
    delay = 0.002
    reached = 0
    look = True  # at the database: first, on a notified arrival, and on each safety poll
    while True:
        with changes.listening() as woken:  # registered before looking: no lost wake-up
            waited_for = names() if callable(names) else names
            if not waited_for:
                return
            known = local(waited_for)
            if known is not None and known >= wanted:
                return
            # Never blocks: until the listener is LISTENing, this waiter polls.
            listener = notifications if known is None and notifications is not None and (
                notifications.ensure_started(wait=0)) else None
            listened = listener is not None
            if known is None:
                hint = listener.reached(waited_for) if listener is not None else None
                if look or hint is None or hint >= wanted:
                    reached = await projections_position(engine, waited_for)
                    if reached >= wanted:
                        return
            else:
                reached = known
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProjectionLagError(wanted, reached, timeout)
            if known is not None:
                await changes.wait_on(woken, remaining)
            elif listened:
                await changes.wait_on(woken, min(NOTIFIED_POLL_SECONDS, remaining))
                look = not woken.is_set()  # a timeout: look at the database anyway
            else:
                await changes.wait_on(woken, min(delay, remaining))
                delay = min(delay * 2, DATABASE_POLL_SECONDS)


def owners_of_tables(projections: Mapping[str, Any]) -> dict[str, str]:
    """Table name -> the projection that writes it (from each projection's `tables`)."""
    return {table.name: name for name, p in projections.items() for table in p.tables}


def projections_read_by(statement: Any, owners: Mapping[str, str]) -> set[str]:
    """The projections whose tables a statement reads.

    A statement SQLAlchemy cannot see into (textual SQL) is taken to read every projection;
    one that touches only tables no projection writes (keys, tracking) reads none.
    """
    if not isinstance(statement, ClauseElement) or isinstance(statement, TextClause):
        return set(owners.values())
    tables = find_tables(statement, include_aliases=True, include_joins=True,
                         include_selects=True, include_crud=True)
    if any(isinstance(t, TextClause) for t in tables):
        return set(owners.values())
    return {owners[t.name] for t in tables if isinstance(t, Table) and t.name in owners}


class ReadGate:
    """What one request must see: its own writes up to `wanted`, in what it reads.

    Set for the duration of a query (see `reading_with`); every statement the request sends
    through the read engine first waits for the projections owning the tables it reads, and
    only for those, once each.
    """

    def __init__(
        self, wanted: int, wait: Callable[[list[str], int], Awaitable[None]]
    ) -> None:
        self.wanted = wanted
        self.wait = wait
        self.satisfied: set[str] = set()


_read_gate: ContextVar[ReadGate | None] = ContextVar("patron_read_gate", default=None)


@contextlib.contextmanager
def reading_with(gate: ReadGate | None) -> Iterator[None]:
    token = _read_gate.set(gate)
    try:
        yield
    finally:
        _read_gate.reset(token)


def require_for_this_task(gate: ReadGate) -> None:
    """From here on in this task (a mutation's payload), reads wait for their projections."""
    current = _read_gate.get()
    if current is None or current.wanted < gate.wanted:
        _read_gate.set(gate)


def install_read_gate(engine: AsyncEngine, owners: Mapping[str, str]) -> None:
    """Make every read through `engine` wait for the projections it reads (if a gate is set).

    The hook runs inside SQLAlchemy's greenlet bridge, where `await_only` may await: the
    wait is asynchronous even though the event is synchronous.
    """

    def wait_for_what_is_read(
        _conn: Any, statement: Any, _multiparams: Any, _params: Any, _options: Any
    ) -> None:
        gate = _read_gate.get()
        if gate is None or gate.wanted <= 0:
            return
        pending = sorted(projections_read_by(statement, owners) - gate.satisfied)
        if not pending:
            return
        await_only(gate.wait(pending, gate.wanted))
        gate.satisfied.update(pending)

    event.listen(engine.sync_engine, "before_execute", wait_for_what_is_read)


class ReadModelChanges:
    """Wakes subscriptions in this process as soon as a projection commits.

    The projection runner calls `notify()` from its thread after each committed batch;
    waiters are asyncio tasks on any event loop. Commits made by another process are not
    seen here, so waiters also wake on a timeout and look at the read models themselves.
    """

    def __init__(self) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, woken in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(woken.set)

    @contextlib.contextmanager
    def listening(self) -> Iterator[asyncio.Event]:
        """An event set by the next `notify()`; register before checking, then wait on it."""
        woken = asyncio.Event()
        waiter = (asyncio.get_running_loop(), woken)
        with self._lock:
            self._waiters.add(waiter)
        try:
            yield woken
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    @staticmethod
    async def wait_on(woken: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout)

    async def wait(self, timeout: float) -> None:
        with self.listening() as woken:
            await self.wait_on(woken, timeout)
