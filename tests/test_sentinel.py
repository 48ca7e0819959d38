"""The queues' Redis behind Sentinel: REDIS_URL=redis+sentinel://... is parsed once at start
(a malformed one refused), and every client of it follows the primary the Sentinels name."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelConnectionPool

from core.config import ConfigError, SentinelService, Settings, sentinel_service
from core.redis_urls import SentinelBlockingConnectionPool
from core.runtime import REDIS_TIMEOUT_S, Runtime
from jobs.queues import rq_connection
from tests.helpers import app_with

SERVICE = "queues"

# --- the URL ------------------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_service_db_and_password():
    url = "redis+sentinel://:s%40cret@sentinel-1:26379,10.0.0.2:26380/queues/2"
    assert sentinel_service(url) == SentinelService(
        sentinels=(("sentinel-1", 26379), ("10.0.0.2", 26380)),
        service="queues",
        db=2,
        password="s@cret",
    )
    assert sentinel_service("redis+sentinel://app:pw@[::1]:26379/queues") == SentinelService(
        sentinels=(("::1", 26379),), service="queues", db=0, username="app", password="pw"
    )
    assert sentinel_service("redis://127.0.0.1:6379/0") is None
    assert sentinel_service("redis+cluster://node-1:7000") is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:hunter2@s-1:26379", "names no service"),
        ("redis+sentinel://:hunter2@s-1:26379/", "names no service"),
        ("redis+sentinel://:hunter2@s-1:26379/queues/0/extra", "more than a service and a db"),
        ("redis+sentinel://:hunter2@s-1:26379/queues/zero", "its db must be a number"),
        ("redis+sentinel://:hunter2@s-1/queues", "needs a host and a port, not 's-1'"),
        ("redis+sentinel://:hunter2@s-1:26379,/queues", "needs a host and a port, not ''"),
        ("redis+sentinel://:hunter2@s-1:port/queues", "needs a host and a port, not 's-1:port'"),
        ("redis+sentinel://:hunter2@s-1:99999/queues", "needs a host and a port"),
        ("redis+sentinel://:hunter2@s-1:26379/queues?db=1", "takes no options"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_at_start(monkeypatch, url, says):
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError, match=f"^REDIS_URL \\(a Sentinel URL\\) .*{says}") as refused:
        Settings.from_env()
    assert "hunter2" not in str(refused.value)
    monkeypatch.setenv("REDIS_URL", "redis://queues:6379/0")
    monkeypatch.setenv("INVENTORY_REDIS_URL", url)
    with pytest.raises(ConfigError, match=r"^INVENTORY_REDIS_URL"):
        Settings.from_env()


def test_every_client_of_a_sentinel_url_follows_its_primary(monkeypatch, settings):
    """Built without connecting: the runtime's pools keep their size and timeouts, RQ's client
    and rq-dashboard's are one, and the rate limits use a pool of the same Sentinels."""
    url = "redis+sentinel://:pw@127.0.0.1:1/queues/3"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("INVENTORY_REDIS_URL", url)
    rt = Runtime(Settings.from_env(), inventory_timeout_s=0.5)
    for client, timeout_s in ((rt.redis, REDIS_TIMEOUT_S), (rt.inventory_redis, 0.5)):
        pool = client.connection_pool
        assert isinstance(pool, SentinelBlockingConnectionPool)
        assert (pool.service_name, pool.is_master, pool.max_connections) == (
            "queues",
            True,
            settings.redis_pool_size,
        )
        assert pool.timeout == timeout_s and pool.connection_kwargs["socket_timeout"] == timeout_s
        assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "pw")
        assert pool.connection_kwargs["decode_responses"] is True
    queues = rq_connection(url).connection_pool
    assert type(queues) is SentinelConnectionPool and queues.service_name == "queues"
    assert "decode_responses" not in queues.connection_kwargs  # RQ stores bytes
    with app_with(redis_url=url) as app:
        assert app.redis_conn is rq_connection(url)  # rq-dashboard's
        limits_pool = app.config["RATELIMIT_STORAGE_OPTIONS"]["connection_pool"]
        assert isinstance(limits_pool, SentinelConnectionPool)
        assert limits_pool.service_name == "queues"
