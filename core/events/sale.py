"""An event on sale: one product sells its seats, one product each standing section's places
(the same pipeline as any product: holds, settlement, sweep, reconciliation, rebuild); the seats
product's seats hash in Redis says which seat is free, held or sold (core/lua/lib.lua). SQL is
the source of truth for all of them."""

from __future__ import annotations

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.inventory import Inventory
from core.models import Event, EventSection, Order, Product, utcnow
from core.stock import rebuild_stock


def event_products(session: Session, event: Event) -> list[Product]:
    """The products selling the event: one for its seats (when it has seated sections), one per
    standing section; created the first time, their terms following the event's (the caller
    commits)."""
    sections = _sections(session, event.id)
    seated = [s for s in sections if s.capacity is None]
    products = []
    if seated:
        product = session.scalar(select(Product).where(Product.event_id == event.id))
        product = product or _new(session, Product(event_id=event.id))
        prices = [s.price_minor for s in seated]
        _follow(product, event, event.title, min(prices), sum(s.seat_count for s in seated))
        products.append(product)
    for section in sections:
        if section.capacity is not None:
            product = session.scalar(select(Product).where(Product.section_id == section.id))
            product = product or _new(session, Product(section_id=section.id))
            name = f"{event.title} · {section.name}"
            _follow(product, event, name, section.price_minor, section.capacity)
            products.append(product)
    session.flush()
    return products


def products_of_events(session: Session, event_ids: list[int]) -> dict[int, list[int]]:
    """The products selling each event (its seats, its standing sections), in one query."""
    found: dict[int, list[int]] = {event_id: [] for event_id in event_ids}
    if not event_ids:
        return found
    seats = select(Product.id, Product.event_id).where(Product.event_id.in_(event_ids))
    standing = (
        select(Product.id, EventSection.event_id)
        .join(EventSection, EventSection.id == Product.section_id)
        .where(EventSection.event_id.in_(event_ids))
    )
    for product_id, event_id in session.execute(union_all(seats, standing)):
        found[event_id].append(product_id)
    return found


def event_has_orders(session: Session, event_id: int, inventory: Inventory | None = None) -> bool:
    """Whether any product of the event has an order, whatever its status: in SQL, or (with
    `inventory`) a purchase Redis accepted that no settler has written yet."""
    products = products_of_events(session, [event_id])[event_id]
    if not products:
        return False
    query = select(Order.id).where(Order.product_id.in_(products)).limit(1)
    if session.scalar(query) is not None:
        return True
    return inventory is not None and any(_has_units_out(inventory, p) for p in products)


def _has_units_out(inventory: Inventory, product_id: int) -> bool:
    for bucket in range(inventory.bucket_count(product_id)):
        figures = inventory.figures(product_id, bucket)
        if figures is not None and (figures.held or figures.sold):
            return True
    return False


def places_left(inventory: Inventory, products: dict[int, list[int]]) -> dict[int, int | None]:
    """Each event's seats and places free now, from Redis (one round trip for any number);
    None for an event not on sale, or whose stock Redis does not have."""
    available = inventory.available([pid for pids in products.values() for pid in pids])
    left: dict[int, int | None] = {}
    for event_id, product_ids in products.items():
        counts = [available[pid] for pid in product_ids]
        left[event_id] = None if not counts or None in counts else sum(counts)  # type: ignore[arg-type]
    return left


def _new(session: Session, product: Product) -> Product:
    session.add(product)
    return product


def _follow(product: Product, event: Event, name: str, price_minor: int, stock: int) -> None:
    """The product's terms are the event's: its window (closed once cancelled) and limit."""
    product.name = name
    product.currency = event.currency
    product.price_minor = price_minor
    product.initial_stock = stock
    product.max_per_user = event.max_per_user
    product.sale_starts_at = event.sale_starts_at
    product.sale_ends_at = event.sale_ends_at
    if event.status == "cancelled":
        product.sale_ends_at = min(filter(None, [event.sale_ends_at, utcnow()]))
    product.terms_version = (product.terms_version or 0) + 1


def put_on_sale(
    inventory: Inventory, sessions: sessionmaker[Session], products: list[Product], *, anew: bool
) -> None:
    """The products' stock (and seats) in Redis, built from SQL's books like any rebuild (sold
    units, open holds, each buyer's count), never from zero: Redis may have lost a stock that
    has orders. `anew` replaces what Redis has (a seat map changed before any order), else a
    stock in Redis is left alone and only its terms follow SQL's."""
    for product in products:
        if anew:
            inventory.drop_stock(product.id)
        rebuild_stock(inventory, sessions, product.id)
        inventory.update_terms(terms_of(product))


def _sections(session: Session, event_id: int) -> list[EventSection]:
    return list(session.scalars(select(EventSection).where(EventSection.event_id == event_id)))
