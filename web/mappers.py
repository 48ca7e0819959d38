"""The answers built from the domain's objects: each route and page shows a product, an event,
its seats, a search hit or an entry ticket through the one function here that shapes it."""

from __future__ import annotations

from core.entry.codes import make_code, seconds_left
from core.entry.status import VALID
from core.entry.tickets import TicketRow
from core.events.catalog import EventView
from core.events.seatmap import SectionLayout
from core.models import Product
from core.money import to_decimal_string
from core.search import EventHit
from core.times import iso
from web.answers import (
    EntryTicketView,
    EventAnswer,
    RowStates,
    SearchHighlight,
    SearchHit,
    SeatMapStates,
    SectionAnswer,
    SectionStates,
)
from web.answers import Product as ProductAnswer


def product_answer(product: Product, available: int | None) -> ProductAnswer:
    return ProductAnswer(
        id=product.id,
        name=product.name,
        price=to_decimal_string(product.price_minor, product.currency),
        currency=product.currency,
        initial_stock=product.initial_stock,
        available=available,
        max_per_user=product.max_per_user,
        sale_starts_at=iso(product.sale_starts_at),
        sale_ends_at=iso(product.sale_ends_at),
        waiting_room=product.waiting_room,
        admit_per_second=product.admit_per_second,
        buckets=product.buckets,
    )


def event_answer(view: EventView) -> EventAnswer:
    event = view.event
    return EventAnswer(
        id=event.id,
        title=event.title,
        description=event.description,
        category=event.category,
        venue=event.venue,
        location=event.location,
        image_url=event.image_url,
        starts_at=iso(event.starts_at),
        ends_at=iso(event.ends_at),
        status=event.status,
        currency=event.currency,
        max_per_user=event.max_per_user,
        transfers_allowed=event.transfers_allowed,
        sale_starts_at=iso(event.sale_starts_at),
        sale_ends_at=iso(event.sale_ends_at),
        sections=[
            SectionAnswer(
                name=section.name,
                price=to_decimal_string(section.price_minor, event.currency),
                kind="standing" if section.capacity is not None else "seated",
                seats=section.capacity if section.capacity is not None else section.seat_count,
            )
            for section in view.sections
        ],
    )


def seat_map_states(
    event_id: int,
    version: int,
    layout: list[SectionLayout],
    currency: str,
    states: dict[str, str],
) -> SeatMapStates:
    """Every seat's state, a letter a seat row by row (a seat Redis does not name is sold)."""
    return SeatMapStates(
        event_id=event_id,
        version=version,
        sections=[
            SectionStates(
                name=section.name,
                price=to_decimal_string(section.price_minor, currency),
                rows=[
                    RowStates(
                        name=row.name,
                        seats=_numbers(row.numbers),
                        states="".join(states.get(label, "s")[0] for label in row.labels),
                    )
                    for row in section.rows
                ],
            )
            for section in layout
        ],
    )


def _numbers(numbers: tuple[int, ...]) -> int | list[int]:
    return len(numbers) if numbers == tuple(range(1, len(numbers) + 1)) else list(numbers)


def search_hit(hit: EventHit, available: int | None) -> SearchHit:
    def price(minor: int | None) -> str | None:
        return None if minor is None else to_decimal_string(minor, hit.currency)

    return SearchHit(
        id=hit.id,
        title=hit.title,
        venue=hit.venue,
        location=hit.location,
        category=hit.category,
        status=hit.status,
        starts_at=iso(hit.starts_at),
        ends_at=iso(hit.ends_at),
        currency=hit.currency,
        price_min=price(hit.price_min_minor),
        price_max=price(hit.price_max_minor),
        available=available,
        highlight=SearchHighlight(title=hit.marked_title, snippet=hit.snippet),
    )


def ticket_view(row: TicketRow) -> EntryTicketView:
    """An entry ticket with its current code (a valid one's only)."""
    ticket = row.ticket
    valid = ticket.status == VALID
    return EntryTicketView(
        id=ticket.id,
        order_ticket_id=ticket.order_ticket_id,
        product_id=ticket.product_id,
        product_name=row.product_name,
        event_id=ticket.event_id,
        seat=ticket.seat,
        status=ticket.status,  # type: ignore[arg-type]
        issued_at=iso(ticket.issued_at),
        used_at=iso(ticket.used_at),
        code=make_code(ticket.id, ticket.secret) if valid else None,
        code_seconds_left=seconds_left() if valid else None,
    )
