"""The ticket as a buyer sees it: one shape, read from Redis while the hold is open (and for a
while after settlement), from SQL after. Every status answer is built here."""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from core.inventory import Hold, Inventory
from core.keys import product_of_ticket
from core.models import Order, Payment
from core.money import to_decimal_string
from core.orders import get_order, get_payment
from core.tickets.status import OrderStatus
from core.times import iso, iso_ms


class TicketNotFound(Exception):
    """No such ticket, or not one the viewer may see (the two answers are the same)."""


class TicketUnreadable(Exception):
    """Redis cannot be asked and SQL has not recorded the ticket (yet): it may be a hold."""


@dataclass(frozen=True)
class Viewer:
    user_id: int
    is_admin: bool = False

    def may_see(self, owner_id: int) -> bool:
        return self.is_admin or owner_id == self.user_id


def view_ticket(
    inventory: Inventory, session: Session, ticket_id: str, viewer: Viewer
) -> dict[str, object]:
    """The status answer: the open (or recently final) hold from Redis, else the SQL record."""
    if product_of_ticket(ticket_id) is None:
        raise TicketNotFound(ticket_id)
    try:
        hold = inventory.get_ticket(ticket_id)
    except RedisError:
        return _recorded(session, ticket_id, viewer, hold_unknown=True)
    if hold is None:
        return _recorded(session, ticket_id, viewer)
    if not viewer.may_see(hold.user_id):
        raise TicketNotFound(ticket_id)
    return hold_view(hold)


def visible_order(session: Session, ticket_id: str, viewer: Viewer) -> Order:
    """The recorded order if the viewer may see it."""
    return _visible(get_order(session, ticket_id), ticket_id, viewer)


def _visible(order: Order | None, ticket_id: str, viewer: Viewer) -> Order:
    if order is None or not viewer.may_see(order.user_id):
        raise TicketNotFound(ticket_id)
    return order


def _recorded(
    session: Session, ticket_id: str, viewer: Viewer, hold_unknown: bool = False
) -> dict[str, object]:
    order = get_order(session, ticket_id)
    if order is None and hold_unknown:
        raise TicketUnreadable(ticket_id)
    order = _visible(order, ticket_id, viewer)
    return order_view(order) | {"payment": payment_view(get_payment(session, ticket_id), order)}


def hold_view(hold: Hold) -> dict[str, object]:
    return receipt(hold) | {
        "amount": to_decimal_string(hold.amount_minor, hold.currency) if hold.currency else None,
        "currency": hold.currency or None,
        "created_at": iso_ms(hold.created_ms),
        "updated_at": iso_ms(hold.modified_ms),
        "failure_reason": hold.reason,
        "payment": _hold_payment(hold),
    }


def _hold_payment(hold: Hold) -> dict[str, object]:
    if hold.client_secret:
        return {"client_secret": hold.client_secret}
    return {"status": hold.payment_status} if hold.payment_status else {}


def order_view(order: Order) -> dict[str, object]:
    """A recorded order, as the status answer and the list of orders give it."""
    return {
        "ticket_id": order.ticket_id,
        "status": order.status,
        "product_id": order.product_id,
        "quantity": order.quantity,
        "amount": to_decimal_string(order.amount_minor, order.currency),
        "currency": order.currency,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "expires_at": iso(order.expires_at),
        "failure_reason": order.failure_reason,
    }


def payment_view(payment: Payment | None, order: Order) -> dict[str, object]:
    if payment is None:
        return {}
    waiting = order.status == OrderStatus.REQUIRES_ACTION
    return {
        "client_secret": payment.client_secret if waiting else None,
        "provider": payment.provider,
        "intent_id": payment.intent_id,
        "status": payment.status,
        "amount": to_decimal_string(payment.amount_minor, payment.currency),
        "amount_refunded": to_decimal_string(payment.amount_refunded_minor, payment.currency),
        "currency": payment.currency,
    }


def receipt(hold: Hold) -> dict[str, object]:
    """What an accepted purchase answers (202), and a replay of it while the hold is in Redis."""
    return {
        "ticket_id": hold.ticket_id,
        "status": hold.status,
        "product_id": product_of_ticket(hold.ticket_id),
        "quantity": hold.quantity,
        "expires_at": iso_ms(hold.deadline_ms),
    }


def recorded_receipt(ticket_id: str, order: Order | None) -> dict[str, object]:
    """A replay once the hold is settled and gone from Redis: SQL's record of it."""
    return {
        "ticket_id": ticket_id,
        "status": order.status if order else OrderStatus.RESERVED.value,
        "product_id": product_of_ticket(ticket_id),
        "quantity": order.quantity if order else None,
        "expires_at": iso(order.expires_at) if order else None,
    }


def is_final(view: dict[str, object]) -> bool:
    return OrderStatus(str(view["status"])).is_terminal
