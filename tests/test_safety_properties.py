"""Stateful property test: interleavings of the purchase pipeline's individual steps.

Hypothesis drives a RuleBasedStateMachine against the real Redis and the real database. Each
rule is one step a process of the system takes (a reservation, one phase of a settlement batch,
one read of a reconciliation, one phase of an admin refund, a webhook, an expiry sweep, a lost
stock key, a flushed Redis...), so the steps of different processes interleave the way a slow
worker, a scheduler and an admin acting at the same time would interleave them. Invariants are
checked after every step, and the teardown drives all unfinished work to its end and checks that
Redis, SQL and the payment provider agree.

The adapters below are the only place that knows the system's API: one function per phase.
Time passes by moving every stored deadline (Redis and SQL alike) into the past, never by
sleeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import create_product
from core.config import Settings
from core.db import snapshot as sql_snapshot
from core.db import transaction
from core.inventory import Ending, Hold, Inventory, RebuildView, Settled, Snapshot, now_ms
from core.keys import new_ticket_id
from core.locks import locked
from core.models import Order, Payment, Product, User
from core.orders import confirmed_quantity, get_order, get_payment, transition
from core.payments.simulated import SimulatedGateway
from core.refunds import RefundDeferred, RefundRefused
from core.settlement import SettlementDeferred, Settler, SettleReport, Work
from core.stock import (
    Books,
    RebuildPlan,
    apply_rebuild,
    books_in,
    plan_rebuild,
    rebuild_stock,
    reconcile_product,
    reconcile_step,
    setup_stock,
    tickets_named,
)
from core.tickets import OPEN_STATUSES, OrderStatus
from core.times import to_ms

HOLD_SECONDS = 600
LEASE_SECONDS = 60
OPEN = set(OPEN_STATUSES)
RELEASED = {"failed", "expired", "cancelled"}
METHODS = ["pm_card_visa", "pm_card_chargeDeclined", "pm_card_authenticationRequired"]


# --- adapters: one function per step of the system ------------------------------------------------


def reserve(inventory: Inventory, product_id: int, user: int, quantity: int, method: str) -> str:
    """A buyer's purchase request; the ticket id, or '' when refused."""
    ticket = new_ticket_id(product_id)
    outcome = inventory.reserve(product_id, user, quantity, ticket, method)
    return ticket if outcome.result == "reserved" else ""


def buyer_cancel(inventory: Inventory, product_id: int, ticket: str) -> str:
    """POST /orders/<ticket>/cancel for a hold no payment started on."""
    with locked(inventory.lock(product_id, ticket)):
        ending = Ending(ticket, OrderStatus.CANCELLED.value, "cancelled_by_buyer", "reserved")
        state, _ = inventory.finish_holds(product_id, [ending])[ticket]
    return state


def expiry_sweep(inventory: Inventory, product_id: int) -> int:
    return inventory.expire_holds(product_id)


@dataclass
class Batch:
    """A settlement batch between its phases."""

    tickets: list[str]
    works: list[Work] = field(default_factory=list)
    ending: dict[str, Work] = field(default_factory=dict)
    results: dict[str, tuple[str, Hold | None]] = field(default_factory=dict)
    phase: str = "prepared"  # prepared, paid, finished_in_redis, done

    def shift(self, ms: int) -> None:
        for work in self.works:
            work.hold = _shifted(work.hold, ms)
        self.results = {
            t: (state, _shifted(hold, ms) if hold else None)
            for t, (state, hold) in self.results.items()
        }


def settle_prepare(settler: Settler, product_id: int, tickets: list[str]) -> Batch:
    """Lock, begin (reserved -> processing), record the orders: Settler.prepare."""
    batch = Batch(list(dict.fromkeys(tickets)))
    entries: list[tuple[str | None, str]] = [(None, t) for t in batch.tickets]
    batch.works = settler.prepare(SettleReport(), product_id, "USD", entries)
    return batch


def settle_pay(settler: Settler, product_id: int, batch: Batch) -> None:
    """Talk to the gateway (Settler.pay)."""
    settler.pay(product_id, batch.works)
    batch.phase = "paid"


def settle_finish_in_redis(settler: Settler, product_id: int, batch: Batch) -> None:
    """First half of Settler.finish: await action, or move holds to their outcomes under
    their locks."""
    report = SettleReport()
    for work in batch.works:
        if work.outcome == "requires_action":
            settler._guard(report, settler._await_action_step, work)
        elif work.outcome != "retry":
            batch.ending[work.hold.ticket_id] = work
    inventory = settler.inventory
    tokens = inventory.take_locks(product_id, list(batch.ending))
    try:
        endings = [Ending(t, batch.ending[t].outcome, batch.ending[t].reason) for t in tokens]
        batch.results = inventory.finish_holds(product_id, endings)
    finally:
        inventory.release_locks(product_id, tokens)
    batch.phase = "finished_in_redis"


def settle_record_in_sql(settler: Settler, product_id: int, batch: Batch) -> None:
    """Second half of Settler.finish: SQL follows Redis (and Redis forgets the holds)."""
    report = SettleReport()
    plain: list[tuple[Hold, str | None, str]] = []
    for ticket, (state, hold) in batch.results.items():
        work = batch.ending[ticket]
        paid = work.intent is not None and work.intent.succeeded
        if state == "unavailable":
            continue
        if hold is None:
            if work.outcome == "confirmed":
                settler._guard(report, settler._refund_unless_confirmed, ticket)
            settler.inventory.forget_holds(product_id, [Settled(ticket, work.entry_id)])
        elif hold.status == work.outcome and (work.outcome == "confirmed" or not paid):
            plain.append((hold, work.entry_id, work.intent.status if work.intent else ""))
        else:
            settler._guard(report, settler._record_final, product_id, "USD", hold, work.entry_id)
    settler._record_finals(report, product_id, "USD", plain)
    batch.phase = "done"


def settle_whole_batch(settler: Settler, product_id: int, tickets: list[str]) -> None:
    settler.settle_batch(product_id, [(None, t) for t in dict.fromkeys(tickets)])


def buyer_completes_action(
    gateway: SimulatedGateway, sessions: sessionmaker[Session], ticket: str, success: bool
) -> str:
    """The buyer passes (or fails) 3-D Secure at the provider; the intent id, or '' if the
    ticket's payment is not waiting for that."""
    with sessions() as session:
        payment = get_payment(session, ticket)
    if payment is None or gateway.retrieve_intent(payment.intent_id).status != "requires_action":
        return ""
    gateway.complete_action(payment.intent_id, ticket, success)
    return payment.intent_id


def deliver_webhook(settler: Settler, intent_id: str, success: bool) -> str:
    """POST /payments/webhook: 'retry' where the route answers 503 (the ticket could not be
    finished now, say the stock awaits a rebuild) and the provider delivers the event again."""
    outcome, reason = ("confirmed", "") if success else ("failed", "authentication_failure")
    try:
        return settler.settle_payment_event("simulated", intent_id, outcome, reason)
    except SettlementDeferred:
        return "retry"


@dataclass
class Refund:
    """An admin refund of a confirmed order between its phases (Refunds.refund_confirmed)."""

    ticket: str
    product_id: int
    user_id: int
    quantity: int
    moved: bool = False
    phase: str = "money_back"  # money_back, recorded, done


def refund_money_back(settler: Settler, ticket: str) -> Refund | None:
    """The checks, the ticket marked as returning in Redis, then the money goes back."""
    with settler.sessions() as session:
        order = get_order(session, ticket)
    if order is None or order.status != OrderStatus.CONFIRMED.value:
        return None
    if settler.inventory.get_hold(ticket) is not None:
        return None  # RefundRefused: still being settled
    if not settler.inventory.begin_return(order.product_id, ticket, order.user_id, order.quantity):
        return None  # RefundDeferred: the stock awaits its rebuild
    settler.refunds.refund_owed(ticket)
    return Refund(ticket, order.product_id, order.user_id, order.quantity)


def refund_record(settler: Settler, refund: Refund) -> None:
    with transaction(settler.sessions) as session:
        moved = transition(session, [refund.ticket], OrderStatus.REFUNDED, "cancelled_by_admin")
        refund.moved = moved == 1
    settler.inventory.drop_final(refund.product_id, refund.ticket)
    refund.phase = "recorded"


def refund_unsell(settler: Settler, refund: Refund) -> None:
    """The units go back on sale, once (return_units.lua: only a marked ticket moves)."""
    settler.inventory.return_units(refund.product_id, [refund.ticket])
    refund.phase = "done"


def refund_whole(settler: Settler, ticket: str) -> None:
    with contextlib.suppress(RefundRefused, RefundDeferred):
        settler.refunds.refund_confirmed(ticket)


@dataclass
class Reconciliation:
    """reconcile_product between its reads: the Redis snapshot, the first statement of the SQL
    snapshot (which fixes what it sees), the rest of the SQL reads, the repair."""

    product_id: int
    snapshot: Snapshot
    reads: Any = None  # the SQL snapshot's context, open between phases
    session: Session | None = None
    books: Books | None = None
    phase: str = "snapshot"  # snapshot, read_sold, read_recorded, done

    def shift(self, ms: int) -> None:
        return None

    def close(self) -> None:
        if self.reads is not None:
            self.reads.__exit__(None, None, None)
        self.reads = self.session = None


def reconcile_snapshot(inventory: Inventory, product_id: int) -> Reconciliation | None:
    snapshot = inventory.snapshot(product_id)
    return None if snapshot is None else Reconciliation(product_id, snapshot)


def reconcile_read_sold(sessions: sessionmaker[Session], run: Reconciliation) -> None:
    """The SQL snapshot's first statement: from here on, it sees SQL as it was then."""
    run.reads = sql_snapshot(sessions)
    run.session = run.reads.__enter__()
    assert run.session.get(Product, run.product_id) is not None
    run.phase = "read_sold"
    if run.session.get_bind().dialect.name == "sqlite":
        # SQLite runs every transaction BEGIN IMMEDIATE: nothing commits between the two reads.
        reconcile_read_recorded(run)


def reconcile_read_recorded(run: Reconciliation) -> None:
    """The rest of the SQL reads, in the same snapshot."""
    if run.phase != "read_sold" or run.session is None:
        return
    run.books = books_in(run.session, run.product_id, tickets_named(run.snapshot))
    run.close()
    run.phase = "read_recorded"


def reconcile_repair(inventory: Inventory, run: Reconciliation) -> str:
    """One pass of reconcile_product's decision: consistent, repaired, set right or changed."""
    run.phase = "done"
    assert run.books is not None
    return reconcile_step(inventory, run.product_id, run.snapshot, run.books)


def reconcile_whole(inventory: Inventory, sessions: sessionmaker[Session], product_id: int) -> str:
    return reconcile_product(inventory, sessions, product_id).result


def lose_stock_key(inventory: Inventory, product_id: int) -> None:
    inventory.redis.delete(inventory.keys(product_id).stock)


def flush_product(inventory: Inventory, product_id: int) -> None:
    """Redis loses everything of the product: stock, holds, streams, locks, final states."""
    keys = inventory.keys(product_id)
    doomed = set(keys.all()) | set(inventory.redis.scan_iter(match=f"{keys.tag}:*", count=500))
    inventory.redis.delete(*doomed)


@dataclass
class Rebuild:
    """rebuild_stock between its reads: what survives in Redis, the first statement of the SQL
    snapshot, the rest of the SQL reads, the restore."""

    product_id: int
    view: RebuildView
    now_ms: int
    reads: Any = None
    session: Session | None = None
    plan: RebuildPlan | None = None
    phase: str = "read_redis"  # read_redis, read_sold, read_rest, done

    def shift(self, ms: int) -> None:
        shifted = [_shifted(h, ms) for h in self.view.holds]
        self.view = RebuildView(shifted, self.view.returning, self.view.token)
        if self.plan is not None:
            holds = [_shifted(h, ms) for h in self.plan.holds]
            self.plan = dataclasses.replace(self.plan, holds=holds)

    def close(self) -> None:
        if self.reads is not None:
            self.reads.__exit__(None, None, None)
        self.reads = self.session = None


def rebuild_read_redis(inventory: Inventory, product_id: int) -> Rebuild | None:
    view = inventory.begin_rebuild(product_id)
    return None if view is None else Rebuild(product_id, view, inventory.clock.now_ms())


def rebuild_read_sold(sessions: sessionmaker[Session], run: Rebuild) -> None:
    run.reads = sql_snapshot(sessions)
    run.session = run.reads.__enter__()
    assert run.session.get(Product, run.product_id) is not None
    run.phase = "read_sold"
    if run.session.get_bind().dialect.name == "sqlite":
        rebuild_read_rest(run)


def rebuild_read_rest(run: Rebuild) -> None:
    """The rest of rebuild_stock's reads, in the same snapshot."""
    if run.phase != "read_sold" or run.session is None:
        return
    run.plan = plan_rebuild(run.session, run.product_id, run.view, run.now_ms)
    run.close()
    run.phase = "read_rest"


def rebuild_restore(inventory: Inventory, sessions: sessionmaker[Session], run: Rebuild) -> bool:
    run.phase = "done"
    if run.plan is None:
        return False
    return apply_rebuild(inventory, sessions, run.product_id, run.plan, run.view.token)


def rebuild_whole(inventory: Inventory, sessions: sessionmaker[Session], product_id: int) -> bool:
    return rebuild_stock(inventory, sessions, product_id)


# --- time -------------------------------------------------------------------------------------


def _shifted(hold: Hold, ms: int) -> Hold:
    return dataclasses.replace(hold, deadline_ms=hold.deadline_ms - ms)


def time_passes(inventory: Inventory, sessions: sessionmaker[Session], pid: int, ms: int) -> None:
    """Every deadline of the product moves `ms` into the past: in the holds, in the deadline
    index and in SQL, as if the clock had jumped."""
    keys = inventory.keys(pid)
    redis = inventory.redis
    for ticket, raw in redis.hgetall(keys.holds).items():
        record = json.loads(raw)
        record["d"] = int(record["d"]) - ms
        redis.hset(keys.holds, ticket, json.dumps(record))
    for ticket, score in redis.zrange(keys.deadlines, 0, -1, withscores=True):
        redis.zadd(keys.deadlines, {ticket: int(score) - ms})
    with transaction(sessions) as session:
        for order in session.scalars(select(Order).where(Order.product_id == pid)):
            order.expires_at = order.expires_at - timedelta(milliseconds=ms)


# --- the machine ----------------------------------------------------------------------------------


def machine_settings(settings: Settings, **changes: Any) -> Settings:
    """The settings a state machine's system runs with: its hold and lease lengths (time passes
    by moving deadlines), the simulated provider, no payment latency."""
    return dataclasses.replace(
        settings,
        hold_seconds=HOLD_SECONDS,
        settle_lease_seconds=LEASE_SECONDS,
        payment_latency_ms=0,
        payment_gateway="simulated",
        **changes,
    )


class PurchasePipeline(RuleBasedStateMachine):
    """One product, a few buyers, and the system's steps in any order."""

    tickets = Bundle("tickets")
    prepared = Bundle("prepared")
    paid = Bundle("paid")
    finished = Bundle("finished_in_redis")
    refunds_paid = Bundle("refunds_paid")
    refunds_recorded = Bundle("refunds_recorded")
    snapshots = Bundle("reconcile_snapshots")
    sold_reads = Bundle("reconcile_sold_reads")
    recorded_reads = Bundle("reconcile_recorded_reads")
    rebuild_reads = Bundle("rebuild_redis_reads")
    rebuild_sold_reads = Bundle("rebuild_sold_reads")
    rebuild_rest_reads = Bundle("rebuild_rest_reads")
    webhooks = Bundle("webhooks")

    rt: Any = None  # the test's Runtime, set before a run

    def __init__(self) -> None:
        super().__init__()
        rt = type(self).rt
        self.rt = rt
        fixed = machine_settings(rt.settings)
        self.gateway = SimulatedGateway(rt.redis, fixed.key_prefix)
        self.inventory = Inventory(rt.inventory_redis, fixed)
        self.sessions = rt.sessions
        self.settler = Settler(self.inventory, self.sessions, {"simulated": self.gateway}, fixed)
        self.pid = 0
        self.initial = 0
        self.limit = 0
        self.users: list[int] = []
        self.known: list[str] = []
        self.inflight: list[Any] = []  # batches, refunds, reconciliations, rebuilds: in order
        self.pending_webhooks: list[tuple[str, str, bool]] = []
        self.flushed = False
        self.stale: set[str] = set()  # tickets whose Redis state a flush lost
        self.broken = False

    # --- set-up ---------------------------------------------------------------------------------
    @initialize(
        target=tickets,
        stock=st.integers(1, 4),
        limit=st.integers(1, 2),
        buyers=st.integers(2, 3),
        orders=st.lists(
            st.tuples(st.integers(0, 2), st.integers(1, 2), st.sampled_from(METHODS)), max_size=3
        ),
    )
    def product(
        self, stock: int, limit: int, buyers: int, orders: list[tuple[int, int, str]]
    ) -> Any:
        """A fresh product and buyers, and the first reservations, so every run has work."""
        with transaction(self.sessions) as session:
            name = f"prop {secrets.token_hex(4)}"
            product = create_product(session, name, 1000, "USD", stock, limit, None, None)
            users = [
                User(username=f"prop_{secrets.token_hex(6)}", password_hash="x")
                for _ in range(buyers)
            ]
            session.add_all(users)
            session.flush()
            self.users = [u.id for u in users]
        setup_stock(self.inventory, product)
        self.pid, self.initial, self.limit = product.id, stock, limit
        placed = [self.reserve(buyer, quantity, method) for buyer, quantity, method in orders]
        return multiple(*(t for t in placed if isinstance(t, str)))

    # --- buyers ---------------------------------------------------------------------------------
    @rule(
        target=tickets,
        buyer=st.integers(0, 2),
        quantity=st.integers(1, 2),
        method=st.sampled_from(METHODS),
    )
    def reserve(self, buyer: int, quantity: int, method: str) -> Any:
        user = self.users[buyer % len(self.users)]
        ticket = reserve(self.inventory, self.pid, user, quantity, method)
        if not ticket:
            return multiple()
        self.known.append(ticket)
        return ticket

    @rule(ticket=tickets)
    def cancel(self, ticket: str) -> None:
        buyer_cancel(self.inventory, self.pid, ticket)

    @rule(target=webhooks, ticket=tickets, success=st.booleans())
    def buyer_authenticates(self, ticket: str, success: bool) -> Any:
        intent_id = buyer_completes_action(self.gateway, self.sessions, ticket, success)
        if not intent_id:
            return multiple()
        self.pending_webhooks.append((ticket, intent_id, success))
        return (ticket, intent_id, success)

    @rule(event=consumes(webhooks))
    def webhook(self, event: tuple[str, str, bool]) -> None:
        self._deliver(event)

    def _deliver(self, event: tuple[str, str, bool]) -> None:
        if deliver_webhook(self.settler, event[1], event[2]) != "retry":
            self.pending_webhooks.remove(event)

    # --- settlement -----------------------------------------------------------------------------
    @rule(target=prepared, batch=st.lists(tickets, min_size=1, max_size=3))
    def prepare(self, batch: list[str]) -> Any:
        run = settle_prepare(self.settler, self.pid, batch)
        if not run.works:
            return multiple()
        self.inflight.append(run)
        return run

    @rule(target=paid, batch=consumes(prepared))
    def pay(self, batch: Batch) -> Batch:
        self._pay(batch)
        return batch

    def _pay(self, batch: Batch) -> None:
        late = {
            w.hold.ticket_id: self._intent_status(w.hold.ticket_id)
            for w in batch.works
            if self._past_deadline(w.hold.ticket_id)
        }
        settle_pay(self.settler, self.pid, batch)
        for ticket, before in late.items():
            after = self._intent_status(ticket)
            assert after != "succeeded" or before == "succeeded", (
                f"{ticket} was charged after its deadline (intent {before} -> {after})"
            )
            assert after not in ("requires_action", "requires_confirmation"), (
                f"{ticket}: a payment past its deadline is left open ({after}), the buyer can "
                "still pay"
            )

    @rule(target=finished, batch=consumes(paid))
    def finish_in_redis(self, batch: Batch) -> Batch:
        settle_finish_in_redis(self.settler, self.pid, batch)
        return batch

    @rule(batch=consumes(finished))
    def record_in_sql(self, batch: Batch) -> None:
        settle_record_in_sql(self.settler, self.pid, batch)
        self.inflight.remove(batch)

    @rule(batch=st.lists(tickets, min_size=1, max_size=3))
    def settle_whole(self, batch: list[str]) -> None:
        settle_whole_batch(self.settler, self.pid, batch)

    # --- admin refunds --------------------------------------------------------------------------
    def _confirmed_order(self, pick: int) -> str:
        """An admin picks one of the confirmed orders of the product (by position)."""
        with self.sessions() as session:
            query = select(Order.ticket_id).where(
                Order.product_id == self.pid, Order.status == OrderStatus.CONFIRMED.value
            )
            confirmed = sorted(session.scalars(query))
        return confirmed[pick % len(confirmed)] if confirmed else ""

    @rule(target=refunds_paid, pick=st.integers(0, 3))
    def refund_money(self, pick: int) -> Any:
        ticket = self._confirmed_order(pick)
        refund = refund_money_back(self.settler, ticket) if ticket else None
        if refund is None:
            return multiple()
        self.inflight.append(refund)
        return refund

    @rule(target=refunds_recorded, refund=consumes(refunds_paid))
    def refund_in_sql(self, refund: Refund) -> Refund:
        refund_record(self.settler, refund)
        return refund

    @rule(refund=consumes(refunds_recorded))
    def refund_units(self, refund: Refund) -> None:
        refund_unsell(self.settler, refund)
        self.inflight.remove(refund)

    @rule(pick=st.integers(0, 3))
    def refund(self, pick: int) -> None:
        ticket = self._confirmed_order(pick)
        if ticket:
            refund_whole(self.settler, ticket)

    # --- maintenance ----------------------------------------------------------------------------
    @rule()
    def sweep(self) -> None:
        expiry_sweep(self.inventory, self.pid)

    @rule(what=st.sampled_from(["leases", "holds"]))
    def time_passes(self, what: str) -> None:
        seconds = LEASE_SECONDS + 1 if what == "leases" else HOLD_SECONDS + LEASE_SECONDS + 1
        self._advance(seconds * 1000)

    def _advance(self, ms: int) -> None:
        time_passes(self.inventory, self.sessions, self.pid, ms)
        for run in self.inflight:
            if hasattr(run, "shift"):
                run.shift(ms)

    @rule(target=snapshots)
    def reconcile_a_snapshot(self) -> Any:
        run = reconcile_snapshot(self.inventory, self.pid)
        if run is None:
            return multiple()
        self.inflight.append(run)
        return run

    def _few_sessions_open(self) -> bool:
        """Reads kept open across steps hold pooled connections: two at a time is plenty."""
        return sum(getattr(r, "session", None) is not None for r in self.inflight) < 2

    @precondition(lambda self: self._few_sessions_open())
    @rule(target=sold_reads, run=consumes(snapshots))
    def reconcile_b_sold(self, run: Reconciliation) -> Reconciliation:
        reconcile_read_sold(self.sessions, run)
        return run

    @rule(target=recorded_reads, run=consumes(sold_reads))
    def reconcile_c_recorded(self, run: Reconciliation) -> Reconciliation:
        reconcile_read_recorded(run)
        return run

    @rule(run=consumes(recorded_reads))
    def reconcile_d_repair(self, run: Reconciliation) -> None:
        reconcile_repair(self.inventory, run)
        self.inflight.remove(run)

    @rule()
    def reconcile(self) -> None:
        reconcile_whole(self.inventory, self.sessions, self.pid)

    # --- losing Redis state ---------------------------------------------------------------------
    @rule()
    def stock_key_lost(self) -> None:
        lose_stock_key(self.inventory, self.pid)

    @rule()
    def redis_flushed(self) -> None:
        holds = self._redis_holds()
        sql = self._sql_orders()
        for ticket, hold in holds.items():
            order = sql.get(ticket)
            if order is not None and order.status in OPEN and hold.status not in OPEN:
                self.stale.add(ticket)  # Redis settled it; SQL has not heard yet
        flush_product(self.inventory, self.pid)
        self.flushed = True

    @rule(target=rebuild_reads)
    def rebuild_a_redis(self) -> Any:
        if self.inventory.figures(self.pid) is not None:
            return multiple()
        run = rebuild_read_redis(self.inventory, self.pid)
        if run is None:  # another rebuild holds the lease
            return multiple()
        self.inflight.append(run)
        return run

    @precondition(lambda self: self._few_sessions_open())
    @rule(target=rebuild_sold_reads, run=consumes(rebuild_reads))
    def rebuild_b_sold(self, run: Rebuild) -> Rebuild:
        rebuild_read_sold(self.sessions, run)
        return run

    @rule(target=rebuild_rest_reads, run=consumes(rebuild_sold_reads))
    def rebuild_c_rest(self, run: Rebuild) -> Rebuild:
        rebuild_read_rest(run)
        return run

    @rule(run=consumes(rebuild_rest_reads))
    def rebuild_d_restore(self, run: Rebuild) -> None:
        rebuild_restore(self.inventory, self.sessions, run)
        self.inflight.remove(run)

    @rule()
    def rebuild(self) -> None:
        rebuild_whole(self.inventory, self.sessions, self.pid)

    # --- reading the state ----------------------------------------------------------------------
    def _redis_holds(self) -> dict[str, Hold]:
        raw = self.inventory.redis.hgetall(self.inventory.keys(self.pid).holds)
        return {t: Hold.from_json(r) for t, r in raw.items()}

    def _sql_orders(self) -> dict[str, Order]:
        with self.sessions() as session:
            rows = session.scalars(select(Order).where(Order.product_id == self.pid))
            return {o.ticket_id: o for o in rows}

    def _payments(self) -> dict[str, Payment]:
        with self.sessions() as session:
            rows = session.scalars(
                select(Payment).join(Order, Order.ticket_id == Payment.ticket_id)
                .where(Order.product_id == self.pid)
            )  # fmt: skip
            return {p.ticket_id: p for p in rows}

    def _intent_status(self, ticket: str) -> str:
        with self.sessions() as session:
            payment = get_payment(session, ticket)
        if payment is None:
            return ""
        return self.gateway.retrieve_intent(payment.intent_id).status

    def _past_deadline(self, ticket: str) -> bool:
        with self.sessions() as session:
            order = get_order(session, ticket)
        return order is not None and to_ms(order.expires_at) <= now_ms()

    def _final_state(self, ticket: str) -> str | None:
        raw = self.inventory.redis.get(self.inventory.keys(self.pid).final(ticket))
        return Hold.from_json(raw).status if raw else None

    def _busy_tickets(self) -> set[str]:
        busy = {t for t, _, _ in self.pending_webhooks}
        for run in self.inflight:
            if isinstance(run, Batch):
                busy |= set(run.tickets)
            elif isinstance(run, Refund):
                busy.add(run.ticket)
        return busy

    def _refunds_awaiting_unsell(self) -> list[Refund]:
        """Refunds SQL recorded whose units Redis still counts (marked, not yet returned)."""
        marks = self.inventory.redis.hgetall(self.inventory.keys(self.pid).returns)
        if not marks:
            return []
        sql = self._sql_orders()
        waiting: list[Refund] = []
        for ticket, raw in marks.items():
            order = sql.get(ticket)
            if order is not None and order.status != OrderStatus.CONFIRMED.value:
                mark = json.loads(raw)
                waiting.append(Refund(ticket, self.pid, int(mark["u"]), int(mark["q"])))
        return waiting

    # --- invariants -----------------------------------------------------------------------------
    def _guarded(self, check) -> None:  # type: ignore[no-untyped-def]
        if self.pid and not self.broken:
            try:
                check()
            except BaseException:
                self.broken = True
                raise

    @invariant()
    def sql_never_oversells(self) -> None:
        def check() -> None:
            with self.sessions() as session:
                sold = confirmed_quantity(session, self.pid)
            assert sold <= self.initial, f"SQL confirmed {sold} units of {self.initial}"

        self._guarded(check)

    @invariant()
    def redis_stock_balanced(self) -> None:
        def check() -> None:
            figures = self.inventory.figures(self.pid)
            if figures is None:
                return
            holds = self._redis_holds()
            slack = sum(
                h.quantity for t, h in holds.items() if t in self.stale and h.status in OPEN
            )
            assert figures.balanced, f"available + held + sold != initial: {figures}"
            assert figures.available >= -slack and figures.held >= 0 and figures.sold >= 0, (
                f"negative stock figure: {figures}"
            )
            assert figures.initial == self.initial, f"initial changed: {figures}"

        self._guarded(check)

    @invariant()
    def nobody_over_the_limit(self) -> None:
        def check() -> None:
            holds, sql = self._redis_holds(), self._sql_orders()
            counted: dict[int, int] = {}
            confirmed: dict[int, int] = {}
            for ticket in set(holds) | set(sql):
                if ticket in self.stale:
                    continue
                hold = holds.get(ticket)
                status = hold.status if hold else sql[ticket].status
                user = hold.user_id if hold else sql[ticket].user_id
                quantity = hold.quantity if hold else sql[ticket].quantity
                if status in OPEN or status == "confirmed":
                    counted[user] = counted.get(user, 0) + quantity
                if status == "confirmed" or (ticket in sql and sql[ticket].status == "confirmed"):
                    confirmed[user] = confirmed.get(user, 0) + quantity
            for user, units in confirmed.items():
                assert units <= self.limit, f"user {user} bought {units}, limit {self.limit}"
            for user, units in counted.items():
                assert units <= self.limit, (
                    f"user {user} holds or bought {units} units, limit {self.limit}"
                )

        self._guarded(check)

    @invariant()
    def one_terminal_state_per_ticket(self) -> None:
        def check() -> None:
            holds, sql = self._redis_holds(), self._sql_orders()
            for ticket, order in sql.items():
                if ticket in self.stale or order.status in OPEN:
                    continue
                hold = holds.get(ticket)
                redis_state = hold.status if hold else self._final_state(ticket)
                if redis_state is None or redis_state in OPEN:
                    continue
                clash = (redis_state == "confirmed" and order.status in RELEASED) or (
                    redis_state in RELEASED and order.status == "confirmed"
                )
                assert not clash, f"{ticket}: Redis {redis_state}, SQL {order.status}"

        self._guarded(check)

    @invariant()
    def open_holds_keep_their_deadline(self) -> None:
        def check() -> None:
            sql = self._sql_orders()
            for ticket, hold in self._redis_holds().items():
                order = sql.get(ticket)
                if order is None or hold.status not in OPEN:
                    continue
                assert hold.deadline_ms == to_ms(order.expires_at), (
                    f"{ticket} ({hold.status}): deadline in Redis {hold.deadline_ms}, "
                    f"in SQL {to_ms(order.expires_at)} (now {now_ms()})"
                )

        self._guarded(check)

    @invariant()
    def settled_payments_match_orders(self) -> None:
        def check() -> None:
            holds, busy = self._redis_holds(), self._busy_tickets()
            sql = self._sql_orders()
            for ticket, payment in self._payments().items():
                order = sql[ticket]
                if ticket in holds or ticket in busy or order.status in OPEN:
                    continue
                self._check_payment(order, payment)

        self._guarded(check)

    def _check_payment(self, order: Order, payment: Payment | None) -> None:
        ticket = order.ticket_id
        charges = self.gateway.charges(ticket)
        assert charges <= 1, f"{ticket} charged {charges} times"
        if payment is None:
            assert order.status != "confirmed", f"{ticket} confirmed without a payment"
            return
        intent = self.gateway.retrieve_intent(payment.intent_id)
        refunded = intent.amount_refunded_minor == intent.amount_minor
        if intent.succeeded:
            assert (
                order.status == "confirmed" and intent.amount_refunded_minor == 0
            ) or refunded, (
                f"{ticket}: paid {intent.amount_minor}, refunded {intent.amount_refunded_minor}, "
                f"order {order.status}"
            )
        else:
            assert order.status != "confirmed", f"{ticket} confirmed, intent {intent.status}"

    @invariant()
    def redis_accounts_for_every_unit(self) -> None:
        """Exact bookkeeping while nothing was flushed: sold, held and per-user counts follow
        the holds, SQL and the refunds in flight."""

        def check() -> None:
            figures = self.inventory.figures(self.pid)
            if figures is None or self.flushed:
                return
            holds, sql = self._redis_holds(), self._sql_orders()
            unsold = self._refunds_awaiting_unsell()
            sold = sum(h.quantity for h in holds.values() if h.status == "confirmed")
            sold += sum(
                o.quantity for t, o in sql.items() if t not in holds and o.status == "confirmed"
            )
            sold += sum(r.quantity for r in unsold)
            held = sum(h.quantity for h in holds.values() if h.status in OPEN)
            assert figures.sold == sold, (
                f"Redis sold {figures.sold}, confirmed units {sold} (SQL, Redis, refunds)"
            )
            assert figures.held == held, f"Redis held {figures.held}, open holds {held}"
            users: dict[str, int] = {}
            for ticket in set(holds) | set(sql):
                hold = holds.get(ticket)
                status = hold.status if hold else sql[ticket].status
                if status in OPEN or status == "confirmed":
                    user = str(hold.user_id if hold else sql[ticket].user_id)
                    users[user] = users.get(user, 0) + (hold or sql[ticket]).quantity
            for r in unsold:
                users[str(r.user_id)] = users.get(str(r.user_id), 0) + r.quantity
            counts = self.inventory.redis.hgetall(self.inventory.keys(self.pid).users)
            assert {u: int(q) for u, q in counts.items()} == users, (
                f"per-user counts in Redis {counts}, held or bought {users}"
            )

        self._guarded(check)

    # --- the end --------------------------------------------------------------------------------
    def teardown(self) -> None:
        try:
            # Only after a clean run: a step that raised leaves its exception to be reported.
            if self.pid and not self.broken and sys.exc_info()[0] is None:
                self._drain()
                self._final_agreement()
        finally:
            for run in self.inflight:
                if hasattr(run, "close"):
                    run.close()

    def _drain(self) -> None:
        """Every unfinished step runs to its end, time runs out for every hold, and the
        settlers, the sweep and reconciliation do their work."""
        for run in list(self.inflight):
            if isinstance(run, Batch):
                if run.phase == "prepared":
                    self._pay(run)
                if run.phase == "paid":
                    settle_finish_in_redis(self.settler, self.pid, run)
                settle_record_in_sql(self.settler, self.pid, run)
            elif isinstance(run, Refund):
                if run.phase == "money_back":
                    refund_record(self.settler, run)
                refund_unsell(self.settler, run)
            elif isinstance(run, Reconciliation):
                if run.phase == "snapshot":
                    reconcile_read_sold(self.sessions, run)
                reconcile_read_recorded(run)
                reconcile_repair(self.inventory, run)
            elif isinstance(run, Rebuild):
                if run.phase == "read_redis":
                    rebuild_read_sold(self.sessions, run)
                rebuild_read_rest(run)
                rebuild_restore(self.inventory, self.sessions, run)
            self.inflight.remove(run)
            self._check_all()
        if self.inventory.figures(self.pid) is None:
            rebuild_whole(self.inventory, self.sessions, self.pid)
        for event in list(self.pending_webhooks):
            self._deliver(event)
            self._check_all()
        self._advance((HOLD_SECONDS + LEASE_SECONDS + 1) * 1000)
        for _ in range(5):
            expiry_sweep(self.inventory, self.pid)
            left = list(self._redis_holds())
            if not left:
                break
            settle_whole_batch(self.settler, self.pid, left)
            self._check_all()
        if self.flushed:  # lost Redis state is repaired from SQL before comparing
            reconcile_whole(self.inventory, self.sessions, self.pid)

    def _check_all(self) -> None:
        self.sql_never_oversells()
        self.redis_stock_balanced()
        self.nobody_over_the_limit()
        self.one_terminal_state_per_ticket()
        self.redis_accounts_for_every_unit()

    def _final_agreement(self) -> None:
        holds, sql = self._redis_holds(), self._sql_orders()
        assert not holds, f"holds left in Redis after settling: {sorted(holds)}"
        stuck = sorted(t for t, o in sql.items() if o.status in OPEN)
        assert not stuck, f"orders left open in SQL: {stuck}"
        figures = self.inventory.figures(self.pid)
        assert figures is not None
        sold = sum(o.quantity for o in sql.values() if o.status == "confirmed")
        assert sold <= self.initial, f"SQL confirmed {sold} units of {self.initial}"
        assert (figures.sold, figures.held, figures.available) == (sold, 0, self.initial - sold), (
            f"Redis {figures} after settling, SQL confirmed {sold}"
        )
        payments = self._payments()
        for ticket, order in sql.items():
            self._check_payment(order, payments.get(ticket))
        outcome = reconcile_whole(self.inventory, self.sessions, self.pid)
        assert outcome == "consistent", f"reconciliation after settling: {outcome}"


class RepairRaces(PurchasePipeline):
    """The same machine without lost Redis state, time, buyers' cancels or 3-D Secure answers:
    settlement, refunds and reconciliation in its phases, so that their interleavings come up
    far more often."""

    buyer_authenticates = webhook = refund = cancel = sweep = time_passes = None  # type: ignore[assignment]
    stock_key_lost = redis_flushed = rebuild = None  # type: ignore[assignment]
    rebuild_a_redis = rebuild_b_sold = rebuild_c_rest = rebuild_d_restore = None  # type: ignore[assignment]


# --- the tests ------------------------------------------------------------------------------------


def _run(rt, machine: type[PurchasePipeline], examples: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    machine.rt = rt
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def _examples() -> int:
    return int(os.environ.get("PROPERTY_EXAMPLES", "2000"))


# The long exploration takes tens of minutes: `make test` runs the small budget above, and this
# one runs when PROPERTY_EXAMPLES says how many examples (docs/RELIABILITY.md has the command).
at_length = pytest.mark.skipif(
    not os.environ.get("PROPERTY_EXAMPLES"), reason="PROPERTY_EXAMPLES=<n> runs it"
)


# A failing run shrinks its counterexample for up to five minutes before it reports.
@pytest.mark.timeout(900)
def test_interleaved_steps_keep_stock_limits_and_payments_safe(rt):  # type: ignore[no-untyped-def]
    _run(rt, PurchasePipeline, examples=25, steps=30)


@pytest.mark.timeout(900)
def test_settlement_refunds_and_reconciliation_interleaved(rt):  # type: ignore[no-untyped-def]
    _run(rt, RepairRaces, examples=25, steps=30)


@pytest.mark.slow
@at_length
@pytest.mark.timeout(7200)
def test_interleaved_steps_at_length(rt):  # type: ignore[no-untyped-def]
    _run(rt, PurchasePipeline, examples=_examples(), steps=40)


@pytest.mark.slow
@at_length
@pytest.mark.timeout(7200)
def test_settlement_refunds_and_reconciliation_at_length(rt):  # type: ignore[no-untyped-def]
    _run(rt, RepairRaces, examples=_examples(), steps=40)


# --- the interleavings of the review, replayed through the same rules -----------------------------


def _machine(rt, stock: int, limit: int, orders: list[tuple[int, int, str]]):  # type: ignore[no-untyped-def]
    PurchasePipeline.rt = rt
    machine = PurchasePipeline()
    tickets = machine.product(stock=stock, limit=limit, buyers=2, orders=orders).values
    return machine, list(tickets)


def _closed(machine: PurchasePipeline) -> None:
    machine.broken = True  # nothing left to drain: only close what is open
    machine.teardown()


def test_replay_settler_commit_between_the_reconciliation_reads(rt):  # type: ignore[no-untyped-def]
    machine, [ticket] = _machine(rt, 1, 1, [(0, 1, "pm_card_visa")])
    try:
        batch = machine.prepare([ticket])
        machine.pay(batch)
        machine.finish_in_redis(batch)
        run = machine.reconcile_a_snapshot()
        machine.reconcile_b_sold(run)
        machine.record_in_sql(batch)
        machine.reconcile_c_recorded(run)
        machine.reconcile_d_repair(run)
        second = machine.reserve(buyer=1, quantity=1, method="pm_card_visa")
        machine.settle_whole([second] if isinstance(second, str) else [])
        machine.sql_never_oversells()
    finally:
        _closed(machine)


def test_replay_reconciliation_between_refund_and_unsell(rt):  # type: ignore[no-untyped-def]
    machine, [ticket] = _machine(rt, 1, 1, [(0, 1, "pm_card_visa")])
    try:
        machine.settle_whole([ticket])
        refund = machine.refund_money(pick=0)
        machine.refund_in_sql(refund)
        machine.reconcile()
        machine.refund_units(refund)
        machine.redis_stock_balanced()
    finally:
        _closed(machine)


def test_replay_rebuild_with_a_surviving_3ds_hold(rt):  # type: ignore[no-untyped-def]
    machine, [ticket] = _machine(rt, 2, 1, [(0, 1, "pm_card_authenticationRequired")])
    try:
        machine.settle_whole([ticket])
        machine.stock_key_lost()
        machine.rebuild()
        machine.reserve(buyer=0, quantity=1, method="pm_card_visa")
        machine.nobody_over_the_limit()
    finally:
        _closed(machine)


def test_replay_rebuilt_hold_keeps_its_deadline(rt):  # type: ignore[no-untyped-def]
    machine, [ticket] = _machine(rt, 1, 1, [(0, 1, "pm_card_authenticationRequired")])
    try:
        machine.settle_whole([ticket])
        machine.time_passes(what="holds")
        machine.redis_flushed()
        machine.rebuild()
        machine.sweep()
        event = machine.buyer_authenticates(ticket=ticket, success=True)
        machine.webhook(event)
        with rt.sessions() as session:
            order = get_order(session, ticket)
        assert order is not None and order.status != "confirmed", (
            "paid after its deadline, swept, and still confirmed"
        )
    finally:
        _closed(machine)
