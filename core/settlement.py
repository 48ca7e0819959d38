"""Settling tickets: persist the order, charge, then confirm or release the hold.

Each ticket goes through three steps. `prepare` takes the hold (reserved -> processing) under the
ticket's lock and records the order; `pay` talks to the gateway with no lock and no transaction
open; `finish` moves the hold to its final state under the lock, then SQL follows. Every step is
idempotent on the ticket id, so a settler killed anywhere is simply run again.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.inventory import Hold, Inventory, now_ms
from core.locks import locked
from core.models import OrderStatus, Product
from core.orders import get_order, get_payment, record_order, record_payment, transition
from core.payments import PaymentGateway, PaymentIntent, PaymentUnavailable

log = logging.getLogger(__name__)


class StockUnavailable(RuntimeError):
    """The product's stock key is missing in Redis; settle after it is rebuilt."""


@dataclass
class Work:
    entry_id: str | None
    hold: Hold
    product_id: int
    currency: str
    outcome: str = ""  # confirmed, failed, expired, retry
    reason: str = ""


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
        gateway: PaymentGateway,
        settings: Settings,
    ) -> None:
        self.inventory = inventory
        self.sessions = sessions
        self.gateway = gateway
        self.settings = settings

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
            if state == "processing":
                with transaction(self.sessions) as session:
                    record_order(session, hold, product_id, currency, OrderStatus.PROCESSING)
                    transition(session, ticket_id, OrderStatus.PROCESSING)
                return Work(entry_id, hold, product_id, currency)
        self._record_final(report, product_id, currency, hold, entry_id)
        return None

    def _pay(self, work: Work) -> None:
        """Decides the outcome from the gateway; never charges a ticket twice."""
        hold = work.hold
        try:
            intent = self._charge(work)
        except PaymentUnavailable as exc:
            work.outcome, work.reason = "retry", str(exc)
            return
        except Exception as exc:  # an unexpected provider answer is retried, not guessed at
            log.exception("settle: payment for %s", hold.ticket_id)
            work.outcome, work.reason = "retry", type(exc).__name__
            return
        if intent is None:
            work.outcome, work.reason = "expired", "hold_expired"
        elif intent.succeeded:
            work.outcome = "confirmed"
        elif intent.status in ("failed", "requires_payment_method", "canceled"):
            work.outcome, work.reason = "failed", intent.failure_code or "payment_failed"
        elif hold.deadline_ms <= now_ms():
            # Never paid in time: the hold ends; a payment completing later is refunded.
            work.outcome, work.reason = "expired", "hold_expired"
        else:  # requires_action or processing: asked again on the next delivery
            work.outcome, work.reason = "retry", intent.status

    def _charge(self, work: Work) -> PaymentIntent | None:
        """Retrieves the intent recorded for the ticket, or creates one if the hold still allows."""
        hold = work.hold
        with self.sessions() as session:
            payment = get_payment(session, hold.ticket_id)
        expired = hold.deadline_ms <= now_ms()
        if payment is not None:
            intent = self.gateway.retrieve_intent(payment.intent_id)
            if intent.status == "requires_confirmation" and not expired:
                intent = self.gateway.confirm_intent(intent.id, hold.ticket_id)
        elif expired:
            return None
        else:
            intent = self.gateway.create_intent(
                hold.ticket_id,
                hold.amount_minor,
                work.currency,
                hold.payment_method,
                {
                    "ticket_id": hold.ticket_id,
                    "product_id": str(work.product_id),
                    "user_id": str(hold.user_id),
                },
            )
            self._store_intent(hold.ticket_id, intent)
            intent = self.gateway.confirm_intent(intent.id, hold.ticket_id)
        self._store_intent(hold.ticket_id, intent)
        return intent

    def _store_intent(self, ticket_id: str, intent: PaymentIntent) -> None:
        with transaction(self.sessions) as session:
            record_payment(session, ticket_id, self.gateway.name, intent)

    def _finish(self, report: SettleReport, product_id: int, currency: str, work: Work) -> None:
        if work.outcome == "retry":
            report.deferred += 1
            return
        ticket_id = work.hold.ticket_id
        with locked(self.inventory.lock(product_id, ticket_id)):
            state, hold = self.inventory.finish_hold(
                product_id, ticket_id, work.outcome, work.reason
            )
        if state == "unavailable":
            raise StockUnavailable(product_id)
        if hold is None:  # forgotten: another settler already recorded the final state
            if work.outcome == "confirmed":
                self._refund_unless_confirmed(report, ticket_id)
            self.inventory.forget(product_id, ticket_id, work.entry_id)
            return
        self._record_final(report, product_id, currency, hold, work.entry_id)

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
        with self.sessions() as session:
            payment = get_payment(session, ticket_id)
        if payment is None:
            return False
        intent = self.gateway.retrieve_intent(payment.intent_id)
        if not intent.succeeded:
            return False
        # Bounded by what our own database says was captured and already refunded.
        owed = min(intent.amount_minor, payment.amount_minor) - max(
            intent.amount_refunded_minor, payment.amount_refunded_minor
        )
        if owed > 0:
            intent = self.gateway.refund(intent.id, owed, ticket_id)
            with transaction(self.sessions) as session:
                record_payment(session, ticket_id, self.gateway.name, intent)
        return True
