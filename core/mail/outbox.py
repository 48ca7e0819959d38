"""Writing mail to the outbox, in the caller's transaction: a message exists exactly when the
change it tells of was committed. Each message has a key (kind and subject), so writing it
again adds nothing. Only buyers who gave an address get mail."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import upsert
from core.entry.status import VALID
from core.models import EntryTicket, Event, Order, OutboxMessage, Product, User, utcnow
from core.money import to_decimal_string
from core.tickets import OrderStatus
from core.times import iso

S = OrderStatus
ORDER_MAIL = {
    S.CONFIRMED: "order_confirmed",
    S.FAILED: "payment_failed",
    S.EXPIRED: "hold_expired",
    S.CANCELLED: "order_cancelled",
    S.REFUNDED: "order_refunded",
}


def queue_order_mail(session: Session, ticket_ids: list[str], status: OrderStatus) -> None:
    """A mail to each of these orders' buyers about the orders' new state."""
    kind = ORDER_MAIL.get(status)
    if kind is None or not ticket_ids:
        return
    rows = session.execute(
        select(Order, Product.name, User.email)
        .join(User, User.id == Order.user_id)
        .join(Product, Product.id == Order.product_id)
        .where(Order.ticket_id.in_(ticket_ids), User.email.is_not(None))
    ).all()
    _write(session, [
        (f"{kind}:{order.ticket_id}", kind, order.user_id, email, {
            "product": name, "quantity": order.quantity, "order": order.ticket_id,
            "amount": f"{to_decimal_string(order.amount_minor, order.currency)} {order.currency}",
        })
        for order, name, email in rows
    ])  # fmt: skip


def queue_transfer_mail(
    session: Session, ticket_id: str, product_name: str, giver_id: int, receiver_id: int
) -> None:
    """A mail to both sides of a ticket's transfer."""
    users = {
        u.id: u for u in session.scalars(select(User).where(User.id.in_([giver_id, receiver_id])))
    }
    transfer = secrets.token_hex(6)  # a ticket may change hands more than once
    giver, receiver = users[giver_id], users[receiver_id]
    context = {"ticket": ticket_id, "product": product_name, "from": giver.username,
               "to": receiver.username}  # fmt: skip
    _write(session, [
        (f"{kind}:{ticket_id}:{transfer}", kind, user.id, user.email, context)
        for kind, user in (("ticket_given", giver), ("ticket_received", receiver))
        if user.email
    ])  # fmt: skip


def queue_void_mail(session: Session, ticket_ids: list[str]) -> None:
    """A mail to each holder of these tickets, now void, who is not its order's buyer (a ticket
    given to them): the buyer has the order's own mail, the holder would not know."""
    if not ticket_ids:
        return
    rows = session.execute(
        select(EntryTicket.id, EntryTicket.user_id, User.email, Product.name, Order.status)
        .join(User, User.id == EntryTicket.user_id)
        .join(Order, Order.ticket_id == EntryTicket.order_ticket_id)
        .join(Product, Product.id == EntryTicket.product_id)
        .where(
            EntryTicket.id.in_(ticket_ids),
            EntryTicket.user_id != Order.user_id,
            User.email.is_not(None),
        )
    ).all()
    _write(session, [
        (f"ticket_void:{ticket}", "ticket_void", user_id, email,
         {"ticket": ticket, "product": name, "order_status": status})
        for ticket, user_id, email, name, status in rows
    ])  # fmt: skip


# Reminders before an event: (kind, at most this long before it, at least this long).
REMINDERS = (
    ("reminder_7d", timedelta(days=7), timedelta(days=1)),
    ("reminder_1d", timedelta(days=1), timedelta(0)),
)


def queue_reminders(session: Session, now: datetime | None = None) -> int:
    """A reminder to each holder of a valid ticket for an event starting within a week (then
    within a day), once per ticket and reminder, whoever holds it then; answers how many."""
    now = now or utcnow()
    written = 0
    for kind, before, until in REMINDERS:
        rows = session.execute(
            select(EntryTicket, Event, User.email)
            .join(Event, Event.id == EntryTicket.event_id)
            .join(User, User.id == EntryTicket.user_id)
            .where(
                EntryTicket.status == VALID,
                User.email.is_not(None),
                Event.starts_at > now + until,
                Event.starts_at <= now + before,
            )
        ).all()
        _write(session, [
            (f"{kind}:{ticket.id}", kind, ticket.user_id, email, {
                "event": event.title, "venue": event.venue, "ticket": ticket.id,
                "seat": ticket.seat or "standing", "starts": iso(event.starts_at),
            })
            for ticket, event, email in rows
        ])  # fmt: skip
        written += len(rows)
    return written


REMINDER_KINDS = frozenset(kind for kind, _, _ in REMINDERS)


def address_to_current_holder(session: Session, message: OutboxMessage) -> bool:
    """A reminder goes to whoever holds its ticket when it is sent (the ticket may have changed
    hands since it was written); False when no one is to get it: the ticket is no longer valid,
    or its holder has no address. Other mail keeps the address it was written with."""
    if message.kind not in REMINDER_KINDS:
        return True
    holder = session.execute(
        select(User.id, User.email)
        .join(EntryTicket, EntryTicket.user_id == User.id)
        .where(EntryTicket.id == json.loads(message.context)["ticket"], EntryTicket.status == VALID)
    ).first()
    if holder is None or holder.email is None:
        return False
    message.user_id, message.to_address = holder.id, holder.email
    return True


def _write(session: Session, messages: list[tuple[str, str, int, str, dict[str, Any]]]) -> None:
    if not messages:
        return
    now = utcnow()
    rows = [
        {
            "key": key,
            "kind": kind,
            "user_id": user_id,
            "to_address": address,
            "context": json.dumps(context),
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for key, kind, user_id, address, context in messages
    ]
    statement = upsert(session, OutboxMessage).on_conflict_do_nothing(index_elements=["key"])
    session.connection().execute(statement.returning(statement.table.c.id), rows)
