"""The settle stream: the tickets a product's settlers read, each bucket's in its own stream."""

from __future__ import annotations

from redis.exceptions import ResponseError

from core.inventory.base import InventoryBase
from core.keys import SETTLE_GROUP


class SettleStream(InventoryBase):
    """The stream's consumer group, reads and backlog."""

    def ensure_settle_group(self, product_id: int, bucket: int = 0) -> None:
        try:
            settle = self.keys(product_id, bucket).settle
            self.redis.xgroup_create(settle, SETTLE_GROUP, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_settle_queue(
        self, product_id: int, consumer: str, count: int, bucket: int = 0
    ) -> list[tuple[str, str]]:
        """Tickets to settle (of one bucket): entries abandoned by a dead settler first, then
        new ones."""
        k = self.keys(product_id, bucket)
        claim_idle_ms = self.settings.claim_idle_seconds * 1000
        try:
            claimed = self.redis.xautoclaim(
                k.settle, SETTLE_GROUP, consumer, claim_idle_ms, "0-0", count=count
            )[1]
            fresh = []
            if len(claimed) < count:
                reply = self.redis.xreadgroup(
                    SETTLE_GROUP, consumer, {k.settle: ">"}, count=count - len(claimed)
                )
                fresh = reply[0][1] if reply else []
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_settle_group(product_id, bucket)
            return []
        return [(entry_id, fields["ticket"]) for entry_id, fields in [*claimed, *fresh] if fields]

    def settle_backlog(self, product_id: int, bucket: int = 0) -> int:
        return int(self.redis.xlen(self.keys(product_id, bucket).settle))
