"""Clients of a Redis named by a URL: redis:// (and rediss://, unix://) for one server, or
redis+sentinel:// for the primary that Sentinels name (core/config.py `sentinel_service`). Every
client of REDIS_URL is built here, so after a failover each of them (queues, worker, scheduler,
rate limits, revocations, rq-dashboard) reaches the promoted replica.

A Sentinel client asks the Sentinels for the primary's address when it connects, and again
after any connection error; a former primary that answers READONLY counts as one. The calls
that fail meanwhile raise ConnectionError, which the long-running loops ride out
(core/backoff.py)."""

from __future__ import annotations

from typing import Any

from redis import BlockingConnectionPool, ConnectionPool, Redis
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from core.config import SentinelService, sentinel_service

# A Sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT_S = 1.0


class ClosingSentinelConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, closed when a read is cut short, as a plain Connection
    is: redis-py's own stays open, and goes back to the pool with the reply still to come (a
    worker's blocking pop that SIGTERM interrupted), which the next command would read as its
    own (or wait behind, the pop still blocking)."""

    def read_response(self, *args: Any, disconnect_on_error: bool = True, **kwargs: Any) -> Any:
        return super().read_response(*args, disconnect_on_error=disconnect_on_error, **kwargs)


class SentinelBlockingConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """The Sentinel's pool that, like BlockingConnectionPool, waits `timeout` for a free
    connection once `max_connections` are in use instead of failing at once."""


def redis_pool(url: str, blocking: bool = False, **options: Any) -> ConnectionPool:
    """A pool of connections to the Redis `url` names. `options` are redis-py's connection
    options (decode_responses, socket_timeout...); with `blocking`, also BlockingConnectionPool's
    max_connections and timeout."""
    service = sentinel_service(url)
    if service is None:
        plain = BlockingConnectionPool if blocking else ConnectionPool
        return plain.from_url(url, **options)
    sentinel = Sentinel(
        service.sentinels,
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        },
    )
    pool = SentinelBlockingConnectionPool if blocking else SentinelConnectionPool
    options = {"connection_class": ClosingSentinelConnection} | options
    return pool(service.service, sentinel, **_server_options(service), **options)


def redis_client(url: str, **options: Any) -> Redis:
    """A client of its own pool, which it closes with itself (like `Redis.from_url`)."""
    return Redis.from_pool(redis_pool(url, **options))


def _server_options(service: SentinelService) -> dict[str, Any]:
    credentials = {"username": service.username, "password": service.password}
    return {"db": service.db, "is_master": True} | {
        name: value for name, value in credentials.items() if value is not None
    }
