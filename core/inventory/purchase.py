"""The purchase path: the reserve script called for one purchase, bucket after bucket of a split
product in the buyer's order, and a lost hold adopted again."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from redis.exceptions import RedisError

from core.inventory.calls import ReserveCall, reserve_key_map
from core.inventory.claims import CLAIM_MS, Claims
from core.inventory.hold import Hold, json_list
from core.inventory.outcomes import BucketStep, PurchaseOutcome
from core.inventory.records import BestAvailable, Claim, PurchaseRate, Reservation
from core.inventory.replicas import Replicas
from core.keys import ProductKeys, bucket_order, ticket_in_bucket
from core.metrics import PURCHASES, RESERVE_SECONDS

RECLAIM_PER_CALL = 20
# Seats a search for seats together looks at, at most (reserve.lua's best_together): about a
# millisecond of Redis whatever the hall; a block past that is not offered.
TOGETHER_SEARCH_SEATS = 2000


def reserve_keys(k: ProductKeys, user_id: int) -> list[str]:
    """The reserve script's KEYS, in its order (ReserveCall's)."""
    return ReserveCall.ordered_keys(reserve_key_map(k, user_id))


class Purchases(Claims, Replicas):
    """The purchase decision: reserve, the walk over a split product's buckets, adopting a
    lost hold again."""

    def reserve(
        self,
        product_id: int,
        user_id: int,
        quantity: int,
        ticket_id: str,
        payment_method: str,
        idempotency_key: str = "",
        rate: PurchaseRate | None = None,
        seats: Sequence[str] = (),
        best: BestAvailable | None = None,
        pass_id: str = "",
        request_id: str = "",
    ) -> Reservation:
        """The purchase decision, one round trip; `rate` limits the buyer's attempts on this
        product (the API's RATELIMIT_PURCHASE). A seated product's purchase names its `seats`
        (the quantity is their number; all are held, or none) or asks for the `best` ones. With
        the sale's waiting room on, `pass_id` (of a pass the caller verified) buys once. The
        hold keeps `request_id`, the purchase request's, for the settlement's log lines.

        A product split across buckets is tried bucket after bucket in the buyer's order
        (`bucket_order`), one call each, until one has the units: the first call, to the
        buyer's own bucket, answers alone while it has stock; sold out once every bucket is.
        One purchase is served from one bucket. The number of buckets is learnt from the first
        call (the stock says it), then kept: it never changes."""
        call = _Purchase(
            user_id, quantity, ticket_id, payment_method, idempotency_key, rate, seats, best,
            pass_id, request_id,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            reservation = self._reserve_across(product_id, call)
        except RedisError:
            PURCHASES.labels("unavailable").inc()
            raise
        RESERVE_SECONDS.observe(time.perf_counter() - started)
        PURCHASES.labels(reservation.result).inc()
        if call.unreplicated and reservation.result is PurchaseOutcome.RESERVED:
            return replace(reservation, replicated=False)
        return reservation

    def _reserve_across(self, product_id: int, call: _Purchase) -> Reservation:
        buckets = self._buckets.get(product_id, 1)
        home = call.user_id % buckets
        reply = self._reserve_in(product_id, home, buckets, call)
        if reply[0] == BucketStep.BUCKETS:  # this process's first purchase of a split product
            buckets = self._buckets[product_id] = int(reply[1])
            home = call.user_id % buckets
            reply = self._reserve_in(product_id, home, buckets, call)
        # The buyer's own bucket answers alone but when it sends the purchase on: a bucket it
        # cannot reach cannot count the buyer's units either.
        if buckets == 1 or reply[0] not in (PurchaseOutcome.SOLD_OUT, BucketStep.MOVED):
            return _reservation(reply)
        claim = call.home_ticket(home) if reply[-1] == "claimed" else None
        if reply[0] == BucketStep.MOVED:
            # A keyed retry: under its own claim, or carrying on under the first attempt's, as
            # that attempt's ticket (the buckets it reached know it by that ticket's id).
            call = replace(call, ticket_id=reply[1])
        outcome = self._reserve_away(product_id, buckets, call, [reply])
        # A duplicate found the hold of another request with the key: the claim counts it.
        if claim and outcome.result not in _HELD:
            self.resolve_claims(product_id, home, [Claim(claim, "withdrawn")])
        return outcome

    def _reserve_away(
        self, product_id: int, buckets: int, call: _Purchase, replies: list[list]
    ) -> Reservation:
        """The buckets after the buyer's own, in the buyer's order, until one has the units."""
        for bucket in bucket_order(call.user_id, buckets)[1:]:
            reply = self._reserve_in(product_id, bucket, buckets, call)
            if reply[0] not in _MOVE_ON:
                return _reservation(reply)
            replies.append(reply)
            if reply[0] == PurchaseOutcome.UNAVAILABLE and call.idempotency_key:
                break  # a retry must meet the buckets as this attempt did: this one may have units
        if any(r[0] == PurchaseOutcome.UNAVAILABLE for r in replies):
            return Reservation(PurchaseOutcome.UNAVAILABLE)
        # Units left in some bucket, too few for this purchase: the most one purchase can get.
        left = [int(r[1]) for r in replies if r[0] == PurchaseOutcome.SOLD_OUT]
        return Reservation(PurchaseOutcome.SOLD_OUT, remaining=max(left, default=0))

    def _reserve_in(self, product_id: int, bucket: int, buckets: int, call: _Purchase) -> list:
        """One reserve call, in `bucket`; the purchase rate counts in the buyer's own only."""
        home = bucket == call.user_id % buckets
        place = "" if buckets == 1 else "home" if home else "away"
        k = self.keys(product_id, bucket)
        rate = call.rate if home else None
        args = {
            "user": call.user_id,
            "quantity": call.quantity,
            "ticket": ticket_in_bucket(call.ticket_id, bucket),
            "hold_ms": int(self.settings.hold_seconds * 1000),
            "idempotency_key": call.idempotency_key,
            "payment_method": call.payment_method,
            "reclaim_limit": RECLAIM_PER_CALL,
            "rate_limit": rate.amount if rate else 0,
            "rate_window_ms": rate.window_ms if rate else 0,
            "seats": json_list(list(call.seats)) if call.seats else "",
            "best": json.dumps({"section": call.best.section, "together": call.best.together})
            if call.best
            else "",
            "pass": call.pass_id,
            "request_id": call.request_id,
            "buckets": buckets,
            "place": place,
            "claim_ms": CLAIM_MS,
            "together_search": TOGETHER_SEARCH_SEATS,
        }
        script = ReserveCall(reserve_key_map(k, call.user_id), args)
        reply, replicated = self.call_counting_replicas(script.script, script.keys(), script.argv())
        if not replicated:
            call.unreplicated.append(bucket)
        return reply

    def adopt_hold(self, product_id: int, hold: Hold, own: bool = True) -> str:
        """Holds again a hold Redis lost whose order SQL has open (adopt_hold.lua): adopted,
        held, settled, unavailable, lapsed or taken. `own`: the hold is in its buyer's own
        bucket (always, for a product of one bucket)."""
        k = self.ticket_keys(product_id, [hold.ticket_id])
        keys = [k.stock, k.holds, k.deadlines, k.users, k.settle, k.events,
                k.final(hold.ticket_id), k.idempotency, *k.seat_keys, k.passes_used]  # fmt: skip
        record = json.dumps(hold.to_record(), separators=(",", ":"))
        return self.scripts.adopt_hold(keys=keys, args=[record, "own" if own else "away"])


# A later bucket's answers that send the purchase on.
_MOVE_ON = (PurchaseOutcome.SOLD_OUT, BucketStep.MOVED, PurchaseOutcome.UNAVAILABLE)
_HELD = (PurchaseOutcome.RESERVED, PurchaseOutcome.DUPLICATE)  # answers naming a hold


@dataclass(frozen=True)
class _Purchase:
    """One purchase, as every bucket it tries is asked."""

    user_id: int
    quantity: int
    ticket_id: str
    payment_method: str
    idempotency_key: str
    rate: PurchaseRate | None
    seats: Sequence[str]
    best: BestAvailable | None
    pass_id: str
    request_id: str
    unreplicated: list[int] = field(default_factory=list)  # buckets whose replicas lagged

    def home_ticket(self, home: int) -> str:
        """The purchase's ticket id in the buyer's own bucket (where its claim is kept)."""
        return ticket_in_bucket(self.ticket_id, home)


def _reservation(reply: list) -> Reservation:
    """The reserve script's answer, read."""
    result = PurchaseOutcome(reply[0])
    if result in _HELD:
        raw = reply[2]
        hold = Hold.from_json(raw) if raw else None
        return Reservation(result, ticket_id=reply[1], hold=hold)
    if result is PurchaseOutcome.RATE_LIMITED:
        return Reservation(result, retry_after_ms=max(0, int(reply[1])))
    if result in (PurchaseOutcome.SEATS_UNAVAILABLE, PurchaseOutcome.UNKNOWN_SEATS):
        return Reservation(result, seats=tuple(json.loads(reply[1])))
    remaining = int(reply[1]) if len(reply) > 1 else None
    return Reservation(result, remaining=remaining)
