"""A hold's life after its purchase: read, settled (begin, finish, forget, await the buyer's
action), expired, refunded (begin_return, return_units)."""

from __future__ import annotations

from collections.abc import Sequence

from core.inventory.claims import Claims
from core.inventory.figures import Figures
from core.inventory.hold import Hold, json_list
from core.inventory.records import Claim, Ending, Settled
from core.keys import SETTLE_GROUP, product_of_ticket


class Holds(Claims, Figures):
    """Each step takes a batch of tickets of one bucket (one is a batch of one)."""

    def get_hold(self, ticket_id: str) -> Hold | None:
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return None
        raw = self.redis.hget(self.ticket_keys(product_id, [ticket_id]).holds, ticket_id)
        return Hold.from_json(raw) if raw else None

    def get_ticket(self, ticket_id: str) -> Hold | None:
        """The ticket as Redis knows it: its open hold, or its final state for a while after
        settlement (one round trip)."""
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return None
        k = self.ticket_keys(product_id, [ticket_id])
        raw = self.scripts.ticket_view(keys=[k.holds, k.final(ticket_id)], args=[ticket_id])
        return Hold.from_json(raw) if raw else None

    def begin_settlements(
        self, product_id: int, ticket_ids: list[str]
    ) -> dict[str, tuple[str, Hold | None]]:
        """reserved -> processing, the deadline extended by the settlement lease."""
        k = self.ticket_keys(product_id, ticket_ids)
        lease_ms = int(self.settings.settle_lease_seconds * 1000)
        pipe = self.scripts.pipeline(k.tag)
        for ticket in ticket_ids:
            self.scripts.begin_settlement(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events, *k.seat_keys],
                args=[ticket, lease_ms],
                client=pipe,
            )
        replies = pipe.execute()
        return {t: _state_and_hold(r) for t, r in zip(ticket_ids, replies, strict=True)}

    def finish_holds(
        self, product_id: int, endings: Sequence[Ending]
    ) -> dict[str, tuple[str, Hold | None]]:
        """Moves open holds to their outcome: ticket -> (ok, already, conflict, missing or
        unavailable; the hold after)."""
        k = self.ticket_keys(product_id, [e.ticket_id for e in endings])
        pipe = self.scripts.pipeline(k.tag)
        for ending in endings:
            self.scripts.finish_hold(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events, *k.seat_keys],
                args=[ending.ticket_id, ending.outcome, ending.reason, ending.only_from],
                client=pipe,
            )
        replies = pipe.execute()
        return {e.ticket_id: _state_and_hold(r) for e, r in zip(endings, replies, strict=True)}

    def forget_holds(self, product_id: int, settled: Sequence[Settled]) -> None:
        """Drops settled holds from Redis once SQL holds their final state (`status`, kept a
        while for the buyers polling the ticket) and acknowledges their stream entries."""
        if not settled:
            return
        k = self.ticket_keys(product_id, [one.ticket_id for one in settled])
        ttl = self.settings.final_status_ttl_seconds
        pipe = self.scripts.pipeline(k.tag)
        for one in settled:
            args = [one.ticket_id, one.entry_id or "", SETTLE_GROUP, one.status, one.reason or ""]
            self.scripts.forget_hold(
                keys=[k.stock, k.holds, k.settle, k.final(one.ticket_id)],
                args=[*args, ttl, one.payment_status],
                client=pipe,
            )
        pipe.execute()

    def await_action(self, product_id: int, ticket_id: str, client_secret: str) -> bool:
        """Marks a hold whose payment waits for the buyer's authentication."""
        reply = self.scripts.await_action(
            keys=[self.ticket_keys(product_id, [ticket_id]).holds], args=[ticket_id, client_secret]
        )
        return reply[0] == "ok"

    def begin_return(
        self,
        product_id: int,
        ticket_id: str,
        user_id: int,
        quantity: int,
        seats: Sequence[str] = (),
    ) -> bool:
        """Marks a confirmed ticket being refunded (its units, and seats, stay sold); False while
        the stock is missing in Redis, whose rebuild then takes SQL's word."""
        k = self.ticket_keys(product_id, [ticket_id])
        seat_list = json_list(list(seats)) if seats else ""
        reply = self.scripts.begin_return(
            keys=[k.stock, k.returns], args=[ticket_id, user_id, quantity, seat_list]
        )
        return reply == "marked"

    def return_units(self, product_id: int, ticket_ids: list[str]) -> int:
        """Puts the units of marked tickets whose refund SQL recorded back on sale, each once;
        answers how many tickets moved."""
        if not ticket_ids:
            return 0
        k = self.ticket_keys(product_id, ticket_ids)
        pipe = self.scripts.pipeline(k.tag)
        for ticket in ticket_ids:
            self.scripts.return_units(
                keys=[k.stock, k.returns, k.users, k.events, *k.seat_keys],
                args=[ticket],
                client=pipe,
            )
        returned = [
            Claim(ticket, "returned", int(reply[1]), int(reply[2]))
            for ticket, reply in zip(ticket_ids, pipe.execute(), strict=True)
            if reply[0] == "returned"
        ]
        if returned:
            self.end_claims(product_id, self.bucket_count(product_id), returned)
        return len(returned)

    def expire_holds(self, product_id: int, limit: int = 1000, bucket: int = 0) -> int:
        k = self.keys(product_id, bucket)
        return int(
            self.scripts.expire_holds(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events, *k.seat_keys], args=[limit]
            )
        )

    def drop_final(self, product_id: int, ticket_id: str) -> None:
        """The order changed after settlement (say, refunded): polls go to SQL again."""
        self.redis.delete(self.ticket_keys(product_id, [ticket_id]).final(ticket_id))


def _state_and_hold(reply: list) -> tuple[str, Hold | None]:
    raw = reply[1]
    return reply[0], Hold.from_json(raw) if raw else None
