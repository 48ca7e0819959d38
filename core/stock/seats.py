"""A seated product's seats against SQL: the seat plan a rebuild writes, and the seats' repair."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import snapshot as sql_snapshot
from core.events.seatmap import longest_rows
from core.inventory import SECTION_SCORE, Hold, Inventory, SeatPlan
from core.models import EventSection, Product, Seat
from core.orders import HOLDS_SEATS, live_seat_orders, statuses_of
from core.stock.report import CONFIRMED
from core.tickets import OPEN_STATUSES, OrderStatus

log = logging.getLogger(__name__)


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
