"""One database URL configures both sides: the event store and the read models.

`sqlite:///path` puts everything in one embedded file; `postgresql://…` puts everything in
PostgreSQL. This module derives from that single URL the settings the `eventsourcing`
library wants and the SQLAlchemy engines (sync for projections and keys, async for reads).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_DATABASE_URL = "sqlite:///./patron.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL connections (event store and SQLAlchemy pools alike) are replaced after this.
CONN_MAX_AGE_SECONDS = 1800


class DatabaseURLError(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseConfig:
    url: str

    @classmethod
    def from_env(cls, override: str | None = None) -> DatabaseConfig:
        return cls(override or os.environ.get("PATRON_DATABASE_URL") or DEFAULT_DATABASE_URL)

    def __post_init__(self) -> None:
        parsed = self._parsed
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise DatabaseURLError(
                f"unsupported database URL {self.safe_url!r}: use sqlite:///PATH or postgresql://…"
            )
        if self.is_sqlite and (not parsed.database or parsed.database == ":memory:"):
            raise DatabaseURLError(
                "SQLite needs a file path (sqlite:///./patron.db): an in-memory database "
                "cannot be shared by the event store, the projections and the API"
            )

    @property
    def _parsed(self) -> URL:
        try:
            return make_url(self.url)
        except Exception as error:
            raise DatabaseURLError(f"invalid database URL: {error}") from None

    @property
    def is_sqlite(self) -> bool:
        return self._parsed.get_backend_name() == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self._parsed.get_backend_name() == "postgresql"

    @property
    def safe_url(self) -> str:
        return self._parsed.render_as_string(hide_password=True)

    @property
    def sqlite_path(self) -> Path:
        assert self.is_sqlite
        return Path(self._parsed.database or "").expanduser().resolve()

    def eventsourcing_env(self) -> dict[str, str]:
        """Settings for the `eventsourcing` library's persistence module."""
        if self.is_sqlite:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": str(SQLITE_BUSY_TIMEOUT_MS // 1000),
            }
        url = self._parsed
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.database or "postgres",
            "POSTGRES_HOST": url.host or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": url.username or "postgres",
            "POSTGRES_PASSWORD": url.password or "",
            "POSTGRES_POOL_SIZE": os.environ.get("PATRON_PG_POOL_SIZE", "5"),
            "POSTGRES_MAX_OVERFLOW": os.environ.get("PATRON_PG_MAX_OVERFLOW", "10"),
            "POSTGRES_LOCK_TIMEOUT": "10",
            # No pre-ping: it cost a round trip on every checkout (5 of a command's 18
            # statements). Connections are recycled instead (closed after
            # CONN_MAX_AGE_SECONDS, and idle ones beyond the pool size after 10 minutes, the
            # pool's default), and the library retries a read or write that meets a dead
            # connection on a fresh one (see UnitOfWork.run for the rest of a command).
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_CONN_MAX_AGE": str(CONN_MAX_AGE_SECONDS),
        }
        return env

    def sync_url(self) -> URL:
        url = self._parsed
        if self.is_sqlite:
            return url.set(drivername="sqlite+pysqlite", database=str(self.sqlite_path))
        return url.set(drivername="postgresql+psycopg")

    def async_url(self) -> URL:
        url = self._parsed
        if self.is_sqlite:
            return url.set(drivername="sqlite+aiosqlite", database=str(self.sqlite_path))
        return url.set(drivername="postgresql+asyncpg")

    def create_sync_engine(self, **kwargs: Any) -> Engine:
        # Statement parameters are events' and members' data: never in an error's text.
        kwargs.setdefault("hide_parameters", True)
        if self.is_sqlite:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.sync_url(), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
            )
            _configure_sqlite(engine)
            return engine
        # No pre-ping either (a round trip per checkout, on every key lookup and projection
        # batch): connections are recycled, and one found dead is invalidated on its first
        # error, which the command (UnitOfWork.run) or the runner's next pass retries.
        return create_engine(self.sync_url(), pool_recycle=CONN_MAX_AGE_SECONDS, **kwargs)

    def create_async_engine(self, **kwargs: Any) -> AsyncEngine:
        kwargs.setdefault("hide_parameters", True)
        if self.is_sqlite:
            engine = create_async_engine(
                self.async_url(), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
            )
            _configure_sqlite(engine.sync_engine)
            return engine
        # No pre-ping on the request path: it costs a round trip per checkout, and a
        # connection broken by a database restart is discarded on its first error anyway.
        return create_async_engine(self.async_url(), pool_recycle=CONN_MAX_AGE_SECONDS, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    """WAL lets readers proceed while a writer commits; the busy timeout queues writers."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
