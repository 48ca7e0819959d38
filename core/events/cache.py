"""Each web process's copy of what an event's purchases and seat map read from SQL: the
products selling it and its seated layout. A seat rush reads them on every request; SQL answers
once per change of the map."""

from __future__ import annotations

import threading
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
    seated: frozenset[str]  # the seated sections' names

    def knows(self, section: str | None, seats: bool) -> bool:
        """Whether this copy can route a purchase of the section's seats or places, or of
        named seats."""
        if seats and self.seats is None:
            return False
        return section is None or section in self.standing or section in self.seated


@dataclass(frozen=True)
class SeatedLayout:
    sections: list[SectionLayout]
    currency: str
    version: int  # the event's last change (the map's version), in ms


class EventCache:
    """Products are kept once the sale has started, and the layout under the map's version. A
    sale put off may get a new map (while the event has no order): this process forgets the
    event on each change it commits, and a kept copy that does not know the section asked for
    is read again, as another process may have changed the map."""

    def __init__(self) -> None:
        self._products: dict[int, EventProducts] = {}
        self._layouts: dict[int, SeatedLayout] = {}
        # Event -> how many changes this process committed: a copy read before a change is not
        # kept after it.
        self._changes: dict[int, int] = {}
        self._guard = threading.Lock()

    def products(
        self, session: Session, event_id: int, section: str | None = None, seats: bool = False
    ) -> EventProducts | None:
        """The products selling a published or cancelled event (None: no such event, or a
        draft), for a purchase of the section's seats or places, or of named `seats`."""
        kept = self._products.get(event_id)
        if kept is not None and kept.knows(section, seats):
            return kept
        changes = self._changes.get(event_id, 0)
        event = session.get(Event, event_id)
        if event is None or event.status == EventStatus.DRAFT:
            return None
        found = _read_products(session, event_id)
        if sale_started(event) and self._changes.get(event_id, 0) == changes:
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

    def forget(self, event_id: int) -> None:
        """The event changed (call after the commit): its products are read again."""
        with self._guard:
            self._changes[event_id] = self._changes.get(event_id, 0) + 1
            self._products.pop(event_id, None)


def _read_products(session: Session, event_id: int) -> EventProducts:
    seats = session.scalar(select(Product.id).where(Product.event_id == event_id))
    standing: dict[str, int] = {}
    seated: set[str] = set()
    sections = session.execute(
        select(EventSection.name, EventSection.capacity, Product.id)
        .outerjoin(Product, Product.section_id == EventSection.id)
        .where(EventSection.event_id == event_id)
    )
    for name, capacity, product_id in sections:
        if capacity is None:
            seated.add(name)
        elif product_id is not None:
            standing[name] = product_id
    return EventProducts(seats, standing, frozenset(seated))
