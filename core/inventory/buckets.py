"""Which stock: a hot product's stock is split across buckets, each a stock of its own with keys
of its own (core/keys.py). `Stock` names one; `BucketRouter` knows the rest: the ticket id's
grammar (a ticket's product and bucket), the buckets a buyer's purchase walks, in order, the
product's number of buckets (read once a process) and its stocks, for a rebuild or a
reconciliation to go through."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 64
_TICKET = re.compile(r"^([1-9][0-9]{0,9})(?:\.([1-9][0-9]?))?-([0-9a-f]{24})$")


@dataclass(frozen=True)
class Stock:
    """One bucket of a product (bucket 0 for a product not split)."""

    product_id: int
    bucket: int


class BucketRouter:
    """The product's buckets, as every part of the service sees them. A product's number of
    buckets never changes, so it is cached once a process, whoever reads it first (the
    inventory from Redis, the settler from SQL)."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._guard = threading.Lock()

    # --- the ticket id ------------------------------------------------------------------------

    @staticmethod
    def new_ticket_id(stock: Stock) -> str:
        """The product id (and the bucket, past the first) leads the ticket id, so a ticket's
        keys are found without a lookup: 12-<hex>, or 12.3-<hex> in bucket 3."""
        token = secrets.token_hex(12)
        return BucketRouter.ticket_in_bucket(f"{stock.product_id}-{token}", stock.bucket)

    @staticmethod
    def ticket_in_bucket(ticket_id: str, bucket: int) -> str:
        """The same ticket id naming another bucket (a purchase moving on to it)."""
        match = _TICKET.match(ticket_id)
        if match is None:
            raise ValueError(f"not a ticket id: {ticket_id!r}")
        product, token = match.group(1), match.group(3)
        return f"{product}.{bucket}-{token}" if bucket else f"{product}-{token}"

    @staticmethod
    def stock_of_ticket(ticket_id: str) -> Stock | None:
        """The stock whose keys hold the ticket; None for what is no ticket id."""
        match = _TICKET.match(ticket_id)
        return Stock(int(match.group(1)), int(match.group(2) or 0)) if match else None

    @staticmethod
    def product_of_ticket(ticket_id: str) -> int | None:
        stock = BucketRouter.stock_of_ticket(ticket_id)
        return stock.product_id if stock else None

    @staticmethod
    def bucket_of_ticket(ticket_id: str) -> int:
        """The bucket whose keys hold the ticket (0 for a product not split)."""
        stock = BucketRouter.stock_of_ticket(ticket_id)
        return stock.bucket if stock else 0

    # --- a buyer's buckets --------------------------------------------------------------------

    @staticmethod
    def home(user_id: int, buckets: int) -> int:
        """The buyer's own bucket, where the buyer's units are counted."""
        return user_id % buckets

    @staticmethod
    def order(user_id: int, buckets: int) -> list[int]:
        """The buckets a buyer tries, in order: the buyer's own first, then the next ones round.
        Always the same order for a buyer, so a retried purchase visits the buckets as the
        first one did (see reserve.lua's markers)."""
        home = BucketRouter.home(user_id, buckets)
        return [(home + step) % buckets for step in range(buckets)]

    # --- a product's buckets ------------------------------------------------------------------

    def known_count(self, product_id: int) -> int | None:
        """The product's number of buckets if this process knows it already."""
        return self._counts.get(product_id)

    def learn_count(self, product_id: int, buckets: int) -> None:
        with self._guard:
            self._counts[product_id] = buckets

    def count(self, product_id: int, read: Callable[[int], int | None]) -> int | None:
        """The product's number of buckets: known, or `read` and kept (None when `read` does not
        know it now: nothing is kept, the next call reads again)."""
        known = self._counts.get(product_id)
        if known is not None:
            return known
        found = read(product_id)
        if found is not None:
            self.learn_count(product_id, found)
        return found

    @staticmethod
    def stocks(product_id: int, buckets: int) -> list[Stock]:
        """Every stock of a product of that many buckets, the first first."""
        return [Stock(product_id, bucket) for bucket in range(buckets)]
