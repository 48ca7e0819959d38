"""A primary of the inventory's Redis Cluster SIGKILLed during a rush (INVENTORY_MIN_REPLICAS=1).

A cluster of three primaries, each with a replica, on free ports (cluster-node-timeout 1000 ms);
gunicorn and two `rq worker` processes use it. A seated show is on sale beside three products
sold by count, one on each primary. Every fifth buyer asks for seats (named seats side by side,
or the best available), then for two more (refused past the show's limit of two a buyer); the
others buy one unit of a product, then try once more (refused: a limit of one). All retry on
503. The primary owning the seats' slot (and one of the products') is SIGKILLed once a share of
the buyers have their answer. Its replica is promoted, and the killed node is started again (it
comes back as the replica of the promoted one, as an operator would bring it back). At the end
every ticket answered 202 is final in SQL, nothing is oversold or charged twice, the limits
hold, no seat is in two confirmed or live orders, Redis' seats agree with SQL's sold ones and
reconciliation agrees.

FAILOVER_KILLS=<n> (default 1) kills n times, a primary each time, the seats' first;
FAILOVER_BUYERS=<n> (default 3000) sets the rush's size: the run at length. In the cluster pass
of `make test` (TEST_INVENTORY_REDIS=cluster).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis import Redis
from sqlalchemy import func, select

from core.failover import recover_lost_holds
from core.models import Order, OrderSeat, Product
from core.runtime import Runtime
from core.stock import reconcile_product
from jobs.queues import enqueue_drains
from tests.helpers import Account, app_with, make_users, seated_hall, stocked_product
from tests.servers import Gunicorn, RedisClusterProcess, clean_env, wait_until
from tests.test_faults import TERMINAL, Processes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("TEST_INVENTORY_REDIS") != "cluster",
        reason="the cluster pass (TEST_INVENTORY_REDIS=cluster) runs it",
    ),
]

BUYERS = int(os.environ.get("FAILOVER_BUYERS", "3000"))
SEAT_BUYERS = BUYERS // 5  # every fifth buyer
PRODUCTS = 3  # sold by count, one on each primary
UNITS = (BUYERS - SEAT_BUYERS) // PRODUCTS * 5 // 6  # a product's stock: each sells out
SEATS_PER_ROW = 30
ROWS = max(1, SEAT_BUYERS // SEATS_PER_ROW)  # a seat a seat buyer: sold out before the end
SEAT_LIMIT = 2  # the show's seats a buyer
KILL_AFTER = 0.3  # the share of buyers answered when the (first) kill comes
RETRY_FOR_S = 30.0
PAY = {"payment_method": "pm_card_visa"}


@dataclasses.dataclass(frozen=True)
class Ask:
    product_id: int
    path: str
    body: dict[str, Any]


@dataclasses.dataclass
class Answer:
    product_id: int
    buyer: int
    status: int
    sent: float
    answered: float
    ticket: str | None = None
    error: str = ""


class Killer:
    """Kills the primary owning a product's slot once `answered()` reaches each threshold, then
    waits for its replica's promotion and for a purchase accepted on that slot, then starts the
    killed node again."""

    def __init__(
        self,
        cluster: RedisClusterProcess,
        slots: list[int],
        thresholds: list[int],
        sold_since: Callable[[int, float], bool],
    ):
        self.cluster = cluster
        self.slots = slots
        self.thresholds = thresholds
        self.sold_since = sold_since  # (slot, moment): a purchase on the slot accepted since
        self.kills: list[tuple[float, int, float]] = []  # (moment, slot, promoted after s)
        self.error: BaseException | None = None

    def run(self, answered: Callable[[], int], done: threading.Event) -> None:
        try:
            for n, threshold in enumerate(self.thresholds):
                while answered() < threshold and not done.is_set():
                    done.wait(0.01)
                if done.is_set():
                    return
                self._kill_and_bring_back(self.slots[n % len(self.slots)])
        except BaseException as error:  # the test reports it
            self.error = error
            done.set()  # the buyers stop retrying

    def _kill_and_bring_back(self, slot: int) -> None:
        node = self._owner(slot)
        node.process.kill()
        killed_at = time.monotonic()
        node.process.wait(10)
        wait_until(lambda: self._owner(slot) not in (None, node), 30, "a replica's promotion")
        promoted_s = time.monotonic() - killed_at
        self.kills.append((killed_at, slot, promoted_s))
        # The old primary stays dead until the slot sells again: clients must find the new one.
        wait_until(lambda: self.sold_since(slot, killed_at), 20, "the slot to sell again")
        node.start()  # back as the promoted node's replica (its nodes.conf says so)
        wait_until(lambda: _replicas_up(self.cluster), 30, "the killed node to sync again")

    def _owner(self, slot: int):  # type: ignore[no-untyped-def]
        """The live node that serves `slot` as a primary, as a live node's map says."""
        for node in self.cluster.nodes:
            if node.process.poll() is not None:
                continue
            client = Redis(host="127.0.0.1", port=node.port, decode_responses=True)
            try:
                for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.cluster.nodes if n.port == port)
            except Exception:  # a node still starting
                continue
            finally:
                client.close()
        return None


def _replicas_up(cluster: RedisClusterProcess) -> bool:
    for node in cluster.nodes:
        client = Redis(host="127.0.0.1", port=node.port, decode_responses=True)
        try:
            info = client.info("replication")
        except Exception:
            return False
        finally:
            client.close()
        if info["role"] == "slave" and info.get("master_link_status") != "up":
            return False
    return True


async def _buy(
    http: httpx.AsyncClient,
    ask: Ask,
    buyer: int,
    token: str,
    answers: list[Answer],
    stop: threading.Event,
) -> Answer:
    """One purchase, sent again on 503 until another answer (or RETRY_FOR_S, or `stop`)."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        sent = time.monotonic()
        try:
            response = await http.post(
                ask.path, json=ask.body, headers={"Authorization": f"Bearer {token}"}
            )
            status, body = response.status_code, response.json()
        except httpx.HTTPError as error:
            status, body = 0, {"error": type(error).__name__}
        answer = Answer(ask.product_id, buyer, status, sent, time.monotonic(),
                        body.get("ticket_id"), body.get("error", ""))  # fmt: skip
        answers.append(answer)
        if status != 503 or time.monotonic() > deadline or stop.is_set():
            return answer
        await asyncio.sleep(0.05)


Plan = list[tuple[int, str, list[Ask]]]  # buyer, token, what the buyer asks for in turn


async def _rush(url: str, plan: Plan, answers: list[Answer], stop: threading.Event) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        gate = asyncio.Semaphore(64)

        async def buyer(user: int, token: str, asks: list[Ask]) -> None:
            async with gate:
                for ask in asks:
                    if stop.is_set():
                        return
                    await _buy(http, ask, user, token, answers, stop)

        await asyncio.gather(*(buyer(*one) for one in plan))


def _seat_asks(draw: random.Random, event_id: int, product_id: int) -> list[Ask]:
    """Named seats (1-2 side by side) or the best 1-2 of the section, then the best two: past
    the limit once the first got any."""
    size = draw.randint(1, 2)
    if draw.random() < 0.5:
        row, first = draw.randint(1, ROWS), draw.randint(1, SEATS_PER_ROW - size + 1)
        first_ask = {"seats": [f"A-{row}-{n}" for n in range(first, first + size)]}
    else:
        first_ask = {"section": "A", "quantity": size, "together": True}
    path = f"/events/{event_id}/purchase"
    again = {"section": "A", "quantity": SEAT_LIMIT}
    return [Ask(product_id, path, first_ask | PAY), Ask(product_id, path, again | PAY)]


def _plan(buyers: list[Account], products: list[int], event_id: int, seated: int) -> Plan:
    draw = random.Random(2026)
    plan: Plan = []
    for n, buyer in enumerate(buyers):
        if n % 5 == 4:
            asks = _seat_asks(draw, event_id, seated)
        else:
            product_id = products[n % PRODUCTS]
            one = Ask(product_id, f"/purchase/{product_id}", {"quantity": 1} | PAY)
            asks = [one, one]
        plan.append((buyer.id, buyer.token, asks))
    return plan


def _node_of(rt: Runtime, product_id: int) -> str:
    return rt.inventory_redis.get_node_from_key(rt.inventory.keys(product_id).tag).name


def _slot_of(rt: Runtime, product_id: int) -> int:
    return rt.inventory_redis.keyslot(rt.inventory.keys(product_id).tag)


def _seated_show(rt: Runtime) -> tuple[int, int]:
    """The show on sale in `rt`'s inventory: its event id and the product selling its seats."""
    inventory = {"inventory_redis_url": rt.settings.inventory_redis_url,
                 "inventory_min_replicas": rt.settings.inventory_min_replicas}  # fmt: skip
    with app_with(**inventory) as seller:
        event_id = seated_hall(seller, "Failover", ROWS, SEATS_PER_ROW, SEAT_LIMIT)["id"]
    with rt.sessions() as session:
        product_id = session.scalar(select(Product.id).where(Product.event_id == event_id))
    return event_id, product_id


def _products_on_each_primary(rt: Runtime, first_node: str) -> list[int]:
    """PRODUCTS products whose slots fall on distinct primaries, the first on `first_node`."""
    chosen: dict[str, int] = {}
    while len(chosen) < PRODUCTS:
        product_id = stocked_product(rt, stock=UNITS, max_per_user=1)
        chosen.setdefault(_node_of(rt, product_id), product_id)
    return [chosen[first_node]] + [p for node, p in chosen.items() if node != first_node]


def _settle_everything(rt: Runtime, products: list[int], tickets: list[str]) -> None:
    def final() -> bool:
        for product_id in products:
            recover_lost_holds(rt.settler, product_id)
        enqueue_drains(rt.settings, products)
        with rt.sessions() as session:
            done = session.scalar(
                select(func.count()).where(Order.ticket_id.in_(tickets), Order.status.in_(TERMINAL))
            )
        return done == len(tickets) and all(rt.inventory.figures(p).held == 0 for p in products)

    wait_until(final, 180, "every accepted ticket to be final", every=1.0)


def _recoveries(
    killer: Killer, sold_on: dict[int, int], answers: list[Answer]
) -> list[tuple[float | None, float]]:
    """Per kill: seconds from the kill to the first purchase sent after it and accepted on the
    killed slot (None: none was), and to the replica's promotion."""
    found = []
    for killed_at, slot, promoted_s in killer.kills:
        back = [a for a in answers if a.product_id == sold_on[slot] and a.status == 202]
        later = [a.answered - killed_at for a in back if a.sent >= killed_at]
        found.append((min(later) if later else None, promoted_s))
    return found


@dataclasses.dataclass
class SeatBooks:
    """The show's seats at the end, in SQL and in Redis."""

    in_two_orders: list[str]  # a seat of two confirmed orders, or of two live ones
    sold_in_sql: dict[str, str]  # seat -> its confirmed order
    sold_in_redis: dict[str, str]  # seat -> the ticket Redis sold it to
    held_in_redis: list[str]
    miscounted: list[str]  # confirmed orders whose seats are not their quantity
    sold_figure: int  # the seats product's sold units, as Redis counts them


def _seat_books(rt: Runtime, event_id: int, product_id: int) -> SeatBooks:
    with rt.sessions() as session:
        rows = session.execute(
            select(OrderSeat.label, OrderSeat.ticket_id, OrderSeat.live, Order.status,
                   Order.quantity)
            .join(Order, Order.ticket_id == OrderSeat.ticket_id)
            .where(OrderSeat.event_id == event_id)
        ).all()  # fmt: skip
        quantities = dict(session.execute(select(Order.ticket_id, Order.quantity).where(
            Order.product_id == product_id, Order.status == "confirmed")).all())  # fmt: skip
    confirmed: dict[str, list[str]] = {}
    live: dict[str, list[str]] = {}
    seats_of: dict[str, int] = {}
    for label, ticket, is_live, status, _ in rows:
        if status == "confirmed":
            confirmed.setdefault(label, []).append(ticket)
            seats_of[ticket] = seats_of.get(ticket, 0) + 1
        if is_live:
            live.setdefault(label, []).append(ticket)
    twice = {label for owners in (confirmed, live) for label, t in owners.items() if len(t) > 1}
    states = rt.inventory_redis.hgetall(rt.inventory.keys(product_id).seats)
    figures = rt.inventory.figures(product_id)
    assert figures is not None
    return SeatBooks(
        in_two_orders=sorted(twice),
        sold_in_sql={label: tickets[0] for label, tickets in confirmed.items()},
        sold_in_redis={label: s[2:] for label, s in states.items() if s.startswith("s:")},
        held_in_redis=sorted(label for label, s in states.items() if s.startswith("h:")),
        miscounted=[t for t, q in quantities.items() if seats_of.get(t, 0) != q],
        sold_figure=figures.sold,
    )


@pytest.fixture()
def cluster(tmp_path):  # type: ignore[no-untyped-def]
    started = RedisClusterProcess(tmp_path / "cluster", 3, replicas=1, node_timeout_ms=1000)
    yield started.start()
    started.stop()


def test_a_primary_killed_mid_rush_loses_no_accepted_order(cluster, app, settings, capsys):
    kills = int(os.environ.get("FAILOVER_KILLS", "1"))
    extra = {
        "INVENTORY_REDIS_URL": cluster.url,
        "INVENTORY_MIN_REPLICAS": "1",
        "INVENTORY_REPLICA_WAIT_MS": "50",
    }
    rt = Runtime(dataclasses.replace(settings, inventory_redis_url=cluster.url,
                                     inventory_min_replicas=1))  # fmt: skip
    event_id, seated = _seated_show(rt)
    products = _products_on_each_primary(rt, _node_of(rt, seated))
    everything = [seated, *products]
    limits = {seated: SEAT_LIMIT} | {p: 1 for p in products}
    stocks = {seated: ROWS * SEATS_PER_ROW} | {p: UNITS for p in products}
    plan = _plan(make_users(app, BUYERS), products, event_id, seated)
    # The seats' primary first (it owns products[0] too), then the others'.
    sold_on = {_slot_of(rt, p): p for p in [seated, *products[1:]]}
    thresholds = [int(BUYERS * (KILL_AFTER + 0.5 * n / kills)) for n in range(kills)]
    env = clean_env(extra)
    procs = Processes()
    server = Gunicorn(env, workers=2, threads=16).start()
    answers: list[Answer] = []

    def sold_since(slot: int, moment: float) -> bool:
        return any(a.product_id == sold_on[slot] and a.status == 202 and a.sent >= moment
                   for a in list(answers))  # fmt: skip

    killer = Killer(cluster, list(sold_on), thresholds, sold_since)
    done = threading.Event()
    try:
        procs.workers(env, 2)
        finished_buyers = lambda: sum(1 for a in answers if a.status != 503) // 2  # noqa: E731
        thread = threading.Thread(target=killer.run, args=(finished_buyers, done))
        thread.start()
        started = time.monotonic()
        asyncio.run(_rush(server.url, plan, answers, done))
        rush_s = time.monotonic() - started
        done.set()
        thread.join(60)
        assert killer.error is None, killer.error
        assert len(killer.kills) == kills, "the rush ended before every kill"
        statuses = {a.status for a in answers}
        assert statuses <= {202, 409, 503}, [a for a in answers if a.status not in (202, 409, 503)][
            :3
        ]
        tickets = [a.ticket for a in answers if a.status == 202 and a.ticket]
        recoveries = _recoveries(killer, sold_on, answers)
        assert all(first is not None for first, _ in recoveries), "a killed slot never sold again"
        _settle_everything(rt, everything, tickets)
    finally:
        done.set()
        server.stop()
        procs.stop_all()

    with rt.sessions() as session:
        orders = {o.ticket_id: o for o in session.scalars(select(Order).where(
            Order.product_id.in_(everything)))}  # fmt: skip
    lost = [t for t in tickets if t not in orders or orders[t].status not in TERMINAL]
    confirmed = [o for o in orders.values() if o.status == "confirmed"]
    per_product = {p: sum(o.quantity for o in confirmed if o.product_id == p) for p in everything}
    per_buyer: dict[tuple[int, int], int] = {}
    for order in confirmed:
        key = (order.product_id, order.user_id)
        per_buyer[key] = per_buyer.get(key, 0) + order.quantity
    over_limit = {k: n for k, n in per_buyer.items() if n > limits[k[0]]}
    charges = rt.gateways["simulated"]
    counts = {t: charges.charges(t) for t in orders}
    double_charged = [t for t, n in counts.items() if n > 1]
    uncharged = [o.ticket_id for o in confirmed if counts[o.ticket_id] != 1]
    seats = _seat_books(rt, event_id, seated)
    reconciled = [reconcile_product(rt.inventory, rt.sessions, p).result for p in everything]
    again = [reconcile_product(rt.inventory, rt.sessions, p).result for p in everything]

    assert lost == []
    assert all(sold <= stocks[p] for p, sold in per_product.items()), per_product
    assert double_charged == [] and uncharged == []
    assert over_limit == {}
    assert seats.in_two_orders == []
    assert seats.sold_in_redis == seats.sold_in_sql
    assert seats.held_in_redis == [] and seats.miscounted == []
    assert seats.sold_figure == len(seats.sold_in_sql) == per_product[seated]
    assert again == ["consistent"] * len(everything), (reconciled, again)

    unavailable = [a.answered - a.sent for a in answers if a.status == 503]
    failed_lost = sum(1 for o in orders.values() if o.failure_reason == "hold_lost")
    with capsys.disabled():
        print(
            f"\nfailover: kills={kills} buyers={BUYERS} accepted={len(tickets)} lost={len(lost)} "
            f"oversold=0 double_charged=0 confirmed={per_product} hold_lost={failed_lost} "
            f"seats_sold={len(seats.sold_in_sql)}/{stocks[seated]} "
            f"seats_in_two_orders={len(seats.in_two_orders)} "
            f"answers_503={len(unavailable)} "
            f"p50_503_ms={statistics.median(unavailable) * 1000 if unavailable else 0:.0f} "
            f"max_503_ms={max(unavailable, default=0) * 1000:.0f} "
            f"kill_to_first_202_s={[round(r or 0, 2) for r, _ in recoveries]} "
            f"kill_to_promotion_s={[round(p, 2) for _, p in recoveries]} "
            f"reconciled={reconciled} rush_s={rush_s:.1f}"
        )
