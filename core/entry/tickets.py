"""Entry tickets in SQL. They are issued and voided by the order's own state change, in its
transaction (core/orders.py's `transition`): a confirmed order has its tickets, a refunded or
cancelled one has them void."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db import upsert
from core.entry.codes import new_secret
from core.entry.status import VALID, VOID
from core.mail.outbox import queue_transfer_mail, queue_void_mail
from core.models import EntryTicket, Event, EventSection, Order, OrderSeat, Product, User, utcnow


class TransferRefused(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_ticket_id() -> str:
    return f"tk_{secrets.token_urlsafe(16)}"


def issue_tickets(session: Session, order_ticket_ids: list[str]) -> None:
    """One valid ticket per unit (per seat) of each order, in one statement; issuing again adds
    nothing (an order's units are unique)."""
    if not order_ticket_ids:
        return
    orders = session.execute(
        select(Order.ticket_id, Order.user_id, Order.product_id, Order.quantity)
        .where(Order.ticket_id.in_(order_ticket_ids))
    ).all()  # fmt: skip
    events = _events_of(session, {o.product_id for o in orders})
    seats: dict[str, list[str]] = {}
    for ticket_id, label in session.execute(
        select(OrderSeat.ticket_id, OrderSeat.label)
        .where(OrderSeat.ticket_id.in_(order_ticket_ids))
        .order_by(OrderSeat.id)
    ):  # fmt: skip
        seats.setdefault(ticket_id, []).append(label)
    now = utcnow()
    rows = [
        {
            "id": new_ticket_id(),
            "order_ticket_id": order.ticket_id,
            "unit": unit,
            "user_id": order.user_id,
            "product_id": order.product_id,
            "event_id": events.get(order.product_id),
            "seat": label,
            "secret": new_secret(),
            "status": VALID,
            "issued_at": now,
        }
        for order in orders
        for unit, label in enumerate(seats.get(order.ticket_id) or [None] * order.quantity)
    ]
    if rows:
        statement = upsert(session, EntryTicket).on_conflict_do_nothing(
            index_elements=["order_ticket_id", "unit"]
        )
        session.connection().execute(statement.returning(statement.table.c.id), rows)


def void_tickets(session: Session, order_ticket_ids: list[str]) -> None:
    """The orders' tickets no longer admit anyone (a used one stays used); a holder who was
    given one is told by mail (the buyer has the order's own)."""
    if order_ticket_ids:
        voided = session.scalars(
            update(EntryTicket)
            .where(EntryTicket.order_ticket_id.in_(order_ticket_ids), EntryTicket.status == VALID)
            .values(status=VOID)
            .returning(EntryTicket.id)
        ).all()
        queue_void_mail(session, list(voided))


def _events_of(session: Session, product_ids: set[int]) -> dict[int, int]:
    """The event each product sells for: its seats, or one of its standing sections."""
    rows = session.execute(
        select(Product.id, Product.event_id, EventSection.event_id)
        .outerjoin(EventSection, EventSection.id == Product.section_id)
        .where(Product.id.in_(product_ids))
    )
    return {pid: seated or standing for pid, seated, standing in rows if seated or standing}


@dataclass(frozen=True)
class TicketRow:
    ticket: EntryTicket
    product_name: str


def list_tickets(session: Session, user_id: int, limit: int, offset: int) -> list[TicketRow]:
    rows = session.execute(
        select(EntryTicket, Product.name)
        .join(Product, Product.id == EntryTicket.product_id)
        .where(EntryTicket.user_id == user_id)
        .order_by(EntryTicket.issued_at.desc(), EntryTicket.order_ticket_id, EntryTicket.unit)
        .limit(limit)
        .offset(offset)
    ).all()
    return [TicketRow(t, name) for t, name in rows]


def get_ticket(session: Session, ticket_id: str) -> TicketRow | None:
    row = session.execute(
        select(EntryTicket, Product.name)
        .join(Product, Product.id == EntryTicket.product_id)
        .where(EntryTicket.id == ticket_id)
    ).first()
    return TicketRow(row[0], row[1]) if row else None


def transfer_ticket(session: Session, ticket_id: str, holder_id: int, to_username: str) -> str:
    """Gives a valid ticket to another buyer with a new secret (every code made before is dead);
    answers the new holder's id. Raises TransferRefused."""
    to = session.scalar(select(User).where(User.username == to_username))
    if to is None:
        raise TransferRefused("unknown_user", f"no user {to_username!r}")
    if to.id == holder_id:
        raise TransferRefused("same_holder", "the ticket is yours already")
    row = get_ticket(session, ticket_id)
    event = session.get(Event, row.ticket.event_id) if row and row.ticket.event_id else None
    if event is not None and not event.transfers_allowed:
        raise TransferRefused("transfers_not_allowed", "this event's tickets cannot be given")
    moved = session.execute(
        update(EntryTicket)
        .where(
            EntryTicket.id == ticket_id,
            EntryTicket.user_id == holder_id,
            EntryTicket.status == VALID,
        )
        .values(user_id=to.id, secret=new_secret())
    ).rowcount
    if moved != 1 or row is None:
        raise TransferRefused("not_transferable", "only a valid ticket you hold can be given")
    queue_transfer_mail(session, ticket_id, row.product_name, holder_id, to.id)
    return str(to.id)
