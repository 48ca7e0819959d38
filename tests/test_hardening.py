"""Hardening of the web side: durable revocations, Redis outages, rate limits behind proxies and
on registration, login timing, rq-dashboard's state-changing routes and safe configuration."""

from __future__ import annotations

import pytest

from core.config import DEV_JWT_SECRET, ConfigError, Settings

# --- configuration: the development secret only where development is said -------------------------


def test_unset_app_env_refuses_the_development_secret(monkeypatch):
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_unset_app_env_refuses_sqlite(monkeypatch):
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///shop.db")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_development_said_explicitly_starts_with_the_development_secret(monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.delenv("JWT_SECRET_KEY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///shop.db")
    settings = Settings.from_env()
    assert settings.jwt_secret_key == DEV_JWT_SECRET and not settings.is_production


@pytest.mark.parametrize("env", ["test", "production", "Production"])
def test_any_other_environment_refuses_the_development_secret(monkeypatch, env):
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.setenv("JWT_SECRET_KEY", DEV_JWT_SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    with pytest.raises(ConfigError):
        Settings.from_env()


def test_an_unknown_app_env_is_refused(monkeypatch):
    monkeypatch.setenv("APP_ENV", "prod")
    monkeypatch.setenv("JWT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/shop")
    with pytest.raises(ConfigError):
        Settings.from_env()
