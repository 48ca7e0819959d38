"""Stock and holds in Redis: every state change is one Lua call on one product's keys."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from redis.exceptions import RedisError, ResponseError

from core.config import Settings
from core.keys import (
    SETTLE_GROUP,
    ProductKeys,
    bucket_of_ticket,
    bucket_order,
    bucket_share,
    product_of_ticket,
    ticket_in_bucket,
)
from core.locks import RedisLock, retry_with_backoff
from core.metrics import LOCK_WAIT_SECONDS, LOCKS, PURCHASES, RESERVE_SECONDS
from core.scripts import RedisClient, Scripts

RECLAIM_PER_CALL = 20
REBUILD_LEASE_MS = 30_000
# An open claim older than this belongs to a purchase that ended without saying how (its web
# process died between two buckets): the sweep looks at where it went (core.stock.sweep_claims).
CLAIM_MS = 120_000
CLOCK_REFRESH_S = 30.0
# Seats a search for seats together looks at, at most (reserve.lua's best_together): about a
# millisecond of Redis whatever the hall; a block past that is not offered.
TOGETHER_SEARCH_SEATS = 2000


def now_ms() -> int:
    """This process's own clock; decisions about deadlines use RedisClock instead."""
    return int(time.time() * 1000)


def reserve_keys(k: ProductKeys, user_id: int) -> list[str]:
    """The reserve script's KEYS, in its order (reserve.lua)."""
    return [
        k.stock,
        k.holds,
        k.deadlines,
        k.users,
        k.idempotency,
        k.settle,
        k.events,
        k.purchase_rate(user_id),
        *k.seat_keys,
        k.passes_used,
        k.claims,
    ]


class RedisClock:
    """Redis' clock, the one the scripts decide deadlines and sale windows by, read in this
    process without a round trip: the offset to the local clock is measured now and then."""

    def __init__(self, redis: RedisClient, refresh_s: float = CLOCK_REFRESH_S) -> None:
        self.redis = redis
        self.refresh_s = refresh_s
        self._offset_ms = 0.0
        self._measured_at = -float("inf")

    def now_ms(self) -> int:
        if time.monotonic() - self._measured_at > self.refresh_s:
            self._measure()
        return int(time.time() * 1000 + self._offset_ms)

    def _measure(self) -> None:
        before = time.time()
        seconds, micros = self.redis.time()
        after = time.time()
        redis_ms = int(seconds) * 1000 + int(micros) / 1000
        self._offset_ms = redis_ms - (before + after) / 2 * 1000
        self._measured_at = time.monotonic()


class Ending(NamedTuple):
    """A hold's move to a final state; `only_from`: only if the hold is in that state now."""

    ticket_id: str
    outcome: str
    reason: str = ""
    only_from: str = ""


class Settled(NamedTuple):
    """A hold whose final state SQL has; `entry_id`: its settle stream entry, if known."""

    ticket_id: str
    entry_id: str | None
    status: str = ""
    reason: str | None = None
    payment_status: str = ""


@dataclass(frozen=True)
class Hold:
    ticket_id: str
    user_id: int
    quantity: int
    amount_minor: int
    deadline_ms: int
    status: str
    reason: str | None
    payment_method: str
    created_ms: int
    modified_ms: int
    currency: str = ""
    client_secret: str | None = None
    payment_status: str | None = None  # the provider's word, kept with a settled ticket
    idempotency_key: str | None = None
    seats: tuple[str, ...] = ()  # a seated product's hold: the seats it holds
    request_id: str | None = None  # the purchase request's id (X-Request-ID), for log lines
    queue_pass: str | None = None  # the waiting room pass it bought with (its id, see reserve)

    @classmethod
    def from_json(cls, raw: str) -> Hold:
        data = json.loads(raw)
        return cls(
            ticket_id=data["t"],
            user_id=int(data["u"]),
            quantity=int(data["q"]),
            amount_minor=int(data["a"]),
            deadline_ms=int(data["d"]),
            status=data["s"],
            reason=data.get("r"),
            payment_method=data.get("pm", ""),
            created_ms=int(data["c"]),
            modified_ms=int(data.get("m", data["c"])),
            currency=data.get("cur", ""),
            client_secret=data.get("cs"),
            payment_status=data.get("ps"),
            idempotency_key=data.get("k"),
            seats=tuple(data.get("st") or ()),
            request_id=data.get("ri"),
            queue_pass=data.get("qp"),
        )

    def to_record(self) -> dict[str, object]:
        record = {
            "t": self.ticket_id,
            "u": str(self.user_id),
            "q": self.quantity,
            "a": self.amount_minor,
            "d": self.deadline_ms,
            "s": self.status,
            "pm": self.payment_method,
            "c": self.created_ms,
            "m": self.modified_ms,
            "cur": self.currency,
        }
        if self.reason:
            record["r"] = self.reason
        if self.idempotency_key:
            record["k"] = self.idempotency_key
        if self.seats:
            record["st"] = list(self.seats)
        if self.request_id:
            record["ri"] = self.request_id
        if self.queue_pass:
            record["qp"] = self.queue_pass
        return record


@dataclass(frozen=True)
class Reservation:
    # reserved, duplicate, sold_out, per_user_limit, sale_not_started, sale_ended, unavailable,
    # rate_limited; for seats: seats_unavailable, unknown_seats (both naming them in `seats`),
    # seats_required (a seated product bought by quantity), not_seated
    result: str
    ticket_id: str | None = None
    hold: Hold | None = None
    remaining: int | None = None
    retry_after_ms: int | None = None
    seats: tuple[str, ...] = ()
    # False: a replica did not confirm in time (INVENTORY_MIN_REPLICAS) that it has the hold,
    # which a failover could then drop; the caller makes it durable otherwise before its 202.
    replicated: bool = True


@dataclass(frozen=True)
class SeatPlan:
    """A seated product's seats as a rebuild (or the first set-up) writes them: seat id ->
    'f', 'h:<ticket>' or 's:<ticket>', each section's price (minor units), place and most seats
    side by side in a row (no search for more together), and each seat's score for best
    available."""

    states: dict[str, str]
    sections: dict[str, tuple[int, int, int]]  # section -> (price, place, longest row)
    scores: dict[str, int]  # seat -> its section's place * SECTION_SCORE + its rank


SECTION_SCORE = 10**12  # reserve.lua's SECTION: a section's scores, one range after another


@dataclass(frozen=True)
class BestAvailable:
    """The best free seats of a section, side by side in one row when `together`."""

    section: str
    together: bool


@dataclass(frozen=True)
class SeatSnapshot:
    version: int
    states: dict[str, str]  # seat -> 'f', 'h:<ticket>' or 's:<ticket>'
    holding: set[str]  # tickets with a hold record


@dataclass(frozen=True)
class RoomFigures:
    rate: int
    waiting: int  # with a place not admitted yet, or waiting for the opening's draw
    admitted: int
    admissions: list[list[int]]  # [moment_ms, place], oldest first


@dataclass(frozen=True)
class PurchaseRate:
    """At most `amount` purchase attempts per buyer and product in each window."""

    amount: int
    window_ms: int
    text: str  # as the API says it: "10 per 1 minute"


@dataclass(frozen=True)
class StockFigures:
    initial: int
    available: int
    held: int
    sold: int
    version: int

    @property
    def balanced(self) -> bool:
        return self.available + self.held + self.sold == self.initial


@dataclass(frozen=True)
class ProductTerms:
    """What the reserve script needs to know of a product."""

    product_id: int
    initial_stock: int
    max_per_user: int
    starts_ms: int
    ends_ms: int
    price_minor: int
    currency: str
    terms_version: int = 1
    waiting_room: bool = False  # a term like the others (restore_stock.lua, update_product.lua)
    admit_per_second: int = 0
    buckets: int = 1  # a hot product's stock split across this many buckets (see reserve)

    def share(self, bucket: int) -> int:
        """The bucket's part of the initial stock."""
        return bucket_share(self.initial_stock, self.buckets, bucket)

    def of_bucket(self, bucket: int) -> ProductTerms:
        """The terms one bucket's stock enforces: its share of the units."""
        return replace(self, initial_stock=self.share(bucket))

    def enforced(self) -> tuple[int, int, int, int, int, str, int, bool]:
        """The figures Redis must agree with SQL on."""
        return (
            self.initial_stock,
            self.max_per_user,
            self.starts_ms,
            self.ends_ms,
            self.price_minor,
            self.currency,
            self.terms_version,
            self.waiting_room,
        )


@dataclass(frozen=True)
class Snapshot:
    """One product as Redis has it, read atomically (see inventory_snapshot.lua)."""

    figures: StockFigures
    terms: ProductTerms
    open_quantity: int
    confirmed_holds: dict[str, int]  # ticket -> quantity, confirmed in Redis, maybe not yet in SQL
    returning: dict[str, int]  # ticket -> quantity, refunds whose units are not back on sale yet
    bucket: int = 0  # the bucket of a split product it was read from


@dataclass(frozen=True)
class RebuildView:
    """What survives of a product in Redis when its stock key is gone (nothing moves then:
    every script that changes a hold or the returns needs the stock key), read under the
    product's rebuild lease: only the rebuild holding `token` may create the stock."""

    holds: list[Hold]
    returning: dict[str, int]
    token: str
    claims: dict[str, dict] = field(default_factory=dict)  # a split product's: ticket -> claim


@dataclass(frozen=True)
class HeldElsewhere:
    """What a split product's other buckets hold of one bucket's buyers (see held_elsewhere)."""

    holds: list[Hold]
    returning: dict[str, tuple[int, int]]  # refunds under way: ticket -> (user, quantity)


class Inventory:
    """Works on a Redis client created with decode_responses=True."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = Scripts(redis)
        self.clock = RedisClock(redis)
        self._buckets: dict[int, int] = {}  # product -> its buckets, once a reserve learnt them

    def keys(self, product_id: int, bucket: int = 0) -> ProductKeys:
        return ProductKeys(self.settings.key_prefix, product_id, bucket)

    def ticket_keys(self, product_id: int, ticket_ids: Iterable[str]) -> ProductKeys:
        """The keys of the bucket holding these tickets (a batch is one bucket's)."""
        buckets = {bucket_of_ticket(t) for t in ticket_ids}
        if len(buckets) > 1:
            raise ValueError(f"tickets of several buckets in one batch: {sorted(buckets)}")
        return self.keys(product_id, buckets.pop() if buckets else 0)

    # --- the purchase path -------------------------------------------------------------------
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
        call = _ReserveCall(
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
        if call.unreplicated and reservation.result == "reserved":
            return replace(reservation, replicated=False)
        return reservation

    def _reserve_across(self, product_id: int, call: _ReserveCall) -> Reservation:
        buckets = self._buckets.get(product_id, 1)
        home = call.user_id % buckets
        reply = self._reserve_in(product_id, home, buckets, call)
        if reply[0] == "buckets":  # this process's first purchase of a split product
            buckets = self._buckets[product_id] = int(reply[1])
            home = call.user_id % buckets
            reply = self._reserve_in(product_id, home, buckets, call)
        # The buyer's own bucket answers alone but when it sends the purchase on: a bucket it
        # cannot reach cannot count the buyer's units either.
        if buckets == 1 or reply[0] not in ("sold_out", "moved"):
            return _reservation(reply)
        claim = call.home_ticket(home) if reply[-1] == "claimed" else None
        if reply[0] == "moved":
            # A keyed retry: under its own claim, or carrying on under the first attempt's, as
            # that attempt's ticket (the buckets it reached know it by that ticket's id).
            call = replace(call, ticket_id=reply[1])
        outcome = self._reserve_away(product_id, buckets, call, [reply])
        # A duplicate found the hold of another request with the key: the claim counts it.
        if claim and outcome.result not in ("reserved", "duplicate"):
            self.resolve_claims(product_id, home, [Claim(claim, "withdrawn")])
        return outcome

    def _reserve_away(
        self, product_id: int, buckets: int, call: _ReserveCall, replies: list[list]
    ) -> Reservation:
        """The buckets after the buyer's own, in the buyer's order, until one has the units."""
        for bucket in bucket_order(call.user_id, buckets)[1:]:
            reply = self._reserve_in(product_id, bucket, buckets, call)
            if reply[0] not in _MOVE_ON:
                return _reservation(reply)
            replies.append(reply)
            if reply[0] == "unavailable" and call.idempotency_key:
                break  # a retry must meet the buckets as this attempt did: this one may have units
        if any(r[0] == "unavailable" for r in replies):
            return Reservation("unavailable")
        # Units left in some bucket, too few for this purchase: the most one purchase can get.
        left = [int(r[1]) for r in replies if r[0] == "sold_out"]
        return Reservation("sold_out", remaining=max(left, default=0))

    def _reserve_in(self, product_id: int, bucket: int, buckets: int, call: _ReserveCall) -> list:
        """One reserve call, in `bucket`; the purchase rate counts in the buyer's own only."""
        home = bucket == call.user_id % buckets
        place = "" if buckets == 1 else "home" if home else "away"
        k = self.keys(product_id, bucket)
        rate = call.rate if home else None
        keys = reserve_keys(k, call.user_id)
        args = [
            call.user_id,
            call.quantity,
            ticket_in_bucket(call.ticket_id, bucket),
            int(self.settings.hold_seconds * 1000),
            call.idempotency_key,
            call.payment_method,
            RECLAIM_PER_CALL,
            rate.amount if rate else 0,
            rate.window_ms if rate else 0,
            _json_list(list(call.seats)) if call.seats else "",
            json.dumps({"section": call.best.section, "together": call.best.together})
            if call.best
            else "",
            call.pass_id,
            call.request_id,
            buckets,
            place,
            CLAIM_MS,
            TOGETHER_SEARCH_SEATS,
        ]
        replicas = self.settings.inventory_min_replicas
        if replicas == 0:
            return self.scripts.reserve(keys=keys, args=args)
        reply, acked = self.scripts.call_and_wait(
            "reserve", keys, args, replicas, self.settings.inventory_replica_wait_ms
        )
        if acked < replicas:
            call.unreplicated.append(bucket)
        return reply  # type: ignore[return-value]

    def adopt_hold(self, product_id: int, hold: Hold, own: bool = True) -> str:
        """Holds again a hold Redis lost whose order SQL has open (adopt_hold.lua): adopted,
        held, settled, unavailable, lapsed or taken. `own`: the hold is in its buyer's own
        bucket (always, for a product of one bucket)."""
        k = self.ticket_keys(product_id, [hold.ticket_id])
        keys = [k.stock, k.holds, k.deadlines, k.users, k.settle, k.events,
                k.final(hold.ticket_id), k.idempotency, *k.seat_keys, k.passes_used]  # fmt: skip
        record = json.dumps(hold.to_record(), separators=(",", ":"))
        return self.scripts.adopt_hold(keys=keys, args=[record, "own" if own else "away"])

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

    # --- the waiting room ----------------------------------------------------------------
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

    # --- settlement --------------------------------------------------------------------------
    def lock(self, product_id: int, ticket_id: str) -> RedisLock:
        k = self.ticket_keys(product_id, [ticket_id])
        return RedisLock(self.redis, self.scripts, k.lock(ticket_id), self.settings.lock_ttl_ms)

    def refund_lock(self, product_id: int, ticket_id: str) -> RedisLock:
        """Refunds of one ticket run one at a time, each re-reading what was refunded."""
        k = self.ticket_keys(product_id, [ticket_id])
        wait_s = self.settings.payment_timeout_seconds * 2
        return RedisLock(self.redis, self.scripts, k.refunding(ticket_id),
                         self._lease_ms, wait_s, kind="refund")  # fmt: skip

    # --- settlement steps: each takes a batch of tickets (one is a batch of one) ------------
    def take_locks(
        self, product_id: int, ticket_ids: list[str], wait_s: float = 0.0
    ) -> dict[str, str]:
        """Takes the settlement locks that are free, asking again for the others for up to
        `wait_s`: ticket -> token of those taken."""
        k = self.ticket_keys(product_id, ticket_ids)
        tokens: dict[str, str] = {}

        def attempt() -> bool:
            missing = [t for t in ticket_ids if t not in tokens]
            keys = [k.lock(t) for t in missing]
            taken = self._acquire(keys, missing, self.settings.lock_ttl_ms, "lock")
            tokens.update(taken)
            return len(tokens) == len(ticket_ids)

        started = time.perf_counter()
        retry_with_backoff(attempt, wait_s)
        if wait_s > 0:
            LOCK_WAIT_SECONDS.observe(time.perf_counter() - started)
        return tokens

    def release_locks(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.ticket_keys(product_id, tokens)
        self._release({k.lock(t): token for t, token in tokens.items()})

    def take_leases(self, product_id: int, ticket_ids: list[str]) -> dict[str, str]:
        """Payment leases: only one settler talks to the provider about a ticket at a time (a
        second one that claimed the ticket meanwhile retries later); each outlives the provider
        calls it covers. ticket -> token, free ones only."""
        k = self.ticket_keys(product_id, ticket_ids)
        return self._acquire([k.paying(t) for t in ticket_ids], ticket_ids, self._lease_ms, "lease")

    def release_leases(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.ticket_keys(product_id, tokens)
        self._release({k.paying(t): token for t, token in tokens.items()})

    @property
    def _lease_ms(self) -> int:
        """Payment leases and refund locks: three provider timeouts and a margin."""
        return int(self.settings.payment_timeout_seconds * 3 * 1000) + 5000

    def _acquire(
        self, keys: list[str], ticket_ids: list[str], ttl_ms: int, kind: str
    ) -> dict[str, str]:
        """One round trip for the batch's locks (or leases): ticket -> token of those taken."""
        if not ticket_ids:
            return {}
        tokens = [secrets.token_hex(16) for _ in ticket_ids]
        taken = self.scripts.take_locks(keys=keys, args=[ttl_ms, *tokens])
        got = {t: token for t, token, ok in zip(ticket_ids, tokens, taken, strict=True) if ok}
        LOCKS.labels(kind, "acquired").inc(len(got))
        LOCKS.labels(kind, "busy").inc(len(ticket_ids) - len(got))
        return got

    def _release(self, tokens_by_key: dict[str, str]) -> None:
        if tokens_by_key:
            self.scripts.release_locks(keys=list(tokens_by_key), args=list(tokens_by_key.values()))

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

    def drop_stock(self, product_id: int, bucket: int = 0) -> None:
        """Forgets a product's stock and seats, so that its next set-up writes them anew: only
        while it has no order (its holds, and each buyer's count, are left for the rebuild)."""
        k = self.keys(product_id, bucket)
        self.redis.delete(k.stock, *k.seat_keys)

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
        seat_list = _json_list(list(seats)) if seats else ""
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

    def expire_holds(self, product_id: int, limit: int = 1000, bucket: int = 0) -> int:
        k = self.keys(product_id, bucket)
        return int(
            self.scripts.expire_holds(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events, *k.seat_keys], args=[limit]
            )
        )

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

    def drop_final(self, product_id: int, ticket_id: str) -> None:
        """The order changed after settlement (say, refunded): polls go to SQL again."""
        self.redis.delete(self.ticket_keys(product_id, [ticket_id]).final(ticket_id))

    # --- stock figures, rebuild and repair ---------------------------------------------------
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
        reply = self.scripts.restore_stock(
            keys=[
                k.stock,
                k.holds,
                k.deadlines,
                k.users,
                k.settle,
                k.events,
                k.idempotency,
                k.returns,
                k.rebuild_lease,
                *k.seat_keys,
                k.claims,
                k.passes_used,
                *room_keys,
            ],
            args=[
                terms.share(bucket),
                sold,
                terms.max_per_user,
                terms.starts_ms,
                terms.ends_ms,
                terms.price_minor,
                terms.currency,
                _json_list([h.to_record() for h in open_holds]),
                json.dumps({str(u): q for u, q in user_quantities.items()}, separators=(",", ":"))
                if user_quantities
                else "{}",
                json.dumps(idempotency) if idempotency else "{}",
                terms.terms_version,
                SETTLE_GROUP,
                _json_list(refunded_marks or []),
                lease,
                json.dumps(seats.states, separators=(",", ":")) if seats else "",
                json.dumps(seats.sections) if seats else "{}",
                json.dumps(seats.scores, separators=(",", ":")) if seats else "{}",
                "1" if terms.waiting_room else "0",
                terms.admit_per_second,
                terms.buckets,
                json.dumps(claims) if claims else "{}",
                room_epoch,
                _json_list(sorted(passes_used)),
            ],
        )
        return reply[0] == "created"

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


_MOVE_ON = ("sold_out", "moved", "unavailable")  # a later bucket's answers that send it on


class Claim(NamedTuple):
    """A claim's end (resolve_claims.lua): kept, released, withdrawn (the purchase held nothing:
    its waiting room pass may buy again), or returned (a refund: the user and quantity are
    uncounted, claim or none)."""

    ticket_id: str  # the ticket's id in the bucket holding the claim
    action: str
    user_id: int = 0
    quantity: int = 0


@dataclass(frozen=True)
class _ReserveCall:
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


def _state_and_hold(reply: list) -> tuple[str, Hold | None]:
    raw = reply[1]
    return reply[0], Hold.from_json(raw) if raw else None


def _pairs(flat: list) -> dict[str, int]:
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _reservation(reply: list) -> Reservation:
    """The reserve script's answer, read."""
    result = reply[0]
    if result in ("reserved", "duplicate"):
        raw = reply[2]
        hold = Hold.from_json(raw) if raw else None
        return Reservation(result, ticket_id=reply[1], hold=hold)
    if result == "rate_limited":
        return Reservation(result, retry_after_ms=max(0, int(reply[1])))
    if result in ("seats_unavailable", "unknown_seats"):
        return Reservation(result, seats=tuple(json.loads(reply[1])))
    remaining = int(reply[1]) if len(reply) > 1 else None
    return Reservation(result, remaining=remaining)


def _json_list(items: list) -> str:
    """A JSON array even when empty (Lua's cjson reads '[]' and '{}' alike)."""
    return json.dumps(items, separators=(",", ":"))
