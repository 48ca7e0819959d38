"""The objects a process needs, built once from Settings: Redis, SQL sessions, inventory,
payment gateway and settler. Web, workers and the scheduler each hold one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from redis import BlockingConnectionPool, Redis
from redis.cluster import RedisCluster
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, cluster_node_url
from core.db import make_engine, make_session_factory
from core.events.cache import EventCache
from core.inventory import Inventory
from core.keys import ServiceKeys
from core.payments import PaymentGateway
from core.payments.simulated import SimulatedGateway
from core.payments.stripe_gateway import StripeGateway
from core.redis_urls import redis_client
from core.revocations import RevocationWatch
from core.rooms import RoomBoard
from core.scripts import RedisClient
from core.search import SearchCache
from core.settlement import Settler

REDIS_TIMEOUT_S = 5.0  # a Redis that hangs answers 503 after this, instead of holding a thread


@dataclass
class Runtime:
    settings: Settings
    # The inventory's socket timeout: web processes answer a purchase 503 sooner than settlement
    # gives up (INVENTORY_TIMEOUT_SECONDS); workers and the scheduler keep REDIS_TIMEOUT_S.
    inventory_timeout_s: float = REDIS_TIMEOUT_S

    @cached_property
    def redis(self) -> Redis:
        """The service's Redis (REDIS_URL): queues, scheduler, rate limits, revocations."""
        return self._plain_redis(self.settings.redis_url)

    @cached_property
    def inventory_redis(self) -> RedisClient:
        """Stock, holds, seats and waiting rooms (INVENTORY_REDIS_URL): the service's Redis
        unless it names another server or a Redis Cluster."""
        url = self.settings.inventory_url
        timeout_s = self.inventory_timeout_s
        if url == self.settings.redis_url and timeout_s == REDIS_TIMEOUT_S:
            return self.redis
        node_url = cluster_node_url(url)
        if node_url is None:
            return self._plain_redis(url, timeout_s)
        return RedisCluster.from_url(
            node_url,
            decode_responses=True,
            connection_pool_class=BlockingConnectionPool,  # per node, as large as for one Redis
            max_connections=self.settings.redis_pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )

    def _plain_redis(self, url: str, timeout_s: float = REDIS_TIMEOUT_S) -> Redis:
        """One pool per process, as large as its threads need: a thread takes a free connection
        without waiting on the others (hiredis parses the replies when installed). One server,
        or the primary Sentinels name."""
        return redis_client(
            url,
            blocking=True,
            decode_responses=True,
            max_connections=self.settings.redis_pool_size,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    def close(self) -> None:
        """Stops what this runtime started in the background and closes its SQL connections."""
        if "revocations" in self.__dict__:
            self.revocations.stop()
        if "settler" in self.__dict__:
            self.settler.close()
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def revocations(self) -> RevocationWatch:
        return RevocationWatch(self.settings.redis_url, self.sessions, self.settings.key_prefix)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory(self.inventory_redis, self.settings)

    @cached_property
    def room_board(self) -> RoomBoard:
        """This process's copy of the waiting rooms' boards (web processes answer polls from it)."""
        return RoomBoard(self.inventory)

    @cached_property
    def search_cache(self) -> SearchCache:
        """This process's recent search answers (web processes)."""
        return SearchCache(
            self.redis,
            ServiceKeys(self.settings.key_prefix).catalogue_version,
            self.settings.search_cache_entries,
            self.settings.search_cache_seconds,
        )

    @cached_property
    def event_cache(self) -> EventCache:
        """This process's copy of events' products and seated layouts (web processes)."""
        return EventCache()

    @cached_property
    def gateways(self) -> dict[str, PaymentGateway]:
        """Every configured gateway: payments stay with the provider that took them."""
        gateways: dict[str, PaymentGateway] = {
            "simulated": SimulatedGateway(
                self.redis, self.settings.key_prefix, self.settings.payment_latency_ms
            )
        }
        if self.settings.stripe_api_key:
            gateways["stripe"] = StripeGateway(
                self.settings.stripe_api_key,
                self.settings.stripe_api_base,
                self.settings.payment_timeout_seconds,
            )
        return gateways

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway new payments go through (PAYMENT_GATEWAY)."""
        return self.gateways[self.settings.payment_gateway]

    @cached_property
    def settler(self) -> Settler:
        return Settler(self.inventory, self.sessions, self.gateways, self.settings)
