"""The replica WAIT path: whether INVENTORY_MIN_REPLICAS replicas have a bucket's writes, and a
script call followed by WAIT in one round trip."""

from __future__ import annotations

from core.inventory.base import InventoryBase
from core.inventory.clock import now_ms


class Replicas(InventoryBase):
    """Writes a failover must not drop, confirmed on the replicas."""

    def replicated(self, product_id: int, bucket: int = 0) -> bool:
        """Whether INVENTORY_MIN_REPLICAS replicas have every write the bucket's primary took
        until now: a write of its own (the probe key) and WAIT, in one round trip. Always true
        with no replicas asked for."""
        replicas = self.settings.inventory_min_replicas
        if replicas == 0:
            return True
        k = self.keys(product_id, bucket)
        pipe = self.scripts.pipeline(k.tag)
        pipe.set(k.replication_probe, now_ms(), px=60_000)
        pipe.execute_command("WAIT", replicas, self.settings.inventory_replica_wait_ms)
        _, acked = pipe.execute()
        return int(acked) >= replicas

    def call_counting_replicas(self, name: str, keys: list[str], args: list[object]) -> tuple:
        """Runs a script; with INVENTORY_MIN_REPLICAS, WAITs for the replicas in the same round
        trip. Answers the reply and whether enough replicas have its writes."""
        replicas = self.settings.inventory_min_replicas
        if replicas == 0:
            return getattr(self.scripts, name)(keys=keys, args=args), True
        reply, acked = self.scripts.call_and_wait(
            name, keys, args, replicas, self.settings.inventory_replica_wait_ms
        )
        return reply, acked >= replicas
