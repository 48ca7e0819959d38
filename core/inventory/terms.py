"""A product's terms (what the reserve script enforces) applied from SQL, and read back."""

from __future__ import annotations

from collections.abc import Mapping

from core.inventory.records import ProductTerms
from core.inventory.rooms import Rooms


class Terms(Rooms):
    """SQL's terms in Redis, each bucket's share of the units."""

    def terms_versions(
        self, product_ids: list[int], buckets: Mapping[int, int] | None = None
    ) -> dict[int, int | None]:
        """The terms version each product's stock in Redis enforces (None: no stock key); a
        split product's (`buckets`: product -> its number), the oldest any bucket enforces."""
        counts = {pid: (buckets or {}).get(pid, 1) for pid in product_ids}
        pipe = self.redis.pipeline(transaction=False)
        for product_id, n in counts.items():
            for bucket in range(n):
                pipe.hmget(self.keys(product_id, bucket).stock, "initial", "terms_version")
        values = iter(pipe.execute())
        found: dict[int, int | None] = {}
        for product_id, n in counts.items():
            parts = [next(values) for _ in range(n)]
            versions = [int(v or 0) for initial, v in parts if initial is not None]
            found[product_id] = min(versions) if versions else None
        return {pid: found[pid] for pid in product_ids}

    def update_terms(self, terms: ProductTerms) -> str:
        """Applies SQL's terms (absolute figures: safe to repeat) to a stock that is in Redis,
        each bucket's share of the units to it: applied, stale (Redis has newer terms) or
        missing (no stock key), the first of the buckets' answers that is not 'applied'."""
        answers = [self.update_bucket_terms(terms.of_bucket(b), b) for b in range(terms.buckets)]
        return next((a for a in answers if a != "applied"), "applied")

    def update_bucket_terms(self, terms: ProductTerms, bucket: int) -> str:
        """One bucket's terms (`ProductTerms.of_bucket`: its share of the units) applied."""
        k = self.keys(terms.product_id, bucket)
        room_keys, room_epoch = self.room_call(terms.product_id, bucket)
        return self.scripts.update_product(
            keys=[k.stock, k.events, *room_keys],
            args=[
                terms.initial_stock,
                terms.starts_ms,
                terms.ends_ms,
                terms.max_per_user,
                terms.price_minor,
                terms.terms_version,
                terms.currency,
                "1" if terms.waiting_room else "0",
                terms.admit_per_second,
                room_epoch,
            ],
        )
