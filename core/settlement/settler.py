"""The settler: `prepare` takes the holds and records the orders, `finish` moves the holds to
their outcomes under their locks and SQL follows, then Redis forgets them."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import structlog
from sqlalchemy import select

from core.db import transaction
from core.inventory import Claim, Ending, Hold, Settled
from core.keys import bucket_of_ticket
from core.locks import locked
from core.metrics import SETTLE_BATCH_SIZE, SETTLEMENT_LAG
from core.models import Product
from core.orders import record_orders, record_payments, transition
from core.payments import PaymentIntent
from core.settlement.paying import Paying
from core.settlement.provider_answers import ProviderAnswers
from core.settlement.work import SettleReport, Work
from core.tickets import OrderStatus

log = logging.getLogger(__name__)


events = structlog.get_logger(__name__)


class Settler(Paying, ProviderAnswers):
    """Settles tickets read from a product's settle stream, and the provider's answers."""

    def settle_batch(self, product_id: int, entries: list[tuple[str | None, str]]) -> SettleReport:
        """Settles tickets read from the product's stream: each step is one Redis round trip and
        at most one SQL transaction for the whole batch; payments run concurrently."""
        report = SettleReport()
        SETTLE_BATCH_SIZE.observe(len(entries))
        with self.sessions() as session:
            product = session.get(Product, product_id)
        if product is None:
            log.error("settle: unknown product %s", product_id)
            report.deferred = len(entries)
            return report
        try:
            works = self.prepare(report, product_id, product.currency, entries)
            self.pay(product_id, works)
            self.finish(report, product_id, product.currency, works)
        except Exception:
            # Left unacknowledged: the tickets are delivered again after CLAIM_IDLE_SECONDS.
            log.exception("settle: batch of product %s deferred", product_id)
            report.deferred = len(entries) - sum(report.settled.values())
        return report

    def prepare(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        entries: list[tuple[str | None, str]],
    ) -> list[Work]:
        """Takes the holds (reserved -> processing) under their locks and records the orders."""
        entry_of = {ticket: entry_id for entry_id, ticket in entries}
        tokens = self.inventory.take_locks(product_id, list(entry_of))
        report.deferred += len(entry_of) - len(tokens)  # settled by whoever holds the lock
        works: list[Work] = []
        finals: list[Hold] = []
        gone: list[tuple[str, str | None]] = []
        refused: set[str] = set()
        try:
            for ticket, (state, hold) in self.inventory.begin_settlements(
                product_id, list(tokens)
            ).items():
                if state == "unavailable":
                    report.deferred += 1  # the stock is being rebuilt
                elif hold is None:
                    gone.append((ticket, entry_of[ticket]))
                elif state in ("processing", "requires_action"):
                    works.append(Work(entry_of[ticket], hold, product_id, currency))
                else:
                    finals.append(hold)
            if works:
                processing = [(w.hold, OrderStatus.PROCESSING) for w in works]
                with transaction(self.sessions) as session:
                    event_id = self.event_of(product_id)
                    refused = record_orders(session, processing, product_id, currency, event_id)
                    tickets = [w.hold.ticket_id for w in works]
                    transition(session, tickets, OrderStatus.PROCESSING)
        finally:
            self.inventory.release_locks(product_id, tokens)
        self.inventory.forget_holds(product_id, [Settled(t, e) for t, e in gone])
        for hold in finals:
            entry_id = entry_of[hold.ticket_id]
            self._guard(report, self._record_final, product_id, currency, hold, entry_id)
        if refused:
            self._refuse_seats(report, product_id, currency, works, refused)
        return [w for w in works if w.hold.ticket_id not in refused]

    def _refuse_seats(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        works: list[Work],
        refused: set[str],
    ) -> None:
        """Holds whose seats SQL gives to another live order (Redis handed a seat out twice)
        fail without a payment; only seats the ticket has in Redis go back."""
        log.error("settle: seats of %s are another order's in SQL", sorted(refused))
        failing = [w for w in works if w.hold.ticket_id in refused]
        for work in failing:
            work.outcome, work.reason = "failed", "seat_taken"
        self.finish(report, product_id, currency, failing)

    def finish(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        works: list[Work],
        wait_s: float = 0.0,
    ) -> None:
        """Moves the holds to their outcomes under their locks, then SQL follows in one go.
        A ticket whose lock stays taken for `wait_s` is left for later (`report.deferred`)."""
        ending: list[Work] = []
        for work in works:
            if work.outcome == "retry":
                report.deferred += 1
            elif work.outcome == "requires_action":
                self._guard(report, self._await_action_step, work)
            else:
                ending.append(work)
        if not ending:
            return
        by_ticket = {w.hold.ticket_id: w for w in ending}
        tokens = self.inventory.take_locks(product_id, list(by_ticket), wait_s)
        report.deferred += len(by_ticket) - len(tokens)
        try:
            endings = [Ending(t, by_ticket[t].outcome, by_ticket[t].reason) for t in tokens]
            results = self.inventory.finish_holds(product_id, endings)
        finally:
            self.inventory.release_locks(product_id, tokens)
        plain: list[tuple[Hold, str | None, str]] = []
        others: list[tuple[Work, str, Hold | None]] = []
        for ticket, (state, hold) in results.items():
            work = by_ticket[ticket]
            paid = work.intent is not None and work.intent.succeeded
            if (
                hold is not None
                and state != "unavailable"
                and hold.status == work.outcome
                and (work.outcome == "confirmed" or not paid)
            ):
                plain.append((hold, work.entry_id, work.intent.status if work.intent else ""))
            else:
                others.append((work, state, hold))
        # Intents not recorded with a plain final state are stored first, in one transaction.
        unsettled = [w for w in ending if w.hold.ticket_id not in results]
        self._store_intents([w for w in unsettled + [o[0] for o in others] if w.intent])
        for work, state, hold in others:
            ticket = work.hold.ticket_id
            if state == "unavailable":
                report.deferred += 1
            elif hold is None:  # forgotten: another settler already recorded the final state
                if work.outcome == "confirmed":
                    self._guard(report, self._refund_unless_confirmed, ticket)
                self.inventory.forget_holds(product_id, [Settled(ticket, work.entry_id)])
            else:  # settled otherwise meanwhile: _record_final sees whether money goes back
                self._guard(report, self._record_final, product_id, currency, hold, work.entry_id)
        plain_intents = [
            by_ticket[h.ticket_id] for h, _, _ in plain if by_ticket[h.ticket_id].intent
        ]
        self._record_finals(report, product_id, currency, plain, plain_intents, recorded=True)

    def _record_finals(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        finals: list[tuple[Hold, str | None, str]],
        paid_with: Sequence[Work] = (),
        recorded: bool = False,
        money_settled: bool = True,
    ) -> None:
        """Writes final states to SQL, then Redis forgets the holds. `money_settled`: paid and
        confirmed, or never paid, with the intents they were paid with (`paid_with`); otherwise
        each payment is looked at first: one that succeeded for a hold not confirmed is refunded
        (the order says refunded), and its row is refreshed from the provider. `recorded`: the
        orders are in SQL already."""
        finals, held_back = self._replicated_first(product_id, finals)
        report.deferred += held_back
        if not finals:
            return
        states = [self._state_to_record(hold, money_settled) for hold, _, _ in finals]
        groups: dict[tuple[OrderStatus, str | None], list[str]] = {}
        for (hold, _, _), state in zip(finals, states, strict=True):
            groups.setdefault(state, []).append(hold.ticket_id)
        with transaction(self.sessions) as session:
            if not recorded:
                rows = [(h, status) for (h, _, _), (status, _) in zip(finals, states, strict=True)]
                record_orders(session, rows, product_id, currency, self.event_of(product_id))
            if paid_with:
                recording = {hold.ticket_id for hold, _, _ in finals}
                paid = [w for w in paid_with if w.hold.ticket_id in recording]
                record_payments(session, [self._payment_row(w) for w in paid])
            for (status, reason), tickets in groups.items():
                transition(session, tickets, status, reason)
        settled = [
            Settled(h.ticket_id, entry_id, status.value, reason, paid)
            for (h, entry_id, paid), (status, reason) in zip(finals, states, strict=True)
        ]
        self._end_claims(
            product_id, [(h, status) for (h, _, _), (status, _) in zip(finals, states, strict=True)]
        )
        self.inventory.forget_holds(product_id, settled)
        now_ms = self.inventory.clock.now_ms()
        for (hold, _, _), (status, reason) in zip(finals, states, strict=True):
            report.count(status.value)
            lag_ms = max(0, now_ms - hold.created_ms)
            SETTLEMENT_LAG.labels(status.value).observe(lag_ms / 1000)
            events.info(
                "ticket final",
                ticket_id=hold.ticket_id,
                request_id=hold.request_id,
                product_id=product_id,
                status=status.value,
                reason=reason,
                lag_ms=lag_ms,
            )

    def _replicated_first(
        self, product_id: int, finals: list[tuple[Hold, str | None, str]]
    ) -> tuple[list[tuple[Hold, str | None, str]], int]:
        """The finals SQL may record now, and how many wait: a confirmation is recorded once
        the replicas have the hold's bucket (INVENTORY_MIN_REPLICAS). A hold no replica had
        when its purchase was answered (its order recorded by the web process instead) is lost
        by a failover, and its units sold again: SQL's confirmation would oversell. Left
        pending in the stream, it is delivered again."""
        confirmed = [f for f in finals if f[0].status == OrderStatus.CONFIRMED.value]
        if not confirmed:
            return finals, 0
        bucket = bucket_of_ticket(confirmed[0][0].ticket_id)  # a batch is one bucket's
        if self.inventory.replicated(product_id, bucket):
            return finals, 0
        log.warning("settle: %s confirmations wait for a replica", len(confirmed))
        return [f for f in finals if f[0].status != OrderStatus.CONFIRMED.value], len(confirmed)

    def record_lost(self, product_id: int, holds: Sequence[Hold]) -> SettleReport:
        """Orders whose hold Redis lost and could not hold again (core.failover): their final
        state (`hold.status`) recorded, a payment that succeeded refunded."""
        report = SettleReport()
        with self.sessions() as session:
            currency = session.scalar(select(Product.currency).where(Product.id == product_id))
        finals = [(hold, None, "") for hold in holds]
        self._record_finals(report, product_id, currency or "", finals, money_settled=False)
        return report

    def _state_to_record(self, hold: Hold, money_settled: bool) -> tuple[OrderStatus, str | None]:
        status, reason = OrderStatus(hold.status), hold.reason
        if money_settled:
            return status, reason
        if status is not OrderStatus.CONFIRMED and self.refunds.refund_if_paid(hold.ticket_id):
            status, reason = OrderStatus.REFUNDED, f"refunded:{hold.reason or status.value}"
        self._refresh_payment(hold.ticket_id)
        return status, reason

    def _end_claims(self, product_id: int, finals: list[tuple[Hold, OrderStatus]]) -> None:
        """A split product's purchases held outside the buyer's own bucket: their claims there
        end with them, kept if confirmed, released otherwise (a claim left open, say by a crash
        here, is ended by the sweep from SQL's word)."""
        endings = [
            Claim(hold.ticket_id, "kept" if status is OrderStatus.CONFIRMED else "released",
                  hold.user_id, hold.quantity)
            for hold, status in finals
        ]  # fmt: skip
        self.inventory.end_claims(product_id, self.buckets_of(product_id), endings)

    def _record_final(
        self,
        report: SettleReport,
        product_id: int,
        currency: str,
        hold: Hold,
        entry_id: str | None,
    ) -> None:
        """A hold settled otherwise than this settler decided (or final when taken): a batch of
        one whose money is looked at."""
        finals = [(hold, entry_id, "")]
        self._record_finals(report, product_id, currency, finals, money_settled=False)

    def _await_action_step(self, report: SettleReport, work: Work) -> None:
        self._await_action(report, work.product_id, work.hold.ticket_id, work.intent)

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
                transition(session, [ticket_id], OrderStatus.REQUIRES_ACTION)
            report.count(OrderStatus.REQUIRES_ACTION.value)
