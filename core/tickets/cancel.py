"""Cancelling a ticket: a hold no payment has started on is released; a confirmed order is
refunded, by an admin only, and its units go back on sale."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.inventory import Ending, Inventory
from core.keys import bucket_of_ticket, product_of_ticket
from core.locks import LockTimeout, locked
from core.settlement import Settler
from core.tickets.status import OrderStatus
from core.tickets.view import TicketNotFound, Viewer, visible_order


class CancelNotDurable(RuntimeError):
    """No replica confirmed the release in time (INVENTORY_MIN_REPLICAS): a failover could bring
    the hold back and settle it, so the cancel is not answered yet; the buyer asks again."""


@dataclass
class CancelRefused(Exception):
    """The ticket is past the point where it can be cancelled (409)."""

    code: str
    message: str


def cancel_ticket(
    inventory: Inventory, settler: Settler, session: Session, ticket_id: str, viewer: Viewer
) -> OrderStatus:
    """CANCELLED (the hold is released; the workers record it) or REFUNDED. Raises
    TicketNotFound, CancelRefused, CancelNotDurable (asking again is safe), and from a refund
    RefundRefused, RefundDeferred, PaymentUnavailable or LockTimeout."""
    product_id = product_of_ticket(ticket_id)
    if product_id is None:
        raise TicketNotFound(ticket_id)
    hold = inventory.get_hold(ticket_id)
    if hold is None:
        status = visible_order(session, ticket_id, viewer).status
        session.rollback()  # the read ends before a refund writes (SQLite: one writer at a time)
        if status == OrderStatus.CONFIRMED and viewer.is_admin:
            settler.refunds.refund_confirmed(ticket_id)
            return OrderStatus.REFUNDED
        raise _already(status)
    if not viewer.may_see(hold.user_id):
        raise TicketNotFound(ticket_id)
    try:
        with locked(inventory.lock(product_id, ticket_id)):
            ending = Ending(
                ticket_id, OrderStatus.CANCELLED.value, "cancelled_by_buyer", "reserved"
            )
            state, after = inventory.finish_holds(product_id, [ending])[ticket_id]
    except LockTimeout:
        raise CancelRefused("payment_in_progress", "the order is being settled") from None
    if state in ("ok", "already"):
        if not inventory.replicated(product_id, bucket_of_ticket(ticket_id)):
            raise CancelNotDurable(ticket_id)
        return OrderStatus.CANCELLED
    current = after.status if after else "settled"
    if current in (OrderStatus.PROCESSING, OrderStatus.REQUIRES_ACTION):
        raise CancelRefused(
            "payment_in_progress", "the payment has started; it cannot be cancelled"
        )
    raise _already(current)


def _already(status: str) -> CancelRefused:
    return CancelRefused(f"already_{status}", f"the order is already {status}")
