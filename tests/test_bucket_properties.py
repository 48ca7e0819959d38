"""Stateful property test of a product split across buckets, with a per-user limit.

Hypothesis drives a RuleBasedStateMachine against the real Redis and the real database: buyers
buy (some with an Idempotency-Key, some dying between two buckets), cancel, and get refunded;
settlers drain one bucket's stream at a time; the sweep expires holds and ends stale claims; a
bucket's stock key is lost and rebuilt; reconciliation runs; time jumps. After every step no
bucket is oversold, no buyer holds or bought more than the limit across the buckets, and each
buyer's own bucket counts at least the units the buyer has. The teardown drives every ticket to
its end and checks that the counts and the claims come out exact.

Time passes by moving every stored deadline (Redis and SQL alike) into the past, never by
sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from core.catalog import create_product
from core.db import transaction
from core.inventory import Ending, Hold, Inventory
from core.keys import bucket_share, new_ticket_id
from core.locks import locked
from core.models import Order, User
from core.payments.simulated import SimulatedGateway
from core.refunds import RefundDeferred, RefundRefused
from core.settlement import Settler
from core.stock import rebuild_stock, reconcile_product, setup_stock, sweep_claims
from core.tickets import OPEN_STATUSES, OrderStatus
from tests.test_safety_properties import HOLD_SECONDS, LEASE_SECONDS, machine_settings

OPEN = set(OPEN_STATUSES)
METHODS = ["pm_card_visa", "pm_card_chargeDeclined"]


class _DiesBetweenBuckets(Inventory):
    """A web process that dies after the buyer's own bucket answered, before the next one."""

    def _reserve_away(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("died between two buckets")


class _CrossedByTwin(Inventory):
    """A purchase whose twin (the same buyer and Idempotency-Key, another request) runs whole
    after the first one's call to the buyer's own bucket, before its next one."""

    twin: Any = None

    def _reserve_away(self, *args: Any, **kwargs: Any) -> Any:
        twin, self.twin = self.twin, None
        if twin:
            twin()
        return super()._reserve_away(*args, **kwargs)


class SplitSale(RuleBasedStateMachine):
    """One product split across buckets, a per-user limit, a few buyers, and the system's
    steps in any order."""

    tickets = Bundle("tickets")
    rt: Any = None  # the test's Runtime, set before a run

    def __init__(self) -> None:
        super().__init__()
        rt = type(self).rt
        # A batch left unacknowledged is anyone's at the next read.
        fixed = machine_settings(rt.settings, claim_idle_seconds=0)
        self.inventory = Inventory(rt.inventory_redis, fixed)
        self.dying = _DiesBetweenBuckets(rt.inventory_redis, fixed)
        self.crossed = _CrossedByTwin(rt.inventory_redis, fixed)
        self.sessions = rt.sessions
        gateway = SimulatedGateway(rt.redis, fixed.key_prefix)
        self.settler = Settler(self.inventory, self.sessions, {"simulated": gateway}, fixed)
        self.pid = self.initial = self.buckets = self.limit = 0
        self.users: list[int] = []

    @initialize(
        stock=st.integers(2, 7),
        buckets=st.integers(2, 3),
        limit=st.integers(1, 2),
        buyers=st.integers(2, 4),
    )
    def product(self, stock: int, buckets: int, limit: int, buyers: int) -> None:
        with transaction(self.sessions) as session:
            name = f"split {secrets.token_hex(4)}"
            product = create_product(session, name, 1000, "USD", stock, limit, None, None, buckets)
            users = [
                User(username=f"split_{secrets.token_hex(6)}", password_hash="x")
                for _ in range(buyers * buckets)
            ]
            session.add_all(users)
            session.flush()
            # Buyer i's own bucket is i mod buckets in every run: a replay meets the same buckets.
            self.users = []
            for i in range(buyers):
                ids = (u.id for u in users if u.id % buckets == i % buckets)
                self.users.append(next(x for x in ids if x not in self.users))
        setup_stock(self.inventory, product)
        self.pid, self.initial, self.buckets, self.limit = product.id, stock, buckets, limit

    # --- buyers ---------------------------------------------------------------------------------
    @rule(
        target=tickets,
        buyer=st.integers(0, 3),
        quantity=st.integers(1, 2),
        method=st.sampled_from(METHODS),
        key=st.sampled_from(["", "", "k1", "k2"]),
    )
    def reserve(self, buyer: int, quantity: int, method: str, key: str) -> Any:
        user = self.users[buyer % len(self.users)]
        ticket = new_ticket_id(self.pid)
        outcome = self.inventory.reserve(self.pid, user, quantity, ticket, method, key)
        if outcome.result != "reserved" or outcome.ticket_id is None:
            return multiple()
        return outcome.ticket_id

    @rule(
        target=tickets,
        buyer=st.integers(0, 3),
        quantity=st.integers(1, 2),
        key=st.sampled_from(["k1", "k3"]),
    )
    def reserve_twice_at_once(self, buyer: int, quantity: int, key: str) -> Any:
        """Two requests with one Idempotency-Key, the second overtaking the first between two
        buckets."""
        user = self.users[buyer % len(self.users)]
        outcomes = []

        def twin() -> None:
            ticket = new_ticket_id(self.pid)
            outcomes.append(
                self.inventory.reserve(self.pid, user, quantity, ticket, METHODS[0], key)
            )

        self.crossed.twin = twin
        first = new_ticket_id(self.pid)
        outcomes.append(self.crossed.reserve(self.pid, user, quantity, first, METHODS[0], key))
        self.crossed.twin = None
        return multiple(*{o.ticket_id for o in outcomes if o.result == "reserved" and o.ticket_id})

    @rule(buyer=st.integers(0, 3), quantity=st.integers(1, 2))
    def reserve_and_die(self, buyer: int, quantity: int) -> None:
        user = self.users[buyer % len(self.users)]
        with contextlib.suppress(ConnectionError):
            self.dying.reserve(self.pid, user, quantity, new_ticket_id(self.pid), METHODS[0])

    @rule(ticket=tickets)
    def cancel(self, ticket: str) -> None:
        with locked(self.inventory.lock(self.pid, ticket)):
            ending = Ending(ticket, OrderStatus.CANCELLED.value, "cancelled_by_buyer", "reserved")
            self.inventory.finish_holds(self.pid, [ending])

    @rule(pick=st.integers(0, 5))
    def refund(self, pick: int) -> None:
        with self.sessions() as session:
            confirmed = sorted(
                session.scalars(
                    select(Order.ticket_id).where(
                        Order.product_id == self.pid, Order.status == OrderStatus.CONFIRMED.value
                    )
                )
            )
        if confirmed:
            with contextlib.suppress(RefundRefused, RefundDeferred):
                self.settler.refunds.refund_confirmed(confirmed[pick % len(confirmed)])

    # --- workers and the scheduler --------------------------------------------------------------
    @rule(bucket=st.integers(0, 2))
    def settle(self, bucket: int) -> None:
        bucket %= self.buckets
        entries = self.inventory.read_settle_queue(self.pid, "prop", 5, bucket)
        if entries:
            self.settler.settle_batch(self.pid, entries)

    @rule()
    def sweep(self) -> None:
        for bucket in range(self.buckets):
            self.inventory.expire_holds(self.pid, bucket=bucket)
        sweep_claims(self.inventory, self.sessions, self.pid, self.buckets)

    @rule()
    def time_passes(self) -> None:
        """Holds, payment leases and claims all run out."""
        ms = (HOLD_SECONDS + LEASE_SECONDS + 1) * 1000 + 120_000
        redis = self.inventory.redis
        for bucket in range(self.buckets):
            k = self.inventory.keys(self.pid, bucket)
            for ticket, raw in redis.hgetall(k.holds).items():
                redis.hset(k.holds, ticket, json.dumps(json.loads(raw) | {"d": 0}))
            for ticket, score in redis.zrange(k.deadlines, 0, -1, withscores=True):
                redis.zadd(k.deadlines, {ticket: int(score) - ms})
            for ticket, raw in redis.hgetall(k.claims).items():
                redis.hset(k.claims, ticket, json.dumps(json.loads(raw) | {"d": 0}))
        with transaction(self.sessions) as session:
            for order in session.scalars(select(Order).where(Order.product_id == self.pid)):
                order.expires_at = order.expires_at - timedelta(milliseconds=ms)

    @rule(bucket=st.integers(0, 2))
    def stock_key_lost(self, bucket: int) -> None:
        self.inventory.redis.delete(self.inventory.keys(self.pid, bucket % self.buckets).stock)

    @rule()
    def rebuild(self) -> None:
        rebuild_stock(self.inventory, self.sessions, self.pid)

    @rule()
    def reconcile(self) -> None:
        reconcile_product(self.inventory, self.sessions, self.pid)

    # --- reading the state ----------------------------------------------------------------------
    def _holds(self) -> dict[str, Hold]:
        found: dict[str, Hold] = {}
        for bucket in range(self.buckets):
            raw = self.inventory.redis.hgetall(self.inventory.keys(self.pid, bucket).holds)
            found |= {t: Hold.from_json(r) for t, r in raw.items()}
        return found

    def _orders(self) -> dict[str, Order]:
        with self.sessions() as session:
            rows = session.scalars(select(Order).where(Order.product_id == self.pid))
            return {o.ticket_id: o for o in rows}

    def _live_units(self) -> dict[int, int]:
        """Each buyer's units open or confirmed: Redis' word for the tickets it has, SQL's for
        the others."""
        holds, orders = self._holds(), self._orders()
        units: dict[int, int] = dict.fromkeys(self.users, 0)
        for ticket in set(holds) | set(orders):
            hold = holds.get(ticket)
            status = hold.status if hold else orders[ticket].status
            if status in OPEN or status == OrderStatus.CONFIRMED.value:
                record = hold or orders[ticket]
                units[record.user_id] += record.quantity
        return units

    def _counted(self, user: int) -> int:
        k = self.inventory.keys(self.pid, user % self.buckets)
        return int(self.inventory.redis.hget(k.users, str(user)) or 0)

    # --- invariants -----------------------------------------------------------------------------
    @invariant()
    def no_bucket_oversold(self) -> None:
        if not self.pid:
            return
        for bucket in range(self.buckets):
            figures = self.inventory.figures(self.pid, bucket)
            if figures is None:
                continue
            assert figures.balanced, f"bucket {bucket}: {figures}"
            assert min(figures.available, figures.held, figures.sold) >= 0, figures
            assert figures.initial == bucket_share(self.initial, self.buckets, bucket)
        with self.sessions() as session:
            sold = sum(
                session.scalars(
                    select(Order.quantity).where(
                        Order.product_id == self.pid, Order.status == OrderStatus.CONFIRMED.value
                    )
                )
            )
        assert sold <= self.initial, f"SQL confirmed {sold} of {self.initial}"

    @invariant()
    def nobody_over_the_limit_and_every_unit_counted(self) -> None:
        if not self.pid:
            return
        for user, units in self._live_units().items():
            assert units <= self.limit, f"user {user} has {units} units, limit {self.limit}"
            home = self.inventory.keys(self.pid, user % self.buckets)
            if self.inventory.redis.exists(home.stock):
                assert self._counted(user) >= units, (
                    f"user {user}: {units} units, counted {self._counted(user)} in their bucket"
                )

    def teardown(self) -> None:
        """Every ticket driven to its end: then the counts are exact and no claim is left."""
        if not self.pid:
            return
        rebuild_stock(self.inventory, self.sessions, self.pid)
        for _ in range(10):
            self.time_passes()
            self.sweep()
            for bucket in range(self.buckets):
                while entries := self.inventory.read_settle_queue(self.pid, "end", 50, bucket):
                    self.settler.settle_batch(self.pid, entries)
            claims = [self.inventory.open_claims(self.pid, b) for b in range(self.buckets)]
            if not self._holds() and not any(claims):
                break
        assert not self._holds(), f"holds left: {list(self._holds())}"
        for bucket in range(self.buckets):
            claims = self.inventory.open_claims(self.pid, bucket)
            assert claims == {}, f"bucket {bucket} claims left: {claims}"
        for user, units in self._live_units().items():
            assert self._counted(user) == units, (
                f"user {user}: {units} units, counted {self._counted(user)}"
            )
        assert reconcile_product(self.inventory, self.sessions, self.pid).result in (
            "consistent",
            "repaired",
        )


@pytest.mark.timeout(900)
def test_a_split_sale_keeps_stock_and_limits_whatever_the_order_of_steps(rt):  # type: ignore[no-untyped-def]
    SplitSale.rt = rt
    run_state_machine_as_test(
        SplitSale,
        settings=settings(
            max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "40")),
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
