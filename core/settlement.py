"""Settling tickets: persist the order, charge, then confirm or release the hold.

Each ticket goes through three steps. `prepare` takes the hold (reserved -> processing) under the
ticket's lock and records the order; `pay` talks to the gateway with no lock and no transaction
open; `finish` moves the hold to its final state under the lock, then SQL follows. Every step is
idempotent on the ticket id, so a settler killed anywhere is simply run again. The provider's own
answers (webhooks) go through `settle_payment_event`: its ticket is a batch of one for `finish`,
which waits for the ticket's lock, so the provider hears "try again" only when the lock stays taken
(or the ticket could not be finished now for another reason).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import transaction
from core.inventory import Claim, Ending, Hold, Inventory, Settled
from core.keys import bucket_of_ticket, product_of_ticket
from core.locks import LOCK_WAIT_S, locked
from core.metrics import PAYMENT_SECONDS, PAYMENTS, SETTLE_BATCH_SIZE, SETTLEMENT_LAG
from core.models import Order, Payment, Product
from core.orders import (
    get_order,
    get_payment,
    get_payment_by_intent,
    get_payments,
    record_orders,
    record_payments,
    store_payments,
    transition,
)
from core.payments import (
    FAILED_STATES,
    BatchGateway,
    GatewayNotConfigured,
    IntentRequest,
    PaymentGateway,
    PaymentIntent,
    PaymentRejected,
    PaymentUnavailable,
    gateway_for,
)
from core.refunds import Refunds
from core.tickets import OrderStatus
from core.times import to_ms

log = logging.getLogger(__name__)
events = structlog.get_logger(__name__)


ENDINGS = ("confirmed", "failed", "expired")  # outcomes that end a hold


class SettlementDeferred(RuntimeError):
    """A ticket could not be finished now (its lock stayed taken, its stock awaits a rebuild, a
    step failed); it is finished on a later delivery."""


@dataclass
class Work:
    entry_id: str | None
    hold: Hold
    product_id: int
    currency: str
    outcome: str = ""  # confirmed, failed, expired, requires_action, retry
    reason: str = ""
    intent: PaymentIntent | None = None
    provider: str = ""
    provider_down: bool = False  # the provider timed out or could not be reached


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
        self.refunds = Refunds(inventory, sessions, gateways)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_guard = threading.Lock()
        self._event_of: dict[int, int | None] = {}  # a product's event never changes
        self._buckets_of: dict[int, int] = {}

    def event_of(self, product_id: int) -> int | None:
        """The event whose seats the product sells, if any."""
        if product_id not in self._event_of:
            with self.sessions() as session:
                product = session.get(Product, product_id)
                self._event_of[product_id] = product.event_id if product else None
        return self._event_of[product_id]

    def buckets_of(self, product_id: int) -> int:
        """The product's number of buckets (1 when its stock is not split, or it is unknown)."""
        if product_id not in self._buckets_of:
            with self.sessions() as session:
                buckets = session.scalar(select(Product.buckets).where(Product.id == product_id))
            if buckets is None:
                return 1
            self._buckets_of[product_id] = buckets  # never changes
        return self._buckets_of[product_id]

    def _late(self, hold: Hold) -> bool:
        """Past the hold's deadline, by the clock the scripts decide deadlines by (Redis')."""
        return hold.deadline_ms <= self.inventory.clock.now_ms()

    @property
    def batch_size(self) -> int:
        """Tickets taken from the stream at once: SETTLE_BATCH_SIZE, rounded up to whole waves
        of PAYMENT_CONCURRENCY payments when the gateway waits, so no wave runs half empty."""
        size = self.settings.settle_batch_size
        concurrency = max(1, self.settings.payment_concurrency)
        if not self.gateway.waits:
            return size
        return -(-size // concurrency) * concurrency

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway new payments go through."""
        return self.gateways[self.settings.payment_gateway]

    # --- batches from the settle stream ------------------------------------------------------
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

    def _guard(self, report: SettleReport, step, *args):  # type: ignore[no-untyped-def]
        try:
            return step(report, *args)
        except Exception:
            log.exception("settle: %s deferred", step.__name__)
            report.deferred += 1
            return None

    def pay(self, product_id: int, works: list[Work]) -> None:
        """Decides each ticket's outcome from its gateway; never charges a ticket twice: one
        settler at a time holds a ticket's payment lease, and the intent id is recorded before
        the intent is confirmed, so a retry retrieves it instead of creating another."""
        if not works:
            return
        leases = self.inventory.take_leases(product_id, [w.hold.ticket_id for w in works])
        try:
            leased = [w for w in works if w.hold.ticket_id in leases]
            for work in works:
                if work.hold.ticket_id not in leases:
                    work.outcome, work.reason = "retry", "another settler is paying"
            with self.sessions() as session:
                payments = get_payments(session, [w.hold.ticket_id for w in leased])
            fresh = [
                w for w in leased if w.hold.ticket_id not in payments and not self._late(w.hold)
            ]
            down = threading.Event()  # once the provider times out, the batch stops calling it
            self._create_intents(fresh, down)
            self._store_intents([w for w in fresh if w.intent])  # before confirming
            undecided = [w for w in leased if not w.outcome]
            self._confirm_created(undecided, payments)
            self._concurrently(
                lambda w: self._settle_intent(w, payments.get(w.hold.ticket_id)), undecided, down
            )
            # Intents reaching a final outcome are stored with the order's final state.
            self._store_intents([w for w in undecided if w.intent and w.outcome not in ENDINGS])
            for work in leased:
                PAYMENTS.labels(work.provider or self.gateway.name, work.outcome).inc()
        finally:
            self.inventory.release_leases(product_id, leases)

    def _concurrently(self, step, works: list[Work], down: threading.Event | None = None) -> None:  # type: ignore[no-untyped-def]
        """Runs a payment step for each ticket, several at once when the gateway waits. After
        a provider call of the batch timed out (`down`), the remaining tickets are left for a
        later delivery instead of each waiting PAYMENT_TIMEOUT_SECONDS on a provider that hangs,
        which kept the worker (and the holds it could release) busy for minutes."""
        down = down or threading.Event()

        def guarded(work: Work) -> None:
            if down.is_set():
                work.outcome, work.reason = "retry", "payment provider unavailable"
                return
            step(work)
            if work.provider_down:
                down.set()

        if len(works) > 1 and self.settings.payment_concurrency > 1 and self.gateway.waits:
            list(self._payment_pool().map(guarded, works))
        else:
            for work in works:
                guarded(work)

    def close(self) -> None:
        """Stops the payment threads, if any were started."""
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _payment_pool(self) -> ThreadPoolExecutor:
        """PAYMENT_CONCURRENCY threads, started once per process and kept for later batches."""
        with self._pool_guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.payment_concurrency, thread_name_prefix="payment"
                )
            return self._pool

    def _batches(self, waiting: bool = False) -> BatchGateway | None:
        """The default gateway, when it takes a batch in one call (and, unless `waiting`, waits
        on no network, so a batch costs no more than one call)."""
        gateway = self.gateway
        if isinstance(gateway, BatchGateway) and (waiting or not gateway.waits):
            return gateway
        return None

    def _create_intents(self, works: list[Work], down: threading.Event) -> None:
        gateway = self._batches(waiting=True)  # creating an intent waits for no bank
        if gateway is None or len(works) < 2:
            self._concurrently(self._create_intent, works, down)
            return
        requests = [
            IntentRequest(w.hold.ticket_id, w.hold.amount_minor, w.currency,
                          w.hold.payment_method, self._metadata(w))
            for w in works
        ]  # fmt: skip
        try:
            intents = gateway.create_intents(requests)
        except Exception:
            log.exception("settle: creating %s intents", len(works))
            for work in works:
                work.outcome, work.reason = "retry", "payment provider error"
            return
        for work, intent in zip(works, intents, strict=True):
            work.intent, work.provider = intent, self.gateway.name

    def _confirm_created(self, works: list[Work], payments: Mapping[str, Payment]) -> None:
        """Confirms, in one call, the intents this batch created whose holds are still in time;
        `_settle_intent` then only reads the outcome (or cancels what the deadline overtook)."""
        gateway = self._batches()
        due = [
            w
            for w in works
            if w.hold.ticket_id not in payments
            and w.intent is not None
            and w.intent.status == "requires_confirmation"
            and not self._late(w.hold)
        ]
        if gateway is None or len(due) < 2:
            return
        try:
            intents = gateway.confirm_intents([(w.intent.id, w.hold.ticket_id) for w in due])  # type: ignore[union-attr]
        except Exception:
            log.exception("settle: confirming %s intents", len(due))
            return  # each is confirmed (or found confirmed) one by one
        for work, intent in zip(due, intents, strict=True):
            work.intent = intent

    @staticmethod
    def _metadata(work: Work) -> dict[str, str]:
        hold = work.hold
        return {
            "ticket_id": hold.ticket_id,
            "product_id": str(work.product_id),
            "user_id": str(hold.user_id),
        }

    def _create_intent(self, work: Work) -> None:
        hold = work.hold
        with _provider_errors(work):
            work.intent = self.gateway.create_intent(
                hold.ticket_id,
                hold.amount_minor,
                work.currency,
                hold.payment_method,
                self._metadata(work),
            )
            work.provider = self.gateway.name

    def _settle_intent(self, work: Work, payment: Payment | None) -> None:
        """Confirms the ticket's intent if the hold still allows, cancels it if the hold ran
        out while it waited, and takes the outcome from what the provider says."""
        hold = work.hold
        started = time.perf_counter()
        with _provider_errors(work):
            if payment is not None:
                gateway = gateway_for(self.gateways, payment.provider)
                work.provider = payment.provider
                work.intent = gateway.retrieve_intent(payment.intent_id)
            elif work.intent is not None:
                gateway = self.gateway
            else:
                work.outcome, work.reason = "expired", "hold_expired"  # never charged
                return
            intent = work.intent
            if intent.status == "requires_confirmation" and not self._late(hold):
                intent = gateway.confirm_intent(intent.id, hold.ticket_id)
            if _pending(intent) and self._late(hold):
                # Not paid in time: stop the buyer from paying later, then see where it stands.
                intent = gateway.cancel_intent(intent.id)
            work.intent = intent
            work.outcome, work.reason = _outcome_of(intent, self._late(hold))
            PAYMENT_SECONDS.labels(work.provider).observe(time.perf_counter() - started)

    def _store_intents(self, works: list[Work]) -> None:
        store_payments(self.sessions, [self._payment_row(w) for w in works])

    def _payment_row(self, work: Work) -> tuple[str, str, PaymentIntent]:
        return (work.hold.ticket_id, work.provider or self.gateway.name, work.intent)  # type: ignore[return-value]

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
        # Events arrive late and out of order: the intent's state now decides, not the event.
        latest = gateway_for(self.gateways, payment.provider).retrieve_intent(intent_id)
        store_payments(self.sessions, [(order.ticket_id, payment.provider, latest)])
        if latest.status == "requires_action":
            self._await_action(report, product_id, order.ticket_id, latest)
        elif not _pending(latest):
            late = to_ms(order.expires_at) <= self.inventory.clock.now_ms()
            outcome, why = _outcome_of(latest, late)
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

    # --- recording final states and refunds --------------------------------------------------
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


class _provider_errors:
    """Turns a provider's failure during a step into the ticket's outcome."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> bool:
        if error is None:
            return False
        if isinstance(error, PaymentRejected):
            self.work.outcome, self.work.reason = "failed", error.code
        elif isinstance(error, PaymentUnavailable):
            self.work.outcome, self.work.reason = "retry", str(error)
            self.work.provider_down = not isinstance(error, GatewayNotConfigured)
        elif isinstance(error, Exception):  # an unexpected answer is retried, not guessed at
            log.exception("settle: payment for %s", self.work.hold.ticket_id)
            self.work.outcome, self.work.reason = "retry", type(error).__name__
        else:
            return False
        return True


def _pending(intent: PaymentIntent) -> bool:
    return not intent.succeeded and not intent.failed


def _outcome_of(intent: PaymentIntent | None, late: bool) -> tuple[str, str]:
    if intent is None:
        return "expired", "hold_expired"
    if intent.succeeded:
        return "confirmed", ""
    if intent.failed:
        if intent.status == "canceled" and late:
            return "expired", "hold_expired"
        return "failed", intent.failure_code or "payment_failed"
    if late:
        return "expired", "hold_expired"  # still pending at the deadline
    if intent.status == "requires_action":
        return "requires_action", ""
    return "retry", intent.status  # processing: asked again on the next delivery
