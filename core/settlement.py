"""Settling tickets: persist the order, charge, then confirm or release the hold.

Each ticket goes through three steps. `prepare` takes the hold (reserved -> processing) under the
ticket's lock and records the order; `pay` talks to the gateway with no lock and no transaction
open; `finish` moves the hold to its final state under the lock, then SQL follows. Every step is
idempotent on the ticket id, so a settler killed anywhere is simply run again. The provider's own
answers (webhooks) go through `settle_payment_event`, which ends in the same `finish` step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.inventory import Hold, Inventory, now_ms
from core.keys import product_of_ticket
from core.locks import locked
from core.models import OrderStatus, Payment, Product
from core.orders import (
    get_order,
    get_payment,
    get_payment_by_intent,
    record_order,
    record_payment,
    transition,
)
from core.payments import PaymentGateway, PaymentIntent, PaymentRejected, PaymentUnavailable

log = logging.getLogger(__name__)


class StockUnavailable(RuntimeError):
    """The product's stock key is missing in Redis; settle after it is rebuilt."""


class RefundRefused(RuntimeError):
    """The order is not in a state that a refund applies to."""


@dataclass
class Work:
    entry_id: str | None
    hold: Hold
    product_id: int
    currency: str
    outcome: str = ""  # confirmed, failed, expired, requires_action, retry
    reason: str = ""
    intent: PaymentIntent | None = None


@dataclass
class SettleReport:
    settled: dict[str, int] = field(default_factory=dict)
    deferred: int = 0

    def count(self, status: str) -> None:
        self.settled[status] = self.settled.get(status, 0) + 1


class Settler:
    def __init__(
        self,
        inventory: Inventory,
        sessions: sessionmaker[Session],
        gateways: Mapping[str, PaymentGateway],
        settings: Settings,
    ) -> None:
        self.inventory = inventory
        self.sessions = sessions
        self.gateways = gateways
        self.settings = settings

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway new payments go through."""
        return self.gateways[self.settings.payment_gateway]

    def _gateway_of(self, payment: Payment) -> PaymentGateway:
        """Payments stay with the provider that took them, whatever the default is now."""
        gateway = self.gateways.get(payment.provider)
        if gateway is None:
            raise PaymentUnavailable(f"gateway {payment.provider!r} is not configured")
        return gateway

    # --- batches from the settle stream ------------------------------------------------------
    def settle_batch(self, product_id: int, entries: list[tuple[str | None, str]]) -> SettleReport:
        report = SettleReport()
        with self.sessions() as session:
            product = session.get(Product, product_id)
        if product is None:
            log.error("settle: unknown product %s", product_id)
            report.deferred = len(entries)
            return report
        currency = product.currency
        to_pay: list[Work] = []
        for entry_id, ticket_id in entries:
            work = self._guard(report, self._prepare, product_id, currency, entry_id, ticket_id)
            if work is not None:
                to_pay.append(work)
        if len(to_pay) > 1 and self.settings.payment_concurrency > 1:
            workers = min(self.settings.payment_concurrency, len(to_pay))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(self._pay, to_pay))
        else:
            for work in to_pay:
                self._pay(work)
        for work in to_pay:
            self._guard(report, self._finish, product_id, currency, work)
        return report

    def _guard(self, report: SettleReport, step, *args):  # type: ignore[no-untyped-def]
        try:
            return step(report, *args)
        except Exception:
            # Left unacknowledged: the ticket is delivered again after CLAIM_IDLE_SECONDS.
            log.exception("settle: %s deferred", step.__name__)
            report.deferred += 1
            return None

    def _prepare(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        entry_id: str | None,
        ticket_id: str,
    ) -> Work | None:
        with locked(self.inventory.lock(product_id, ticket_id)):
            state, hold = self.inventory.begin_settlement(product_id, ticket_id)
            if state == "unavailable":
                raise StockUnavailable(product_id)
            if state == "missing" or hold is None:
                self.inventory.forget(product_id, ticket_id, entry_id)
                return None
            if state in ("processing", "requires_action"):
                with transaction(self.sessions) as session:
                    record_order(session, hold, product_id, currency, OrderStatus.PROCESSING)
                    transition(session, ticket_id, OrderStatus.PROCESSING)
                return Work(entry_id, hold, product_id, currency)
        self._record_final(report, product_id, currency, hold, entry_id)
        return None

    def _pay(self, work: Work) -> None:
        """Decides the outcome from the gateway; never charges a ticket twice."""
        lease = self.inventory.payment_lease(work.product_id, work.hold.ticket_id)
        if not lease.acquire():
            work.outcome, work.reason = "retry", "another settler is paying"
            return
        try:
            self._pay_leased(work)
        finally:
            lease.release()

    def _pay_leased(self, work: Work) -> None:
        hold = work.hold
        try:
            intent = self._charge(work)
            if intent is not None and _pending(intent) and hold.deadline_ms <= now_ms():
                # Not paid in time: stop the buyer from paying later, then see where it stands.
                intent = self._gateway_for_ticket(hold.ticket_id).cancel_intent(intent.id)
                self._store_intent(hold.ticket_id, intent)
        except PaymentRejected as exc:
            work.outcome, work.reason = "failed", exc.code
            return
        except PaymentUnavailable as exc:
            work.outcome, work.reason = "retry", str(exc)
            return
        except Exception as exc:  # an unexpected provider answer is retried, not guessed at
            log.exception("settle: payment for %s", hold.ticket_id)
            work.outcome, work.reason = "retry", type(exc).__name__
            return
        work.intent = intent
        work.outcome, work.reason = _outcome_of(intent, hold)

    def _charge(self, work: Work) -> PaymentIntent | None:
        """Retrieves the intent recorded for the ticket, or creates one if the hold still allows."""
        hold = work.hold
        with self.sessions() as session:
            payment = get_payment(session, hold.ticket_id)
        expired = hold.deadline_ms <= now_ms()
        if payment is not None:
            gateway = self._gateway_of(payment)
            intent = gateway.retrieve_intent(payment.intent_id)
            if intent.status == "requires_confirmation" and not expired:
                intent = gateway.confirm_intent(intent.id, hold.ticket_id)
        elif expired:
            return None
        else:
            metadata = {
                "ticket_id": hold.ticket_id,
                "product_id": str(work.product_id),
                "user_id": str(hold.user_id),
            }
            intent = self.gateway.create_intent(
                hold.ticket_id, hold.amount_minor, work.currency, hold.payment_method, metadata
            )
            self._store_intent(hold.ticket_id, intent, self.gateway.name)  # before confirming
            intent = self.gateway.confirm_intent(intent.id, hold.ticket_id)
        self._store_intent(hold.ticket_id, intent)
        return intent

    def _gateway_for_ticket(self, ticket_id: str) -> PaymentGateway:
        with self.sessions() as session:
            payment = get_payment(session, ticket_id)
        return self._gateway_of(payment) if payment else self.gateway

    def _store_intent(self, ticket_id: str, intent: PaymentIntent, provider: str = "") -> None:
        with transaction(self.sessions) as session:
            record_payment(session, ticket_id, provider or self.gateway.name, intent)

    def _finish(self, report: SettleReport, product_id: int, currency: str, work: Work) -> None:
        if work.outcome == "retry":
            report.deferred += 1
            return
        ticket_id = work.hold.ticket_id
        if work.outcome == "requires_action":
            self._await_action(report, product_id, ticket_id, work.intent)
            return
        self.finish(
            report, product_id, currency, ticket_id, work.outcome, work.reason, work.entry_id
        )

    def _await_action(
        self,
        report: SettleReport,
        product_id: int,
        ticket_id: str,
        intent: PaymentIntent | None,
    ) -> None:
        """The buyer must authenticate: the hold stays (and its ticket stays pending in the
        stream, so it is looked at again) until the provider answers or the deadline passes."""
        secret = intent.client_secret if intent and intent.client_secret else ""
        with locked(self.inventory.lock(product_id, ticket_id)):
            marked = self.inventory.await_action(product_id, ticket_id, secret)
        if marked:
            with transaction(self.sessions) as session:
                transition(session, ticket_id, OrderStatus.REQUIRES_ACTION)
            report.count(OrderStatus.REQUIRES_ACTION.value)

    def finish(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        ticket_id: str,
        outcome: str,
        reason: str,
        entry_id: str | None,
    ) -> None:
        """Moves the hold to `outcome` under the ticket's lock, then records it in SQL."""
        with locked(self.inventory.lock(product_id, ticket_id)):
            state, hold = self.inventory.finish_hold(product_id, ticket_id, outcome, reason)
        if state == "unavailable":
            raise StockUnavailable(product_id)
        if hold is None:  # forgotten: another settler already recorded the final state
            if outcome == "confirmed":
                self._refund_unless_confirmed(report, ticket_id)
            self.inventory.forget(product_id, ticket_id, entry_id)
            return
        self._record_final(report, product_id, currency, hold, entry_id)

    # --- the provider's answers (webhooks) ---------------------------------------------------
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
        if outcome == "requires_action":
            intent = PaymentIntent(
                intent_id, outcome, order.amount_minor, order.currency, client_secret=client_secret
            )
            self._await_action(report, product_id, order.ticket_id, intent)
        else:
            latest = self._gateway_of(payment).retrieve_intent(intent_id)
            self._store_intent(order.ticket_id, latest, payment.provider)
            if latest.succeeded:  # an older failure event arriving late changes nothing
                outcome, reason = "confirmed", ""
            self.finish(report, product_id, order.currency, order.ticket_id, outcome, reason, None)
        return ",".join(sorted(report.settled)) or "no_change"

    # --- recording final states and refunds --------------------------------------------------
    def _refund_unless_confirmed(self, report: SettleReport, ticket_id: str) -> None:
        """Our payment succeeded, but the order was already settled otherwise (say expired)."""
        with self.sessions() as session:
            order = get_order(session, ticket_id)
        if order is None or order.status == OrderStatus.CONFIRMED.value:
            return
        if self._refund_if_paid(ticket_id):
            with transaction(self.sessions) as session:
                transition(session, ticket_id, OrderStatus.REFUNDED, f"refunded:{order.status}")
            report.count(OrderStatus.REFUNDED.value)

    def _record_final(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        hold: Hold,
        entry_id: str | None,
    ) -> None:
        """Writes a hold's final state to SQL, refunding a payment whose hold was released."""
        status = OrderStatus(hold.status)
        reason = hold.reason
        if status is not OrderStatus.CONFIRMED and self._refund_if_paid(hold.ticket_id):
            status, reason = OrderStatus.REFUNDED, f"refunded:{hold.reason or status.value}"
        with transaction(self.sessions) as session:
            record_order(session, hold, product_id, currency, status)
            transition(session, hold.ticket_id, status, reason)
        self.inventory.forget(product_id, hold.ticket_id, entry_id)
        report.count(status.value)

    def _refund_if_paid(self, ticket_id: str) -> bool:
        """Refunds what is still owed on a succeeded payment; True if the payment had succeeded.
        A payment still waiting for the buyer is cancelled first, so it cannot succeed later."""
        product_id = product_of_ticket(ticket_id)
        if product_id is None:
            return False
        with locked(self.inventory.refund_lock(product_id, ticket_id)):
            return self._refund_owed(ticket_id)

    def _refund_owed(self, ticket_id: str) -> bool:
        with self.sessions() as session:
            payment = get_payment(session, ticket_id)
        if payment is None:
            return False
        gateway = self._gateway_of(payment)
        intent = gateway.retrieve_intent(payment.intent_id)
        if intent.status == "requires_action":
            intent = gateway.cancel_intent(intent.id)
            self._store_intent(ticket_id, intent, payment.provider)
        if not intent.succeeded:
            return False
        # Bounded by what our own database says was captured and already refunded; the key
        # names that position, so a retry after a crash cannot refund twice.
        refunded = max(intent.amount_refunded_minor, payment.amount_refunded_minor)
        owed = min(intent.amount_minor, payment.amount_minor) - refunded
        if owed > 0:
            intent = gateway.refund(intent.id, owed, f"refund:{ticket_id}:{refunded}")
            with transaction(self.sessions) as session:
                record_payment(session, ticket_id, payment.provider, intent)
        return True

    def refund_confirmed(self, ticket_id: str) -> None:
        """An admin cancels a confirmed order: the money goes back, then the units."""
        with self.sessions() as session:
            order = get_order(session, ticket_id)
        product_id = product_of_ticket(ticket_id)
        if order is None or product_id is None:
            raise RefundRefused("no such order")
        if order.status != OrderStatus.CONFIRMED.value:
            raise RefundRefused(f"the order is {order.status}")
        if self.inventory.get_hold(ticket_id) is not None:
            raise RefundRefused("the order is still being settled")
        self._refund_if_paid(ticket_id)
        with transaction(self.sessions) as session:
            moved = transition(session, ticket_id, OrderStatus.REFUNDED, "cancelled_by_admin")
        if moved:
            self.inventory.unsell(product_id, ticket_id, order.user_id, order.quantity)


def _pending(intent: PaymentIntent) -> bool:
    return not intent.succeeded and not intent.failed


def _outcome_of(intent: PaymentIntent | None, hold: Hold) -> tuple[str, str]:
    if intent is None:
        return "expired", "hold_expired"
    if intent.succeeded:
        return "confirmed", ""
    if intent.failed:
        if intent.status == "canceled" and hold.deadline_ms <= now_ms():
            return "expired", "hold_expired"
        return "failed", intent.failure_code or "payment_failed"
    if hold.deadline_ms <= now_ms():
        return "expired", "hold_expired"  # still pending at the deadline
    if intent.status == "requires_action":
        return "requires_action", ""
    return "retry", intent.status  # processing: asked again on the next delivery
