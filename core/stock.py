"""Keeping Redis honest against SQL: stock set-up, rebuild after data loss, reconciliation.

A repair reads a moving target, so it reads each side once: Redis in one atomic script
(`Inventory.snapshot`), SQL in one snapshot (`core.db.snapshot`), Redis before SQL, and writes
back only if Redis' version has not moved since (every change a repair could race moves it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.db import snapshot as sql_snapshot
from core.events.seatmap import longest_rows
from core.inventory import (
    CLAIM_MS,
    SECTION_SCORE,
    Claim,
    HeldElsewhere,
    Hold,
    Inventory,
    ProductTerms,
    RebuildView,
    SeatPlan,
    Snapshot,
    StockFigures,
)
from core.keys import ServiceKeys, bucket_of_ticket, ticket_in_bucket
from core.metrics import RECONCILIATIONS
from core.models import EventSection, Product, Seat
from core.orders import (
    HOLDS_SEATS,
    confirmed_quantity,
    counted_orders,
    idempotency_keys,
    live_seat_orders,
    open_orders,
    order_seats,
    statuses_of,
    used_passes,
)
from core.tickets import OPEN_STATUSES, OrderStatus
from core.times import to_ms

log = logging.getLogger(__name__)
CONFIRMED = OrderStatus.CONFIRMED.value
REFUNDED = OrderStatus.REFUNDED.value


@dataclass(frozen=True)
class Reconciliation:
    product_id: int
    result: str  # consistent, repaired, rebuilt, busy, unknown_product
    before: StockFigures | None
    sold_in_db: int
    expected_sold: int

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["before"] = asdict(self.before) if self.before else None
        return data


@dataclass(frozen=True)
class Books:
    """What SQL says of a product, read in one snapshot: its terms, its confirmed units, and
    the status of each ticket a Redis snapshot named."""

    terms: ProductTerms
    sold: int
    statuses: dict[str, str]


@dataclass(frozen=True)
class StockReport:
    """Redis' figures against SQL's: sold in Redis must be SQL's confirmed units, plus the holds
    Redis confirmed that SQL has not recorded yet, plus refunds whose units Redis still counts."""

    figures: StockFigures
    sold_in_db: int
    pending_in_db: int
    expected_sold: int
    expected_held: int
    terms_agree: bool
    buckets_agree: bool = True  # a split product's: every bucket on its own

    @property
    def consistent(self) -> bool:
        f = self.figures
        return (
            f.balanced
            and self.terms_agree
            and self.buckets_agree
            and f.sold == self.expected_sold
            and f.held == self.expected_held
        )


def read_books(
    sessions: sessionmaker[Session], product_id: int, tickets: list[str], bucket: int = 0
) -> Books | None:
    with sql_snapshot(sessions) as session:
        return books_in(session, product_id, tickets, bucket)


def books_in(
    session: Session, product_id: int, tickets: list[str], bucket: int = 0
) -> Books | None:
    """Books read in a session the caller holds (one snapshot: see core.db.snapshot); a split
    product's are one bucket's: its share of the units, its confirmed ones."""
    product = session.get(Product, product_id)
    if product is None:
        return None
    return Books(
        terms_of(product).of_bucket(bucket),
        confirmed_quantity(session, product_id, bucket),
        statuses_of(session, tickets),
    )


def report(snapshot: Snapshot, books: Books) -> StockReport:
    pending = sum(
        q for t, q in snapshot.confirmed_holds.items() if books.statuses.get(t) != CONFIRMED
    )
    returning = sum(q for t, q in snapshot.returning.items() if books.statuses.get(t) != CONFIRMED)
    return StockReport(
        figures=snapshot.figures,
        sold_in_db=books.sold,
        pending_in_db=pending,
        expected_sold=books.sold + pending + returning,
        expected_held=snapshot.open_quantity,
        terms_agree=snapshot.terms.enforced() == books.terms.enforced(),
    )


def product_report(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int
) -> tuple[Books | None, StockReport | None]:
    """The product's stock report (a split product's buckets added up) and its books (the
    first bucket's): books None for a product SQL does not know, the report None while a
    bucket's stock is missing in Redis."""
    reports: list[StockReport] = []
    first: Books | None = None
    for bucket in range(inventory.bucket_count(product_id)):
        snapshot = inventory.snapshot(product_id, bucket)
        tickets = tickets_named(snapshot) if snapshot else []
        books = read_books(sessions, product_id, tickets, bucket)
        first = first or books
        if books is None or snapshot is None:
            return first, None
        reports.append(report(snapshot, books))
    return first, sum_reports(reports)


def sum_reports(parts: list[StockReport]) -> StockReport:
    if len(parts) == 1:
        return parts[0]
    return StockReport(
        figures=sum_figures([p.figures for p in parts]),
        sold_in_db=sum(p.sold_in_db for p in parts),
        pending_in_db=sum(p.pending_in_db for p in parts),
        expected_sold=sum(p.expected_sold for p in parts),
        expected_held=sum(p.expected_held for p in parts),
        terms_agree=all(p.terms_agree for p in parts),
        buckets_agree=all(p.consistent for p in parts),
    )


def tickets_named(snapshot: Snapshot) -> list[str]:
    return [*snapshot.confirmed_holds, *snapshot.returning]


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


def sweep_claims(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, buckets: int
) -> int:
    """Ends a split product's claims left open past CLAIM_MS (a purchase whose process died
    between two buckets, or a settler that died before ending them) by where their purchase
    went: still held somewhere, left alone (its settlement ends it); recorded confirmed or
    refunded in SQL, kept; otherwise (recorded ended, or never held), released. Redis is read
    before SQL: settlement writes SQL before it forgets a hold. Answers how many ended."""
    ended = 0
    now = inventory.clock.now_ms()
    for home in range(buckets):
        stale = [t for t, (_, _, until) in inventory.open_claims(product_id, home).items()
                 if until <= now]  # fmt: skip
        if not stale:
            continue
        away = {t: [ticket_in_bucket(t, b) for b in range(buckets) if b != home] for t in stale}
        elsewhere = [ticket for tickets in away.values() for ticket in tickets]
        held = inventory.holding(product_id, elsewhere)
        with sql_snapshot(sessions) as session:
            statuses = statuses_of(session, elsewhere)
        claims = []
        for ticket, tickets in away.items():
            found = [statuses[t] for t in tickets if t in statuses]
            if held & set(tickets) or any(s in OPEN_STATUSES for s in found):
                continue
            kept = any(s in (CONFIRMED, REFUNDED) for s in found)
            claims.append(Claim(ticket, "kept" if kept else "released"))
        ended += inventory.resolve_claims(product_id, home, claims)
    return ended


def sync_terms(inventory: Inventory, products: list[Product]) -> int:
    """Applies SQL's terms to every product whose stock in Redis enforces another version
    (an admin's change that did not reach Redis); answers how many were applied."""
    versions = inventory.terms_versions(
        [p.id for p in products], {p.id: p.buckets for p in products}
    )
    stale = [p for p in products if versions[p.id] not in (None, p.terms_version)]
    return sum(1 for p in stale if inventory.update_terms(terms_of(p)) == "applied")


def reconcile_product(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, attempts: int = 5
) -> Reconciliation:
    """Checks Redis against SQL (figures, held units, terms) and repairs Redis from SQL, each
    bucket of a split product on its own (each is a stock of its own); the product's outcome
    is the worst of its buckets', with their figures added up."""
    snapshot = inventory.snapshot(product_id)
    if snapshot is None:
        rebuilt = rebuild_stock(inventory, sessions, product_id)
        result = "rebuilt" if rebuilt else "unknown_product"
        return _recorded(inventory, Reconciliation(product_id, result, None, 0, 0))
    buckets = inventory.bucket_count(product_id)
    outcomes = [reconcile_bucket(inventory, sessions, product_id, 0, attempts, snapshot)]
    for bucket in range(1, buckets):
        outcomes.append(reconcile_bucket(inventory, sessions, product_id, bucket, attempts))
    return _recorded(inventory, _combined(product_id, outcomes))


def reconcile_bucket(
    inventory: Inventory,
    sessions: sessionmaker[Session],
    product_id: int,
    bucket: int = 0,
    attempts: int = 5,
    first: Snapshot | None = None,
) -> Reconciliation:
    repaired = False
    for attempt in range(attempts):
        snapshot = first if attempt == 0 and first else inventory.snapshot(product_id, bucket)
        if snapshot is None:
            rebuilt = rebuild_stock(inventory, sessions, product_id)
            return Reconciliation(product_id, "rebuilt" if rebuilt else "busy", None, 0, 0)
        books = read_books(sessions, product_id, tickets_named(snapshot), bucket)
        if books is None:
            return Reconciliation(product_id, "unknown_product", None, 0, 0)
        outcome = reconcile_step(inventory, product_id, snapshot, books)
        if outcome == "consistent" and bucket == 0:
            outcome = reconcile_seats(inventory, sessions, product_id)
        repaired = repaired or outcome in ("repaired", "set_right")
        if outcome in ("consistent", "repaired"):
            stock = report(snapshot, books)
            result = "repaired" if repaired else "consistent"
            return Reconciliation(
                product_id, result, snapshot.figures, stock.sold_in_db, stock.expected_sold
            )
    return Reconciliation(product_id, "busy", None, 0, 0)


_WORST_FIRST = ("unknown_product", "busy", "rebuilt", "repaired", "consistent")


def _combined(product_id: int, outcomes: list[Reconciliation]) -> Reconciliation:
    """A split product's outcome from its buckets': the worst result, the figures summed."""
    if len(outcomes) == 1:
        return outcomes[0]
    result = min((o.result for o in outcomes), key=_WORST_FIRST.index)
    figures = [o.before for o in outcomes]
    before = None if None in figures else sum_figures(figures)  # type: ignore[arg-type]
    return Reconciliation(
        product_id,
        result,
        before,
        sum(o.sold_in_db for o in outcomes),
        sum(o.expected_sold for o in outcomes),
    )


def sum_figures(parts: Sequence[StockFigures]) -> StockFigures:
    """A split product's figures: its buckets' added up (the version, the highest)."""
    return StockFigures(
        initial=sum(f.initial for f in parts),
        available=sum(f.available for f in parts),
        held=sum(f.held for f in parts),
        sold=sum(f.sold for f in parts),
        version=max(f.version for f in parts),
    )


def reconcile_seats(inventory: Inventory, sessions: sessionmaker[Session], product_id: int) -> str:
    """A seated product's seats against SQL, Redis read first: consistent, repaired or changed.
    A seat of a confirmed order is sold to it; a seat held or sold to a ticket that has no hold
    in Redis and no live order in SQL is free. Seats Redis moved first (a hold it confirmed or
    released before SQL follows) are left alone."""
    with sessions() as session:
        event_id = session.scalar(select(Product.event_id).where(Product.id == product_id))
    if event_id is None:
        return "consistent"
    seats = inventory.seat_snapshot(product_id)
    if seats is None:
        return "changed"
    owners = {state[2:] for state in seats.states.values() if state != "f"}
    with sql_snapshot(sessions) as session:
        confirmed = {
            label: ticket
            for label, (ticket, status) in live_seat_orders(session, event_id).items()
            if status == CONFIRMED
        }
        statuses = statuses_of(session, sorted(owners - seats.holding))
    fixes = {
        label: f"s:{ticket}"
        for label, ticket in confirmed.items()
        if seats.states.get(label) != f"s:{ticket}"
    }
    for label, state in seats.states.items():
        ticket = state[2:]
        orphan = ticket not in seats.holding and statuses.get(ticket) not in HOLDS_SEATS
        if state != "f" and orphan and label not in fixes:
            fixes[label] = "f"
    if not fixes:
        return "consistent"
    if not inventory.repair_seats(product_id, seats.version, fixes):
        return "changed"
    log.warning("seats of product %s repaired from SQL: %s", product_id, fixes)
    return "repaired"


def reconcile_step(inventory: Inventory, product_id: int, snapshot: Snapshot, books: Books) -> str:
    """One pass: consistent; repaired (figures written); set_right (a refund's units returned
    or SQL's terms applied: read again); or changed (Redis moved meanwhile: read again)."""
    refunded = [t for t in snapshot.returning if books.statuses.get(t) == REFUNDED]
    if refunded:
        # A refund stopped after SQL recorded it: its units go back on sale now.
        inventory.return_units(product_id, refunded)
        return "set_right"
    stock = report(snapshot, books)
    if not stock.terms_agree:
        applied = inventory.update_bucket_terms(books.terms, snapshot.bucket)
        return "set_right" if applied == "applied" else "changed"
    if stock.consistent:
        return "consistent"
    figures = snapshot.figures
    if inventory.repair(
        product_id,
        figures.version,
        books.terms.initial_stock,
        stock.expected_sold,
        stock.expected_held,
        snapshot.bucket,
    ):
        log.warning(
            "stock of product %s (bucket %s) repaired from SQL: %s, expected sold %s held %s",
            product_id,
            snapshot.bucket,
            figures,
            stock.expected_sold,
            stock.expected_held,
        )
        return "repaired"
    return "changed"


def _service_keys(inventory: Inventory) -> ServiceKeys:
    return ServiceKeys(inventory.settings.key_prefix)


def _recorded(inventory: Inventory, outcome: Reconciliation) -> Reconciliation:
    RECONCILIATIONS.labels(outcome.result).inc()
    record = outcome.as_dict() | {"at": time.time()}
    inventory.redis.hset(
        _service_keys(inventory).last_reconciliations,
        str(outcome.product_id),
        json.dumps(record),
    )
    return outcome


def last_reconciliations(inventory: Inventory) -> dict[int, dict[str, Any]]:
    """The last reconciliation of each product, as `_recorded` wrote it (unreadable records are
    left out)."""
    results: dict[int, dict[str, Any]] = {}
    for product_id, record in inventory.redis.hgetall(
        _service_keys(inventory).last_reconciliations
    ).items():
        try:
            data = json.loads(record)
            if isinstance(data, dict):
                results[int(product_id)] = data
        except (ValueError, TypeError):
            continue
    return results


def seat_plan(
    session: Session, event_id: int, holds: list[Hold], confirmed_in_redis: list[Hold]
) -> SeatPlan:
    """Each seat's state as SQL has it: sold to a confirmed order, held by an open order whose
    hold comes back open (`holds`, as the rebuild restores them), free otherwise; a hold Redis
    confirmed and SQL has not recorded yet keeps its seats sold."""
    sections = {
        s.id: s
        for s in session.scalars(select(EventSection).where(EventSection.event_id == event_id))
        if s.capacity is None
    }
    seats = session.execute(
        select(Seat.label, Seat.section_id, Seat.rank, Seat.row, Seat.number).where(
            Seat.event_id == event_id
        )
    ).all()
    states = {seat.label: "f" for seat in seats}
    scores = {
        seat.label: sections[seat.section_id].position * SECTION_SCORE + seat.rank for seat in seats
    }
    reopened = {hold.ticket_id for hold in holds if hold.status in OPEN_STATUSES}
    for label, (ticket, status) in live_seat_orders(session, event_id).items():
        if status == OrderStatus.CONFIRMED:
            states[label] = f"s:{ticket}"
        elif ticket in reopened:
            states[label] = f"h:{ticket}"
    for hold in confirmed_in_redis:
        for label in hold.seats:
            states[label] = f"s:{hold.ticket_id}"
    longest = longest_rows((seat.section_id, seat.row, seat.number) for seat in seats)
    terms = {s.name: (s.price_minor, s.position, longest.get(s.id, 0)) for s in sections.values()}
    return SeatPlan(states, terms, scores)
