"""A seated product's seats in Redis: their states read, and repaired from SQL."""

from __future__ import annotations

import json

from core.inventory.base import InventoryBase
from core.inventory.records import SeatSnapshot


class Seats(InventoryBase):
    """The seats hash, read with the stock's version."""

    def seat_states(self, product_id: int) -> tuple[int, dict[str, str]] | None:
        """The stock's version and every seat's state ('f', 'h:<ticket>', 's:<ticket>'), read
        together (MULTI); None while the stock is missing."""
        k = self.keys(product_id)
        pipe = self.scripts.pipeline(k.tag, transaction=True)
        pipe.hget(k.stock, "version")
        pipe.hgetall(k.seats)
        version, states = pipe.execute()
        return None if version is None else (int(version), states)

    def seat_snapshot(self, product_id: int) -> SeatSnapshot | None:
        """The stock's version, every seat's state and the tickets with a hold, read together
        (MULTI); None while the stock is missing."""
        k = self.keys(product_id)
        pipe = self.scripts.pipeline(k.tag, transaction=True)
        pipe.hget(k.stock, "version")
        pipe.hgetall(k.seats)
        pipe.hkeys(k.holds)
        version, states, holds = pipe.execute()
        return None if version is None else SeatSnapshot(int(version), states, set(holds))

    def repair_seats(self, product_id: int, version: int, fixes: dict[str, str]) -> bool:
        """Sets those seats' states if the stock has not moved since `version`."""
        k = self.keys(product_id)
        reply = self.scripts.repair_seats(
            keys=[k.stock, k.events, *k.seat_keys],
            args=[version, json.dumps(fixes, separators=(",", ":"))],
        )
        return reply == "repaired"
