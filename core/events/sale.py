"""An event's seats on sale: one product sells them (the same pipeline as any product: holds,
settlement, sweep, reconciliation, rebuild), and its seats hash in Redis says which seat is
free, held or sold (core/lua/lib.lua). SQL is the source of truth for both."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.catalog import terms_of
from core.inventory import Inventory
from core.models import Event, EventSection, Product, utcnow
from core.stock import seat_plan, setup_stock


def seated_product(session: Session, event: Event) -> Product:
    """The product selling the event's seats, created the first time (the caller commits)."""
    product = session.scalar(select(Product).where(Product.event_id == event.id))
    seated = [s for s in _sections(session, event.id) if s.capacity is None]
    seats = sum(section.seat_count for section in seated)
    if product is None:
        product = Product(event_id=event.id, price_minor=0, initial_stock=0)
        session.add(product)
    product.name = event.title
    product.currency = event.currency
    product.price_minor = min((s.price_minor for s in seated), default=0)
    product.initial_stock = seats
    product.max_per_user = event.max_per_user
    if event.status == "cancelled":
        product.sale_ends_at = min(filter(None, [event.sale_ends_at, utcnow()]))
    else:
        product.sale_ends_at = event.sale_ends_at
    product.sale_starts_at = event.sale_starts_at
    product.terms_version = (product.terms_version or 0) + 1
    session.flush()
    return product


def put_on_sale(inventory: Inventory, session: Session, product: Product, *, anew: bool) -> None:
    """The product's stock and seats in Redis, as SQL has them; `anew` replaces what Redis has
    (a seat map changed before the sale started), else a stock in Redis is left alone."""
    if anew:
        inventory.drop_stock(product.id)
    assert product.event_id is not None
    setup_stock(inventory, product, seat_plan(session, product.event_id, [], []))
    inventory.update_terms(terms_of(product))


def _sections(session: Session, event_id: int) -> list[EventSection]:
    return list(session.scalars(select(EventSection).where(EventSection.event_id == event_id)))
