"""Settlement's `pay` step: intents created, stored before they are confirmed, confirmed (a batch
at a time when the gateway takes one), and each ticket's outcome read from the provider."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from core.metrics import PAYMENT_SECONDS, PAYMENTS
from core.models import Payment
from core.orders import get_payments, store_payments
from core.payments import BatchGateway, IntentRequest, PaymentIntent, gateway_for
from core.settlement.base import SettlerBase
from core.settlement.work import ENDINGS, Work, outcome_of, pending, provider_errors

log = logging.getLogger(__name__)


class Paying(SettlerBase):
    """Talks to the gateway with no lock and no transaction open."""

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
        with provider_errors(work):
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
        with provider_errors(work):
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
            if pending(intent) and self._late(hold):
                # Not paid in time: stop the buyer from paying later, then see where it stands.
                intent = gateway.cancel_intent(intent.id)
            work.intent = intent
            work.outcome, work.reason = outcome_of(intent, self._late(hold))
            PAYMENT_SECONDS.labels(work.provider).observe(time.perf_counter() - started)

    def _store_intents(self, works: list[Work]) -> None:
        store_payments(self.sessions, [self._payment_row(w) for w in works])

    def _payment_row(self, work: Work) -> tuple[str, str, PaymentIntent]:
        return (work.hold.ticket_id, work.provider or self.gateway.name, work.intent)  # type: ignore[return-value]
