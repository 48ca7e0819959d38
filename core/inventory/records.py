"""The values the inventory answers with and takes: figures, terms, snapshots, seat plans,
the endings of holds and claims."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from core.inventory.hold import Hold
from core.inventory.outcomes import PurchaseOutcome
from core.keys import bucket_share


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
class Reservation:
    result: PurchaseOutcome
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


class Claim(NamedTuple):
    """A claim's end (resolve_claims.lua): kept, released, withdrawn (the purchase held nothing:
    its waiting room pass may buy again), or returned (a refund: the user and quantity are
    uncounted, claim or none)."""

    ticket_id: str  # the ticket's id in the bucket holding the claim
    action: str
    user_id: int = 0
    quantity: int = 0
