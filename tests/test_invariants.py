"""Invariants of the purchase pipeline, driven step by step against the real Redis and database.

Interleavings are built by calling the settler's own steps in the order a crash or a race would
run them. `fast` settings use fractional seconds so deadlines and leases pass within a test.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from sqlalchemy import select

from core.inventory import Ending, Inventory, now_ms
from core.keys import new_ticket_id
from core.locks import locked
from core.models import Order
from core.orders import confirmed_quantity, counted_orders, get_order, get_payment
from core.payments.simulated import SimulatedGateway
from core.settlement import Settler, SettleReport
from core.stock import rebuild_stock, reconcile_product
from core.tickets import OPEN_STATUSES
from tests.helpers import buyer_ids, stocked_product
from tests.servers import wait_until


def cancel_ending(ticket: str) -> Ending:
    return Ending(ticket, "cancelled", "buyer", "reserved")


def _fast(rt, gateway=None):  # type: ignore[no-untyped-def]
    fast = dataclasses.replace(rt.settings, hold_seconds=0.2, settle_lease_seconds=0.2)
    inventory = Inventory(rt.inventory_redis, fast)
    gateways = {"simulated": gateway} if gateway else rt.gateways
    return inventory, Settler(inventory, rt.sessions, gateways, fast)


def _order_and_payment(rt, ticket: str):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return get_order(session, ticket), get_payment(session, ticket)


def _crash_after_finish_hold(rt, product_id: int, ticket: str):  # type: ignore[no-untyped-def]
    """A settler's prepare, pay and finish_hold; it dies before writing the outcome to SQL."""
    report = SettleReport()
    work = rt.settler.prepare(report, product_id, "USD", [(None, ticket)])[0]
    rt.settler.pay(work.product_id, [work])
    ending = Ending(ticket, work.outcome, work.reason)
    state, hold = rt.inventory.finish_holds(product_id, [ending])[ticket]
    assert state == "ok"
    return report, hold


class _PausingGateway(SimulatedGateway):
    """The simulated gateway, running `before_confirm` once just before a confirm call."""

    before_confirm = None

    def confirm_intent(self, intent_id, ticket_id):  # type: ignore[no-untyped-def]
        hook, self.before_confirm = self.before_confirm, None
        if hook:
            hook()
        return super().confirm_intent(intent_id, ticket_id)


# --- confirmed bugs (these fail today) ------------------------------------------------------------


def test_requires_action_payment_past_its_deadline_reaches_a_terminal_state(rt):
    product_id, [user] = stocked_product(rt, stock=2), buyer_ids(rt, 1)
    inventory, settler = _fast(rt)
    ticket = new_ticket_id(product_id)
    method = "pm_card_authenticationRequired"  # 3-D Secure the buyer never completes
    assert inventory.reserve(product_id, user, 1, ticket, method).result == "reserved"
    assert settler.settle_batch(product_id, [(None, ticket)]).settled == {"requires_action": 1}
    assert _order_and_payment(rt, ticket)[0].status == "requires_action"
    deadline = inventory.get_hold(ticket).deadline_ms
    wait_until(lambda: now_ms() > deadline + 300, 5, "the hold's deadline and lease to pass")
    for _ in range(3):  # redeliveries (XAUTOCLAIM) and sweeps, as production runs them
        settler.settle_batch(product_id, [(None, ticket)])
        inventory.expire_holds(product_id)
    hold = inventory.get_hold(ticket)
    assert hold is None or hold.status not in OPEN_STATUSES, (
        "the hold is leased again on every redelivery"
    )
    assert inventory.figures(product_id).held == 0
    order, payment = _order_and_payment(rt, ticket)
    assert (order.status, payment.status) == ("expired", "canceled")


def test_rebuild_while_a_released_hold_awaits_sql_keeps_per_user_counts(rt):
    product_id, [user] = stocked_product(rt, stock=3, max_per_user=1), buyer_ids(rt, 1)
    keys = rt.inventory.keys(product_id)
    ticket = new_ticket_id(product_id)
    rt.inventory.reserve(product_id, user, 1, ticket, "pm_card_chargeDeclined")
    _crash_after_finish_hold(rt, product_id, ticket)  # Redis: failed; SQL: processing
    rt.inventory_redis.delete(keys.stock)
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    rt.settler.settle_batch(product_id, [(None, ticket)])  # the redelivery records 'failed'
    assert _order_and_payment(rt, ticket)[0].status == "failed"
    assert rt.inventory_redis.hget(keys.users, str(user)) is None, "rebuild counted a released hold"
    again = rt.inventory.reserve(product_id, user, 1, new_ticket_id(product_id), "pm_card_visa")
    assert again.result == "reserved"


def test_payment_succeeding_after_another_settler_recorded_expiry_is_refunded(rt):
    product_id, [user] = stocked_product(rt, stock=2), buyer_ids(rt, 1)
    gateway = _PausingGateway(rt.redis, rt.settings.key_prefix)
    inventory, slow = _fast(rt, gateway)
    ticket = new_ticket_id(product_id)
    inventory.reserve(product_id, user, 1, ticket, "pm_card_visa")

    def meanwhile() -> None:  # the confirm call is slow: the lease runs out, then a redelivery
        wait_until(lambda: inventory.expire_holds(product_id), 5, "the lease to run out")
        assert rt.settler.settle_batch(product_id, [(None, ticket)]).settled == {"expired": 1}

    gateway.before_confirm = meanwhile
    slow.settle_batch(product_id, [(None, ticket)])
    order, payment = _order_and_payment(rt, ticket)
    intent = rt.gateway.retrieve_intent(payment.intent_id)
    assert intent.succeeded and rt.gateway.charges(ticket) == 1
    assert order.status == "confirmed" or intent.amount_refunded_minor == intent.amount_minor, (
        f"order {order.status}, charged {intent.amount_minor}, refunded 0"
    )


def test_rebuild_racing_a_settler_does_not_resurrect_a_settled_hold(rt):
    product_id, [user] = stocked_product(rt, stock=5), buyer_ids(rt, 1)
    ticket = new_ticket_id(product_id)
    rt.inventory.reserve(product_id, user, 1, ticket, "pm_card_visa")
    report, hold = _crash_after_finish_hold(rt, product_id, ticket)  # stalls, not dead
    rt.inventory_redis.delete(rt.inventory.keys(product_id).stock)

    def sessions_then_settler_resumes():  # type: ignore[no-untyped-def]
        session = rt.sessions()  # rebuild reads SQL: the order is still 'processing'
        close = session.close

        def close_then_settler_resumes() -> None:
            close()
            rt.settler._record_final(report, product_id, "USD", hold, None)  # SQL, then forget

        session.close = close_then_settler_resumes  # type: ignore[method-assign]
        return session

    assert rebuild_stock(rt.inventory, sessions_then_settler_resumes, product_id)
    rt.settler.settle_batch(product_id, [(None, ticket)])
    figures = rt.inventory.figures(product_id)
    with rt.sessions() as session:
        sold_in_db = confirmed_quantity(session, product_id)
    assert sold_in_db == 1 and rt.gateway.charges(ticket) == 1
    assert (figures.available, figures.sold) == (4, 1), f"{figures}: the unit counted twice"


# --- properties (pass today; catch regressions) ---------------------------------------------------


def _check_redis(rt, product_id: int, max_per_user: int) -> None:  # type: ignore[no-untyped-def]
    keys = rt.inventory.keys(product_id)
    holds = [rt.inventory.get_hold(t) for t in rt.inventory_redis.hkeys(keys.holds)]
    figures = rt.inventory.figures(product_id)
    assert figures.balanced and figures.available >= 0, figures
    assert figures.held == sum(h.quantity for h in holds if h.status in OPEN_STATUSES)
    in_redis = {h.ticket_id for h in holds}
    with rt.sessions() as session:  # confirmed, recorded in SQL and forgotten by Redis
        query = select(Order).filter_by(product_id=product_id, status="confirmed")
        settled = [o for o in session.scalars(query) if o.ticket_id not in in_redis]
    counted = Counter()
    for h in holds:
        if h.status in (*OPEN_STATUSES, "confirmed"):
            counted[str(h.user_id)] += h.quantity
    for o in settled:
        counted[str(o.user_id)] += o.quantity
    confirmed = sum(h.quantity for h in holds if h.status == "confirmed")
    assert figures.sold == confirmed + sum(o.quantity for o in settled)
    assert rt.inventory_redis.hgetall(keys.users) == {u: str(q) for u, q in counted.items()}
    assert all(q <= max_per_user for q in counted.values())
    deadlines = set(rt.inventory_redis.zrange(keys.deadlines, 0, -1))
    assert {h.ticket_id for h in holds if h.status in OPEN_STATUSES} <= deadlines


def test_random_interleavings_keep_stock_and_per_user_counts_balanced(rt):
    rng = random.Random(20240607)
    product_id, users = stocked_product(rt, stock=12, max_per_user=4), buyer_ids(rt, 4)
    normal = rt.inventory
    expired_at_once = Inventory(
        rt.inventory_redis, dataclasses.replace(rt.settings, hold_seconds=-1)
    )
    tickets: list[str] = []
    for _ in range(250):
        op = rng.choice(["reserve"] * 4 + ["begin", "finish", "cancel", "expire", "rebuild"])
        ticket = rng.choice(tickets) if tickets else new_ticket_id(product_id)
        if op == "reserve":
            inventory = rng.choice([normal, normal, expired_at_once])
            ticket = new_ticket_id(product_id)
            outcome = inventory.reserve(
                product_id, rng.choice(users), rng.randint(1, 3), ticket, "pm_card_visa"
            )
            if outcome.result == "reserved":
                tickets.append(ticket)
        elif op == "begin":
            normal.begin_settlements(product_id, [ticket])
        elif op == "finish":
            outcome = rng.choice(["confirmed", "failed", "expired"])
            normal.finish_holds(product_id, [Ending(ticket, outcome, "test")])
        elif op == "cancel":
            with locked(normal.lock(product_id, ticket)):
                normal.finish_holds(product_id, [cancel_ending(ticket)])
        elif op == "expire":
            normal.expire_holds(product_id)
        else:
            assert reconcile_product(normal, rt.sessions, product_id).result == "consistent"
            rt.inventory_redis.delete(normal.keys(product_id).stock)
            assert rebuild_stock(normal, rt.sessions, product_id)
        _check_redis(rt, product_id, 4)
    assert reconcile_product(normal, rt.sessions, product_id).result == "consistent"


def test_random_purchases_settle_once_each_and_sql_agrees_with_redis(rt):
    rng = random.Random(7)
    product_id, users = stocked_product(rt, stock=15, max_per_user=3), buyer_ids(rt, 8)
    keys = rt.inventory.keys(product_id)
    expired_at_once = Inventory(
        rt.inventory_redis, dataclasses.replace(rt.settings, hold_seconds=-1)
    )
    methods = ["pm_card_visa"] * 3 + ["pm_card_chargeDeclined"]
    tickets: list[str] = []
    for step in range(60):
        inventory = expired_at_once if rng.random() < 0.15 else rt.inventory
        ticket = new_ticket_id(product_id)
        user, quantity = rng.choice(users), rng.randint(1, 2)
        if inventory.reserve(product_id, user, quantity, ticket, rng.choice(methods)).result == (
            "reserved"
        ):
            tickets.append(ticket)
            if rng.random() < 0.15:
                rt.inventory.finish_holds(product_id, [cancel_ending(ticket)])
        if step % 20 == 19:  # a settler drains what is there; once, the stock key is lost
            if step == 39:
                rt.inventory_redis.delete(keys.stock)
                assert rebuild_stock(rt.inventory, rt.sessions, product_id)
            while entries := rt.inventory.read_settle_queue(product_id, "prop", 10):
                rt.settler.settle_batch(product_id, entries)
        _check_redis(rt, product_id, 3)
    rt.inventory.expire_holds(product_id)
    while entries := rt.inventory.read_settle_queue(product_id, "prop", 10):
        rt.settler.settle_batch(product_id, entries)
    assert rt.inventory_redis.hlen(keys.holds) == 0 and rt.inventory.settle_backlog(product_id) == 0
    figures = rt.inventory.figures(product_id)
    with rt.sessions() as session:
        assert figures.held == 0 and figures.sold == confirmed_quantity(session, product_id)
        per_user: Counter[int] = Counter()
        for user_id, quantity, _ in counted_orders(session, product_id).values():
            per_user[user_id] += quantity
        assert dict(per_user) == {
            int(u): int(q) for u, q in rt.inventory_redis.hgetall(keys.users).items()
        }
        for ticket in tickets:
            order, payment = get_order(session, ticket), get_payment(session, ticket)
            assert order is not None and order.status not in OPEN_STATUSES, ticket
            charges = rt.gateway.charges(ticket)
            assert charges == (1 if order.status == "confirmed" else 0), (order.status, charges)
            assert payment is None or payment.amount_refunded_minor <= payment.amount_minor
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"
