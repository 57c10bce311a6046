"""Plumbing shared by the benchmark scripts: a throw-away database, a live server, figures.

Every benchmark runs against a database nobody else uses and that it throws away, so its
figures are not skewed by leftovers of another run; and every benchmark serves HTTP with a
real uvicorn on a real socket, because an in-memory transport would hide the HTTP cost the
benchmarks exist to show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import secrets
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from psycopg import sql
from sqlalchemy.engine import URL, make_url
from starlette.types import ASGIApp

from api.runtime import Runtime, migrate
from domain.metadata import Channel, EventMetadata, Role
from projections.database import DatabaseConfig

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_STARTED = time.perf_counter()


# -- output ---------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr, so stdout carries nothing but the final JSON line."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def emit(figures: dict[str, Any]) -> None:
    """The one machine-readable result: a single JSON object, the last line of stdout."""
    print(json.dumps(figures, sort_keys=False), flush=True)


def environment_figures(database_url: str) -> dict[str, Any]:
    """What the figures depend on besides the code, so runs can be compared honestly."""
    return {
        "backend": "postgresql" if DatabaseConfig(database_url).is_postgres else "sqlite",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated between ranks (as numpy does)."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float | None:
    """None instead of a division error when the denominator measured nothing."""
    return round(numerator / denominator, 4) if denominator else None


@dataclass
class LoadResult:
    """Operations done under load: how many, how long in all, and how long each took."""

    operations: int = 0
    failures: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.operations / self.elapsed_s if self.elapsed_s else 0.0

    def figures(self, prefix: str, unit: str) -> dict[str, Any]:
        """Flat keys (`<prefix>_<unit>_per_s`, `<prefix>_p50_ms`, …) that diff line by line."""
        return {
            f"{prefix}_{unit}": self.operations,
            f"{prefix}_failures": self.failures,
            f"{prefix}_elapsed_s": round(self.elapsed_s, 3),
            f"{prefix}_{unit}_per_s": round(self.per_second, 1),
            f"{prefix}_p50_ms": self.percentile_ms(50),
            f"{prefix}_p99_ms": self.percentile_ms(99),
        }

    def percentile_ms(self, q: float) -> float | None:
        """None rather than NaN when nothing ran: NaN is not valid JSON."""
        if not self.latencies_s:
            return None
        return round(percentile(self.latencies_s, q) * 1000, 3)

    def describe(self, label: str) -> str:
        return (
            f"{label}: {self.operations} in {self.elapsed_s:.2f}s = {self.per_second:.0f}/s, "
            f"p50 {percentile(self.latencies_s, 50) * 1000:.2f} ms, "
            f"p99 {percentile(self.latencies_s, 99) * 1000:.2f} ms, failures {self.failures}"
        )


# -- load drivers ---------------------------------------------------------------------------


def drive_threads(concurrency: int, total: int, call: Callable[[int], bool]) -> LoadResult:
    """Run `call(0..total-1)` on `concurrency` threads (or inline when 1); time each call.

    `call` returns False for a failed operation. Threads are started before the clock, and
    each takes the next index when it is free, as the server's thread pool would.
    """
    result = LoadResult()
    indexes = itertools.count()
    lock = threading.Lock()

    def worker() -> None:
        latencies: list[float] = []
        failures = 0
        while True:
            with lock:
                index = next(indexes)
            if index >= total:
                break
            begun = time.perf_counter()
            ok = call(index)
            latencies.append(time.perf_counter() - begun)
            failures += 0 if ok else 1
        with lock:
            result.latencies_s.extend(latencies)
            result.failures += failures

    if concurrency <= 1:
        begun = time.perf_counter()
        worker()
        result.elapsed_s = time.perf_counter() - begun
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            ready = threading.Barrier(concurrency + 1)

            def start_together() -> None:
                ready.wait()
                worker()

            futures = [pool.submit(start_together) for _ in range(concurrency)]
            ready.wait()
            begun = time.perf_counter()
            for future in futures:
                future.result()
            result.elapsed_s = time.perf_counter() - begun
    result.operations = len(result.latencies_s)
    return result


@contextlib.asynccontextmanager
async def http_clients(base_url: str, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One keep-alive client per simulated frontend, opened before any clock starts."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60.0))
            for _ in range(count)
        ]
        yield clients


async def drive_http(
    clients: Sequence[httpx.AsyncClient],
    total: int,
    request: Callable[[httpx.AsyncClient, int], Awaitable[bool]],
) -> LoadResult:
    """Send `total` requests, one at a time per client, all clients concurrently.

    `request(client, index)` sends request number `index` and returns False on failure.
    """
    result = LoadResult()
    indexes = itertools.count()

    async def worker(client: httpx.AsyncClient) -> None:
        while (index := next(indexes)) < total:
            begun = time.perf_counter()
            ok = await request(client, index)
            result.latencies_s.append(time.perf_counter() - begun)
            result.failures += 0 if ok else 1

    begun = time.perf_counter()
    await asyncio.gather(*(worker(client) for client in clients))
    result.elapsed_s = time.perf_counter() - begun
    result.operations = len(result.latencies_s)
    return result


# -- databases ------------------------------------------------------------------------------


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the database options every benchmark takes."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    add_database_options(parser)
    return parser


def run_benchmark(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace, str], dict[str, Any]],
    argv: list[str] | None,
) -> None:
    """Parse, run on a throw-away database, print the figures as the last line."""
    args = parser.parse_args(argv)
    with fresh_database(args) as url:
        figures = run(args, url)
    emit(figures)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run on a fresh, uniquely named PostgreSQL database (dropped at the end), "
        f"created through the admin URL given by --database-url (default "
        f"{DEFAULT_POSTGRES_ADMIN_URL})",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="with --postgres (or if it is postgresql://…): the admin database URL used to "
        "create and drop the benchmark database; otherwise sqlite:///PATH of a file that "
        "must not exist yet (kept afterwards). Default: a SQLite file in a temp directory",
    )


def ensure_secret_key() -> None:
    """The runtime refuses PostgreSQL without a signing key; any key will do for a run."""
    if not os.environ.get("PATRON_SECRET_KEY"):
        os.environ["PATRON_SECRET_KEY"] = secrets.token_urlsafe(48)


def _postgres_connect(url: URL) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=5,
    )


@contextlib.contextmanager
def fresh_database(args: argparse.Namespace) -> Iterator[str]:
    """Create, migrate and yield the URL of a database used by this run only.

    SQLite: a new file (in a temp directory removed afterwards unless --database-url named
    the file). PostgreSQL: a new database, dropped WITH (FORCE) afterwards even if the run
    failed, so an aborted run leaves nothing behind.
    """
    ensure_secret_key()
    given: str | None = args.database_url
    if args.postgres or (given and DatabaseConfig(given).is_postgres):
        admin = make_url(given or DEFAULT_POSTGRES_ADMIN_URL)
        name = f"patron_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with _postgres_connect(admin) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = admin.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False
        )
        log(f"created PostgreSQL database {name}")
        try:
            migrate(DatabaseConfig(url))
            yield url
        finally:
            with _postgres_connect(admin) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(name)
                    )
                )
            log(f"dropped PostgreSQL database {name}")
        return
    if given:
        path = DatabaseConfig(given).sqlite_path
        if path.exists():
            raise SystemExit(f"{path} exists: benchmarks need a fresh database file")
        migrate(DatabaseConfig(given))
        log(f"created SQLite database {path}")
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="patron-bench-") as directory:
        url = f"sqlite:///{Path(directory) / 'patron.db'}"
        migrate(DatabaseConfig(url))
        log(f"created SQLite database {url}")
        yield url


# -- the application ------------------------------------------------------------------------


def metadata_for(
    member_id: str, role: Role = Role.MEMBER, reason: str | None = None
) -> EventMetadata:
    """What the API would record for a member acting on themself through the web channel
    (or for staff, through the admin channel, with a reason)."""
    request_id = uuid.uuid4().hex
    return EventMetadata(
        actor_id=member_id,
        actor_role=role,
        channel=Channel.ADMIN if role.is_staff else Channel.WEB,
        correlation_id=request_id,
        causation_id=None,
        request_id=request_id,
        reason=reason,
    )


def register_members(runtime: Runtime, count: int, prefix: str = "member") -> list[uuid.UUID]:
    """Register `count` members through MemberService (the real command path)."""
    ids: list[uuid.UUID] = []
    for index in range(count):
        result = runtime.members.register(
            {
                "name": f"Bench Member {index}",
                "email": f"{prefix}{index}@example.com",
                "city": "Hangzhou",
                "region": "Zhejiang",
            },
            metadata_for("anonymous", Role.ANONYMOUS),
        )
        ids.append(result.aggregate_id)
        if (index + 1) % 1000 == 0:
            log(f"registered {index + 1}/{count} members")
    return ids


class LiveServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread of its own.

    The server gets its own event loop (uvloop when installed, as in production) so the
    benchmark's clients in the main thread do not share its loop. `on_shutdown` runs in the
    server's loop after uvicorn stops: async database connections belong to the loop that
    opened them, so they must be closed there.
    """

    def __init__(
        self, app: ASGIApp, on_shutdown: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(self.config)
        self.on_shutdown = on_shutdown
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.config.get_loop_factory()) as runner:
                runner.run(self._serve())
        except BaseException as error:  # reported by __enter__/__exit__ in the main thread
            self._error = error

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self._socket])
        finally:
            if self.on_shutdown is not None:
                await self.on_shutdown()

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start: {self._error!r}")
            time.sleep(0.01)
        log(f"serving on {self.base_url}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self._socket.close()
        if self._error is not None:
            raise RuntimeError("the server thread failed") from self._error


def member_tokens(secret: str, members: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Bearer tokens for the members a benchmark acts as, valid for any run length."""
    from api.auth import mint_token

    return {
        member: mint_token(secret, Role.MEMBER, str(member), expires_in=timedelta(hours=6))
        for member in members
    }


def serve_and_drive(
    runtime: Runtime,
    drive: Callable[[str], Awaitable[LoadResult]],
    *,
    run_projections: bool = True,
) -> LoadResult:
    """Serve the runtime's API on a real socket, projections running (unless told not to:
    for commands that wait for no read model, to compare like with like), and drive load
    at it."""
    from api.app import create_app

    app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
    if run_projections:
        runtime.start_projections()
    with LiveServer(app, on_shutdown=lambda: runtime.async_engine.dispose()) as server:
        return asyncio.run(drive(server.base_url))


class FailureLog:
    """Counts a driver's failed requests and logs the first few (the rest would flood)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0

    def __call__(self, index: int, why: str) -> bool:
        if self.count < 5:
            log(f"{self.what} {index} failed: {why[:300]}")
        self.count += 1
        return False


# -- statement counting ---------------------------------------------------------------------


def _first_words(text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    elif not isinstance(text, str):
        text = text.as_string(None) if hasattr(text, "as_string") else str(text)
    return " ".join(text.split()[:3])


@contextlib.contextmanager
def counting_statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every statement sent while the block runs (first words only; "" is a pre-ping).

    PostgreSQL: counted at psycopg, which SQLAlchemy and the event store both use: every
    query, every BEGIN/COMMIT/ROLLBACK (psycopg sends those as commands, not through a
    cursor) and every pool pre-ping. SQLite: SQLAlchemy's statements and transaction ends,
    plus one per event-store call (the library drives sqlite3 itself).
    """
    seen: list[str] = []
    lock = threading.Lock()

    def note(text: Any) -> None:
        with lock:
            seen.append(_first_words(text))

    if runtime.settings.database.is_postgres:
        from psycopg import Cursor
        from psycopg._connection_base import BaseConnection

        originals = {
            (Cursor, "execute"): Cursor.execute,
            (Cursor, "executemany"): Cursor.executemany,
            (BaseConnection, "_exec_command"): BaseConnection._exec_command,
        }

        def wrap(original: Any) -> Any:
            def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                note(query)
                return original(self, query, *args, **kwargs)

            return counted

        for (owner, name), original in originals.items():
            setattr(owner, name, wrap(original))
        try:
            yield seen
        finally:
            for (owner, name), original in originals.items():
                setattr(owner, name, original)
        return

    from sqlalchemy import event as sa_event

    engine = runtime.sync_engine

    def on_statement(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        note(statement)

    def on_commit(_conn: Any) -> None:
        note("COMMIT")

    def on_rollback(_conn: Any) -> None:
        note("ROLLBACK")

    recorders: list[Any] = [runtime.app.recorder]
    if runtime.app.snapshots is not None:
        recorders.append(runtime.app.snapshots.recorder)
    patched: list[tuple[Any, str]] = []
    for recorder in recorders:
        for name in ("select_notifications", "max_notification_id", "select_events",
                     "insert_events"):
            found: Any = getattr(recorder, name, None)
            if found is None:
                continue

            def counted(*args: Any, _original: Any = found, _name: str = name,
                        **kwargs: Any) -> Any:
                note(f"event-store {_name}")
                return _original(*args, **kwargs)

            setattr(recorder, name, counted)
            patched.append((recorder, name))

    sa_event.listen(engine, "before_cursor_execute", on_statement)
    sa_event.listen(engine, "commit", on_commit)
    sa_event.listen(engine, "rollback", on_rollback)
    try:
        yield seen
    finally:
        sa_event.remove(engine, "before_cursor_execute", on_statement)
        sa_event.remove(engine, "commit", on_commit)
        sa_event.remove(engine, "rollback", on_rollback)
        for recorder, name in patched:
            delattr(recorder, name)
