"""A product's stock as Redis has it: figures, units free, the atomic snapshot a reconciliation
reads, its events, and its number of buckets."""

from __future__ import annotations

from collections.abc import Mapping

from core.inventory.base import InventoryBase
from core.inventory.records import ProductTerms, Snapshot, StockFigures


class Figures(InventoryBase):
    """Reads of the stock."""

    def known_buckets(self, product_id: int) -> int:
        """The product's number of buckets, read once a process (it never changes) from its
        first bucket's stock (while that is missing, from the second's, each time)."""
        if product_id in self._buckets:
            return self._buckets[product_id]
        initial, buckets = self.redis.hmget(self.keys(product_id).stock, "initial", "buckets")
        if initial is None:
            return self.bucket_count(product_id)
        self._buckets[product_id] = int(buckets or 1)
        return self._buckets[product_id]

    def bucket_count(self, product_id: int) -> int:
        """The product's number of buckets, as its first bucket's stock says, or its second's
        while the first is missing (1 without either: SQL has the last word, see rebuild)."""
        for bucket in (0, 1):
            found = self.redis.hget(self.keys(product_id, bucket).stock, "buckets")
            if found is not None:
                return int(found)
        return 1

    def figures(self, product_id: int, bucket: int = 0) -> StockFigures | None:
        values = self.redis.hmget(
            self.keys(product_id, bucket).stock, "initial", "available", "held", "sold", "version"
        )
        if values[0] is None:
            return None
        return StockFigures(*(int(v) for v in values))

    def available(
        self, product_ids: list[int], buckets: Mapping[int, int] | None = None
    ) -> dict[int, int | None]:
        """Units free now, one round trip for any number of products; a split product's
        (`buckets`: product -> its number) summed over its buckets, None while one is missing."""
        counts = {pid: (buckets or {}).get(pid, 1) for pid in product_ids}
        pipe = self.redis.pipeline(transaction=False)
        for product_id, n in counts.items():
            for bucket in range(n):
                pipe.hget(self.keys(product_id, bucket).stock, "available")
        values = iter(pipe.execute())
        found: dict[int, int | None] = {}
        for product_id, n in counts.items():
            parts = [next(values) for _ in range(n)]
            found[product_id] = None if None in parts else sum(int(v) for v in parts)
        return {pid: found[pid] for pid in product_ids}

    def snapshot(self, product_id: int, bucket: int = 0) -> Snapshot | None:
        k = self.keys(product_id, bucket)
        reply = self.scripts.inventory_snapshot(keys=[k.stock, k.holds, k.returns])
        if not reply:
            return None
        stock, open_quantity, confirmed, returning = reply
        initial, available, held, sold, version = (int(v) for v in stock[:5])
        max_per_user, starts_ms, ends_ms, price = (int(v or 0) for v in stock[5:9])
        terms = ProductTerms(
            product_id=product_id,
            initial_stock=initial,
            max_per_user=max_per_user,
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            price_minor=price,
            currency=stock[9] or "",
            terms_version=int(stock[10] or 0),
            # A room is applied with its epoch (reserve.lua checks passes against it): a room
            # flag without one is not applied yet, and the reconciliation applies SQL's terms.
            waiting_room=stock[11] == "1" and bool(stock[12]),
        )
        return Snapshot(
            StockFigures(initial, available, held, sold, version),
            terms,
            int(open_quantity),
            _pairs(confirmed),
            _pairs(returning),
            bucket,
        )

    def recent_events(self, product_id: int, count: int = 100) -> list[dict[str, str]]:
        """The newest stock events, newest first (a split product's buckets' together)."""
        entries = []
        for bucket in range(self.bucket_count(product_id)):
            entries += self.redis.xrevrange(self.keys(product_id, bucket).events, count=count)
        entries.sort(key=lambda entry: _stream_position(entry[0]), reverse=True)
        return [
            {k: v for k, v in fields.items()} | {"id": entry_id}
            for entry_id, fields in entries[:count]
        ]


def _stream_position(entry_id: str) -> tuple[int, int]:
    moment, _, sequence = entry_id.partition("-")
    return int(moment), int(sequence or 0)


def _pairs(flat: list) -> dict[str, int]:
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}
