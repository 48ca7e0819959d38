"""A product's stock created in Redis: at set-up, and after Redis lost it, from SQL's figures
(read in one snapshot) and what survives in Redis (read first, under the rebuild lease)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.db import snapshot as sql_snapshot
from core.inventory import (
    CLAIM_MS,
    HeldElsewhere,
    Hold,
    Inventory,
    ProductTerms,
    RebuildView,
    SeatPlan,
)
from core.keys import bucket_of_ticket, ticket_in_bucket
from core.models import Product
from core.orders import (
    counted_orders,
    idempotency_keys,
    open_orders,
    order_seats,
    statuses_of,
    used_passes,
)
from core.stock.report import CONFIRMED, REFUNDED, Books, books_in
from core.stock.seats import seat_plan
from core.tickets import OPEN_STATUSES, OrderStatus
from core.times import to_ms

log = logging.getLogger(__name__)


def setup_stock(inventory: Inventory, product: Product, seats: SeatPlan | None = None) -> None:
    """A new product's stock in Redis, each bucket's (and a seated product's seats, all free)."""
    for bucket in range(product.buckets or 1):
        view = inventory.begin_rebuild(product.id, bucket)
        if view is not None:
            terms = terms_of(product)
            inventory.restore(terms, 0, [], {}, lease=view.token, seats=seats, bucket=bucket)


@dataclass(frozen=True)
class Counted:
    """The units each buyer holds or bought, as a bucket counts them, and (a split product's)
    the bucket's claims: ticket here -> claim (see reserve.lua)."""

    users: dict[int, int]
    claims: dict[str, dict]


def _units_per_user(
    session: Session,
    terms: ProductTerms,
    bucket: int,
    redis_holds: list[Hold],
    lapsed: set[str],
    elsewhere: HeldElsewhere | None = None,
    claims: dict[str, dict] | None = None,
    now_ms: int = 0,
) -> Counted:
    """Units each buyer the bucket counts holds or bought: Redis' state for the tickets it still
    has (it moves first), SQL's for the rest, but for open orders past their deadline
    (`lapsed`). A split product's bucket counts its own buyers' units wherever they are held
    (`elsewhere`: their holds in the other buckets and their refunds under way there, whose
    units stay counted until they are returned), and settles its surviving `claims`."""
    buckets = terms.buckets
    away = elsewhere or HeldElsewhere([], {})
    known = [*redis_holds, *away.holds]
    mine = [h for h in known if buckets == 1 or h.user_id % buckets == bucket]
    in_redis = {h.ticket_id for h in known} | lapsed | set(away.returning)
    sql = counted_orders(session, terms.product_id, bucket, buckets)
    # ticket -> (user, quantity, status): each purchase the bucket counts, by whoever has its word
    counted = {t: order for t, order in sql.items() if t not in in_redis}
    counted |= {h.ticket_id: (h.user_id, h.quantity, h.status) for h in mine if h.status in LIVE}
    counted |= {t: (u, q, CONFIRMED) for t, (u, q) in away.returning.items()}
    users: dict[int, int] = {}
    for user_id, quantity, _ in counted.values():
        users[user_id] = users.get(user_id, 0) + quantity
    if buckets == 1:
        return Counted(users, {})
    seen = {ticket_in_bucket(h.ticket_id, bucket) for h in mine}
    kept = _claims_after_rebuild(
        session, bucket, buckets, counted, seen, claims or {}, now_ms + CLAIM_MS
    )
    for claim in kept.uncounted:
        users[claim[0]] = users.get(claim[0], 0) + claim[1]
    return Counted(users, kept.claims)


LIVE = (*OPEN_STATUSES, CONFIRMED)


@dataclass(frozen=True)
class RebuiltClaims:
    claims: dict[str, dict]  # ticket here -> claim
    uncounted: list[tuple[int, int]]  # (user, quantity) of claims whose purchase holds nothing


def _claims_after_rebuild(
    session: Session,
    bucket: int,
    buckets: int,
    counted: dict[str, tuple[int, int, str]],
    seen: set[str],
    claims: dict[str, dict],
    until: int,
) -> RebuiltClaims:
    """A rebuilt bucket's claims. A surviving claim stays while its purchase is counted, and
    goes if the purchase ended (uncounted already: a later release must not uncount it again);
    a purchase found nowhere (on its way, or dead: the sweep ends it) keeps its claim, whose
    units are counted. A counted open purchase held elsewhere without a claim gets one. `seen`:
    the tickets (their ids here) Redis holds a record of."""
    live = {ticket_in_bucket(t, bucket) for t in counted}
    unknown = [t for t, c in claims.items() if t not in live and t not in seen]
    elsewhere = [ticket_in_bucket(t, b) for t in unknown for b in range(buckets) if b != bucket]
    recorded = {ticket_in_bucket(t, bucket) for t in statuses_of(session, elsewhere)}
    kept: dict[str, dict] = {}
    uncounted: list[tuple[int, int]] = []
    for ticket, claim in claims.items():
        if ticket in live or claim.get("s") == "kept":
            kept[ticket] = claim
        elif ticket not in seen and ticket not in recorded:
            kept[ticket] = claim
            uncounted.append((int(claim["u"]), int(claim["q"])))
    for ticket_id, (user_id, quantity, status) in counted.items():
        at_home = ticket_in_bucket(ticket_id, bucket)
        away = bucket_of_ticket(ticket_id) != bucket
        if away and status in OPEN_STATUSES and at_home not in kept:
            kept[at_home] = {"u": str(user_id), "q": quantity, "d": until, "s": "open"}
    return RebuiltClaims(kept, uncounted)


def restored_hold(order, now_ms: int, seats: Sequence[str]) -> Hold:  # type: ignore[no-untyped-def]
    """An open order as a hold again, with its own deadline. One already past it comes back
    expired, holding no units: Redis may have released it and sold its units again before it
    lost them, and a payment that completes now is refunded by the settler that records it."""
    lapsed = to_ms(order.expires_at) <= now_ms
    return Hold(
        ticket_id=order.ticket_id,
        user_id=order.user_id,
        quantity=order.quantity,
        amount_minor=order.amount_minor,
        deadline_ms=to_ms(order.expires_at),
        status=OrderStatus.EXPIRED.value if lapsed else order.status,
        reason="hold_expired" if lapsed else None,
        payment_method=order.payment_method,
        created_ms=to_ms(order.created_at),
        modified_ms=to_ms(order.updated_at),
        currency=order.currency,
        idempotency_key=order.idempotency_key,
        seats=tuple(seats),
        queue_pass=order.queue_pass,
    )


@dataclass(frozen=True)
class RebuildPlan:
    """A product's stock as SQL (read in one snapshot) and what survives in Redis make it;
    `terms` are the product's, `books` the bucket's."""

    terms: ProductTerms
    books: Books
    claims: dict[str, dict]
    sold: int
    holds: list[Hold]
    users: dict[int, int]
    idempotency: dict[str, str]
    refunded_marks: list[str]
    seats: SeatPlan | None = None
    passes_used: frozenset[str] = frozenset()


def rebuild_stock(inventory: Inventory, sessions: sessionmaker[Session], product_id: int) -> bool:
    """Recreates the product's missing stock keys (a split product's, of each bucket) from SQL;
    False if the product is unknown or no key was missing."""
    buckets = inventory.bucket_count(product_id)
    rebuilt, bucket = False, 0
    while bucket < buckets:
        created, known = _rebuild_bucket(inventory, sessions, product_id, bucket, buckets)
        if known is not None and known != buckets:
            buckets = known  # Redis could not say (both first buckets gone): SQL's word, again
            continue
        rebuilt = created or rebuilt
        bucket += 1
    return rebuilt


def _rebuild_bucket(
    inventory: Inventory,
    sessions: sessionmaker[Session],
    product_id: int,
    bucket: int,
    buckets: int,
) -> tuple[bool, int | None]:
    """Recreates one missing stock key from SQL: whether it did, and the product's number of
    buckets if SQL was read (a rebuild that assumed another number gives its lease back).

    While the stock key is missing no script moves a hold or a refund mark, so what Redis still
    has is read first, then SQL in one snapshot. So are a split product's holds in the other
    buckets of the buyers whose own bucket this is: they can only end meanwhile (a new one
    needs a claim here), and settlement writes SQL before it forgets a hold."""
    view = inventory.begin_rebuild(product_id, bucket)
    if view is None:
        return False, None  # the stock exists, or another rebuild is at work
    away = inventory.held_elsewhere(product_id, bucket, buckets) if buckets > 1 else None
    with sql_snapshot(sessions) as session:
        plan = plan_rebuild(session, product_id, view, inventory.clock.now_ms(), bucket, away)
    if plan is None or plan.terms.buckets != buckets:
        inventory.abandon_rebuild(product_id, bucket, view.token)
        return False, plan.terms.buckets if plan else None
    created = apply_rebuild(inventory, sessions, product_id, plan, view.token, bucket)
    return created, plan.terms.buckets


def plan_rebuild(
    session: Session,
    product_id: int,
    view: RebuildView,
    now_ms: int,
    bucket: int = 0,
    elsewhere: HeldElsewhere | None = None,
) -> RebuildPlan | None:
    confirmed = {h.ticket_id: h.quantity for h in view.holds if h.status == CONFIRMED}
    books = books_in(session, product_id, [*confirmed, *view.returning], bucket)
    if books is None:
        return None
    pending = sum(q for t, q in confirmed.items() if books.statuses.get(t) != CONFIRMED)
    orders = open_orders(session, product_id, bucket)
    seats = order_seats(session, [o.ticket_id for o in orders])
    holds = [restored_hold(o, now_ms, seats.get(o.ticket_id, ())) for o in orders]
    lapsed = {h.ticket_id for h in holds if h.status not in OPEN_STATUSES}
    event_id = session.scalar(select(Product.event_id).where(Product.id == product_id))
    redis_confirmed = [h for h in view.holds if h.status == CONFIRMED]
    terms = terms_of(session.get(Product, product_id))  # type: ignore[arg-type]
    counted = _units_per_user(
        session, terms, bucket, view.holds, lapsed, elsewhere, view.claims, now_ms
    )
    return RebuildPlan(
        terms=terms,
        books=books,
        sold=books.sold + pending,
        holds=holds,
        users=counted.users,
        claims=counted.claims,
        idempotency=idempotency_keys(session, product_id, bucket, books.terms.buckets),
        # A refund SQL recorded has no units in SQL's sold figure: its mark must not return them.
        refunded_marks=[t for t in view.returning if books.statuses.get(t) == REFUNDED],
        seats=seat_plan(session, event_id, holds, redis_confirmed) if event_id else None,
        passes_used=_passes_used(session, terms, bucket, view, elsewhere, counted.claims),
    )


def _passes_used(
    session: Session,
    terms: ProductTerms,
    bucket: int,
    view: RebuildView,
    elsewhere: HeldElsewhere | None,
    claims: dict[str, dict],
) -> frozenset[str]:
    """The waiting room passes that bought, of the purchases the bucket counts: SQL's orders,
    and what Redis still holds (holds SQL may not have recorded yet, and claims)."""
    buckets = terms.buckets
    held = [*view.holds, *(elsewhere.holds if elsewhere else [])]
    mine = [h for h in held if buckets == 1 or h.user_id % buckets == bucket]
    live = {h.queue_pass for h in mine if h.status in LIVE and h.queue_pass}
    claimed = {c["p"] for c in claims.values() if c.get("p")}
    return frozenset(used_passes(session, terms.product_id, bucket, buckets) | live | claimed)


def apply_rebuild(
    inventory: Inventory,
    sessions: sessionmaker[Session],
    product_id: int,
    plan: RebuildPlan,
    lease: str,
    bucket: int = 0,
) -> bool:
    created = inventory.restore(
        plan.terms,
        plan.sold,
        plan.holds,
        plan.users,
        plan.idempotency,
        plan.refunded_marks,
        lease,
        plan.seats,
        bucket,
        plan.claims,
        plan.passes_used,
    )
    if created:
        _apply_current_terms(inventory, sessions, product_id)
        log.warning(
            "stock of product %s (bucket %s) rebuilt from SQL: sold=%s open=%s",
            product_id,
            bucket,
            plan.sold,
            len(plan.holds),
        )
    return created


def _apply_current_terms(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int
) -> None:
    """Terms changed while the stock was missing could not reach Redis: apply SQL's now."""
    with sessions() as session:
        product = session.get(Product, product_id)
    if product is not None:
        inventory.update_terms(terms_of(product))
