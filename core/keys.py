"""Redis key layout. Every key of one product carries the hash tag {<product_id>}, so each script
touches a single Redis Cluster slot. A hot product split across buckets has one tag a bucket:
bucket 0 keeps {<product_id>}, bucket b has {<product_id>.<b>}; each bucket is a stock of its own
(see Inventory.reserve)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

SETTLE_GROUP = "settlers"
MAX_BUCKETS = 64
_TICKET = re.compile(r"^([1-9][0-9]{0,9})(?:\.([1-9][0-9]?))?-([0-9a-f]{24})$")


@dataclass(frozen=True)
class ProductKeys:
    prefix: str
    product_id: int
    bucket: int = 0

    @property
    def tag(self) -> str:
        if self.bucket:
            return f"{self.prefix}:{{{self.product_id}.{self.bucket}}}"
        return f"{self.prefix}:{{{self.product_id}}}"

    @property
    def stock(self) -> str:
        return f"{self.tag}:stock"

    @property
    def holds(self) -> str:
        return f"{self.tag}:holds"

    @property
    def deadlines(self) -> str:
        return f"{self.tag}:deadlines"

    @property
    def users(self) -> str:
        return f"{self.tag}:users"

    @property
    def idempotency(self) -> str:
        return f"{self.tag}:idempotency"

    @property
    def settle(self) -> str:
        return f"{self.tag}:settle"

    @property
    def events(self) -> str:
        return f"{self.tag}:events"

    @property
    def seats(self) -> str:
        """A seated product's seats: seat id -> 'f', 'h:<ticket>' or 's:<ticket>' (lib.lua)."""
        return f"{self.tag}:seats"

    @property
    def seat_ranks(self) -> str:
        """Seat id -> score: its section's place in the map, then its rank (best first)."""
        return f"{self.tag}:seat-ranks"

    @property
    def free_seats(self) -> str:
        """The free seats, a sorted set by score: best available reads it in order."""
        return f"{self.tag}:free-seats"

    @property
    def seat_keys(self) -> list[str]:
        """The keys lib.lua's seat_keys() reads, in its order."""
        return [self.seats, self.seat_ranks, self.free_seats]

    @property
    def room(self) -> str:
        """The sale's waiting room: on, rate, seed, drawn, next, served, admit_ms, epoch
        (lib.lua)."""
        return f"{self.tag}:room"

    @property
    def queue(self) -> str:
        """The waiting room's places: buyer -> position."""
        return f"{self.tag}:queue"

    @property
    def early(self) -> str:
        """Buyers who joined before the opening, drawn into the queue at random at it."""
        return f"{self.tag}:queue-early"

    @property
    def admits(self) -> str:
        """Each admitted position and its moment (a stream, for audit and the admin chart)."""
        return f"{self.tag}:queue-admits"

    @property
    def passes_used(self) -> str:
        """The waiting room's passes that bought already (one accepted purchase each)."""
        return f"{self.tag}:passes-used"

    @property
    def room_keys(self) -> list[str]:
        """The keys lib.lua's room_keys() reads, in its order."""
        return [self.room, self.queue, self.early, self.admits]

    @property
    def replication_probe(self) -> str:
        """Written before WAIT (Inventory.replicated): WAIT counts the replicas that have the
        caller's last write and everything the primary took before it."""
        return f"{self.tag}:replicated"

    @property
    def returns(self) -> str:
        """Refunded tickets whose units are not back on sale yet (see begin_return.lua)."""
        return f"{self.tag}:returns"

    @property
    def claims(self) -> str:
        """A split product's bucket: the units of its buyers' purchases that moved on to a later
        bucket, counted here until their outcome is known (see reserve.lua)."""
        return f"{self.tag}:claims"

    @property
    def rebuild_lease(self) -> str:
        """Held by the one rebuild that may create the stock (a fencing token)."""
        return f"{self.tag}:rebuilding"

    def lock(self, ticket_id: str) -> str:
        return f"{self.tag}:lock:{ticket_id}"

    def purchase_rate(self, user_id: int) -> str:
        """The buyer's purchases of this product in the current rate-limit window."""
        return f"{self.tag}:rate:{user_id}"

    def final(self, ticket_id: str) -> str:
        return f"{self.tag}:final:{ticket_id}"

    def paying(self, ticket_id: str) -> str:
        return f"{self.tag}:paying:{ticket_id}"

    def refunding(self, ticket_id: str) -> str:
        return f"{self.tag}:refunding:{ticket_id}"

    def all(self) -> list[str]:
        return [
            self.stock,
            self.holds,
            self.deadlines,
            self.users,
            self.idempotency,
            self.settle,
            self.events,
            *self.seat_keys,
            *self.room_keys,
            self.passes_used,
            self.returns,
            self.claims,
            self.rebuild_lease,
        ]


@dataclass(frozen=True)
class QueueGuardKeys:
    """A product's marks of queued jobs, kept beside the queues in REDIS_URL's Redis (the
    inventory's keys may be on a cluster): one job of a kind per product, however many ask."""

    prefix: str
    product_id: int

    @property
    def tag(self) -> str:
        return ProductKeys(self.prefix, self.product_id).tag

    @property
    def rebuild_pending(self) -> str:
        """Set while a rebuild of the stock is queued."""
        return f"{self.tag}:rebuild-pending"

    @property
    def drain_queued(self) -> str:
        """Set while a settlement job for the product waits in the queue: the web processes'
        kicks during a sale queue one job at a time, not one per kick."""
        return f"{self.tag}:drain-queued"


@dataclass(frozen=True)
class SimulatedProviderKeys:
    """The simulated payment provider's records, under one hash tag: its scripts touch one slot."""

    prefix: str

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{simpay}}"

    @property
    def intents(self) -> str:
        return f"{self.tag}:intents"

    @property
    def idempotency(self) -> str:
        return f"{self.tag}:idempotency"

    @property
    def charges(self) -> str:
        return f"{self.tag}:charges"

    @property
    def refunds(self) -> str:
        return f"{self.tag}:refunds"


def new_ticket_id(product_id: int, bucket: int = 0) -> str:
    """The product id (and the bucket, past the first) leads the ticket id, so a ticket's keys
    are found without a lookup: 12-<hex>, or 12.3-<hex> in bucket 3."""
    return ticket_in_bucket(f"{product_id}-{secrets.token_hex(12)}", bucket)


def ticket_in_bucket(ticket_id: str, bucket: int) -> str:
    """The same ticket id naming another bucket (a purchase moving on to it)."""
    match = _TICKET.match(ticket_id)
    if match is None:
        raise ValueError(f"not a ticket id: {ticket_id!r}")
    product, token = match.group(1), match.group(3)
    return f"{product}.{bucket}-{token}" if bucket else f"{product}-{token}"


def product_of_ticket(ticket_id: str) -> int | None:
    match = _TICKET.match(ticket_id)
    return int(match.group(1)) if match else None


def bucket_of_ticket(ticket_id: str) -> int:
    """The bucket whose keys hold the ticket (0 for a product not split)."""
    match = _TICKET.match(ticket_id)
    return int(match.group(2) or 0) if match else 0


def bucket_share(initial: int, buckets: int, bucket: int) -> int:
    """A bucket's part of a product's stock: equal parts, the first ones one more for the rest."""
    return initial // buckets + (1 if bucket < initial % buckets else 0)


def bucket_order(user_id: int, buckets: int) -> list[int]:
    """The buckets a buyer tries, in order: the buyer's own first, then the next ones round.
    Always the same order for a buyer, so a retried purchase visits the buckets as the first
    one did (see reserve.lua's markers)."""
    home = user_id % buckets
    return [(home + step) % buckets for step in range(buckets)]


# --- keys of the whole service, not of one product ---------------------------------------------


@dataclass(frozen=True)
class ServiceKeys:
    prefix: str

    @property
    def revocations(self) -> str:
        """The pub/sub channel a logout publishes the revoked token's id on."""
        return f"{self.prefix}:jwt:revocations"

    @property
    def rate_limits(self) -> str:
        """The prefix of Flask-Limiter's counters (the routes other than the purchase)."""
        return f"{self.prefix}:limits"

    @property
    def catalogue_version(self) -> str:
        """Counter moved by every change of an event: search answers kept under an older one
        are stale (core/search/cache.py)."""
        return f"{self.prefix}:catalogue:version"

    @property
    def last_reconciliations(self) -> str:
        """Hash: product id -> the last reconciliation's outcome, as JSON."""
        return f"{self.prefix}:reconcile:last"
