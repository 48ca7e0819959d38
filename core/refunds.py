"""Money going back: refunds of what a payment captured, bounded by our own records, one refund
of a ticket at a time, and an admin's refund of a confirmed order."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.inventory import Inventory
from core.keys import product_of_ticket
from core.locks import locked
from core.orders import get_order, get_payment, order_seats, store_payments, transition
from core.payments import PaymentGateway, gateway_for
from core.tickets import OrderStatus


class RefundRefused(RuntimeError):
    """The order is not in a state that a refund applies to."""


class RefundDeferred(RuntimeError):
    """The product's stock awaits its rebuild in Redis: no money moves until it is back. (With
    no stock to mark the ticket in, a rebuild reading SQL between the money going back and SQL
    saying refunded would count the units as sold for good.)"""


class Refunds:
    def __init__(
        self,
        inventory: Inventory,
        sessions: sessionmaker[Session],
        gateways: Mapping[str, PaymentGateway],
    ) -> None:
        self.inventory = inventory
        self.sessions = sessions
        self.gateways = gateways

    def refund_if_paid(self, ticket_id: str) -> bool:
        """Refunds what is still owed on a succeeded payment; True if the payment had succeeded.
        A payment still waiting for the buyer is cancelled first, so it cannot succeed later."""
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return False
        with locked(self.inventory.refund_lock(product_id, ticket_id)):
            return self.refund_owed(ticket_id)

    def refund_owed(self, ticket_id: str) -> bool:
        """The refund itself; the caller holds the ticket's refund lock."""
        with self.sessions() as session:
            payment = get_payment(session, ticket_id)
        if payment is None:
            return False
        gateway = gateway_for(self.gateways, payment.provider)
        intent = gateway.retrieve_intent(payment.intent_id)
        if intent.status == "requires_action":
            intent = gateway.cancel_intent(intent.id)
            store_payments(self.sessions, [(ticket_id, payment.provider, intent)])
        if not intent.succeeded:
            return False
        # Bounded by what our own database says was captured and already refunded; the key
        # names that position, so a retry after a crash cannot refund twice.
        refunded = max(intent.amount_refunded_minor, payment.amount_refunded_minor)
        owed = min(intent.amount_minor, payment.amount_minor) - refunded
        if owed > 0:
            intent = gateway.refund(intent.id, owed, f"refund:{ticket_id}:{refunded}")
            store_payments(self.sessions, [(ticket_id, payment.provider, intent)])
        return True

    def refund_confirmed(self, ticket_id: str) -> None:
        """An admin cancels a confirmed order: the money goes back, SQL says refunded, then the
        units go back on sale. One refund of a ticket at a time; Redis marks the ticket first,
        so a reconciliation between the steps counts its units as sold on both sides, and the
        units return once, whoever (this call, a retry, a reconciliation) finishes the refund."""
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            raise RefundRefused("no such order")
        with locked(self.inventory.refund_lock(product_id, ticket_id)):
            with self.sessions() as session:
                order = get_order(session, ticket_id)
                seats = order_seats(session, [ticket_id]).get(ticket_id, [])
            if order is None:
                raise RefundRefused("no such order")
            if order.status != OrderStatus.CONFIRMED.value:
                raise RefundRefused(f"the order is {order.status}")
            if self.inventory.get_hold(ticket_id) is not None:
                raise RefundRefused("the order is still being settled")
            if not self.inventory.begin_return(
                product_id, ticket_id, order.user_id, order.quantity, seats
            ):
                raise RefundDeferred(ticket_id)
            self.refund_owed(ticket_id)
            with transaction(self.sessions) as session:
                transition(session, [ticket_id], OrderStatus.REFUNDED, "cancelled_by_admin")
        self.inventory.drop_final(product_id, ticket_id)
        self.inventory.return_units(product_id, [ticket_id])
