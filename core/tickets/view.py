"""The ticket as a buyer sees it: one shape, read from Redis while the hold is open (and for a
while after settlement), from SQL after. Every status answer is built here, as the models below;
the API answers their `model_dump()` and its OpenAPI document shows their schemas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from core.inventory import Hold, Inventory
from core.keys import product_of_ticket
from core.models import Order, Payment
from core.money import AmountText, to_decimal_string
from core.orders import get_order, get_payment, order_seats
from core.tickets.status import OrderStatus
from core.times import Moment, iso, iso_ms


class TicketNotFound(Exception):
    """No such ticket, or not one the viewer may see (the two answers are the same)."""


class TicketUnreadable(Exception):
    """Redis cannot be asked and SQL has not recorded the ticket (yet): it may be a hold."""


def omitted_when_none(description: str | None = None) -> Any:
    """An optional field of an answer: left out of `model_dump()` while it is None."""
    return Field(default=None, exclude_if=_is_none, description=description)


def _is_none(value: object) -> bool:
    return value is None


class Answer(BaseModel):
    """A JSON answer's model: the document shows exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Receipt(Answer):
    """What an accepted purchase answers (202), and a replay of it."""

    ticket_id: str
    status: OrderStatus
    product_id: int
    quantity: int | None
    expires_at: Moment
    seats: list[str] | None = omitted_when_none("the seats held (a seated event)")


class RecordedOrder(Answer):
    """An order as SQL records it: the list of a buyer's orders."""

    ticket_id: str
    status: OrderStatus
    product_id: int
    quantity: int
    amount: AmountText
    currency: str
    created_at: Moment
    updated_at: Moment
    expires_at: Moment
    failure_reason: str | None


class TicketView(Answer):
    """A ticket's status, from its hold in Redis or its record in SQL. `payment` has the client
    secret while the buyer has to act, and the provider's record once SQL has it."""

    ticket_id: str
    status: OrderStatus
    product_id: int
    quantity: int
    amount: AmountText | None
    currency: str | None
    created_at: Moment
    updated_at: Moment
    expires_at: Moment
    failure_reason: str | None
    payment: dict[str, str | None]
    seats: list[str] | None = omitted_when_none("the ticket's seats (a seated event)")
    poll_after_ms: int | None = omitted_when_none("while the ticket is open: when to ask again")

    @property
    def is_final(self) -> bool:
        return self.status.is_terminal

    def with_poll_hint(self, poll_after_ms: int) -> TicketView:
        return self if self.is_final else self.model_copy(update={"poll_after_ms": poll_after_ms})


@dataclass(frozen=True)
class Viewer:
    user_id: int
    is_admin: bool = False

    def may_see(self, owner_id: int) -> bool:
        return self.is_admin or owner_id == self.user_id


def view_ticket(
    inventory: Inventory, session: Session, ticket_id: str, viewer: Viewer
) -> TicketView:
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
) -> TicketView:
    order = get_order(session, ticket_id)
    if order is None and hold_unknown:
        raise TicketUnreadable(ticket_id)
    order = _visible(order, ticket_id, viewer)
    payment = payment_view(get_payment(session, ticket_id), order)
    seats = order_seats(session, [ticket_id]).get(ticket_id)
    return TicketView(**_order_fields(order), payment=payment, seats=seats)


def hold_view(hold: Hold) -> TicketView:
    return TicketView(
        ticket_id=hold.ticket_id,
        status=hold.status,
        product_id=_product_of(hold.ticket_id),
        quantity=hold.quantity,
        amount=to_decimal_string(hold.amount_minor, hold.currency) if hold.currency else None,
        currency=hold.currency or None,
        created_at=iso_ms(hold.created_ms),
        updated_at=iso_ms(hold.modified_ms),
        expires_at=iso_ms(hold.deadline_ms),
        failure_reason=hold.reason,
        payment=_hold_payment(hold),
        seats=list(hold.seats) or None,
    )


def _hold_payment(hold: Hold) -> dict[str, str | None]:
    if hold.client_secret:
        return {"client_secret": hold.client_secret}
    return {"status": hold.payment_status} if hold.payment_status else {}


def order_view(order: Order) -> RecordedOrder:
    """A recorded order, as the list of orders gives it."""
    return RecordedOrder(**_order_fields(order))


def _order_fields(order: Order) -> dict[str, object]:
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


def payment_view(payment: Payment | None, order: Order) -> dict[str, str | None]:
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


def receipt(hold: Hold) -> Receipt:
    """What an accepted purchase answers (202), and a replay of it while the hold is in Redis."""
    return Receipt(
        ticket_id=hold.ticket_id,
        status=hold.status,
        product_id=_product_of(hold.ticket_id),
        quantity=hold.quantity,
        expires_at=iso_ms(hold.deadline_ms),
        seats=list(hold.seats) or None,
    )


def recorded_receipt(ticket_id: str, order: Order | None) -> Receipt:
    """A replay once the hold is settled and gone from Redis: SQL's record of it."""
    return Receipt(
        ticket_id=ticket_id,
        status=order.status if order else OrderStatus.RESERVED,
        product_id=_product_of(ticket_id),
        quantity=order.quantity if order else None,
        expires_at=iso(order.expires_at) if order else None,
    )


def _product_of(ticket_id: str) -> int:
    product_id = product_of_ticket(ticket_id)
    if product_id is None:  # ticket ids are made by new_ticket_id: never for a real one
        raise TicketNotFound(ticket_id)
    return product_id
