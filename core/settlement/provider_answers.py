"""The provider's own answers (webhooks): the intent's state now decides, and its ticket is a
batch of one for `finish`; money taken after a ticket ended otherwise goes back."""

from __future__ import annotations

import logging

from core.db import transaction
from core.keys import product_of_ticket
from core.locks import LOCK_WAIT_S
from core.models import Order
from core.orders import get_order, get_payment, get_payment_by_intent, store_payments, transition
from core.payments import FAILED_STATES, PaymentIntent, gateway_for
from core.settlement.base import SettlerBase
from core.settlement.work import SettlementDeferred, SettleReport, Work, outcome_of, pending
from core.tickets import OrderStatus
from core.times import to_ms

log = logging.getLogger(__name__)


class ProviderAnswers(SettlerBase):
    """Applies what the provider says happened to an intent."""

    def settle_payment_event(
        self, provider: str, intent_id: str, outcome: str, reason: str, client_secret: str = ""
    ) -> str:
        """Applies what the provider says happened to an intent; answers what was done."""
        with self.sessions() as session:
            payment = get_payment_by_intent(session, provider, intent_id)
            order = get_order(session, payment.ticket_id) if payment else None
        if payment is None or order is None:
            return "unknown_payment_intent"
        product_id = product_of_ticket(order.ticket_id)
        if product_id is None:
            return "unknown_payment_intent"
        report = SettleReport()
        # Events arrive late and out of order: the intent's state now decides, not the event.
        latest = gateway_for(self.gateways, payment.provider).retrieve_intent(intent_id)
        store_payments(self.sessions, [(order.ticket_id, payment.provider, latest)])
        if latest.status == "requires_action":
            self._await_action(report, product_id, order.ticket_id, latest)
        elif not pending(latest):
            late = to_ms(order.expires_at) <= self.inventory.clock.now_ms()
            outcome, why = outcome_of(latest, late)
            if outcome == "failed" and not latest.failure_code:
                why = reason or why
            self._finish_event(report, order, payment.provider, latest, outcome, why)
        return ",".join(sorted(report.settled)) or "no_change"

    def _finish_event(
        self,
        report: SettleReport,
        order: Order,
        provider: str,
        intent: PaymentIntent,
        outcome: str,
        reason: str,
    ) -> None:
        """The provider's answer for one ticket: a batch of one for `finish`, which waits for
        the ticket's lock; raises SettlementDeferred when the ticket is not finished now."""
        hold = self.inventory.get_hold(order.ticket_id)
        if hold is None:  # settled and forgotten: only money taken after that goes back
            if outcome == "confirmed":
                self._refund_unless_confirmed(report, order.ticket_id)
            return
        product_id, currency = order.product_id, order.currency
        work = Work(None, hold, product_id, currency, outcome, reason, intent, provider)
        deferred = report.deferred
        self.finish(report, product_id, currency, [work], wait_s=LOCK_WAIT_S)
        if report.deferred > deferred:
            raise SettlementDeferred(order.ticket_id)

    def _refund_unless_confirmed(self, report: SettleReport, ticket_id: str) -> None:
        """Our payment succeeded, but the order was already settled otherwise (say expired)."""
        with self.sessions() as session:
            order = get_order(session, ticket_id)
        if order is None or order.status == OrderStatus.CONFIRMED.value:
            return
        if self.refunds.refund_if_paid(ticket_id):
            with transaction(self.sessions) as session:
                transition(session, [ticket_id], OrderStatus.REFUNDED, f"refunded:{order.status}")
            product_id = product_of_ticket(ticket_id)
            if product_id is not None:
                self.inventory.drop_final(product_id, ticket_id)
            report.count(OrderStatus.REFUNDED.value)

    def _refresh_payment(self, ticket_id: str) -> None:
        """A settler stopped between moving the hold and writing SQL left the payment's row at
        the state it had before confirming: the provider's word replaces it."""
        with self.sessions() as session:
            payment = get_payment(session, ticket_id)
        if payment is None or payment.status == "succeeded" or payment.status in FAILED_STATES:
            return
        try:
            intent = gateway_for(self.gateways, payment.provider).retrieve_intent(payment.intent_id)
        except Exception:  # the order's state does not wait for it; the row stays as it was
            log.warning("settle: payment of %s not refreshed", ticket_id, exc_info=True)
            return
        store_payments(self.sessions, [(ticket_id, payment.provider, intent)])
