"""Settings read once from the environment (12-factor), with safe defaults for a laptop."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class ConfigError(RuntimeError):
    """The environment asks for something the application refuses to run with."""


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def normalize_database_url(url: str) -> str:
    """Heroku-style postgres:// URLs, and the psycopg2 driver the project ships with."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw in (None, "") else raw


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    database_url: str = "sqlite:///flashsale.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "fs"
    queue_name: str = "settlement"
    jwt_secret_key: str = DEV_JWT_SECRET
    jwt_access_minutes: int = 15
    jwt_refresh_days: int = 30
    bcrypt_rounds: int = 12
    default_currency: str = "USD"
    hold_seconds: int = 600
    settle_lease_seconds: int = 60
    settle_batch_size: int = 100
    claim_idle_seconds: int = 30
    payment_gateway: str = "simulated"
    payment_latency_ms: int = 0
    payment_timeout_seconds: float = 20.0
    payment_concurrency: int = 8
    stripe_api_key: str = ""
    lock_ttl_ms: int = 10_000
    sweep_interval_seconds: int = 5
    reconcile_interval_seconds: int = 60
    scheduler_poll_seconds: float = 1.0
    ratelimit_enabled: bool = True
    ratelimit_purchase: str = "10/minute"
    ratelimit_product_reads: str = "100/minute"
    ratelimit_login: str = "5/minute"
    max_body_bytes: int = 16 * 1024

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls) -> Settings:
        settings = cls(
            env=_str("APP_ENV", "development").lower(),
            database_url=normalize_database_url(_str("DATABASE_URL", "sqlite:///flashsale.db")),
            redis_url=_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
            key_prefix=_str("REDIS_KEY_PREFIX", "fs"),
            queue_name=_str("SETTLEMENT_QUEUE", "settlement"),
            jwt_secret_key=_str("JWT_SECRET_KEY", DEV_JWT_SECRET),
            jwt_access_minutes=_int("JWT_ACCESS_MINUTES", 15),
            jwt_refresh_days=_int("JWT_REFRESH_DAYS", 30),
            bcrypt_rounds=_int("BCRYPT_ROUNDS", 12),
            default_currency=_str("DEFAULT_CURRENCY", "USD").upper(),
            hold_seconds=_int("HOLD_SECONDS", 600),
            settle_lease_seconds=_int("SETTLE_LEASE_SECONDS", 60),
            settle_batch_size=_int("SETTLE_BATCH_SIZE", 100),
            claim_idle_seconds=_int("CLAIM_IDLE_SECONDS", 30),
            payment_gateway=_str("PAYMENT_GATEWAY", "simulated"),
            payment_latency_ms=_int("PAYMENT_LATENCY_MS", 0),
            payment_timeout_seconds=_float("PAYMENT_TIMEOUT_SECONDS", 20.0),
            payment_concurrency=_int("PAYMENT_CONCURRENCY", 8),
            stripe_api_key=_str("STRIPE_API_KEY", ""),
            lock_ttl_ms=_int("LOCK_TTL_MS", 10_000),
            sweep_interval_seconds=_int("SWEEP_INTERVAL_SECONDS", 5),
            reconcile_interval_seconds=_int("RECONCILE_INTERVAL_SECONDS", 60),
            scheduler_poll_seconds=_float("SCHEDULER_POLL_SECONDS", 1.0),
            ratelimit_enabled=_bool("RATELIMIT_ENABLED", True),
            ratelimit_purchase=_str("RATELIMIT_PURCHASE", "10/minute"),
            ratelimit_product_reads=_str("RATELIMIT_PRODUCT_READS", "100/minute"),
            ratelimit_login=_str("RATELIMIT_LOGIN", "5/minute"),
            max_body_bytes=_int("MAX_BODY_BYTES", 16 * 1024),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.hold_seconds <= 0 or self.settle_lease_seconds <= 0:
            raise ConfigError("HOLD_SECONDS and SETTLE_LEASE_SECONDS must be positive")
        if self.payment_gateway not in {"simulated"}:
            raise ConfigError(f"unknown PAYMENT_GATEWAY {self.payment_gateway!r}")
        if not self.is_production:
            return
        if self.jwt_secret_key == DEV_JWT_SECRET or len(self.jwt_secret_key) < 32:
            raise ConfigError("production needs JWT_SECRET_KEY: a random secret of 32+ characters")
        if self.database_url.startswith("sqlite"):
            raise ConfigError("production needs DATABASE_URL pointing at PostgreSQL")
