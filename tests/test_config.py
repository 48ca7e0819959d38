"""Settings come from the environment; production refuses unsafe defaults."""

from __future__ import annotations

import pytest

from core.config import DEV_JWT_SECRET, ConfigError, Settings, cluster_node_url
from core.money import AmountError, to_decimal_string, to_minor


def test_settings_are_read_and_typed_from_the_environment(monkeypatch):
    monkeypatch.setenv("HOLD_SECONDS", "42")
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    monkeypatch.setenv("SCHEDULER_POLL_SECONDS", "0.5")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db:5432/shop")
    settings = Settings.from_env()
    assert settings.hold_seconds == 42
    assert settings.ratelimit_enabled is False
    assert settings.scheduler_poll_seconds == 0.5
    assert settings.database_url == "postgresql+psycopg2://u@db:5432/shop"


@pytest.mark.parametrize(
    ("secret", "database_url"),
    [
        (DEV_JWT_SECRET, "postgresql://u@db/shop"),
        ("short", "postgresql://u@db/shop"),
        ("x" * 40, "sqlite:///shop.db"),
    ],
)
def test_production_refuses_to_start_with_unsafe_settings(monkeypatch, secret, database_url):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", database_url)
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_production_starts_with_a_real_secret(monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    assert Settings.from_env().is_production


def test_amounts_are_exact_in_each_currency():
    assert to_minor("19.99", "USD") == 1999
    assert to_minor("1500", "KRW") == 1500
    assert to_minor("1500", "JPY") == 1500
    assert to_minor("1.234", "KWD") == 1234
    assert to_decimal_string(1999, "USD") == "19.99"
    assert to_decimal_string(1500, "JPY") == "1500"
    with pytest.raises(AmountError):
        to_minor("1.5", "JPY")
    with pytest.raises(AmountError):
        to_minor("0.001", "USD")


def test_stripe_needs_its_keys(monkeypatch):
    monkeypatch.setenv("PAYMENT_GATEWAY", "stripe")
    monkeypatch.setenv("STRIPE_API_KEY", "")
    with pytest.raises(ConfigError):
        Settings.from_env()
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_123")
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "")
    with pytest.raises(ConfigError):
        Settings.from_env()
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_123")
    assert Settings.from_env().payment_gateway == "stripe"


def test_the_inventory_may_live_on_a_cluster_the_queues_may_not(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://queues:6379/0")
    monkeypatch.delenv("INVENTORY_REDIS_URL", raising=False)
    assert Settings.from_env().inventory_url == "redis://queues:6379/0"
    monkeypatch.setenv("INVENTORY_REDIS_URL", "redis+cluster://node-1:7000")
    assert Settings.from_env().inventory_url == "redis+cluster://node-1:7000"
    assert cluster_node_url("redis+cluster://node-1:7000") == "redis://node-1:7000"
    assert cluster_node_url("rediss+cluster://node-1:7000") == "rediss://node-1:7000"
    assert cluster_node_url("redis://node-1:7000") is None
    monkeypatch.setenv("REDIS_URL", "redis+cluster://node-1:7000")
    with pytest.raises(ConfigError, match="INVENTORY_REDIS_URL"):
        Settings.from_env()
