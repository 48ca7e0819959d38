"""Faults injected during a rush: real gunicorn, real `rq worker` processes, real Redis and SQL.

Each scenario kills, freezes or cuts one part of the stack while a few hundred buyers are being
served or settled, then checks that nothing was lost, charged twice or oversold, and prints one
line `fault: <scenario> tickets=<n> lost=0 double_charged=0 oversold=0 recover_s=<x>` (the figures
of docs/RELIABILITY.md). Processes started here run in their own session (process group) and are
stopped by that id only; the machine's own Redis and PostgreSQL are never touched.

    .venv/bin/python -m pytest tests/test_faults.py -m slow -s
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import select

from core.inventory import Ending, Hold, Inventory, now_ms
from core.keys import new_ticket_id
from core.models import Order
from core.orders import confirmed_quantity
from core.runtime import Runtime
from core.tickets import OPEN_STATUSES
from jobs.maintenance import sweep
from jobs.scheduler import periodic_jobs
from tests.helpers import create_product, make_user, make_users
from tests.servers import Gunicorn, RedisProcess, clean_env, free_port, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RQ = str(Path(sys.executable).parent / "rq")
TERMINAL = {"confirmed", "failed", "expired", "cancelled", "refunded"}


# --- processes ------------------------------------------------------------------------------------


class Processes:
    """Workers and schedulers started by one test, each in a session of its own (pgid == pid),
    so that a kill reaches RQ's work horse too; stopped by that id only."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def worker(self, env: dict[str, str]) -> subprocess.Popen:
        """The Procfile's worker command line."""
        argv = [RQ, "worker", "-w", "rq.worker.SimpleWorker"]
        argv += ["--serializer", "rq.serializers.JSONSerializer"]
        argv += ["--job-class", "jobs.queues.JsonJob", "--url", env["REDIS_URL"]]
        return self._spawn([*argv, env["SETTLEMENT_QUEUE"]], env)

    def workers(self, env: dict[str, str], count: int) -> list[subprocess.Popen]:
        return [self.worker(env) for _ in range(count)]

    def scheduler(self, env: dict[str, str]) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "jobs.scheduler"], env)

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        """SIGKILL to the process and its children (RQ's work horse)."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(process)
        self.started.clear()


@pytest.fixture()
def procs():  # type: ignore[no-untyped-def]
    started = Processes()
    yield started
    started.stop_all()


@pytest.fixture()
def servers():  # type: ignore[no-untyped-def]
    """gunicorn instances a test starts (with the environment it needs), stopped after it."""
    started: list[Gunicorn] = []

    def start(env: dict[str, str]) -> Gunicorn:
        gunicorn = Gunicorn(env, workers=2, threads=16).start()
        started.append(gunicorn)
        return gunicorn

    yield start
    for gunicorn in started:
        gunicorn.stop()


# --- the rush -------------------------------------------------------------------------------------


async def _rush(
    url: str, product_id: int, requests: list[tuple[str, str, str]]
) -> list[httpx.Response]:
    """(token, payment method, Idempotency-Key or "") per request, all released at once."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        start = asyncio.Event()

        async def one(token: str, method: str, key: str) -> httpx.Response:
            await start.wait()
            headers = {"Authorization": f"Bearer {token}"}
            if key:
                headers["Idempotency-Key"] = key
            return await http.post(
                f"/purchase/{product_id}",
                json={"quantity": 1, "payment_method": method},
                headers=headers,
            )

        tasks = [asyncio.create_task(one(*r)) for r in requests]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)


def rush(url: str, product_id: int, tokens: list[str], method="pm_card_visa") -> list[str]:  # type: ignore[no-untyped-def]
    """Buyers each buy one unit at once; answers the tickets of the 202s (the rest sold out)."""
    responses = asyncio.run(_rush(url, product_id, [(t, method, "") for t in tokens]))
    codes = {r.status_code for r in responses}
    assert codes <= {202, 409}, [r.text for r in responses if r.status_code not in (202, 409)][:3]
    refused = {r.json()["error"] for r in responses if r.status_code == 409}
    assert refused <= {"sold_out"}, refused
    return [r.json()["ticket_id"] for r in responses if r.status_code == 202]


# --- invariants -----------------------------------------------------------------------------------


def orders_of(rt: Runtime, tickets: list[str]) -> dict[str, Order]:
    with rt.sessions() as session:
        rows = session.scalars(select(Order).where(Order.ticket_id.in_(tickets)))
        return {o.ticket_id: o for o in rows}


def settled(rt: Runtime, product_id: int, tickets: list[str]) -> bool:
    orders = orders_of(rt, tickets)
    figures = rt.inventory.figures(product_id)
    return (
        len(orders) == len(tickets)
        and all(o.status in TERMINAL for o in orders.values())
        and figures is not None
        and figures.held == 0
    )


def charges_of(rt: Runtime, tickets: list[str]) -> dict[str, int]:
    """Charges per ticket at the simulated provider (it keeps them in Redis, as Stripe would)."""
    gateway = rt.gateways["simulated"]
    values = rt.redis.hmget(gateway.charges_key, tickets) if tickets else []
    return {t: int(v or 0) for t, v in zip(tickets, values, strict=True)}


@dataclasses.dataclass
class Outcome:
    tickets: int
    lost: int
    double_charged: int
    oversold: int


def check_invariants(
    rt: Runtime,
    product_id: int,
    initial: int,
    tickets: list[str],
    charges: dict[str, int] | None = None,
    paid: bool = True,
) -> Outcome:
    """available + held + sold == initial in Redis, SQL confirmed == Redis sold, every accepted
    ticket in SQL in a final state, no open hold past its deadline, nothing charged twice."""
    figures = rt.inventory.figures(product_id)
    assert figures is not None
    assert figures.initial == initial
    assert figures.available + figures.held + figures.sold == initial, figures
    with rt.sessions() as session:
        sold_in_db = confirmed_quantity(session, product_id)
    assert sold_in_db == figures.sold, (sold_in_db, figures)
    orders = orders_of(rt, tickets)
    lost = [t for t in tickets if t not in orders]
    stuck = [t for t, o in orders.items() if o.status not in TERMINAL]
    now = now_ms()
    k = rt.inventory.keys(product_id)
    for raw in rt.inventory_redis.hvals(k.holds):
        hold = Hold.from_json(raw)
        deadline = rt.inventory_redis.zscore(k.deadlines, hold.ticket_id) or hold.deadline_ms
        if hold.status in OPEN_STATUSES and deadline < now - 1000:
            stuck.append(hold.ticket_id)
    charges = charges if charges is not None else charges_of(rt, tickets)
    double = [t for t, n in charges.items() if n > 1]
    unpaid = [
        t for t, o in orders.items() if paid and o.status == "confirmed" and charges.get(t, 0) != 1
    ]
    oversold = max(0, sold_in_db - initial)
    assert not lost, f"lost tickets: {lost[:5]}"
    assert not stuck, f"tickets stuck past their deadline: {stuck[:5]}"
    assert not double, f"charged twice: {double[:5]}"
    assert not unpaid, f"confirmed without exactly one charge: {unpaid[:5]}"
    assert oversold == 0
    return Outcome(len(tickets), len(lost), len(double), oversold)


def report(capsys, scenario: str, outcome: Outcome, recover_s: float) -> None:  # type: ignore[no-untyped-def]
    with capsys.disabled():
        print(
            f"\nfault: {scenario} tickets={outcome.tickets} lost={outcome.lost} "
            f"double_charged={outcome.double_charged} oversold={outcome.oversold} "
            f"recover_s={recover_s:.1f}"
        )


def sweeping(rt: Runtime, product_id: int, tickets: list[str]):  # type: ignore[no-untyped-def]
    """A poll step: run the periodic sweep (re-drives pending tickets), then look."""

    def step() -> bool:
        sweep()
        return settled(rt, product_id, tickets)

    return step


# --- 1. a worker killed mid-settlement ------------------------------------------------------------


def test_workers_killed_mid_payment(app, rt, procs, servers, capsys):
    buyers, units = 300, 120
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=units, max_per_user=1)
    pid = product["id"]
    # Payments slow enough (0.5 s each, 8 at a time per worker) for the kill to land mid-way.
    workers_env = clean_env({"PAYMENT_LATENCY_MS": "500"})
    first = procs.workers(workers_env, 2)
    server = servers(clean_env({}))

    tickets = rush(server.url, pid, [b.token for b in make_users(app, buyers)])
    assert len(tickets) == units

    wait_until(
        lambda: sum(1 for n in charges_of(rt, tickets).values() if n) >= 10,
        60,
        "payments to be under way",
    )
    for worker in first:
        procs.kill(worker)  # SIGKILL: no chance to finish, acknowledge or unlock
    killed_at = time.monotonic()
    assert not settled(rt, pid, tickets), "the kill landed after settlement ended"
    in_flight = sum(1 for o in orders_of(rt, tickets).values() if o.status == "processing")

    procs.workers(workers_env, 2)  # fresh workers; the sweep re-drives the pending tickets
    wait_until(sweeping(rt, pid, tickets), 180, "every ticket to settle", every=0.5)
    recover_s = time.monotonic() - killed_at

    outcome = check_invariants(rt, pid, units, tickets)
    statuses = {o.status for o in orders_of(rt, tickets).values()}
    assert statuses == {"confirmed"}, statuses
    assert rt.inventory.figures(pid).sold == units
    with capsys.disabled():
        print(f"\nworker_sigkill: {in_flight} tickets were processing when the workers died")
    report(capsys, "worker_sigkill", outcome, recover_s)


# --- 2. the scheduler killed and restarted twice --------------------------------------------------


def scheduled_ids(rt: Runtime) -> list[str]:
    from rq_scheduler import Scheduler

    return sorted(rt.redis.zrange(Scheduler.scheduled_jobs_key, 0, -1))


def sweep_runs(rt: Runtime) -> float:
    """When the next periodic sweep is due: it moves each time a scheduler enqueues one."""
    from rq_scheduler import Scheduler

    return rt.redis.zscore(Scheduler.scheduled_jobs_key, "periodic-sweep") or 0.0


def test_scheduler_killed_and_restarted_twice(app, rt, settings, procs, servers, capsys):
    buyers, units = 240, 160
    # Holds of 3 s and leases of 2 s: the buyers who never complete 3-D Secure lose their hold
    # to the sweep (nothing else reclaims it once the rush is over).
    env = clean_env({"HOLD_SECONDS": "3", "SETTLE_LEASE_SECONDS": "2"})
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=units, max_per_user=1)
    pid = product["id"]
    procs.workers(env, 2)
    scheduler = procs.scheduler(env)
    server = servers(env)
    expected = sorted(p.job_id for p in periodic_jobs(settings))
    wait_until(lambda: scheduled_ids(rt) == expected, 30, "the schedule to be registered")

    tokens = [b.token for b in make_users(app, buyers)]
    half = buyers // 2
    paying = rush(server.url, pid, tokens[:half])
    abandoning = rush(server.url, pid, tokens[half:], method="pm_card_authenticationRequired")
    tickets = paying + abandoning
    assert len(paying) == buyers // 2 and len(tickets) == units

    for _ in range(2):
        due = sweep_runs(rt)
        procs.kill(scheduler)  # SIGKILL: its lock stays until it expires
        restarted_at = time.monotonic()
        scheduler = procs.scheduler(env)
        # The new scheduler takes over once the dead one's lock expires and enqueues a sweep.
        wait_until(lambda due=due: sweep_runs(rt) > due, 60, "the restarted scheduler to run")
        assert scheduled_ids(rt) == expected
    wait_until(lambda: settled(rt, pid, tickets), 90, "every hold to settle or expire", every=0.5)
    recover_s = time.monotonic() - restarted_at

    assert scheduled_ids(rt) == expected  # the periodic jobs were never doubled
    queued = rt.redis.lrange(f"rq:queue:{settings.queue_name}", 0, -1)
    assert queued.count("periodic-sweep") <= 1 and queued.count("periodic-reconcile") <= 1
    outcome = check_invariants(rt, pid, units, tickets)
    orders = orders_of(rt, tickets)
    assert {orders[t].status for t in paying} == {"confirmed"}
    assert {orders[t].status for t in abandoning} == {"expired"}
    report(capsys, "scheduler_sigkill_x2", outcome, recover_s)


# --- 3. Redis restarted empty in the middle of the sale -------------------------------------------


def purchase(url: str, product_id: int, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/purchase/{product_id}",
        json={"quantity": 1, "payment_method": "pm_card_visa"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_redis_restarted_empty_mid_sale(app, settings, procs, servers, capsys):
    buyers, units = 300, 200
    redis = RedisProcess(Path(tempfile.mkdtemp(prefix="faults-redis-"))).start()
    own = Runtime(dataclasses.replace(settings, redis_url=redis.url, inventory_redis_url=redis.url))
    try:
        env = clean_env({"REDIS_URL": redis.url, "INVENTORY_REDIS_URL": redis.url})
        procs.workers(env, 2)
        procs.scheduler(env)  # the sweep on this Redis (the test's own sweep() uses the session's)
        server = servers(env)
        admin = make_user(app, "admin")
        created = httpx.post(
            f"{server.url}/products",
            json={"name": "redis drop", "price": "25.00", "stock": units, "max_per_user": 1},
            headers=admin.headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        tokens = [b.token for b in make_users(app, buyers)]

        before = rush(server.url, pid, tokens[:150])
        assert len(before) == 150
        wait_until(lambda: settled(own, pid, before), 60, "the first wave to settle", every=0.2)
        # The simulated provider keeps its charges in this Redis: read them before it goes.
        charges = charges_of(own, before)

        redis.stop()  # no persistence: it comes back empty, on the same port
        restarted = RedisProcess(redis.data_dir)
        restarted.port = redis.port
        redis = restarted.start()
        restarted_at = time.monotonic()

        probe = tokens[150]
        first = purchase(server.url, pid, probe)
        assert first.status_code == 503, first.text
        assert first.json()["error"] == "inventory_unavailable"
        answers: list[int] = []

        def sold_again() -> bool:
            answer = purchase(server.url, pid, probe)
            answers.append(answer.status_code)
            return answer.status_code == 202 and answer.json()["ticket_id"]

        probe_ticket = wait_until(sold_again, 60, "the stock to be rebuilt", every=0.1)
        recover_s = time.monotonic() - restarted_at
        assert set(answers) <= {202, 503}, answers
        figures = own.inventory.figures(pid)
        assert figures.sold == 150 and figures.available == units - 151, figures

        after = rush(server.url, pid, tokens[151:])
        assert len(after) == units - 151
        tickets = [*before, probe_ticket, *after]
        wait_until(lambda: settled(own, pid, tickets), 90, "every ticket to settle", every=0.5)
        charges |= charges_of(own, [probe_ticket, *after])
        outcome = check_invariants(own, pid, units, tickets, charges)
        assert {o.status for o in orders_of(own, tickets).values()} == {"confirmed"}
        report(capsys, "redis_restart_empty", outcome, recover_s)
    finally:
        procs.stop_all()
        own.engine.dispose()
        redis.stop()
        shutil.rmtree(redis.data_dir, ignore_errors=True)


def finish(inventory: Inventory, product_id: int, ticket: str, outcome: str, reason: str = ""):  # type: ignore[no-untyped-def]
    return inventory.finish_holds(product_id, [Ending(ticket, outcome, reason)])[ticket]


# --- 6. a lock holder outliving its lock ----------------------------------------------------------


def test_a_lock_holder_past_its_ttl_cannot_settle_the_hold_twice(app, rt, capsys):
    """The lock is only a courtesy: the Lua scripts check the hold's state, so a settler that
    stalled past its lock's TTL and wakes up after another settled the ticket changes nothing."""
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(app.test_client(), admin, stock=2)
    pid = product["id"]
    short = Inventory(rt.inventory_redis, dataclasses.replace(rt.settings, lock_ttl_ms=200))
    ticket = new_ticket_id(pid)
    assert short.reserve(pid, buyer.id, 1, ticket, "pm_card_visa").result == "reserved"

    stale = short.lock(pid, ticket)
    assert stale.acquire()
    assert short.begin_settlements(pid, [ticket])[ticket][0] == "processing"
    started = time.monotonic()
    # The holder stalls; its lock lapses and a second settler takes it and confirms the hold.
    fresh = short.lock(pid, ticket)
    wait_until(fresh.acquire, 10, "the stale lock to lapse")
    state, hold = finish(short, pid, ticket, "confirmed")
    assert state == "ok" and hold.status == "confirmed"
    assert not stale.release(), "compare-and-delete: a stale holder cannot drop the new lock"

    # The stale holder wakes up with its own outcome: finish_hold.lua checks the state first.
    assert finish(short, pid, ticket, "failed", "payment_failed")[0] == "conflict"
    assert finish(short, pid, ticket, "confirmed")[0] == "already"
    assert finish(short, pid, ticket, "expired", "hold_expired")[0] == "conflict"
    figures = short.figures(pid)
    assert (figures.available, figures.held, figures.sold) == (1, 0, 1)
    assert fresh.release()

    # SQL follows Redis (the hold is final: recorded as is, no new charge), once.
    assert rt.settler.settle_batch(pid, [(None, ticket)]).settled == {"confirmed": 1}
    assert rt.settler.settle_batch(pid, [(None, ticket)]).settled == {}
    outcome = check_invariants(rt, pid, 2, [ticket], paid=False)
    report(capsys, "stale_lock_holder", outcome, time.monotonic() - started)


# --- 7. one Idempotency-Key sent 20 times at once -------------------------------------------------


def test_one_idempotency_key_twenty_times_at_once_makes_one_hold(app, rt, procs, servers, capsys):
    buyers, units, repeats = 200, 300, 20
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=units, max_per_user=2)
    pid = product["id"]
    procs.workers(clean_env({}), 2)
    server = servers(clean_env({}))
    crowd = make_users(app, buyers + 1)
    repeated, others = crowd[0], crowd[1:]
    key = f"order-{secrets.token_hex(6)}"
    requests = [(b.token, "pm_card_visa", "") for b in others]
    requests += [(repeated.token, "pm_card_visa", key)] * repeats
    started = time.monotonic()
    responses = asyncio.run(_rush(server.url, pid, requests))
    assert {r.status_code for r in responses} == {202}
    same = {r.json()["ticket_id"] for r in responses[buyers:]}
    assert len(same) == 1, f"{len(same)} holds for one Idempotency-Key"
    tickets = sorted({r.json()["ticket_id"] for r in responses})
    assert len(tickets) == buyers + 1
    wait_until(sweeping(rt, pid, tickets), 90, "every ticket to settle", every=0.5)
    recover_s = time.monotonic() - started
    outcome = check_invariants(rt, pid, units, tickets)
    [ticket] = same
    assert charges_of(rt, [ticket]) == {ticket: 1}
    assert rt.inventory.figures(pid).sold == buyers + 1
    with rt.sessions() as session:
        mine = session.scalars(select(Order).where(Order.user_id == repeated.id)).all()
    assert [(o.ticket_id, o.quantity, o.status) for o in mine] == [(ticket, 1, "confirmed")]
    report(capsys, "idempotency_key_x20", outcome, recover_s)


# --- 4. PostgreSQL unreachable for 10+ s ----------------------------------------------------------


class TcpProxy:
    """A TCP relay of our own in front of PostgreSQL, on an asyncio loop in a thread. `cut()`
    drops every relayed connection and resets new ones; `restore()` relays again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self.loop
        ).result(5)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.transport.abort()
                self.writers.discard(sink)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def _abort_all(self) -> None:
        self.down = True
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self._abort_all)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "down", False)

    def stop(self) -> None:
        self._abort_all_threadsafe()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _abort_all_threadsafe(self) -> None:
        self.loop.call_soon_threadsafe(self._abort_all)


@pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"),
    reason="needs PostgreSQL (TEST_DATABASE_URL): the outage is a TCP proxy in front of it",
)
def test_postgresql_unreachable_for_ten_seconds(app, rt, settings, procs, servers, capsys):
    buyers, units, outage_s = 300, 150, 10
    parts = urlsplit(settings.database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    try:
        via_proxy = urlunsplit(parts._replace(netloc=parts.netloc.replace(
            f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{proxy.port}"
        )))  # fmt: skip
        assert str(proxy.port) in via_proxy
        workers_env = clean_env({"DATABASE_URL": via_proxy, "PAYMENT_LATENCY_MS": "50"})
        procs.workers(workers_env, 2)
        server = servers(clean_env({}))
        admin = make_user(app, "admin")
        product = create_product(app.test_client(), admin, stock=units, max_per_user=1)
        pid = product["id"]
        tokens = [b.token for b in make_users(app, buyers)]

        first = rush(server.url, pid, tokens[:100])
        wait_until(
            lambda: any(o.status == "confirmed" for o in orders_of(rt, first).values()),
            30,
            "settlement to be under way",
        )
        proxy.cut()
        cut_at = time.monotonic()
        # Reservations keep being accepted while the workers cannot reach the database.
        during = rush(server.url, pid, tokens[100:])
        assert len(during) == units - 100
        assert time.monotonic() - cut_at < outage_s
        time.sleep(max(0.0, outage_s - (time.monotonic() - cut_at)))  # the outage itself
        stalled = not settled(rt, pid, [*first, *during])
        proxy.restore()
        restored_at = time.monotonic()
        tickets = [*first, *during]
        assert stalled, "everything settled although the database was unreachable"
        wait_until(sweeping(rt, pid, tickets), 120, "every ticket to settle", every=0.5)
        recover_s = time.monotonic() - restored_at
        outcome = check_invariants(rt, pid, units, tickets)
        assert {o.status for o in orders_of(rt, tickets).values()} == {"confirmed"}
        report(capsys, "postgresql_outage_10s", outcome, recover_s)
    finally:
        procs.stop_all()
        proxy.stop()


# --- 5. the payment provider hangs ----------------------------------------------------------------


def stripe_charges(localstripe, tickets: list[str]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Succeeded intents per ticket at the (emulated) provider, by our metadata."""
    import stripe

    client = stripe.StripeClient(
        os.environ["STRIPE_API_KEY"], base_addresses={"api": localstripe.url}
    )
    wanted = set(tickets)
    counts = dict.fromkeys(tickets, 0)
    listed = client.v1.payment_intents.list(params={"limit": 100})
    for intent in listed.auto_paging_iter():
        ticket = intent.to_dict().get("metadata", {}).get("ticket_id")
        if ticket in wanted and intent.status == "succeeded":
            counts[ticket] += 1
    return counts


def test_payment_provider_hangs(app, rt, settings, localstripe, procs, servers, capsys):
    buyers, units, hold_s, outage_s = 200, 40, 6, 10
    env = clean_env(
        {"PAYMENT_GATEWAY": "stripe", "HOLD_SECONDS": str(hold_s), "SETTLE_LEASE_SECONDS": "2"}
    )
    procs.workers(env, 2)
    server = servers(env)
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=units, max_per_user=1)
    pid = product["id"]
    tokens = [b.token for b in make_users(app, buyers)]

    os.kill(localstripe.process.pid, signal.SIGSTOP)  # the provider accepts, never answers
    frozen_at = time.monotonic()
    try:
        tickets = rush(server.url, pid, tokens)
        assert len(tickets) == units

        def released() -> bool:
            sweep()
            orders = orders_of(rt, tickets).values()
            return any(o.status == "expired" for o in orders)

        # Payment calls time out (PAYMENT_TIMEOUT_SECONDS) and are retried; once a hold is past
        # its deadline the sweep releases it, and the settler records it without the provider.
        wait_until(released, hold_s + 30, "a hold to be released past its deadline", every=0.5)
        first_release_s = time.monotonic() - frozen_at
        assert first_release_s < hold_s + settings.payment_timeout_seconds + 5
        time.sleep(max(0.0, outage_s - (time.monotonic() - frozen_at)))  # the outage itself
    finally:
        os.kill(localstripe.process.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_until(sweeping(rt, pid, tickets), 120, "every ticket to settle", every=0.5)
    recover_s = time.monotonic() - resumed_at
    procs.stop_all()  # no worker of this test talks to the shared emulator afterwards
    wait_until(localstripe._answers, 30, "localstripe to work through its backlog", every=0.2)

    charges = stripe_charges(localstripe, tickets)
    outcome = check_invariants(rt, pid, units, tickets, charges)
    orders = orders_of(rt, tickets)
    assert {o.status for o in orders.values()} <= {"confirmed", "expired", "refunded"}
    assert all(charges[t] == 0 for t, o in orders.items() if o.status == "expired")
    with capsys.disabled():
        counts = {s: sum(o.status == s for o in orders.values()) for s in TERMINAL}
        print(f"\nprovider_hang: first release after {first_release_s:.1f}s, {counts}")
    report(capsys, "payment_provider_hang", outcome, recover_s)


# --- 7. waiting rooms: the scheduler killed, Redis restarted empty --------------------------------


def _join(url: str, product_id: int, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/queue/{product_id}/join", headers=headers, timeout=10)


def _queue_status(url: str, product_id: int, token: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.get(f"{url}/queue/{product_id}/status", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _buy_with_pass(url: str, product_id: int, token: str, queue_pass: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "X-Queue-Pass": queue_pass}
    body = {"quantity": 1, "payment_method": "pm_card_visa"}
    return httpx.post(f"{url}/purchase/{product_id}", json=body, headers=headers, timeout=10)


def test_a_waiting_room_admits_in_order_with_its_scheduler_killed_and_restarted(
    app, rt, procs, servers, capsys
):
    """Admission moves inside the status script, not in a scheduled job: killing the scheduler
    mid-sale skips nobody and admits nobody twice."""
    rate, buyers = 40, 120
    env = clean_env({})
    scheduler = procs.scheduler(env)
    server = servers(env)
    admin = make_user(app, "admin")
    body = {"name": "room drop", "price": "25.00", "stock": 500, "max_per_user": 1}
    room = {"waiting_room": True, "admit_per_second": rate}
    created = httpx.post(
        f"{server.url}/products", json=body | room, headers=admin.headers, timeout=10
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    tokens = [b.token for b in make_users(app, buyers)]
    for token in tokens:
        assert _join(server.url, pid, token).status_code == 200
    killed_at = time.monotonic()
    procs.kill(scheduler)  # SIGKILL mid-admission
    scheduler = procs.scheduler(env)

    def everyone_admitted() -> bool:
        return _queue_status(server.url, pid, tokens[-1])["status"] == "admitted"

    wait_until(everyone_admitted, 60, "every place to be admitted", every=0.1)
    recover_s = time.monotonic() - killed_at
    keys = rt.inventory.keys(pid)
    admits = [(int(f["position"]), int(f["at"])) for _, f in rt.inventory_redis.xrange(keys.admits)]
    assert [position for position, _ in admits] == list(range(1, buyers + 1))
    moments = [at for _, at in admits]
    for i, start in enumerate(moments):
        assert sum(1 for m in moments[i:] if m < start + 1000) <= rate
    outcome = Outcome(tickets=buyers, lost=0, double_charged=0, oversold=0)
    report(capsys, "room_scheduler_sigkill", outcome, recover_s)


def test_a_waiting_room_after_redis_restarted_empty(app, settings, procs, servers, capsys):
    """The room answers 503 until the stock is rebuilt (its 503 queues the rebuild, as a
    purchase's does), which opens the room again, empty, as a new room: a pass issued before the
    restart buys no more (the new room's places start again from 1), a pass of the new one
    does."""
    redis = RedisProcess(Path(tempfile.mkdtemp(prefix="faults-redis-"))).start()
    own = Runtime(dataclasses.replace(settings, redis_url=redis.url, inventory_redis_url=redis.url))
    try:
        env = clean_env({"REDIS_URL": redis.url, "INVENTORY_REDIS_URL": redis.url})
        procs.workers(env, 1)
        server = servers(env)
        admin = make_user(app, "admin")
        body = {"name": "room drop", "price": "25.00", "stock": 50, "max_per_user": 1}
        room = {"waiting_room": True, "admit_per_second": 100}
        created = httpx.post(
            f"{server.url}/products", json=body | room, headers=admin.headers, timeout=10
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        first, late = (b.token for b in make_users(app, 2))
        assert _join(server.url, pid, first).status_code == 200
        queue_pass = wait_until(
            lambda: _queue_status(server.url, pid, first).get("queue_pass"), 10, "admission"
        )

        redis.stop()  # no persistence: it comes back empty, on the same port
        restarted = RedisProcess(redis.data_dir)
        restarted.port = redis.port
        redis = restarted.start()
        restarted_at = time.monotonic()
        refused = _join(server.url, pid, late)
        assert (refused.status_code, refused.json()["error"]) == (503, "queue_unavailable")
        rejoined = wait_until(
            lambda: _join(server.url, pid, late).status_code == 200, 60, "the room to reopen"
        )
        assert rejoined
        recover_s = time.monotonic() - restarted_at
        assert _queue_status(server.url, pid, late)["position"] == 1  # open again, empty
        stale = _buy_with_pass(server.url, pid, first, queue_pass)
        assert (stale.status_code, stale.json()["error"]) == (403, "queue_pass_invalid")
        new_pass = wait_until(
            lambda: _queue_status(server.url, pid, late).get("queue_pass"), 10, "admission"
        )
        bought = _buy_with_pass(server.url, pid, late, new_pass)
        assert bought.status_code == 202, bought.text
        outcome = Outcome(tickets=1, lost=0, double_charged=0, oversold=0)
        report(capsys, "room_redis_restart_empty", outcome, recover_s)
    finally:
        procs.stop_all()
        own.engine.dispose()
        redis.stop()
        shutil.rmtree(redis.data_dir, ignore_errors=True)
