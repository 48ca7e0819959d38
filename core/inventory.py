"""Stock and holds in Redis: every state change is one Lua call on one product's keys."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import ResponseError

from core.config import Settings
from core.keys import SETTLE_GROUP, ProductKeys, product_of_ticket
from core.locks import RedisLock
from core.scripts import Scripts

RECLAIM_PER_CALL = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


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
        return record


@dataclass(frozen=True)
class Reservation:
    # reserved, duplicate, sold_out, per_user_limit, sale_not_started, sale_ended, unavailable
    result: str
    ticket_id: str | None = None
    hold: Hold | None = None
    remaining: int | None = None


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
class Snapshot:
    figures: StockFigures
    open_quantity: int
    confirmed_holds: dict[str, int]  # ticket -> quantity, confirmed in Redis, maybe not yet in SQL


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


class Inventory:
    """Works on a Redis client created with decode_responses=True."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = Scripts(redis)

    def keys(self, product_id: int) -> ProductKeys:
        return ProductKeys(self.settings.key_prefix, product_id)

    # --- the purchase path -------------------------------------------------------------------
    def reserve(
        self,
        product_id: int,
        user_id: int,
        quantity: int,
        ticket_id: str,
        payment_method: str,
        idempotency_key: str = "",
    ) -> Reservation:
        k = self.keys(product_id)
        reply = self.scripts.reserve(
            keys=[k.stock, k.holds, k.deadlines, k.users, k.idempotency, k.settle, k.events],
            args=[
                now_ms(),
                user_id,
                quantity,
                ticket_id,
                self.settings.hold_seconds * 1000,
                idempotency_key,
                payment_method,
                k.lock_prefix,
                RECLAIM_PER_CALL,
            ],
        )
        result = reply[0]
        if result in ("reserved", "duplicate"):
            raw = reply[2]
            hold = Hold.from_json(raw) if raw else None
            return Reservation(result, ticket_id=reply[1], hold=hold)
        remaining = int(reply[1]) if len(reply) > 1 else None
        return Reservation(result, remaining=remaining)

    def get_hold(self, ticket_id: str) -> Hold | None:
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return None
        raw = self.redis.hget(self.keys(product_id).holds, ticket_id)
        return Hold.from_json(raw) if raw else None

    def get_ticket(self, ticket_id: str) -> Hold | None:
        """The ticket as Redis knows it: its open hold, or its final state for a while after
        settlement (one round trip)."""
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return None
        k = self.keys(product_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(k.holds, ticket_id)
        pipe.get(k.final(ticket_id))
        held, final = pipe.execute()
        raw = held or final
        return Hold.from_json(raw) if raw else None

    # --- settlement --------------------------------------------------------------------------
    def lock(self, product_id: int, ticket_id: str) -> RedisLock:
        k = self.keys(product_id)
        return RedisLock(
            self.redis, self.scripts, k.lock(ticket_id), k.lock_stats, self.settings.lock_ttl_ms
        )

    def payment_lease(self, product_id: int, ticket_id: str) -> RedisLock:
        """Only one settler talks to the provider about a ticket at a time (a second one that
        claimed the ticket meanwhile retries later). Outlives the provider calls it covers."""
        k = self.keys(product_id)
        ttl_ms = int(self.settings.payment_timeout_seconds * 3 * 1000) + 5000
        return RedisLock(self.redis, self.scripts, k.paying(ticket_id), k.lock_stats, ttl_ms, 0)

    def refund_lock(self, product_id: int, ticket_id: str) -> RedisLock:
        """Refunds of one ticket run one at a time, each re-reading what was refunded."""
        k = self.keys(product_id)
        ttl_ms = int(self.settings.payment_timeout_seconds * 3 * 1000) + 5000
        wait_s = self.settings.payment_timeout_seconds * 2
        return RedisLock(
            self.redis, self.scripts, k.refunding(ticket_id), k.lock_stats, ttl_ms, wait_s
        )

    # --- the same steps for a batch of tickets, one round trip each -------------------------
    def lock_many(self, product_id: int, ticket_ids: list[str]) -> dict[str, str]:
        """Takes the settlement locks that are free (no waiting): ticket -> token."""
        k = self.keys(product_id)
        return self._acquire_many(
            [k.lock(t) for t in ticket_ids], ticket_ids, self.settings.lock_ttl_ms, k.lock_stats
        )

    def unlock_many(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.keys(product_id)
        self._release_many({k.lock(t): token for t, token in tokens.items()})

    def lease_many(self, product_id: int, ticket_ids: list[str]) -> dict[str, str]:
        """Payment leases (see payment_lease) for a batch: ticket -> token, free ones only."""
        k = self.keys(product_id)
        ttl_ms = int(self.settings.payment_timeout_seconds * 3 * 1000) + 5000
        return self._acquire_many(
            [k.paying(t) for t in ticket_ids], ticket_ids, ttl_ms, k.lock_stats
        )

    def release_leases(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.keys(product_id)
        self._release_many({k.paying(t): token for t, token in tokens.items()})

    def _acquire_many(
        self, keys: list[str], ticket_ids: list[str], ttl_ms: int, stats_key: str
    ) -> dict[str, str]:
        tokens = {t: secrets.token_hex(16) for t in ticket_ids}
        pipe = self.redis.pipeline(transaction=False)
        for key, ticket in zip(keys, ticket_ids, strict=True):
            pipe.set(key, tokens[ticket], nx=True, px=ttl_ms)
        taken = pipe.execute()
        acquired = {t: tokens[t] for t, ok in zip(ticket_ids, taken, strict=True) if ok}
        pipe.hincrby(stats_key, "acquired", len(acquired))
        pipe.hincrby(stats_key, "failed", len(ticket_ids) - len(acquired))
        pipe.execute()
        return acquired

    def _release_many(self, tokens_by_key: dict[str, str]) -> None:
        if not tokens_by_key:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, token in tokens_by_key.items():
            self.scripts.unlock(keys=[key], args=[token], client=pipe)
        pipe.execute()

    def begin_many(
        self, product_id: int, ticket_ids: list[str]
    ) -> dict[str, tuple[str, Hold | None]]:
        k = self.keys(product_id)
        now, lease_ms = now_ms(), self.settings.settle_lease_seconds * 1000
        pipe = self.redis.pipeline(transaction=False)
        for ticket in ticket_ids:
            self.scripts.begin_settlement(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events],
                args=[ticket, now, lease_ms],
                client=pipe,
            )
        replies = pipe.execute()
        return {t: _state_and_hold(r) for t, r in zip(ticket_ids, replies, strict=True)}

    def finish_many(
        self, product_id: int, outcomes: list[tuple[str, str, str]]
    ) -> dict[str, tuple[str, Hold | None]]:
        """finish_hold for (ticket, outcome, reason) triples."""
        k = self.keys(product_id)
        now = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for ticket, outcome, reason in outcomes:
            self.scripts.finish_hold(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events],
                args=[ticket, outcome, reason, now, ""],
                client=pipe,
            )
        replies = pipe.execute()
        return {o[0]: _state_and_hold(r) for o, r in zip(outcomes, replies, strict=True)}

    def forget_many(
        self, product_id: int, entries: list[tuple[str, str | None, str, str | None, str]]
    ) -> None:
        """forget for (ticket, stream entry id, final status, reason, payment status) tuples."""
        if not entries:
            return
        k = self.keys(product_id)
        pipe = self.redis.pipeline(transaction=False)
        for ticket, entry_id, status, reason, payment_status in entries:
            self.scripts.forget_hold(
                keys=[k.stock, k.holds, k.settle, k.final(ticket)],
                args=self._forget_args(ticket, entry_id, status, reason, payment_status),
                client=pipe,
            )
        pipe.execute()

    def begin_settlement(self, product_id: int, ticket_id: str) -> tuple[str, Hold | None]:
        k = self.keys(product_id)
        lease_ms = self.settings.settle_lease_seconds * 1000
        reply = self.scripts.begin_settlement(
            keys=[k.stock, k.holds, k.deadlines, k.users, k.events],
            args=[ticket_id, now_ms(), lease_ms],
        )
        return _state_and_hold(reply)

    def finish_hold(
        self, product_id: int, ticket_id: str, outcome: str, reason: str = "", only_from: str = ""
    ) -> tuple[str, Hold | None]:
        """Moves an open hold to `outcome`: ok, already, conflict, missing or unavailable."""
        k = self.keys(product_id)
        reply = self.scripts.finish_hold(
            keys=[k.stock, k.holds, k.deadlines, k.users, k.events],
            args=[ticket_id, outcome, reason, now_ms(), only_from],
        )
        return _state_and_hold(reply)

    def await_action(self, product_id: int, ticket_id: str, client_secret: str) -> bool:
        """Marks a hold whose payment waits for the buyer's authentication."""
        reply = self.scripts.await_action(
            keys=[self.keys(product_id).holds], args=[ticket_id, client_secret, now_ms()]
        )
        return reply[0] == "ok"

    def unsell(self, product_id: int, ticket_id: str, user_id: int, quantity: int) -> bool:
        """Puts a refunded order's units back on sale."""
        k = self.keys(product_id)
        reply = self.scripts.unsell(
            keys=[k.stock, k.users, k.events], args=[ticket_id, user_id, quantity, now_ms()]
        )
        return bool(reply)

    def expire_holds(self, product_id: int, limit: int = 1000) -> int:
        k = self.keys(product_id)
        return int(
            self.scripts.expire_holds(
                keys=[k.stock, k.holds, k.deadlines, k.users, k.events],
                args=[now_ms(), k.lock_prefix, limit],
            )
        )

    def ensure_settle_group(self, product_id: int) -> None:
        try:
            self.redis.xgroup_create(self.keys(product_id).settle, SETTLE_GROUP, "0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_settle_queue(
        self, product_id: int, consumer: str, count: int
    ) -> list[tuple[str, str]]:
        """Tickets to settle: entries abandoned by a dead settler first, then new ones."""
        k = self.keys(product_id)
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
            self.ensure_settle_group(product_id)
            return []
        return [(entry_id, fields["ticket"]) for entry_id, fields in [*claimed, *fresh] if fields]

    def settle_backlog(self, product_id: int) -> int:
        return int(self.redis.xlen(self.keys(product_id).settle))

    def forget(
        self,
        product_id: int,
        ticket_id: str,
        entry_id: str | None,
        status: str = "",
        reason: str | None = None,
        payment_status: str = "",
    ) -> bool:
        """Drops a settled hold from Redis once SQL holds its final state (`status`, kept a
        while for the buyers polling the ticket)."""
        k = self.keys(product_id)
        return bool(
            self.scripts.forget_hold(
                keys=[k.stock, k.holds, k.settle, k.final(ticket_id)],
                args=self._forget_args(ticket_id, entry_id, status, reason, payment_status),
            )
        )

    def _forget_args(
        self,
        ticket_id: str,
        entry_id: str | None,
        status: str,
        reason: str | None,
        payment_status: str = "",
    ) -> list[object]:
        ttl = self.settings.final_status_ttl_seconds
        return [ticket_id, entry_id or "", SETTLE_GROUP, status, reason or "", ttl, payment_status]

    def drop_final(self, product_id: int, ticket_id: str) -> None:
        """The order changed after settlement (say, refunded): polls go to SQL again."""
        self.redis.delete(self.keys(product_id).final(ticket_id))

    # --- stock figures, rebuild and repair ---------------------------------------------------
    def figures(self, product_id: int) -> StockFigures | None:
        values = self.redis.hmget(
            self.keys(product_id).stock, "initial", "available", "held", "sold", "version"
        )
        if values[0] is None:
            return None
        return StockFigures(*(int(v) for v in values))

    def available_many(self, product_ids: list[int]) -> dict[int, int | None]:
        pipe = self.redis.pipeline(transaction=False)
        for product_id in product_ids:
            pipe.hget(self.keys(product_id).stock, "available")
        values = pipe.execute()
        return {
            pid: None if v is None else int(v) for pid, v in zip(product_ids, values, strict=True)
        }

    def snapshot(self, product_id: int) -> Snapshot | None:
        k = self.keys(product_id)
        reply = self.scripts.inventory_snapshot(keys=[k.stock, k.holds])
        if not reply:
            return None
        figures = StockFigures(*(int(v) for v in reply[:5]))
        pairs = reply[6]
        confirmed = {pairs[i]: int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return Snapshot(figures, int(reply[5]), confirmed)

    def confirmed_holds(self, product_id: int) -> dict[str, int]:
        """Confirmed holds still in Redis (SQL may not have recorded them yet)."""
        raw = self.redis.hvals(self.keys(product_id).holds)
        holds = (Hold.from_json(r) for r in raw)
        return {h.ticket_id: h.quantity for h in holds if h.status == "confirmed"}

    def repair(self, product_id: int, version: int, initial: int, sold: int, held: int) -> bool:
        k = self.keys(product_id)
        reply = self.scripts.repair_stock(
            keys=[k.stock, k.events], args=[version, initial, sold, held, now_ms()]
        )
        return reply[0] == "repaired"

    def restore(
        self,
        terms: ProductTerms,
        sold: int,
        open_holds: list[Hold],
        user_quantities: dict[int, int],
    ) -> bool:
        """Creates the stock key from SQL's figures; False when it exists already."""
        k = self.keys(terms.product_id)
        reply = self.scripts.restore_stock(
            keys=[k.stock, k.holds, k.deadlines, k.users, k.settle, k.events],
            args=[
                terms.initial_stock,
                sold,
                terms.max_per_user,
                terms.starts_ms,
                terms.ends_ms,
                terms.price_minor,
                terms.currency,
                json.dumps([h.to_record() for h in open_holds]),
                json.dumps({str(u): q for u, q in user_quantities.items()})
                if user_quantities
                else "{}",
                now_ms(),
            ],
        )
        return reply[0] == "created"

    def update_terms(self, terms: ProductTerms) -> bool:
        """Applies SQL's terms (absolute figures: safe to repeat) to a stock that is in Redis."""
        k = self.keys(terms.product_id)
        reply = self.scripts.update_product(
            keys=[k.stock, k.events],
            args=[
                terms.initial_stock,
                terms.starts_ms,
                terms.ends_ms,
                terms.max_per_user,
                terms.price_minor,
                now_ms(),
            ],
        )
        return bool(reply)

    def recent_events(self, product_id: int, count: int = 100) -> list[dict[str, str]]:
        entries = self.redis.xrevrange(self.keys(product_id).events, count=count)
        return [
            {k: v for k, v in fields.items()} | {"id": entry_id} for entry_id, fields in entries
        ]

    def drop_product(self, product_id: int) -> None:
        self.redis.delete(*self.keys(product_id).all())


def _state_and_hold(reply: list) -> tuple[str, Hold | None]:
    raw = reply[1]
    return reply[0], Hold.from_json(raw) if raw else None
