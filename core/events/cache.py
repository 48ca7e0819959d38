"""Each web process's copy of what an event's purchases and seat map read from SQL: the
products selling it and its seated layout. A seat rush reads them on every request; SQL answers
once per change of the map."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.events.catalog import EventStatus, sale_started
from core.events.seatmap import SectionLayout, seated_layout
from core.models import Event, EventSection, Product
from core.times import to_ms


@dataclass(frozen=True)
class EventProducts:
    seats: int | None  # the product selling the seats
    standing: dict[str, int]  # standing section -> the product selling its places


@dataclass(frozen=True)
class SeatedLayout:
    sections: list[SectionLayout]
    currency: str
    version: int  # the event's last change (the map's version), in ms


class EventCache:
    """Products are kept once the sale has started (from then on its map, so its products,
    never change): a purchase reads SQL only the first time a process sees the event on sale.
    The layout is kept under the map's version."""

    def __init__(self) -> None:
        self._products: dict[int, EventProducts] = {}
        self._layouts: dict[int, SeatedLayout] = {}

    def products(self, session: Session, event_id: int) -> EventProducts | None:
        """The products selling a published or cancelled event (None: no such event, or a
        draft)."""
        kept = self._products.get(event_id)
        if kept is not None:
            return kept
        event = session.get(Event, event_id)
        if event is None or event.status == EventStatus.DRAFT:
            return None
        found = _read_products(session, event_id)
        if sale_started(event):
            self._products[event_id] = found
        return found

    def layout(self, session: Session, event_id: int) -> SeatedLayout | None:
        """The event's seated sections, rows and seats, read again when the map has changed."""
        event = session.get(Event, event_id)
        if event is None:
            return None
        version = to_ms(event.updated_at)
        kept = self._layouts.get(event_id)
        if kept is None or kept.version != version:
            kept = SeatedLayout(seated_layout(session, event_id), event.currency, version)
            self._layouts[event_id] = kept
        return kept


def _read_products(session: Session, event_id: int) -> EventProducts:
    seats = session.scalar(select(Product.id).where(Product.event_id == event_id))
    rows = session.execute(
        select(EventSection.name, Product.id)
        .join(Product, Product.section_id == EventSection.id)
        .where(EventSection.event_id == event_id)
    )
    return EventProducts(seats, {name: product_id for name, product_id in rows})
