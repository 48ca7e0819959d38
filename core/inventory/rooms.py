"""The waiting room's figures and the room keys a script setting the room needs."""

from __future__ import annotations

from core.inventory.figures import Figures
from core.inventory.records import RoomFigures


class Rooms(Figures):
    """Reads of the sale's waiting room, kept by the first bucket."""

    def room_places(self, product_id: int, count: int) -> list[tuple[int, int]]:
        """The waiting room's first `count` places: (buyer, position), in order."""
        k = self.keys(product_id)
        places = self.redis.zrange(k.queue, 0, count - 1, withscores=True)
        return [(int(buyer), int(position)) for buyer, position in places]

    def room_figures(self, product_id: int, points: int = 400) -> RoomFigures | None:
        """The room's counters and its latest admissions (oldest first); None without a room."""
        k = self.keys(product_id)
        pipe = self.scripts.pipeline(k.tag, transaction=True)
        pipe.hmget(k.room, "on", "rate", "next", "served")
        pipe.scard(k.early)
        pipe.xrevrange(k.admits, count=points)
        (on, rate, last, served), early, admits = pipe.execute()
        if on != "1":
            return None
        admitted = [[int(f["at"]), int(f["position"])] for _, f in reversed(admits)]
        served_n = int(served or 0)
        waiting = max(0, int(last or 0) - served_n) + int(early)
        return RoomFigures(int(rate or 0), waiting, served_n, admitted)

    def room_call(self, product_id: int, bucket: int) -> tuple[list[str], str]:
        """What a script setting the room needs besides the bucket's stock (restore_stock.lua,
        update_product.lua): the first bucket's room keys, which hold the room and decide its
        epoch; a later bucket none, and the room's epoch as the first bucket has it now ('' if
        none)."""
        k = self.keys(product_id)
        if bucket == 0:
            return k.room_keys, ""
        return [], self.redis.hget(k.room, "epoch") or ""

    def other_buckets_stock(self, product_id: int) -> str:
        """A split product's buckets but the first: their units 'available:held' added up, for
        the waiting room's board ('' for a product of one bucket)."""
        buckets = self.known_buckets(product_id)
        if buckets == 1:
            return ""
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(1, buckets):
            pipe.hmget(self.keys(product_id, bucket).stock, "available", "held")
        figures = [(int(a or 0), int(h or 0)) for a, h in pipe.execute()]
        return f"{sum(a for a, _ in figures)}:{sum(h for _, h in figures)}"
