"""Test fixtures: every storage test runs on SQLite and on PostgreSQL.

Each test gets a fresh, migrated database: a copy of a per-run SQLite template file, or a
PostgreSQL database cloned from a per-run template (CREATE DATABASE … TEMPLATE), so tests
and concurrent runs never see each other's data. PostgreSQL is required when CI=true;
elsewhere its tests are skipped with a message when no server is reachable.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.app import create_app
from api.config import Settings
from api.runtime import Runtime, migrate, postgres_conninfo
from domain.clock import AdjustableClock
from projections.database import DatabaseConfig
from tests import user_errors

TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-signing"
TEST_PAYMENT_PROVIDER = "testpay"
TEST_PAYMENT_SECRET = "testpay-callback-secret-0123456789"
PG_ADMIN_URL = os.environ.get(
    "PATRON_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Per process; under pytest-xdist the worker id (gw0, gw1, …) is appended (see below).
RUN_ID = uuid.uuid4().hex[:10] + (
    f"_{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else ""
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_conninfo(url: str) -> str:
    return make_conninfo(postgres_conninfo(DatabaseConfig(url)), connect_timeout=3)


def _pg_url(dbname: str) -> str:
    base = DatabaseConfig(PG_ADMIN_URL)._parsed
    return base.set(database=dbname).render_as_string(hide_password=False)


def _pg_admin() -> psycopg.Connection[Any]:
    return psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True)


def _drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    try:
        conn = _pg_admin()
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {error}".strip()
        if IN_CI:
            pytest.fail(f"{message} (required when CI=true)", pytrace=False)
        pytest.skip(f"{message}; set PATRON_TEST_POSTGRES_URL or start PostgreSQL")
    name = f"patron_tpl_{RUN_ID}"
    with conn:
        _create_database(conn, name)
    os.environ.setdefault("PATRON_SECRET_KEY", TEST_SECRET)
    migrate(DatabaseConfig(_pg_url(name)))
    yield name
    with _pg_admin() as conn:
        _drop_database(conn, name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "patron.db"
    migrate(DatabaseConfig(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "patron.db"
        shutil.copyfile(template, target)
        yield f"sqlite:///{target}"
        return
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"patron_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        _create_database(conn, name, template=template_name)
    yield _pg_url(name)
    with _pg_admin() as conn:
        _drop_database(conn, name)


@pytest.fixture(autouse=True)
def _secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", TEST_SECRET)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.from_env(
        database_url,
        read_your_writes_timeout=5.0,
        projection_poll_interval=0.05,
        data_key_cache_seconds=0.0,
        # Tests that tick the scheduler must not train a model on every tick; the
        # scheduled training has its own tests, which turn it on.
        recommender_retrain_hours=0.0,
        # Tests send many requests from one address; the rate limiter has its own tests
        # (tests/test_edge.py), which turn it on with low limits.
        rate_limit_anonymous="",
        rate_limit_signed_in="",
        # Orders are paid through a signed provider callback (tests/payments.py signs it).
        payment_secrets={TEST_PAYMENT_PROVIDER: TEST_PAYMENT_SECRET},
        payment_provider=TEST_PAYMENT_PROVIDER,
        payment_simulator=False,
    )


@pytest.fixture
def clock() -> AdjustableClock:
    """Business time for the test: it stands still unless the test moves it."""
    return AdjustableClock(datetime.now(UTC))


@pytest.fixture
def runtime(settings: Settings, clock: AdjustableClock) -> Iterator[Runtime]:
    rt = Runtime(settings, clock=clock)
    yield rt
    rt.close()


@pytest.fixture
async def live_runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    """A runtime whose projection runner is running, as in the server."""
    runtime.start_projections()
    yield runtime
    runtime.runner.stop()
    if runtime._async_engine is not None:
        await runtime._async_engine.dispose()


@pytest.fixture
async def client(live_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=live_runtime, migrate_on_start=False, run_projections=False)
    transport = httpx.ASGITransport(app=app)
    # Every userError a test provokes must name a field of its mutation's input.
    async with httpx.AsyncClient(transport=transport, base_url="http://patron.test",
                                 event_hooks={"response": [user_errors.check_response]}) as http:
        yield http


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if user_errors.OBSERVED:
        terminalreporter.write_line(
            f"userError fields checked against the input types: {len(user_errors.OBSERVED)} "
            "distinct (mutation, field) pairs")


# ---------------------------------------------------------------------------------------
# Markers and parallel runs (issue 19). Kept apart from the fixtures above.
#
# Every test is marked from its fixtures and parameters, so no test file names a marker:
#   database  it uses one of the database fixtures (backend, database_url, a template)
#   sqlite    ... on SQLite           postgres  ... on PostgreSQL (runs only against it)
#   pure      it uses none of them (it may still make a throwaway SQLite file of its own)
#   benchmark it runs a benchmark script in a subprocess (tests/test_benchmarks_run.py)
#   slow      it simulates a demo year of commerce (about 40 s each on an idle machine,
#             minutes on a busy one): the demo fixture and the tests named in _SLOW_TESTS
# `scripts/test --quick` runs `-m "not postgres and not benchmark and not slow"`.
#
# Under pytest-xdist each worker is its own process with its own RUN_ID, so its PostgreSQL
# template, its clones and its SQLite template (under the worker's own basetemp) are its
# own; the worker id is put in the database names only to tell them apart in pg_stat_activity.
# ---------------------------------------------------------------------------------------

_DATABASE_FIXTURES = frozenset({"backend", "database_url", "sqlite_template", "postgres_template"})
_BENCHMARK_MODULES = frozenset({"test_benchmarks_run.py"})
_SLOW_FIXTURES = frozenset({"demo"})  # tests/test_demo_seed.py: a seeded demo year
_SLOW_TESTS = frozenset({
    "test_server.py::test_the_quick_start_serves_graphiql_and_fifty_demo_members",
    "test_server.py::test_serve_demo_does_not_seed_a_database_twice",
    "test_demo_seed.py::test_the_same_seed_gives_the_same_year",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        backends: set[str] = set()
        if "backend" in params:
            backends.add(str(params["backend"]))
        if "sqlite_template" in names:
            backends.add("sqlite")
        if "postgres_template" in names:
            backends.add("postgres")
        if names & _DATABASE_FIXTURES:
            item.add_marker(pytest.mark.database)
            for name in sorted(backends):
                item.add_marker(getattr(pytest.mark, name))
        else:
            item.add_marker(pytest.mark.pure)
        if item.path.name in _BENCHMARK_MODULES:
            item.add_marker(pytest.mark.benchmark)
        function = getattr(item, "originalname", item.name)
        if names & _SLOW_FIXTURES or f"{item.path.name}::{function}" in _SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def _create_database(
    conn: psycopg.Connection[Any], name: str, template: str | None = None
) -> None:
    """CREATE DATABASE, retried while its template is busy.

    Several workers (and other runs on the machine) create databases at the same time:
    PostgreSQL refuses to copy a template another session is connected to (ObjectInUse:
    "source database … is being accessed by other users"), which template1 or our own
    template can briefly be. Retry a few times rather than fail the test.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    for attempt in range(8):
        try:
            conn.execute(statement)
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 7:
                raise
            time.sleep(0.25 * (attempt + 1))
