"""Test set-up: a real Redis and a real database.

TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL point the suite at running servers; the suite
then works in a database it creates and drops, and in the Redis database number the URL names
(reserved for the tests: the suite deletes every key in it). Unset, it uses SQLite in a temporary
folder and starts its own redis-server on a free port.

TEST_INVENTORY_REDIS=cluster puts the inventory (INVENTORY_REDIS_URL) on a Redis Cluster of three
primaries the suite starts on free ports and stops, the queues staying on TEST_REDIS_URL's Redis.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import create_engine, text

from tests.servers import LocalStripe, RedisClusterProcess, RedisProcess

_TMP = Path(tempfile.mkdtemp(prefix="flashsale-tests-"))
_REDIS: RedisProcess | None = None
_CLUSTER: RedisClusterProcess | None = None
_PG_ADMIN_URL: str | None = None
_PG_DB = f"flashsale_test_{secrets.token_hex(4)}"
# localstripe's port, held by a socket of ours until it starts: a port only looked up (free_port)
# can meanwhile become the local end of one of the suite's many connections (a cluster's nodes
# open their own), and localstripe would then fail to bind it.
_LOCALSTRIPE_HOLD = socket.create_server(("127.0.0.1", 0))
LOCALSTRIPE_PORT = _LOCALSTRIPE_HOLD.getsockname()[1]


def _setup_environment() -> None:
    global _REDIS, _CLUSTER, _PG_ADMIN_URL
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        _REDIS = RedisProcess(_TMP / "redis").start()
        redis_url = _REDIS.url
    inventory = os.environ.get("TEST_INVENTORY_REDIS", "")
    if inventory not in ("", "cluster"):
        raise pytest.UsageError("TEST_INVENTORY_REDIS is unset or 'cluster'")
    if inventory == "cluster":
        _CLUSTER = RedisClusterProcess(_TMP / "cluster").start()
        os.environ["INVENTORY_REDIS_URL"] = _CLUSTER.url
    database_url = os.environ.get("TEST_DATABASE_URL")
    if database_url:
        _PG_ADMIN_URL = database_url
        parts = urlsplit(database_url)
        database_url = urlunsplit(parts._replace(path=f"/{_PG_DB}"))
        _create_pg_database()
    else:
        database_url = f"sqlite:///{_TMP / 'flashsale.db'}"
    os.environ.update(
        {
            "APP_ENV": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"t{secrets.token_hex(3)}",
            "SETTLEMENT_QUEUE": f"settlement-{secrets.token_hex(3)}",
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "BCRYPT_ROUNDS": "4",
            "RATELIMIT_ENABLED": "false",
            "CLAIM_IDLE_SECONDS": "1",
            # The Stripe gateway talks to localstripe (started by the `localstripe` fixture).
            "STRIPE_API_KEY": "sk_test_flashsale",
            "STRIPE_API_BASE": f"http://127.0.0.1:{LOCALSTRIPE_PORT}",
            "STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_hex(16)}",
            "PAYMENT_TIMEOUT_SECONDS": "5",
        }
    )


def _admin_engine():  # type: ignore[no-untyped-def]
    from core.config import normalize_database_url

    assert _PG_ADMIN_URL
    return create_engine(normalize_database_url(_PG_ADMIN_URL), isolation_level="AUTOCOMMIT")


def _create_pg_database() -> None:
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{_PG_DB}"'))
    engine.dispose()


def _drop_pg_database() -> None:
    engine = _admin_engine()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{_PG_DB}" WITH (FORCE)'))
    engine.dispose()


def _wipe_redis() -> None:
    from redis import Redis

    client = Redis.from_url(os.environ["REDIS_URL"])
    keys = list(client.scan_iter(count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


_setup_environment()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        if _REDIS is None:
            _wipe_redis()
        if _PG_ADMIN_URL:
            from core.runtime import Runtime  # noqa: F401  (engines are disposed at exit)

            _drop_pg_database()
    finally:
        if _REDIS is not None:
            _REDIS.stop()
        if _CLUSTER is not None:
            _CLUSTER.stop()
        shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def settings():  # type: ignore[no-untyped-def]
    from core.config import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def app(settings):  # type: ignore[no-untyped-def]
    from flask_migrate import upgrade

    from web import create_app

    flask_app = create_app(settings)
    flask_app.config["TESTING"] = True
    with flask_app.app_context():
        upgrade()
    yield flask_app
    from web.extensions import db

    with flask_app.app_context():
        db.engine.dispose()
    flask_app.extensions["flashsale"].close()


@pytest.fixture(scope="session", autouse=True)
def _migrated(app):  # type: ignore[no-untyped-def]
    """Every test runs against the migrated schema."""
    return app


@pytest.fixture()
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture(scope="session")
def rt(app):  # type: ignore[no-untyped-def]
    """The runtime a worker process uses (its own engine and Redis client)."""
    from jobs.runtime import runtime

    yield runtime()
    runtime().close()


@pytest.fixture(scope="session")
def localstripe():  # type: ignore[no-untyped-def]
    """A Stripe emulator for the payment tests, on the port STRIPE_API_BASE names."""
    _LOCALSTRIPE_HOLD.close()
    emulator = LocalStripe(LOCALSTRIPE_PORT).start(from_scratch=True)
    yield emulator
    emulator.stop()
    emulator.forget_store()


@pytest.fixture(scope="module")
def admin(app):  # type: ignore[no-untyped-def]
    """An admin shared by the tests of one module."""
    from tests.helpers import make_user

    return make_user(app, "admin")


@pytest.fixture(scope="module")
def buyer(app):  # type: ignore[no-untyped-def]
    """A buyer shared by the tests of one module."""
    from tests.helpers import make_user

    return make_user(app)
