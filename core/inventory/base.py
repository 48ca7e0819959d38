"""What every part of the inventory shares: the Redis client, the settings, the scripts, Redis'
clock, and the keys of a product's bucket or of a batch of tickets."""

from __future__ import annotations

from collections.abc import Iterable

from core.config import Settings
from core.inventory.clock import RedisClock
from core.keys import ProductKeys, bucket_of_ticket
from core.scripts import RedisClient, Scripts


class InventoryBase:
    """Works on a Redis client created with decode_responses=True."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = Scripts(redis)
        self.clock = RedisClock(redis)
        self._buckets: dict[int, int] = {}  # product -> its buckets, once a reserve learnt them

    def keys(self, product_id: int, bucket: int = 0) -> ProductKeys:
        return ProductKeys(self.settings.key_prefix, product_id, bucket)

    def ticket_keys(self, product_id: int, ticket_ids: Iterable[str]) -> ProductKeys:
        """The keys of the bucket holding these tickets (a batch is one bucket's)."""
        buckets = {bucket_of_ticket(t) for t in ticket_ids}
        if len(buckets) > 1:
            raise ValueError(f"tickets of several buckets in one batch: {sorted(buckets)}")
        return self.keys(product_id, buckets.pop() if buckets else 0)
