"""Runtime settings, read from environment variables (flags override where they exist)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

from limits import parse_many

from domain.errors import DomainError
from domain.loyalty_rules import LoyaltyRules
from domain.recommendation.interactions import InteractionWeights
from projections.database import DatabaseConfig

log = logging.getLogger("patron.config")


class ConfigurationError(RuntimeError):
    pass


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {raw!r}")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}") from None


_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n")


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigurationError(f"{name} must be true or false, got {raw!r}")
    return value in _TRUE


@dataclass(frozen=True)
class Settings:
    database: DatabaseConfig
    secret_key: str
    secret_key_source: str
    read_your_writes_timeout: float = 5.0
    max_page_size: int = 100
    default_page_size: int = 20
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 2000
    # Every object a query may return costs 1; lists multiply (see api/schema/limits.py).
    max_query_cost: int = 50_000
    # Bodies of POST /graphql above this many bytes are refused with 413 while reading.
    max_body_bytes: int = 1_048_576
    # Rate limits in the `limits` notation ("300/minute", "10/second;300/minute"); empty: off.
    # Anonymous calls are counted per client address, signed-in ones per token subject.
    rate_limit_anonymous: str = "300/minute"
    rate_limit_signed_in: str = "1200/minute"
    # Where the counters live: memory:// (one server) or redis://host:6379 (shared).
    rate_limit_storage: str = "memory://"
    # The longest text any argument may be (api/schema/hygiene.py); fields have their own,
    # usually smaller, limits on top.
    max_input_length: int = 10_000
    projection_batch_size: int = 500
    projection_poll_interval: float = 0.5
    run_projections: bool = True
    snapshot_interval: int = 50
    data_key_cache_seconds: float = 5.0
    loyalty_rules: LoyaltyRules = field(default_factory=LoyaltyRules)
    # How often the in-server scheduler emits due loyalty and order events (0: never).
    scheduler_interval: float = 60.0
    # Shared secrets that carriers sign their webhook bodies with, by carrier code.
    carrier_secrets: dict[str, str] = field(default_factory=dict)
    # Shared secrets that payment providers sign their callbacks with, by provider code.
    payment_secrets: dict[str, str] = field(default_factory=dict)
    # The provider a member's payment request goes to ("" : the first configured one).
    payment_provider: str = ""
    # The built-in `simulator` provider for development and the demo (its secret derives
    # from the signing key, so `patron payments simulate` can sign as it would).
    payment_simulator: bool = False

    def payment_secret(self, provider: str) -> str | None:
        """The secret `provider` signs callbacks with, or None for an unknown provider."""
        if provider in self.payment_secrets:
            return self.payment_secrets[provider]
        if provider == SIMULATOR and self.payment_simulator:
            return simulator_secret(self.secret_key)
        return None

    @property
    def payment_providers(self) -> list[str]:
        return [*self.payment_secrets, *([SIMULATOR] if self.payment_simulator else [])]

    @property
    def default_payment_provider(self) -> str | None:
        if self.payment_provider:
            return self.payment_provider
        providers = self.payment_providers
        return providers[0] if providers else None
    # The scheduler trains a new recommender model this often (0: only on request).
    recommender_retrain_hours: float = 24.0
    # At most this many items of one category in a list's top 10 (0: no cap).
    recommender_max_per_category: int = 3
    # Signal weights and decay for the recommender's interactions.
    recommender_weights: InteractionWeights = field(default_factory=InteractionWeights)

    @classmethod
    def from_env(cls, database_url: str | None = None, **overrides: object) -> Settings:
        database = DatabaseConfig.from_env(database_url)
        secret, source = resolve_secret_key(database)
        values: dict[str, object] = dict(
            database=database,
            secret_key=secret,
            secret_key_source=source,
            read_your_writes_timeout=_float("PATRON_READ_YOUR_WRITES_TIMEOUT", 5.0),
            max_page_size=_int("PATRON_MAX_PAGE_SIZE", 100),
            max_query_depth=_int("PATRON_MAX_QUERY_DEPTH", 12),
            max_aliases=_int("PATRON_MAX_ALIASES", 30),
            max_tokens=_int("PATRON_MAX_TOKENS", 2000),
            max_query_cost=_int("PATRON_MAX_QUERY_COST", 50_000),
            max_body_bytes=_int("PATRON_MAX_BODY_BYTES", 1_048_576),
            rate_limit_anonymous=_rate_limit("PATRON_RATE_LIMIT_ANONYMOUS", "300/minute"),
            rate_limit_signed_in=_rate_limit("PATRON_RATE_LIMIT_SIGNED_IN", "1200/minute"),
            rate_limit_storage=_rate_limit_storage(),
            max_input_length=_int("PATRON_MAX_INPUT_LENGTH", 10_000),
            projection_batch_size=_int("PATRON_PROJECTION_BATCH_SIZE", 500),
            projection_poll_interval=_float("PATRON_PROJECTION_POLL_INTERVAL", 0.5),
            run_projections=_bool("PATRON_RUN_PROJECTIONS", True),
            snapshot_interval=_int("PATRON_SNAPSHOT_INTERVAL", 50),
            loyalty_rules=_loyalty_rules(),
            scheduler_interval=_float("PATRON_SCHEDULER_INTERVAL", 60.0),
            carrier_secrets=_secrets("PATRON_CARRIER_SECRETS", "sf=<secret>,jd=<secret>"),
            payment_secrets=_secrets("PATRON_PAYMENT_SECRETS",
                                     "alipay=<secret>,stripe=<secret>"),
            payment_provider=os.environ.get("PATRON_PAYMENT_PROVIDER", "").strip().lower(),
            payment_simulator=_bool("PATRON_PAYMENT_SIMULATOR", database.is_sqlite),
            recommender_retrain_hours=_float("PATRON_RECOMMENDER_RETRAIN_HOURS", 24.0),
            recommender_max_per_category=_int("PATRON_RECOMMENDER_MAX_PER_CATEGORY", 3),
            recommender_weights=_recommender_weights(),
        )
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        provider = settings.payment_provider
        if provider and settings.payment_secret(provider) is None:
            raise ConfigurationError(
                f"PATRON_PAYMENT_PROVIDER={provider!r} has no secret in PATRON_PAYMENT_SECRETS"
            )
        return settings


SIMULATOR = "simulator"


def simulator_secret(secret_key: str) -> str:
    """The simulator provider's secret: derived from the signing key, never configured."""
    return hmac.new(secret_key.encode(), b"patron:payment-simulator", hashlib.sha256).hexdigest()


MIN_SECRET_LENGTH = 32


def _rate_limit(name: str, default: str) -> str:
    """A rate limit in the `limits` notation ("300/minute", "10/second;300/minute"); an
    empty value (set but blank) turns the limit off."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip():
        try:
            parse_many(raw.strip())
        except ValueError:
            raise ConfigurationError(
                f"{name} must look like 300/minute or 10/second;300/minute, got {raw!r}"
            ) from None
    return raw.strip()


def _rate_limit_storage() -> str:
    raw = os.environ.get("PATRON_RATE_LIMIT_STORAGE", "").strip() or "memory://"
    if not raw.startswith(("memory://", "redis://", "rediss://")):
        raise ConfigurationError(
            "PATRON_RATE_LIMIT_STORAGE must be memory:// or redis://host:port, got "
            f"{raw.split('://')[0]!r}://…"
        )
    return raw


def _secrets(name: str, example: str) -> dict[str, str]:
    """`name`="sf=<secret>,jd=<secret>": one signing secret per sender (carrier, provider)."""
    raw = os.environ.get(name, "")
    secrets_by_sender: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        sender, _, secret = part.partition("=")
        if not sender.strip() or len(secret.strip()) < 16:
            raise ConfigurationError(
                f"{name} must look like {example} with secrets of at least 16 characters"
            )
        secrets_by_sender[sender.strip().lower()] = secret.strip()
    return secrets_by_sender


def _recommender_weights() -> InteractionWeights:
    """PATRON_RECOMMENDER_WEIGHTS="purchase=5,view=0.2,half_life_days=90": any field of
    `InteractionWeights`; the rest keep their defaults."""
    raw = os.environ.get("PATRON_RECOMMENDER_WEIGHTS", "")
    names = {f.name: f.type for f in fields(InteractionWeights)}
    values: dict[str, float | int | None] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, text = (piece.strip() for piece in part.partition("="))
        if name not in names:
            raise ConfigurationError(
                f"PATRON_RECOMMENDER_WEIGHTS: unknown weight {name!r}; known: "
                + ", ".join(sorted(names)))
        try:
            number = float(text)
        except ValueError:
            raise ConfigurationError(
                f"PATRON_RECOMMENDER_WEIGHTS: {name} must be a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ConfigurationError(f"PATRON_RECOMMENDER_WEIGHTS: {name} must be finite")
        values[name] = int(number) if name == "purchase_max_units" else number
    try:
        return InteractionWeights(**values)  # type: ignore[arg-type]
    except ValueError as error:
        raise ConfigurationError(f"PATRON_RECOMMENDER_WEIGHTS: {error}") from None


def _loyalty_rules() -> LoyaltyRules:
    path = os.environ.get("PATRON_LOYALTY_RULES")
    try:
        return LoyaltyRules.load(path)
    except DomainError as error:
        raise ConfigurationError(f"PATRON_LOYALTY_RULES: {error.message}") from None


def resolve_secret_key(database: DatabaseConfig) -> tuple[str, str]:
    """PATRON_SECRET_KEY, or a key generated once and kept (0600) beside the SQLite file.

    PostgreSQL deployments usually run several servers, which must share one key, so
    there the key must be given explicitly.
    """
    configured = os.environ.get("PATRON_SECRET_KEY")
    if configured:
        if len(configured) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"PATRON_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters"
            )
        return configured, "PATRON_SECRET_KEY"
    if not database.is_sqlite:
        raise ConfigurationError(
            "PATRON_SECRET_KEY is required with PostgreSQL (every server must share it); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    path = secret_key_path(database)
    source = str(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a private temporary file and linked into place, so a concurrent
        # starter never reads a half-written key: it either wins or reads ours.
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(temporary, path)
            source = f"{path} (generated)"
            log.warning("PATRON_SECRET_KEY is not set: generated a signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"the signing key in {path} is shorter than {MIN_SECRET_LENGTH} characters; "
            "delete the file to generate a new one (existing tokens stop working)"
        )
    return key, source


def secret_key_path(database: DatabaseConfig) -> Path:
    db = database.sqlite_path
    return db.with_name(db.name + ".secret")
