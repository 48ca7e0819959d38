"""The reserve script's answers, one enum for Python and (through core/scripts.py's generated
constants) reserve.lua."""

from __future__ import annotations

import enum


class PurchaseOutcome(enum.StrEnum):
    """What a purchase came to. The web layer maps each to a status code and a message."""

    RESERVED = "reserved"
    DUPLICATE = "duplicate"  # the idempotency key's earlier purchase, answered again
    SOLD_OUT = "sold_out"
    PER_USER_LIMIT = "per_user_limit"
    SALE_NOT_STARTED = "sale_not_started"
    SALE_ENDED = "sale_ended"
    UNAVAILABLE = "unavailable"  # the stock is missing in Redis (a rebuild is due)
    RATE_LIMITED = "rate_limited"
    QUEUE_PASS_REQUIRED = "queue_pass_required"
    QUEUE_PASS_STALE = "queue_pass_stale"
    QUEUE_PASS_USED = "queue_pass_used"
    # a seated product's: the seats named in `Reservation.seats`
    SEATS_UNAVAILABLE = "seats_unavailable"
    UNKNOWN_SEATS = "unknown_seats"
    SEATS_REQUIRED = "seats_required"  # a seated product bought by quantity
    NOT_SEATED = "not_seated"  # seats named for a product without seats
    UNKNOWN_SECTION = "unknown_section"
    NOT_ENOUGH_SEATS = "not_enough_seats"
    NOT_ENOUGH_ADJACENT = "not_enough_adjacent"


class BucketStep(enum.StrEnum):
    """A bucket's answers that are not a purchase's outcome: the walk over a split product's
    buckets goes on (core/inventory/purchase.py)."""

    BUCKETS = "buckets"  # the caller's count of buckets is wrong: here is the stock's
    MOVED = "moved"  # a keyed retry passes this bucket, as its first attempt did
