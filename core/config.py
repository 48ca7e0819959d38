"""Settings read once from the environment (12-factor), with safe defaults for a laptop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import unquote, urlsplit

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"
ENVIRONMENTS = ("development", "test", "production")


class ConfigError(RuntimeError):
    """The environment asks for something the application refuses to run with."""


def normalize_database_url(url: str) -> str:
    """Heroku-style postgres:// URLs, and the psycopg2 driver the project ships with."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_node_url(url: str) -> str | None:
    """The plain URL of one node when `url` names a Redis Cluster (redis+cluster://), else None."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return f"{plain}://{rest}" if plain else None


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_URL_FORM = "redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]"


@dataclass(frozen=True)
class SentinelService:
    """A primary that Sentinels name: the Sentinels' addresses, the service's name, and the
    database and credentials of its servers (the Sentinels themselves take none)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def sentinel_service(url: str) -> SentinelService | None:
    """What a redis+sentinel:// URL names; None for a URL of another scheme. ValueError, saying
    what is wrong without repeating the URL (it may hold a password), for a malformed one."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() != SENTINEL_SCHEME:
        return None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"takes no options (?...#...): {SENTINEL_URL_FORM}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    path = parts.path.strip("/").split("/")
    if not path[0] or len(path) > 2:
        raise ValueError(f"names no service, or more than a service and a db: {SENTINEL_URL_FORM}")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"its db must be a number, not {path[1]!r}")
    return SentinelService(
        sentinels=tuple(_sentinel_address(host) for host in hosts.split(",")),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def _sentinel_address(location: str) -> tuple[str, int]:
    try:
        address = urlsplit(f"//{location.strip()}")
        host, port = address.hostname, address.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ValueError(f"each Sentinel needs a host and a port, not {location!r}")
    return host, port


def _env(name: str, default: Any) -> Any:
    """A setting read from the environment variable `name`."""
    return field(default=default, metadata={"env": name})


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


@dataclass(frozen=True)
class Settings:
    # Unset means production: a process started anywhere without configuration refuses the
    # public development secret and SQLite instead of accepting forged tokens.
    env: str = _env("APP_ENV", "production")
    database_url: str = _env("DATABASE_URL", "sqlite:///flashsale.db")
    # Queues, scheduler, rate limits, revocations: redis:// names one server; a redis+sentinel://
    # URL (SENTINEL_URL_FORM) names Sentinels, and every client follows the primary they name.
    redis_url: str = _env("REDIS_URL", "redis://127.0.0.1:6379/0")
    # Stock, holds, seats and waiting rooms; unset, REDIS_URL. A redis+cluster:// URL names a
    # Redis Cluster (any one node of it): every script's keys share one product's hash tag; a
    # redis+sentinel:// URL, a primary behind Sentinels.
    inventory_redis_url: str = _env("INVENTORY_REDIS_URL", "")
    redis_pool_size: int = _env("REDIS_POOL_SIZE", 64)
    # How long a web process waits for the inventory's Redis (a purchase answers 503 after it);
    # workers wait longer (core/runtime.py REDIS_TIMEOUT_S): settlement's calls are not hurried.
    inventory_timeout_seconds: float = _env("INVENTORY_TIMEOUT_SECONDS", 1.0)
    # GET /health runs its checks side by side, each given this long before it counts as failed.
    health_check_timeout_seconds: float = _env("HEALTH_CHECK_TIMEOUT_SECONDS", 0.5)
    # Replicas of the inventory's primary that must have a reservation before its 202 (WAIT);
    # 0: none asked (one Redis). One that does not answer in time makes SQL record the order.
    inventory_min_replicas: int = _env("INVENTORY_MIN_REPLICAS", 0)
    inventory_replica_wait_ms: int = _env("INVENTORY_REPLICA_WAIT_MS", 50)
    key_prefix: str = _env("REDIS_KEY_PREFIX", "fs")
    queue_name: str = _env("SETTLEMENT_QUEUE", "settlement")
    jwt_secret_key: str = _env("JWT_SECRET_KEY", DEV_JWT_SECRET)
    jwt_access_minutes: int = _env("JWT_ACCESS_MINUTES", 15)
    jwt_refresh_days: int = _env("JWT_REFRESH_DAYS", 30)
    bcrypt_rounds: int = _env("BCRYPT_ROUNDS", 12)
    default_currency: str = _env("DEFAULT_CURRENCY", "USD")
    hold_seconds: int = _env("HOLD_SECONDS", 600)
    # How long a waiting room's pass lets its buyer buy (signed with JWT_SECRET_KEY, own salt).
    pass_seconds: int = _env("PASS_SECONDS", 600)
    # How many buyers who waited for a sale's opening the web processes can tell their places a
    # second: the crowd is asked to come back at the opening spread over crowd / this seconds.
    room_opening_polls_per_second: int = _env("ROOM_OPENING_POLLS_PER_SECOND", 1500)
    settle_lease_seconds: int = _env("SETTLE_LEASE_SECONDS", 60)
    settle_batch_size: int = _env("SETTLE_BATCH_SIZE", 100)
    claim_idle_seconds: int = _env("CLAIM_IDLE_SECONDS", 30)
    payment_gateway: str = _env("PAYMENT_GATEWAY", "simulated")
    payment_latency_ms: int = _env("PAYMENT_LATENCY_MS", 0)
    payment_concurrency: int = _env("PAYMENT_CONCURRENCY", 8)
    payment_timeout_seconds: float = _env("PAYMENT_TIMEOUT_SECONDS", 20.0)
    stripe_api_key: str = _env("STRIPE_API_KEY", "")
    stripe_api_base: str = _env("STRIPE_API_BASE", "")
    stripe_webhook_secret: str = _env("STRIPE_WEBHOOK_SECRET", "")
    lock_ttl_ms: int = _env("LOCK_TTL_MS", 10_000)
    final_status_ttl_seconds: int = _env("FINAL_STATUS_TTL_SECONDS", 900)
    sold_out_cache_ms: int = _env("SOLD_OUT_CACHE_MS", 500)
    # Search answers each web process keeps (0: none), valid until the catalogue changes, and
    # for this long at most (a change made around the API).
    log_level: str = _env("LOG_LEVEL", "INFO")
    # GET /metrics asks for this Bearer token; unset, it is open except in production (off).
    metrics_token: str = _env("METRICS_TOKEN", "")
    # RQ workers and the scheduler serve their metrics on this port when set (0: not served;
    # with several of them on a machine, the first to bind serves the machine's summed values).
    metrics_port: int = _env("METRICS_PORT", 0)
    metrics_host: str = _env("METRICS_HOST", "127.0.0.1")
    search_cache_entries: int = _env("SEARCH_CACHE_ENTRIES", 2000)
    search_cache_seconds: float = _env("SEARCH_CACHE_SECONDS", 30.0)
    sweep_interval_seconds: int = _env("SWEEP_INTERVAL_SECONDS", 5)
    reconcile_interval_seconds: int = _env("RECONCILE_INTERVAL_SECONDS", 60)
    # Mail: smtp://user:password@host:port (STARTTLS with ?starttls=true), or smtps:// (TLS);
    # unset, the outbox keeps its mail until one is set.
    smtp_url: str = _env("SMTP_URL", "")
    mail_from: str = _env("MAIL_FROM", "Flash sale <tickets@flashsale.example>")
    public_url: str = _env("PUBLIC_URL", "http://localhost:8000")  # links in mail
    mail_interval_seconds: int = _env("MAIL_INTERVAL_SECONDS", 5)
    reminder_interval_seconds: int = _env("REMINDER_INTERVAL_SECONDS", 600)
    scheduler_poll_seconds: float = _env("SCHEDULER_POLL_SECONDS", 1.0)
    ratelimit_enabled: bool = _env("RATELIMIT_ENABLED", True)
    ratelimit_purchase: str = _env("RATELIMIT_PURCHASE", "10/minute")
    ratelimit_product_reads: str = _env("RATELIMIT_PRODUCT_READS", "100/minute")
    # Searches and suggestions (the search page asks for suggestions as a buyer types).
    ratelimit_search: str = _env("RATELIMIT_SEARCH", "300/minute")
    ratelimit_login: str = _env("RATELIMIT_LOGIN", "5/minute")
    ratelimit_register: str = _env("RATELIMIT_REGISTER", "5/minute")
    ratelimit_register_global: str = _env("RATELIMIT_REGISTER_GLOBAL", "100/minute")
    # How many proxies in front of the app append to X-Forwarded-For (0: the peer is the client).
    trusted_proxies: int = _env("TRUSTED_PROXIES", 0)
    max_body_bytes: int = _env("MAX_BODY_BYTES", 16 * 1024)

    @property
    def inventory_url(self) -> str:
        return self.inventory_redis_url or self.redis_url

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls) -> Settings:
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = os.environ.get(spec.metadata["env"], "")
            if raw != "":
                values[spec.name] = _parse(raw, spec.default)
        settings = cls(**values)
        settings = replace(
            settings,
            env=settings.env.lower(),
            database_url=normalize_database_url(settings.database_url),
            default_currency=settings.default_currency.upper(),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.env!r}")
        if self.jwt_secret_key == DEV_JWT_SECRET and self.env != "development":
            raise ConfigError("JWT_SECRET_KEY is unset: set it, or APP_ENV=development on a laptop")
        if cluster_node_url(self.redis_url):
            raise ConfigError(
                "REDIS_URL cannot name a Redis Cluster (RQ's keys span slots): "
                "set INVENTORY_REDIS_URL to the cluster and REDIS_URL to a plain Redis"
            )
        for name, url in (
            ("REDIS_URL", self.redis_url),
            ("INVENTORY_REDIS_URL", self.inventory_url),
        ):
            try:
                sentinel_service(url)
            except ValueError as error:
                raise ConfigError(f"{name} (a Sentinel URL) {error}") from None
        if min(self.trusted_proxies, self.inventory_min_replicas,
               self.inventory_replica_wait_ms) < 0:  # fmt: skip
            raise ConfigError(
                "TRUSTED_PROXIES, INVENTORY_MIN_REPLICAS and INVENTORY_REPLICA_WAIT_MS "
                "must be 0 or more"
            )
        if min(self.hold_seconds, self.settle_lease_seconds, self.pass_seconds,
               self.room_opening_polls_per_second) <= 0:  # fmt: skip
            raise ConfigError(
                "HOLD_SECONDS, SETTLE_LEASE_SECONDS, PASS_SECONDS and "
                "ROOM_OPENING_POLLS_PER_SECOND must be positive"
            )
        if min(self.inventory_timeout_seconds, self.health_check_timeout_seconds) <= 0:
            raise ConfigError(
                "INVENTORY_TIMEOUT_SECONDS and HEALTH_CHECK_TIMEOUT_SECONDS must be positive"
            )
        if self.payment_gateway not in {"simulated", "stripe"}:
            raise ConfigError(f"unknown PAYMENT_GATEWAY {self.payment_gateway!r}")
        if self.payment_gateway == "stripe" and not self.stripe_api_key:
            raise ConfigError("PAYMENT_GATEWAY=stripe needs STRIPE_API_KEY")
        if not self.is_production:
            return
        if self.jwt_secret_key == DEV_JWT_SECRET or len(self.jwt_secret_key) < 32:
            raise ConfigError("production needs JWT_SECRET_KEY: a random secret of 32+ characters")
        if self.database_url.startswith("sqlite"):
            raise ConfigError("production needs DATABASE_URL pointing at PostgreSQL")
        if self.payment_gateway == "stripe" and not self.stripe_webhook_secret:
            raise ConfigError("production with Stripe needs STRIPE_WEBHOOK_SECRET")
