"""A primary of the inventory's Redis Cluster SIGKILLed during a rush (INVENTORY_MIN_REPLICAS=1).

A cluster of three primaries, each with a replica, on free ports (cluster-node-timeout 1000 ms);
gunicorn and two `rq worker` processes use it. Buyers buy one unit each of three products (one a
limit of one per buyer), retrying on 503, then try once more (refused: the limit); the primary
owning the first product's slot is SIGKILLed once a share of the buyers have their answer. Its
replica is promoted, and the killed node is started again (it comes back as the replica of the
promoted one, as an operator would bring it back). At the end every ticket answered 202 is final
in SQL, nothing is oversold or charged twice, the limit holds and reconciliation agrees.

FAILOVER_KILLS=<n> (default 1) kills n times, a primary each time, the first product's slot's
first: the run at length. In the cluster pass of `make test` (TEST_INVENTORY_REDIS=cluster).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from redis import Redis
from sqlalchemy import func, select

from core.failover import recover_lost_holds
from core.models import Order
from core.runtime import Runtime
from core.stock import reconcile_product
from jobs.queues import enqueue_drains
from tests.helpers import make_users, stocked_product
from tests.servers import Gunicorn, RedisClusterProcess, clean_env, wait_until
from tests.test_faults import TERMINAL, Processes

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("TEST_INVENTORY_REDIS") != "cluster",
        reason="the cluster pass (TEST_INVENTORY_REDIS=cluster) runs it",
    ),
]

PRODUCTS = 3
UNITS = 500  # a product's stock
BUYERS = 1800  # 600 a product: each sells out
KILL_AFTER = 0.3  # the share of buyers answered when the (first) kill comes
RETRY_FOR_S = 30.0


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
                    time.sleep(0.01)
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
    product_id: int,
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
                f"/purchase/{product_id}",
                json={"quantity": 1, "payment_method": "pm_card_visa"},
                headers={"Authorization": f"Bearer {token}"},
            )
            status, body = response.status_code, response.json()
        except httpx.HTTPError as error:
            status, body = 0, {"error": type(error).__name__}
        answer = Answer(product_id, buyer, status, sent, time.monotonic(),
                        body.get("ticket_id"), body.get("error", ""))  # fmt: skip
        answers.append(answer)
        if status != 503 or time.monotonic() > deadline or stop.is_set():
            return answer
        await asyncio.sleep(0.05)


async def _rush(
    url: str, plan: list[tuple[int, int, str]], answers: list[Answer], stop: threading.Event
) -> None:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        gate = asyncio.Semaphore(64)

        async def buyer(product_id: int, user: int, token: str) -> None:
            async with gate:
                if stop.is_set():
                    return
                await _buy(http, product_id, user, token, answers, stop)
                await _buy(http, product_id, user, token, answers, stop)  # once more: the limit

        await asyncio.gather(*(buyer(*one) for one in plan))


def _products_on_each_primary(rt: Runtime) -> list[int]:
    """PRODUCTS products whose slots fall on distinct primaries."""
    cluster = rt.inventory_redis
    chosen: dict[str, int] = {}
    while len(chosen) < PRODUCTS:
        product_id = stocked_product(rt, stock=UNITS, max_per_user=1)
        owner = cluster.get_node_from_key(rt.inventory.keys(product_id).tag).name
        chosen.setdefault(owner, product_id)
    return list(chosen.values())


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
    killer: Killer, products: list[int], slots: list[int], answers: list[Answer]
) -> list[tuple[float | None, float]]:
    """Per kill: seconds from the kill to the first purchase sent after it and accepted on the
    killed slot (None: none was), and to the replica's promotion."""
    found = []
    for killed_at, slot, promoted_s in killer.kills:
        product = products[slots.index(slot)]
        back = [a for a in answers if a.product_id == product and a.status == 202]
        later = [a.answered - killed_at for a in back if a.sent >= killed_at]
        found.append((min(later) if later else None, promoted_s))
    return found


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
    products = _products_on_each_primary(rt)
    buyers = make_users(app, BUYERS)
    plan = [(products[i % PRODUCTS], b.id, b.token) for i, b in enumerate(buyers)]
    slots = [rt.inventory_redis.keyslot(rt.inventory.keys(p).tag) for p in products]
    thresholds = [int(BUYERS * (KILL_AFTER + 0.5 * n / kills)) for n in range(kills)]
    env = clean_env(extra)
    procs = Processes()
    server = Gunicorn(env, workers=2, threads=16).start()
    answers: list[Answer] = []

    def sold_since(slot: int, moment: float) -> bool:
        product = products[slots.index(slot)]
        return any(a.product_id == product and a.status == 202 and a.sent >= moment
                   for a in list(answers))  # fmt: skip

    killer = Killer(cluster, slots, thresholds, sold_since)
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
        recoveries = _recoveries(killer, products, slots, answers)
        assert all(first is not None for first, _ in recoveries), "a killed slot never sold again"
        _settle_everything(rt, products, tickets)
    finally:
        done.set()
        server.stop()
        procs.stop_all()

    with rt.sessions() as session:
        orders = {o.ticket_id: o for o in session.scalars(select(Order).where(
            Order.product_id.in_(products)))}  # fmt: skip
    lost = [t for t in tickets if t not in orders or orders[t].status not in TERMINAL]
    confirmed = [o for o in orders.values() if o.status == "confirmed"]
    per_product = {p: sum(o.quantity for o in confirmed if o.product_id == p) for p in products}
    per_buyer: dict[tuple[int, int], int] = {}
    for order in confirmed:
        key = (order.product_id, order.user_id)
        per_buyer[key] = per_buyer.get(key, 0) + order.quantity
    charges = rt.gateways["simulated"]
    counts = {t: charges.charges(t) for t in orders}
    double_charged = [t for t, n in counts.items() if n > 1]
    uncharged = [o.ticket_id for o in confirmed if counts[o.ticket_id] != 1]
    reconciled = [reconcile_product(rt.inventory, rt.sessions, p).result for p in products]
    again = [reconcile_product(rt.inventory, rt.sessions, p).result for p in products]

    assert lost == []
    assert all(sold <= UNITS for sold in per_product.values()), per_product
    assert double_charged == [] and uncharged == []
    assert max(per_buyer.values()) == 1
    assert again == ["consistent"] * PRODUCTS, (reconciled, again)

    unavailable = [a.answered - a.sent for a in answers if a.status == 503]
    failed_lost = sum(1 for o in orders.values() if o.failure_reason == "hold_lost")
    with capsys.disabled():
        print(
            f"\nfailover: kills={kills} buyers={BUYERS} accepted={len(tickets)} lost={len(lost)} "
            f"oversold=0 double_charged=0 confirmed={per_product} hold_lost={failed_lost} "
            f"answers_503={len(unavailable)} "
            f"p50_503_ms={statistics.median(unavailable) * 1000 if unavailable else 0:.0f} "
            f"max_503_ms={max(unavailable, default=0) * 1000:.0f} "
            f"kill_to_first_202_s={[round(r or 0, 2) for r, _ in recoveries]} "
            f"kill_to_promotion_s={[round(p, 2) for _, p in recoveries]} "
            f"reconciled={reconciled} rush_s={rush_s:.1f}"
        )
