"""Configuration: one database URL, the signing key, durations and numeric settings."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from api.auth import parse_duration
from api.config import ConfigurationError, Settings, resolve_secret_key, secret_key_path
from domain.errors import ErrorCode
from domain.loyalty_rules import LoyaltyRules, TierRule
from projections.database import DEFAULT_DATABASE_URL, DatabaseConfig, DatabaseURLError

LONG_KEY = "k" * 32


@pytest.fixture
def no_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATRON_SECRET_KEY", raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'patron.db'}"


# -- database URL ---------------------------------------------------------------------------


def test_without_a_url_the_default_is_a_sqlite_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PATRON_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    database = DatabaseConfig.from_env()

    assert database.url == DEFAULT_DATABASE_URL == "sqlite:///./patron.db"
    assert database.is_sqlite
    assert not database.is_postgres
    assert database.sqlite_path == tmp_path.resolve() / "patron.db"


def test_the_url_comes_from_the_environment_unless_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATRON_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert DatabaseConfig.from_env().sqlite_path == tmp_path / "env.db"
    override = f"sqlite:///{tmp_path / 'flag.db'}"
    assert DatabaseConfig.from_env(override).sqlite_path == tmp_path / "flag.db"


def test_a_relative_sqlite_path_is_resolved_against_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    database = DatabaseConfig("sqlite:///var/data/patron.db")
    assert database.sqlite_path == tmp_path.resolve() / "var" / "data" / "patron.db"
    assert database.sqlite_path.is_absolute()


def test_an_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    database = DatabaseConfig(f"sqlite:///{tmp_path}/abs.db")
    assert database.sqlite_path == tmp_path / "abs.db"


def test_a_home_relative_sqlite_path_is_expanded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    database = DatabaseConfig("sqlite:///~/patron.db")
    assert database.sqlite_path == tmp_path.resolve() / "patron.db"


def test_sqlite_settings_for_the_event_store_point_at_the_same_file(tmp_path: Path) -> None:
    database = DatabaseConfig(f"sqlite:///{tmp_path / 'p.db'}")
    env = database.eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"
    assert env["SQLITE_DBNAME"] == str(tmp_path / "p.db")
    assert int(env["SQLITE_LOCK_TIMEOUT"]) > 0


def test_sqlite_engines_use_the_sync_and_async_drivers_on_the_resolved_path(
    tmp_path: Path,
) -> None:
    database = DatabaseConfig(f"sqlite:///{tmp_path / 'p.db'}")
    assert database.sync_url().drivername == "sqlite+pysqlite"
    assert database.async_url().drivername == "sqlite+aiosqlite"
    assert database.sync_url().database == str(tmp_path / "p.db")
    assert database.async_url().database == str(tmp_path / "p.db")


def test_a_postgresql_url_configures_the_event_store_from_its_parts() -> None:
    database = DatabaseConfig("postgresql://shop:s3cret@db.internal:6543/patron")

    env = database.eventsourcing_env()

    assert database.is_postgres
    assert not database.is_sqlite
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert env["POSTGRES_DBNAME"] == "patron"
    assert env["POSTGRES_HOST"] == "db.internal"
    assert env["POSTGRES_PORT"] == "6543"
    assert env["POSTGRES_USER"] == "shop"
    assert env["POSTGRES_PASSWORD"] == "s3cret"


def test_a_minimal_postgresql_url_falls_back_to_the_usual_defaults() -> None:
    env = DatabaseConfig("postgresql://localhost").eventsourcing_env()
    assert env["POSTGRES_DBNAME"] == "postgres"
    assert env["POSTGRES_HOST"] == "localhost"
    assert env["POSTGRES_PORT"] == "5432"
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == ""


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://shop@db:5432/patron",
        "postgresql+psycopg://shop@db:5432/patron",
        "postgresql+asyncpg://shop@db:5432/patron",
    ],
)
def test_postgresql_engines_use_psycopg_for_sync_and_asyncpg_for_async(url: str) -> None:
    database = DatabaseConfig(url)
    assert database.sync_url().drivername == "postgresql+psycopg"
    assert database.async_url().drivername == "postgresql+asyncpg"
    assert database.sync_url().database == "patron"
    assert database.async_url().host == "db"


def test_the_safe_url_hides_the_password() -> None:
    database = DatabaseConfig("postgresql://shop:s3cret@db:5432/patron")
    assert "s3cret" not in database.safe_url
    assert "shop" in database.safe_url


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/patron",
        "oracle://scott@localhost/orcl",
        "postgres://shop@db/patron",
        "mongodb://localhost/patron",
    ],
)
def test_unsupported_database_schemes_are_rejected(url: str) -> None:
    with pytest.raises(DatabaseURLError, match="unsupported database URL"):
        DatabaseConfig(url)


def test_the_rejection_of_an_unsupported_url_does_not_reveal_its_password() -> None:
    with pytest.raises(DatabaseURLError) as caught:
        DatabaseConfig("mysql://root:hunter2@localhost/patron")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///"])
def test_sqlite_without_a_file_is_rejected(url: str) -> None:
    with pytest.raises(DatabaseURLError, match="file path"):
        DatabaseConfig(url)


@pytest.mark.parametrize("url", ["not a url", "://nothing", ""])
def test_garbage_urls_are_rejected_as_database_url_errors(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        DatabaseConfig(url)


def test_database_url_errors_are_value_errors() -> None:
    assert issubclass(DatabaseURLError, ValueError)


# -- signing key ----------------------------------------------------------------------------


def test_the_configured_secret_key_is_used_as_is(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", LONG_KEY)
    settings = Settings.from_env(sqlite_url)
    assert settings.secret_key == LONG_KEY
    assert settings.secret_key_source == "PATRON_SECRET_KEY"
    assert not secret_key_path(settings.database).exists()


@pytest.mark.usefixtures("no_secret_key")
def test_without_a_configured_key_sqlite_generates_one_in_a_private_file_beside_the_db(
    sqlite_url: str,
) -> None:
    settings = Settings.from_env(sqlite_url)

    key_file = settings.database.sqlite_path.with_name("patron.db.secret")
    assert secret_key_path(settings.database) == key_file
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == settings.secret_key
    assert len(settings.secret_key) >= 32
    assert str(key_file) in settings.secret_key_source
    assert settings.secret_key_source.endswith("(generated)")


@pytest.mark.usefixtures("no_secret_key")
def test_the_generated_key_is_reused_on_the_next_start(sqlite_url: str) -> None:
    first = Settings.from_env(sqlite_url)
    second = Settings.from_env(sqlite_url)

    assert second.secret_key == first.secret_key
    assert first.secret_key_source.endswith("(generated)")
    assert not second.secret_key_source.endswith("(generated)")


@pytest.mark.usefixtures("no_secret_key")
def test_each_sqlite_database_gets_its_own_generated_key(tmp_path: Path) -> None:
    one = Settings.from_env(f"sqlite:///{tmp_path / 'one.db'}")
    two = Settings.from_env(f"sqlite:///{tmp_path / 'two.db'}")
    assert one.secret_key != two.secret_key


@pytest.mark.usefixtures("no_secret_key")
def test_the_key_file_is_private_whatever_the_umask(sqlite_url: str) -> None:
    previous = os.umask(0o000)
    try:
        settings = Settings.from_env(sqlite_url)
    finally:
        os.umask(previous)
    key_file = secret_key_path(settings.database)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.usefixtures("no_secret_key")
@pytest.mark.parametrize("content", ["\n", "short"], ids=["empty", "short"])
def test_a_key_file_that_is_empty_or_too_short_is_not_silently_used(
    sqlite_url: str, content: str
) -> None:
    """Exposes a bug: resolve_secret_key returns whatever the file holds, unchecked.

    An empty file (left by a crash between creating and writing it, or truncated by hand)
    yields the key "" — every token mint then fails with jwt's InvalidKeyError — and a
    short one silently signs tokens with a weak key. The environment variable is held to
    32 characters; the file should be too (reject, or regenerate).
    """
    database = DatabaseConfig(sqlite_url)
    key_file = secret_key_path(database)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(content)
    key_file.chmod(0o600)

    try:
        key, _source = resolve_secret_key(database)
    except ConfigurationError:
        return
    assert len(key) >= 32


@pytest.mark.parametrize("short", ["x", "s" * 31])
def test_a_configured_key_shorter_than_32_characters_is_rejected(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, short: str
) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", short)
    with pytest.raises(ConfigurationError, match="at least 32"):
        Settings.from_env(sqlite_url)


def test_a_key_of_exactly_32_characters_is_accepted(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", "s" * 32)
    assert Settings.from_env(sqlite_url).secret_key == "s" * 32


@pytest.mark.usefixtures("no_secret_key")
def test_postgresql_requires_a_configured_key() -> None:
    with pytest.raises(ConfigurationError, match="PATRON_SECRET_KEY is required"):
        Settings.from_env("postgresql://postgres@127.0.0.1:5432/patron")


def test_postgresql_with_a_configured_key_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", LONG_KEY)
    settings = Settings.from_env("postgresql://postgres@127.0.0.1:5432/patron")
    assert settings.secret_key == LONG_KEY
    assert settings.database.is_postgres


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 5m ", timedelta(minutes=5)),
    ],
)
def test_durations_are_a_whole_number_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "30", "m", "1.5h", "-1h", "1 h", "30M", "1y", "1h30m", "soon"]
)
def test_malformed_durations_are_rejected_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\."):
        parse_duration(text)


def test_a_duration_too_large_to_represent_is_rejected_as_a_value_error() -> None:
    """Exposes a bug: timedelta overflows with OverflowError, not the documented ValueError,
    so callers that catch ValueError (the `token` command) crash instead."""
    with pytest.raises(ValueError):
        parse_duration("99999999999d")


# -- numeric settings -----------------------------------------------------------------------


def test_numeric_settings_have_defaults(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    for name in (
        "PATRON_READ_YOUR_WRITES_TIMEOUT",
        "PATRON_MAX_PAGE_SIZE",
        "PATRON_MAX_QUERY_DEPTH",
        "PATRON_PROJECTION_BATCH_SIZE",
        "PATRON_PROJECTION_POLL_INTERVAL",
        "PATRON_RUN_PROJECTIONS",
        "PATRON_SNAPSHOT_INTERVAL",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(sqlite_url)
    assert settings.read_your_writes_timeout == 5.0
    assert settings.max_page_size == 100
    assert settings.max_query_depth == 12
    assert settings.projection_batch_size == 500
    assert settings.projection_poll_interval == 0.5
    assert settings.run_projections is True
    assert settings.snapshot_interval == 50


def test_numeric_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("PATRON_READ_YOUR_WRITES_TIMEOUT", "2.5")
    monkeypatch.setenv("PATRON_MAX_PAGE_SIZE", "40")
    monkeypatch.setenv("PATRON_SNAPSHOT_INTERVAL", "10")
    monkeypatch.setenv("PATRON_RUN_PROJECTIONS", "no")
    settings = Settings.from_env(sqlite_url)
    assert settings.read_your_writes_timeout == 2.5
    assert settings.max_page_size == 40
    assert settings.snapshot_interval == 10
    assert settings.run_projections is False


def test_an_empty_setting_means_the_default(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("PATRON_MAX_PAGE_SIZE", "")
    assert Settings.from_env(sqlite_url).max_page_size == 100


def test_explicit_overrides_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("PATRON_RUN_PROJECTIONS", "yes")
    settings = Settings.from_env(sqlite_url, run_projections=False, max_page_size=7)
    assert settings.run_projections is False
    assert settings.max_page_size == 7


@pytest.mark.parametrize(
    "name",
    [
        "PATRON_READ_YOUR_WRITES_TIMEOUT",
        "PATRON_PROJECTION_POLL_INTERVAL",
        "PATRON_MAX_PAGE_SIZE",
        "PATRON_MAX_QUERY_DEPTH",
        "PATRON_PROJECTION_BATCH_SIZE",
        "PATRON_SNAPSHOT_INTERVAL",
    ],
)
@pytest.mark.parametrize("value", ["abc", "5 seconds", "1,5"])
def test_a_non_numeric_setting_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(sqlite_url)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_whole_number_setting_that_is_not_finite_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, value: str
) -> None:
    """Exposes a bug: `_int` converts via float, so "nan"/"inf" pass `_float` and then
    `int()` raises a bare ValueError/OverflowError instead of a ConfigurationError (the CLI
    only turns ConfigurationError into a clean message)."""
    monkeypatch.setenv("PATRON_MAX_PAGE_SIZE", value)
    with pytest.raises(ConfigurationError, match="PATRON_MAX_PAGE_SIZE"):
        Settings.from_env(sqlite_url)


def test_the_example_loyalty_rules_file_documents_the_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "loyalty-rules.example.toml"
    assert LoyaltyRules.load(example) == LoyaltyRules()


def test_the_example_loyalty_rules_file_names_every_rule() -> None:
    """It says it lists every rule: each setting and each tier flag appears in it."""
    example = (Path(__file__).resolve().parent.parent / "loyalty-rules.example.toml").read_text()
    settings = [f.name for f in dataclasses.fields(LoyaltyRules)]
    tier_settings = [f.name for f in dataclasses.fields(TierRule) if f.name != "tier"]
    missing = [name for name in settings + tier_settings
               if not re.search(rf"^\[?{name}\b", example, re.MULTILINE)
               and f"[{name}." not in example]
    assert missing == []


def test_loyalty_rules_come_from_the_file_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('return_window_days = 14\n[tiers.gold]\nthreshold = 500000\n')
    monkeypatch.setenv("PATRON_LOYALTY_RULES", str(rules))
    settings = Settings.from_env(f"sqlite:///{tmp_path / 'p.db'}")
    assert settings.loyalty_rules.return_window_days == 14
    assert settings.loyalty_rules.tier_rule("gold").threshold == 500_000

    rules.write_text("return_window_days = 'soon'\n")
    with pytest.raises(ConfigurationError, match="PATRON_LOYALTY_RULES"):
        Settings.from_env(f"sqlite:///{tmp_path / 'p.db'}")


def test_the_readme_explains_every_error_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [code.value for code in ErrorCode if f"`{code.value}`" not in readme] == []


# -- limits of the GraphQL edge -------------------------------------------------------------


def test_edge_limits_have_defaults_and_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    for name in ("PATRON_MAX_QUERY_COST", "PATRON_MAX_BODY_BYTES", "PATRON_MAX_ALIASES",
                 "PATRON_MAX_TOKENS", "PATRON_RATE_LIMIT_ANONYMOUS",
                 "PATRON_RATE_LIMIT_SIGNED_IN", "PATRON_RATE_LIMIT_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env(sqlite_url)
    assert (settings.max_query_cost, settings.max_body_bytes) == (50_000, 1_048_576)
    assert (settings.max_aliases, settings.max_tokens) == (30, 2000)
    assert settings.rate_limit_anonymous == "300/minute"
    assert settings.rate_limit_signed_in == "1200/minute"
    assert settings.rate_limit_storage == "memory://"
    monkeypatch.setenv("PATRON_MAX_QUERY_COST", "900")
    monkeypatch.setenv("PATRON_RATE_LIMIT_ANONYMOUS", "5/second;100/hour")
    monkeypatch.setenv("PATRON_RATE_LIMIT_SIGNED_IN", " ")
    monkeypatch.setenv("PATRON_RATE_LIMIT_STORAGE", "redis://127.0.0.1:6379")
    settings = Settings.from_env(sqlite_url)
    assert settings.max_query_cost == 900
    assert settings.rate_limit_anonymous == "5/second;100/hour"
    assert settings.rate_limit_signed_in == ""
    assert settings.rate_limit_storage == "redis://127.0.0.1:6379"


@pytest.mark.parametrize(("name", "value"), [
    ("PATRON_RATE_LIMIT_ANONYMOUS", "lots"),
    ("PATRON_RATE_LIMIT_SIGNED_IN", "10 per fortnight"),
    ("PATRON_RATE_LIMIT_STORAGE", "postgres://db/rates"),
])
def test_a_malformed_rate_limit_setting_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env(sqlite_url)


def test_payment_providers_have_secrets_and_the_simulator_is_for_development(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATRON_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("PATRON_PAYMENT_SECRETS", "Alipay=alipay-secret-0123456789")
    sqlite = Settings.from_env(f"sqlite:///{tmp_path / 'p.db'}")
    assert sqlite.payment_secret("alipay") == "alipay-secret-0123456789"
    assert sqlite.payment_providers == ["alipay", "simulator"]  # on by default with SQLite
    assert sqlite.default_payment_provider == "alipay"
    assert sqlite.payment_secret("simulator") not in (None, "k" * 40)
    assert sqlite.payment_secret("paypal") is None

    postgres = Settings.from_env("postgresql://postgres@127.0.0.1:5432/x")
    assert postgres.payment_providers == ["alipay"]  # never on by default in production
    assert postgres.payment_secret("simulator") is None

    monkeypatch.setenv("PATRON_PAYMENT_PROVIDER", "stripe")
    with pytest.raises(ConfigurationError, match="PATRON_PAYMENT_PROVIDER"):
        Settings.from_env("postgresql://postgres@127.0.0.1:5432/x")
    monkeypatch.delenv("PATRON_PAYMENT_PROVIDER")
    monkeypatch.setenv("PATRON_PAYMENT_SECRETS", "alipay=short")
    with pytest.raises(ConfigurationError, match="PATRON_PAYMENT_SECRETS"):
        Settings.from_env("postgresql://postgres@127.0.0.1:5432/x")
