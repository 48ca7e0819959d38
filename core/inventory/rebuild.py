"""Creating a product's stock from SQL's figures (the first set-up, or a rebuild after Redis lost
it) under the rebuild lease, and repairing its figures."""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Mapping

from core.inventory.calls import RestoreCall, restore_key_map
from core.inventory.hold import Hold, json_list
from core.inventory.locks import Locks
from core.inventory.records import HeldElsewhere, ProductTerms, RebuildView, SeatPlan
from core.inventory.rooms import Rooms
from core.keys import SETTLE_GROUP

REBUILD_LEASE_MS = 30_000


class Rebuild(Locks, Rooms):
    """The rebuild lease, what survives of a product, and the restore."""

    def begin_rebuild(self, product_id: int, bucket: int = 0) -> RebuildView | None:
        """Takes the product's rebuild lease and reads what survives in Redis, atomically; None
        when the stock exists or another rebuild holds the lease. A rebuild that outlives its
        lease, or whose Redis lost the lease with everything else, cannot restore (a fencing
        token): its reads may be older than what a later rebuild restored since."""
        k = self.keys(product_id, bucket)
        token = secrets.token_hex(8)
        pipe = self.scripts.pipeline(k.tag, transaction=True)
        pipe.set(k.rebuild_lease, token, nx=True, px=REBUILD_LEASE_MS)
        pipe.exists(k.stock)
        pipe.hvals(k.holds)
        pipe.hgetall(k.returns)
        pipe.hgetall(k.claims)
        taken, exists, holds, marks, claims = pipe.execute()
        if not taken:
            return None
        if exists:
            self._release({k.rebuild_lease: token})
            return None
        returning = {ticket: int(json.loads(raw)["q"]) for ticket, raw in marks.items()}
        kept = {t: json.loads(raw) for t, raw in claims.items()}
        return RebuildView([Hold.from_json(raw) for raw in holds], returning, token, kept)

    def abandon_rebuild(self, product_id: int, bucket: int, token: str) -> None:
        """Gives the rebuild lease back unused."""
        self._release({self.keys(product_id, bucket).rebuild_lease: token})

    def held_elsewhere(self, product_id: int, home: int, buckets: int) -> HeldElsewhere:
        """A split product's holds and refunds under way in the buckets other than `home`, of
        the buyers whose own bucket `home` is; each bucket read at once (while `home` is missing
        they can only end: a new hold needs a claim there)."""
        holds: list[Hold] = []
        returning: dict[str, tuple[int, int]] = {}
        for bucket in range(buckets):
            if bucket == home:
                continue
            k = self.keys(product_id, bucket)
            pipe = self.scripts.pipeline(k.tag, transaction=True)
            pipe.hvals(k.holds)
            pipe.hgetall(k.returns)
            raw_holds, marks = pipe.execute()
            holds += [h for h in map(Hold.from_json, raw_holds) if h.user_id % buckets == home]
            for ticket, raw in marks.items():
                mark = json.loads(raw)
                if int(mark["u"]) % buckets == home:
                    returning[ticket] = (int(mark["u"]), int(mark["q"]))
        return HeldElsewhere(holds, returning)

    def repair(
        self, product_id: int, version: int, initial: int, sold: int, held: int, bucket: int = 0
    ) -> bool:
        k = self.keys(product_id, bucket)
        reply = self.scripts.repair_stock(
            keys=[k.stock, k.events], args=[version, initial, sold, held]
        )
        return reply[0] == "repaired"

    def restore(
        self,
        terms: ProductTerms,
        sold: int,
        open_holds: list[Hold],
        user_quantities: dict[int, int],
        idempotency: dict[str, str] | None = None,
        refunded_marks: list[str] | None = None,
        lease: str = "",
        seats: SeatPlan | None = None,
        bucket: int = 0,
        claims: Mapping[str, dict] | None = None,
        passes_used: Collection[str] = (),
    ) -> bool:
        """Creates the stock key from SQL's figures; False when it exists already. Idempotency
        maps 'user:key' to the ticket; refunded_marks are return marks whose refund SQL has
        recorded; `lease` is the token of begin_rebuild (False when the lease is not held);
        `seats`, a seated product's seats and section prices. A split product's `bucket` gets
        its share of the units (`terms` are the product's), and its `claims` (they replace
        what survived: ticket here -> claim, see reserve.lua); `passes_used`, the waiting room
        passes that bought (the bucket's buyers')."""
        k = self.keys(terms.product_id, bucket)
        room_keys, room_epoch = self.room_call(terms.product_id, bucket)
        args = {
            "initial": terms.share(bucket),
            "sold": sold,
            "max_per_user": terms.max_per_user,
            "starts_ms": terms.starts_ms,
            "ends_ms": terms.ends_ms,
            "price": terms.price_minor,
            "currency": terms.currency,
            "holds": json_list([h.to_record() for h in open_holds]),
            "user_quantities": json.dumps(
                {str(u): q for u, q in user_quantities.items()}, separators=(",", ":")
            )
            if user_quantities
            else "{}",
            "idempotency": json.dumps(idempotency) if idempotency else "{}",
            "terms_version": terms.terms_version,
            "settle_group": SETTLE_GROUP,
            "refunded_marks": json_list(refunded_marks or []),
            "lease": lease,
            "seat_states": json.dumps(seats.states, separators=(",", ":")) if seats else "",
            "sections": json.dumps(seats.sections) if seats else "{}",
            "ranks": json.dumps(seats.scores, separators=(",", ":")) if seats else "{}",
            "waiting_room": "1" if terms.waiting_room else "0",
            "admit_per_second": terms.admit_per_second,
            "buckets": terms.buckets,
            "claims": json.dumps(claims) if claims else "{}",
            "room_epoch": room_epoch,
            "passes_used": json_list(sorted(passes_used)),
        }
        call = RestoreCall(restore_key_map(k, with_room=bool(room_keys)), args)
        reply = self.scripts.restore_stock(keys=call.keys(), args=call.argv())
        return reply[0] == "created"

    def drop_stock(self, product_id: int, bucket: int = 0) -> None:
        """Forgets a product's stock and seats, so that its next set-up writes them anew: only
        while it has no order (its holds, and each buyer's count, are left for the rebuild)."""
        k = self.keys(product_id, bucket)
        self.redis.delete(k.stock, *k.seat_keys)
