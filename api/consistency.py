"""Read-your-writes: a client's next query waits until the read models include its writes.

Every write returns its event-store position. A client may send the highest position it
has written in `X-Patron-Min-Position`; the server also remembers, per subject, the last
position it wrote in this process. A query waits (bounded) until every projection has
reached that position, then answers; past the bound it fails with a typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.tables import projection_tracking


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


async def wait_for_position(
    engine: AsyncEngine,
    names: list[str],
    wanted: int,
    timeout: float,
    local: Callable[[], int | None] = lambda: None,
) -> None:
    """Return once every projection has reached `wanted`, or raise ProjectionLagError.

    `local` reports what a runner in this process has committed: checking it costs no
    round trip, so a server running its own projections answers as soon as they commit.
    The database (the truth when projections run elsewhere) is polled less often.
    """
    if wanted <= 0:
        return
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    delay = 0.001
    reached = 0
    while True:
        known = local()
        if known is not None and known >= wanted:
            return
        now = time.monotonic()
        if now >= next_poll:
            reached = await projections_position(engine, names)
            if reached >= wanted:
                return
            next_poll = now + (0.05 if known is not None else delay)
        if now >= deadline:
            raise ProjectionLagError(wanted, max(reached, known or 0), timeout)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


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
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
