"""A split product's claims: a bucket counts the units of its buyers' purchases that moved on
to a later bucket until their outcome is known (see reserve.lua); ended here."""

from __future__ import annotations

import json
from collections.abc import Sequence

from core.inventory.base import InventoryBase
from core.inventory.records import Claim
from core.keys import bucket_of_ticket, ticket_in_bucket

# An open claim older than this belongs to a purchase that ended without saying how (its web
# process died between two buckets): the sweep looks at where it went (core.stock.sweep_claims).
CLAIM_MS = 120_000


class Claims(InventoryBase):
    """Claims ended, read, and the holds of tickets of any bucket."""

    def resolve_claims(self, product_id: int, bucket: int, claims: Sequence[Claim]) -> int:
        """Ends claims of the bucket (see reserve.lua), each once; answers how many were open
        (none while the bucket's stock is missing: the sweep ends them after its rebuild)."""
        if not claims:
            return 0
        k = self.keys(product_id, bucket)
        args = [x for c in claims for x in (c.ticket_id, c.action, f"{c.user_id}:{c.quantity}")]
        keys = [k.stock, k.claims, k.users, k.passes_used]
        ended = self.scripts.resolve_claims(keys=keys, args=args)
        return max(0, int(ended))

    def open_claims(self, product_id: int, bucket: int) -> dict[str, tuple[int, int, int]]:
        """The bucket's open claims: ticket (its id there) -> (user, quantity, lasts until)."""
        raw = self.redis.hgetall(self.keys(product_id, bucket).claims)
        claims = {t: json.loads(v) for t, v in raw.items()}
        return {
            t: (int(c["u"]), int(c["q"]), int(c["d"]))
            for t, c in claims.items()
            if c.get("s") != "kept"
        }

    def holding(self, product_id: int, ticket_ids: list[str]) -> set[str]:
        """Those of the tickets (of any buckets) that have a hold record now."""
        found: set[str] = set()
        for bucket in sorted({bucket_of_ticket(t) for t in ticket_ids}):
            mine = [t for t in ticket_ids if bucket_of_ticket(t) == bucket]
            held = self.redis.hmget(self.keys(product_id, bucket).holds, mine)
            found |= {t for t, raw in zip(mine, held, strict=True) if raw is not None}
        return found

    def end_claims(self, product_id: int, buckets: int, endings: Sequence[Claim]) -> None:
        """Ends the claims of a split product's purchases held outside their buyer's own bucket
        (`endings` name the tickets held; a ticket in its buyer's own bucket has no claim):
        each in the buyer's own bucket, under the ticket's id there."""
        by_home: dict[int, list[Claim]] = {}
        for ending in endings:
            home = ending.user_id % buckets
            if buckets > 1 and bucket_of_ticket(ending.ticket_id) != home:
                at_home = ending._replace(ticket_id=ticket_in_bucket(ending.ticket_id, home))
                by_home.setdefault(home, []).append(at_home)
        for home, claims in by_home.items():
            self.resolve_claims(product_id, home, claims)
