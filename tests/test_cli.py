"""The `patron` command line, driven in-process with click's CliRunner.

Every command that touches storage runs against both backends (the `database_url`
fixture); `serve` is left out because it blocks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from api.auth import PII_SCOPE, principal_from_authorization
from api.cli import main
from api.runtime import all_projections
from domain.metadata import Role
from projections.database import DatabaseConfig
from projections.tables import member_profiles, member_tags
from tests.conftest import TEST_SECRET
from tests.shop import stocked

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"
MEMBER_ID = "5b0f3c1e-8f7a-4a47-9d1b-2f4d6b8e9a10"


def run(database_url: str, *args: str) -> Result:
    env = {"PATRON_DATABASE_URL": database_url, "PATRON_SECRET_KEY": TEST_SECRET}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def run_catching(database_url: str, *args: str) -> Result:
    """For commands expected to fail: unexpected exceptions are kept on the result."""
    env = {"PATRON_DATABASE_URL": database_url, "PATRON_SECRET_KEY": TEST_SECRET}
    return CliRunner().invoke(main, list(args), env=env)


def failed_cleanly(result: Result) -> bool:
    """A clean failure: click's usage or error exit, a message, and no traceback."""
    return (
        result.exit_code in (1, 2)
        and (result.exception is None or isinstance(result.exception, SystemExit))
        and "Traceback" not in result.output
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database, as the server leaves it."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert run(url, "migrate").exit_code == 0
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = DatabaseConfig(database_url).create_sync_engine()
    yield engine
    engine.dispose()


def profile_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(member_profiles).order_by(member_profiles.c.member_id))
        return [dict(row._mapping) for row in rows]


def tag_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(member_tags).order_by(member_tags.c.member_id, member_tags.c.tag)
        )
        return [dict(row._mapping) for row in rows]


def seed(database_url: str, members: int = 5, seed_value: int = 3) -> Result:
    # A month of commerce keeps these tests quick; tests/test_demo_seed.py covers the year.
    result = run(database_url, "seed", "demo", "--members", str(members), "--seed",
                 str(seed_value), "--days", "30")
    assert result.exit_code == 0, result.output
    return result


# -- token ----------------------------------------------------------------------------------


def test_a_token_for_a_database_that_does_not_exist_fails_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run outside the project directory, with no key configured: nothing may be created.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PATRON_SECRET_KEY", raising=False)
    result = CliRunner().invoke(main, ["token", "--role", "admin"],
                                env={"PATRON_DATABASE_URL": None, "PATRON_SECRET_KEY": None})
    assert failed_cleanly(result), result.output
    assert f"no Patron database at {tmp_path / 'patron.db'}" in result.output
    assert "--database-url" in result.output
    assert list(tmp_path.iterdir()) == []  # no database, no new signing key


@pytest.mark.parametrize("command", [["projections", "status"], ["loyalty", "tick"]])
def test_commands_that_read_a_database_never_create_one(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "elsewhere.db"
    result = run_catching(f"sqlite:///{missing}", *command)
    assert failed_cleanly(result), result.output
    assert str(missing) in result.output
    assert not missing.exists()


def test_a_member_token_without_a_member_id_fails_with_a_clear_message(sqlite_url: str) -> None:
    result = run_catching(sqlite_url, "token", "--role", "member")
    assert failed_cleanly(result), result.output
    assert "member id" in result.output


def test_a_member_token_carries_the_member_id_as_its_subject(sqlite_url: str) -> None:
    result = run(sqlite_url, "token", "--role", "member", "--member-id", MEMBER_ID)
    assert result.exit_code == 0, result.output
    principal = principal_from_authorization("Bearer " + result.output.strip(), TEST_SECRET)
    assert principal.role is Role.MEMBER
    assert principal.member_id == MEMBER_ID


def test_an_admin_token_is_a_jwt_the_api_accepts(sqlite_url: str) -> None:
    result = run(sqlite_url, "token", "--role", "admin", "--expires", "30m")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.count(".") == 2

    principal = principal_from_authorization("Bearer " + token, TEST_SECRET)

    assert principal.role is Role.ADMIN
    assert principal.is_staff
    assert principal.scopes == frozenset()


def test_a_staff_token_records_the_given_subject(sqlite_url: str) -> None:
    result = run(sqlite_url, "token", "--role", "agent", "--subject", "agent-jane")
    principal = principal_from_authorization("Bearer " + result.output.strip(), TEST_SECRET)
    assert principal.role is Role.AGENT
    assert principal.subject == "agent-jane"


def test_an_auditor_token_with_pii_has_the_pii_scope(sqlite_url: str) -> None:
    with_pii = run(sqlite_url, "token", "--role", "auditor", "--pii")
    without = run(sqlite_url, "token", "--role", "auditor")

    auditor = principal_from_authorization("Bearer " + with_pii.output.strip(), TEST_SECRET)
    plain = principal_from_authorization("Bearer " + without.output.strip(), TEST_SECRET)

    assert auditor.role is Role.AUDITOR
    assert PII_SCOPE in auditor.scopes
    assert auditor.can_see_personal_data(MEMBER_ID)
    assert PII_SCOPE not in plain.scopes
    assert not plain.can_see_personal_data(MEMBER_ID)


def test_a_token_is_signed_with_the_configured_key_only(sqlite_url: str) -> None:
    from api.auth import AuthenticationError

    token = run(sqlite_url, "token", "--role", "admin").output.strip()
    with pytest.raises(AuthenticationError):
        principal_from_authorization("Bearer " + token, "another-secret-key-of-enough-length-123")


@pytest.mark.parametrize("expires", ["soon", "30", "1.5h", "-1h", "30M", ""])
def test_a_malformed_expiry_fails_cleanly(sqlite_url: str, expires: str) -> None:
    result = run_catching(sqlite_url, "token", "--role", "admin", "--expires", expires)
    assert failed_cleanly(result), result.output
    assert "invalid duration" in result.output


@pytest.mark.parametrize("expires", ["999999999d", "99999999999d"])
def test_an_absurdly_long_expiry_fails_cleanly(sqlite_url: str, expires: str) -> None:
    """Exposes a bug: parse_duration/mint_token raise OverflowError, which the CLI does not
    turn into a clean error, so the user gets a traceback instead of a message."""
    result = run_catching(sqlite_url, "token", "--role", "admin", "--expires", expires)
    assert failed_cleanly(result), repr(result.exception)


def test_an_unknown_role_is_refused(sqlite_url: str) -> None:
    result = run_catching(sqlite_url, "token", "--role", "system")
    assert result.exit_code == 2
    assert "system" in result.output


def test_a_token_needs_a_signing_key_with_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATRON_SECRET_KEY", raising=False)
    result = CliRunner().invoke(
        main,
        ["token", "--role", "admin"],
        env={"PATRON_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x"},
    )
    assert failed_cleanly(result), result.output
    assert "PATRON_SECRET_KEY" in result.output


def test_an_unsupported_database_url_fails_cleanly() -> None:
    result = run_catching("mysql://root@localhost/patron", "token", "--role", "admin")
    assert failed_cleanly(result), result.output
    assert "unsupported database URL" in result.output


# -- migrate --------------------------------------------------------------------------------


def test_migrate_succeeds_and_is_idempotent(database_url: str, engine: Engine) -> None:
    first = run(database_url, "migrate")
    second = run(database_url, "migrate")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "migrated" in second.output
    assert profile_rows(engine) == []


def test_migrate_creates_a_fresh_sqlite_database(sqlite_url: str) -> None:
    result = run(sqlite_url, "migrate")
    assert result.exit_code == 0, result.output
    database = DatabaseConfig(sqlite_url)
    assert database.sqlite_path.exists()
    engine = database.create_sync_engine()
    try:
        assert profile_rows(engine) == []
    finally:
        engine.dispose()


def test_migrating_does_not_lose_existing_data(database_url: str, engine: Engine) -> None:
    seed(database_url, members=2)
    before = profile_rows(engine)
    assert run(database_url, "migrate").exit_code == 0
    assert profile_rows(engine) == before


def test_migrate_rejects_an_in_memory_sqlite_database() -> None:
    result = run_catching("sqlite:///:memory:", "migrate")
    assert failed_cleanly(result), result.output
    assert "in-memory" in result.output


# -- seed -----------------------------------------------------------------------------------


def test_seeding_creates_the_requested_number_of_member_profiles(
    database_url: str, engine: Engine
) -> None:
    result = seed(database_url, members=5, seed_value=3)

    assert "seeded 5 members (seed 3)" in result.output
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(member_profiles)) == 5
    rows = profile_rows(engine)
    assert all(row["name"] and row["email"] for row in rows)
    assert all(row["email"].endswith("@example.com") for row in rows)


def test_seeding_off_a_terminal_reports_progress_from_the_first_day(sqlite_url: str) -> None:
    # CliRunner is not a terminal, like a container's log: click's bar would stay silent.
    result = seed(sqlite_url, members=3, seed_value=3)
    lines = [line for line in result.stderr.splitlines() if line.startswith("simulating")]
    assert lines[0] == "simulating 30 days: 0/30"
    assert any(line.startswith("simulating 30 days: 3/30 after ") for line in lines)
    assert lines[-1].startswith("simulating 30 days: 30/30 in ")
    assert len(lines) == 12  # the start, each tenth of the way, the end


def test_seeding_adds_to_an_existing_population(database_url: str, engine: Engine) -> None:
    seed(database_url, members=2, seed_value=1)
    seed(database_url, members=3, seed_value=2)
    assert len(profile_rows(engine)) == 5


def test_seeding_is_deterministic_for_a_given_seed(tmp_path: Path) -> None:
    def population(url: str, seed_value: int) -> Counter[tuple[Any, ...]]:
        seed(url, members=5, seed_value=seed_value)
        engine = DatabaseConfig(url).create_sync_engine()
        try:
            return Counter(
                (row["name"], row["email"], row["city"], row["occupation"])
                for row in profile_rows(engine)
            )
        finally:
            engine.dispose()

    first = population(f"sqlite:///{tmp_path / 'a.db'}", 3)
    second = population(f"sqlite:///{tmp_path / 'b.db'}", 3)
    other = population(f"sqlite:///{tmp_path / 'c.db'}", 4)

    assert sum(first.values()) == 5
    assert first == second
    assert first != other


@pytest.mark.parametrize("members", ["0", "-1", "many"])
def test_seeding_refuses_a_nonsensical_member_count(sqlite_url: str, members: str) -> None:
    result = run_catching(sqlite_url, "seed", "demo", "--members", members)
    assert result.exit_code == 2
    assert "--members" in result.output


# -- projections ----------------------------------------------------------------------------


def test_projection_status_shows_each_projection_caught_up_after_seeding(
    database_url: str,
) -> None:
    seed(database_url)

    result = run(database_url, "projections", "status")

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["projection", "position", "head", "lag"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {p.name for p in all_projections()}
    for _name, position, head, lag, error in rows.values():
        assert int(position) == int(head) > 0
        assert lag == "0"
        assert error == "-"


def test_projection_status_as_json_is_parseable(database_url: str) -> None:
    seed(database_url)

    result = run(database_url, "projections", "status", "--json")

    assert result.exit_code == 0, result.output
    statuses = json.loads(result.output)
    assert [s["name"] for s in statuses] == sorted(p.name for p in all_projections())
    for status in statuses:
        assert status["position"] == status["head"] > 0
        assert status["lag"] == 0
        assert status["events_applied"] == status["head"]
        assert status["last_error"] is None


def test_projection_status_of_an_empty_database_is_at_zero(database_url: str) -> None:
    result = run(database_url, "projections", "status", "--json")
    assert result.exit_code == 0, result.output
    assert [(s["position"], s["head"], s["lag"]) for s in json.loads(result.output)] == [
        (0, 0, 0)
    ] * len(all_projections())


def test_rebuilding_member_profiles_reproduces_identical_rows(
    database_url: str, engine: Engine
) -> None:
    seed(database_url, members=8, seed_value=11)
    profiles_before = profile_rows(engine)
    tags_before = tag_rows(engine)
    assert len(profiles_before) == 8

    result = run(database_url, "projections", "rebuild", "member_profiles")

    assert result.exit_code == 0, result.output
    assert "member_profiles: replayed" in result.output
    assert profile_rows(engine) == profiles_before
    assert tag_rows(engine) == tags_before
    status = json.loads(run(database_url, "projections", "status", "--json").output)[0]
    assert status["position"] == status["head"]
    assert status["lease_owner"] is None


def test_rebuilding_every_projection_without_a_name(database_url: str, engine: Engine) -> None:
    seed(database_url, members=3)
    before = profile_rows(engine)
    result = run(database_url, "projections", "rebuild")
    assert result.exit_code == 0, result.output
    assert "member_profiles: replayed" in result.output
    assert profile_rows(engine) == before


def test_rebuilding_an_unknown_projection_fails_naming_the_known_ones(
    database_url: str, engine: Engine
) -> None:
    seed(database_url, members=2)
    before = profile_rows(engine)

    result = run_catching(database_url, "projections", "rebuild", "nope")

    assert failed_cleanly(result), result.output
    assert "unknown projection 'nope'" in result.output
    assert "member_profiles" in result.output
    assert profile_rows(engine) == before


# -- export-schema --------------------------------------------------------------------------


def test_exported_schema_matches_the_committed_schema_file() -> None:
    result = CliRunner().invoke(main, ["export-schema"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.output == SCHEMA_FILE.read_text()


def test_export_schema_writes_to_a_file_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "schema.graphql"
    result = CliRunner().invoke(
        main, ["export-schema", "--output", str(target)], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert str(target) in result.output
    assert target.read_text() == SCHEMA_FILE.read_text()


def test_reading_commands_do_not_migrate_and_say_how_to(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()  # a database file that was never migrated
    sqlite_url = f"sqlite:///{empty}"
    result = run_catching(sqlite_url, "projections", "status")
    assert failed_cleanly(result)
    assert "patron migrate" in result.output
    assert run(sqlite_url, "migrate").exit_code == 0
    assert run(sqlite_url, "projections", "status").exit_code == 0


def test_notification_webhooks_are_registered_and_removed_from_the_command_line(
    database_url: str,
) -> None:
    assert run(database_url, "migrate").exit_code == 0
    bad = run_catching(database_url, "notifications", "add-webhook", "ftp://x", "--secret",
                       "s" * 20)
    assert failed_cleanly(bad) and "http" in bad.output
    added = run(database_url, "notifications", "add-webhook", "https://hooks.example.com/p",
                "--secret", "s" * 20)
    assert added.exit_code == 0, added.output
    webhook_id = added.output.split()[2]
    removed = run(database_url, "notifications", "remove-webhook", webhook_id)
    assert removed.exit_code == 0, removed.output
    unknown = run_catching(database_url, "notifications", "remove-webhook", "no-such-hook")
    assert failed_cleanly(unknown) and "no-such-hook" in unknown.output


# -- payments simulate ---------------------------------------------------------------------


def test_payments_simulate_signs_the_providers_callback_and_pays_the_order(
    database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the callback goes through the webhook's verification and service code.
    A failed outcome is a failed payment; a succeeded one for the amount due pays."""
    import uuid as uuid_module

    from api.config import Settings
    from api.runtime import Runtime
    from domain.metadata import Channel, EventMetadata

    monkeypatch.setenv("PATRON_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PATRON_PAYMENT_SIMULATOR", "true")
    assert run(database_url, "migrate").exit_code == 0
    runtime = Runtime(Settings.from_env(database_url))
    try:
        def meta(actor: str, role: Role) -> EventMetadata:
            return EventMetadata(actor, role, Channel.APP, "c", None, uuid_module.uuid4().hex)

        member = runtime.members.register({"name": "Lin", "email": "lin@example.com"},
                                          meta("anon", Role.ANONYMOUS)).aggregate_id
        own = meta(str(member), Role.MEMBER)
        lines = [{"product_id": "p", "sku": "s", "name": "Kettle", "quantity": 1,
                  "unit_price": 12_000}]
        order = runtime.orders.place(member, stocked(runtime, lines), None, 0, "o1",
                                     own).aggregate_id
        runtime.payments.request(order, "alipay", "simulator", "k1", own)
    finally:
        runtime.close()

    env = {"PATRON_DATABASE_URL": database_url, "PATRON_SECRET_KEY": TEST_SECRET,
           "PATRON_PAYMENT_SIMULATOR": "true"}
    declined = CliRunner().invoke(main, ["payments", "simulate", str(order), "--outcome",
                                         "failed"], env=env, catch_exceptions=False)
    assert declined.exit_code == 0, declined.output
    assert json.loads(declined.output)["recorded"] == "failed"
    paid = CliRunner().invoke(main, ["payments", "simulate", str(order), "--outcome",
                                     "succeeded"], env=env, catch_exceptions=False)
    assert paid.exit_code == 0, paid.output
    assert json.loads(paid.output) | {"position": 0} == {
        "status": 202, "accepted": True, "duplicate": False, "recorded": "paid", "position": 0}

    runtime = Runtime(Settings.from_env(database_url))
    try:
        state = runtime.orders.get(order)
        assert (state.state, state.failed_payments, state.paid_amount) == ("paid", 1, 12_000)
    finally:
        runtime.close()

    again = CliRunner().invoke(main, ["payments", "simulate", str(order), "--outcome",
                                      "succeeded"], env=env)
    assert failed_cleanly(again) and "409" in again.output
    unknown = CliRunner().invoke(main, ["payments", "simulate", "not-an-order", "--outcome",
                                        "succeeded"], env=env)
    assert failed_cleanly(unknown) and "not an order id" in unknown.output
