"""A 202 that survives a failover: the inventory's primary with a replica of its own.

Each test starts a redis-server and a replica of it on free ports (the machine's Redis is never
touched). A replica that lags is a replica stopped with SIGSTOP: it stays connected and acks
nothing, so WAIT times out. A failover that loses what the replica never had is done by hand,
in order: the replica is promoted (REPLICAOF NO ONE) before the writes it must not have (a
stopped replica would still find them in its socket's buffer), then the primary is killed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from core.failover import LOST, HoldNotDurable, record_unreplicated, recover_lost_holds
from core.keys import new_ticket_id
from core.models import Order, Product
from core.orders import confirmed_quantity, get_order, live_seats
from core.runtime import Runtime
from core.stock import reconcile_product
from core.tickets import OrderStatus
from core.tickets.cancel import CancelNotDurable, cancel_ticket
from core.tickets.view import Viewer
from tests.helpers import app_with, buyer_ids, make_user, seated_hall, stocked_product
from tests.servers import RedisProcess, wait_until


class Pair:
    """A primary and its replica."""

    def __init__(self, folder: Path) -> None:
        self.primary = RedisProcess(folder / "primary", "--repl-diskless-sync-delay", "0").start()
        self.replica = RedisProcess(
            folder / "replica", "--replicaof", "127.0.0.1", str(self.primary.port)
        ).start()
        wait_until(self._linked, 15, "the replica to sync")

    def _linked(self) -> bool:
        info = self.client(self.replica).info("replication")
        return info.get("master_link_status") == "up"

    @staticmethod
    def client(server: RedisProcess) -> Redis:
        return Redis(host="127.0.0.1", port=server.port, decode_responses=True)

    @contextmanager
    def replica_stopped(self) -> Iterator[None]:
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.replica.process.pid, signal.SIGCONT)

    def promote(self) -> None:
        """The replica leaves its primary, keeping what it has and getting nothing more: for the
        writes after it, a replica that lagged and never got them."""
        self.client(self.replica).execute_command("REPLICAOF", "NO", "ONE")

    def kill_primary(self) -> None:
        self.primary.process.kill()
        self.primary.process.wait(10)

    def stop(self) -> None:
        for server in (self.replica, self.primary):
            if server.process and server.process.poll() is None:
                os.kill(server.process.pid, signal.SIGCONT)
            server.stop()


@pytest.fixture()
def pair(tmp_path):  # type: ignore[no-untyped-def]
    servers = Pair(tmp_path)
    yield servers
    servers.stop()


def runtime_on(settings, server: RedisProcess, replicas: int = 1, wait_ms: int = 50) -> Runtime:  # type: ignore[no-untyped-def]
    """`wait_ms`: long where a replica must confirm (WAIT answers once it has), so a slow
    machine does not turn into a lagging replica."""
    changed = dataclasses.replace(
        settings,
        inventory_redis_url=server.url,
        inventory_min_replicas=replicas,
        inventory_replica_wait_ms=wait_ms,
    )
    return Runtime(changed)


def reserve(rt: Runtime, product_id: int, buyer: int):  # type: ignore[no-untyped-def]
    return rt.inventory.reserve(product_id, buyer, 1, new_ticket_id(product_id), "pm_card_visa")


def test_a_reservation_is_answered_once_a_replica_has_it_in_one_round_trip(pair, settings):
    rt = runtime_on(settings, pair.primary, wait_ms=10_000)
    product_id = stocked_product(rt, stock=5)
    first, second = buyer_ids(rt, 2)
    reserve(rt, product_id, first)  # the script loaded (NOSCRIPT, once a server)
    primary = pair.client(pair.primary)
    primary.config_resetstat()
    reservation = reserve(rt, product_id, second)
    assert reservation.result == "reserved" and reservation.replicated
    holds = rt.inventory.keys(product_id).holds
    assert pair.client(pair.replica).hexists(holds, reservation.ticket_id)  # there at the answer
    stats = primary.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1 and stats["cmdstat_wait"]["calls"] == 1
    assert "cmdstat_script|exists" not in stats and "cmdstat_evalsha" in stats
    rt.close()


def test_a_script_unknown_to_the_primary_is_loaded_and_sent_again(pair, settings):
    rt = runtime_on(settings, pair.primary, wait_ms=10_000)
    product_id = stocked_product(rt, stock=5)
    pair.client(pair.primary).script_flush()
    assert reserve(rt, product_id, buyer_ids(rt, 1)[0]).result == "reserved"
    rt.close()


def test_without_replicas_asked_for_no_wait_is_sent(pair, settings):
    rt = Runtime(dataclasses.replace(settings, inventory_redis_url=pair.primary.url))
    product_id = stocked_product(rt, stock=5)
    primary = pair.client(pair.primary)
    primary.config_resetstat()
    assert reserve(rt, product_id, buyer_ids(rt, 1)[0]).replicated
    assert "cmdstat_wait" not in primary.info("commandstats")
    rt.close()


def test_a_purchase_no_replica_confirms_is_in_sql_before_its_202(pair, settings):
    rt = runtime_on(settings, pair.primary)
    product_id = stocked_product(rt, stock=5)
    changes = {"inventory_redis_url": pair.primary.url, "inventory_min_replicas": 1}
    with app_with(**changes) as app, pair.replica_stopped():
        buyer = make_user(app)
        response = app.test_client().post(
            f"/purchase/{product_id}",
            json={"quantity": 1, "payment_method": "pm_card_visa"},
            headers=buyer.headers,
        )
        assert response.status_code == 202, response.get_json()
        ticket = response.get_json()["ticket_id"]
        with rt.sessions() as session:
            order = get_order(session, ticket)
            assert order is not None and order.status == "reserved"
    # The settler's own insert of the same ticket changes nothing: one order, settled once.
    assert rt.settler.settle_batch(product_id, [(None, ticket)]).settled == {"confirmed": 1}
    with rt.sessions() as session:
        assert session.query(Order).filter_by(ticket_id=ticket).count() == 1
    rt.close()


def test_a_hold_neither_a_replica_nor_sql_takes_is_released(pair, settings, tmp_path):
    rt = runtime_on(settings, pair.primary)
    product_id = stocked_product(rt, stock=5)
    with pair.replica_stopped():
        reservation = reserve(rt, product_id, buyer_ids(rt, 1)[0])
    assert reservation.result == "reserved" and not reservation.replicated
    unreachable = sessionmaker(create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none"))
    with pytest.raises(HoldNotDurable):
        record_unreplicated(rt.inventory, unreachable, product_id, reservation.hold)
    figures = rt.inventory.figures(product_id)
    assert (figures.available, figures.held) == (5, 0)
    hold = rt.inventory.get_hold(reservation.ticket_id)
    assert hold.status == "failed" and hold.reason == "inventory_unavailable"
    rt.close()


def test_a_cancel_is_answered_once_a_replica_has_it(pair, settings):
    rt = runtime_on(settings, pair.primary)
    product_id = stocked_product(rt, stock=5)
    [buyer] = buyer_ids(rt, 1)
    reservation = reserve(rt, product_id, buyer)
    assert reservation.replicated
    viewer = Viewer(buyer)
    # A failover now would bring the hold back reserved, and settle it: not answered yet.
    with pair.replica_stopped(), rt.sessions() as session, pytest.raises(CancelNotDurable):
        cancel_ticket(rt.inventory, rt.settler, session, reservation.ticket_id, viewer)
    with rt.sessions() as session:  # asked again once the replica has it
        again = cancel_ticket(rt.inventory, rt.settler, session, reservation.ticket_id, viewer)
    assert again == OrderStatus.CANCELLED
    holds = rt.inventory.keys(product_id).holds
    on_replica = pair.client(pair.replica).hget(holds, reservation.ticket_id)
    assert on_replica is not None and '"s":"cancelled"' in on_replica.replace(" ", "")
    rt.close()


def test_a_confirmation_waits_until_a_replica_has_the_hold(pair, settings):
    rt = runtime_on(settings, pair.primary)
    product_id = stocked_product(rt, stock=5)
    with pair.replica_stopped():
        reservation = reserve(rt, product_id, buyer_ids(rt, 1)[0])
        ticket = reservation.ticket_id
        record_unreplicated(rt.inventory, rt.sessions, product_id, reservation.hold)
        report = rt.settler.settle_batch(product_id, [(None, ticket)])
        assert report.settled == {} and report.deferred == 1
        with rt.sessions() as session:
            assert get_order(session, ticket).status == "processing"  # paid, not confirmed
        assert rt.inventory.get_hold(ticket).status == "confirmed"
    wait_until(lambda: rt.inventory.replicated(product_id), 10, "the replica to catch up")
    assert rt.settler.settle_batch(product_id, [(None, ticket)]).settled == {"confirmed": 1}
    assert rt.gateways["simulated"].charges(ticket) == 1
    rt.close()


def _lost_in_a_failover(pair: Pair, rt: Runtime, stock: int) -> tuple[int, str]:
    """A purchase answered 202 through SQL while the replica lagged, then a failover that lost
    its hold: the promoted replica has the stock (all units free) but not the hold."""
    product_id = stocked_product(rt, stock=stock, max_per_user=1)
    wait_until(lambda: rt.inventory.replicated(product_id), 10, "the stock on the replica")
    pair.promote()
    reservation = reserve(rt, product_id, buyer_ids(rt, 1)[0])
    assert not reservation.replicated
    record_unreplicated(rt.inventory, rt.sessions, product_id, reservation.hold)
    pair.kill_primary()
    return product_id, reservation.ticket_id


def test_an_order_whose_hold_a_failover_lost_is_held_again_and_confirmed(pair, settings):
    rt = runtime_on(settings, pair.primary)
    product_id, ticket = _lost_in_a_failover(pair, rt, stock=3)
    promoted = runtime_on(settings, pair.replica, replicas=0)  # it has none of its own
    assert promoted.inventory.get_hold(ticket) is None
    assert recover_lost_holds(promoted.settler, product_id) == {"adopted": 1}
    assert promoted.inventory.figures(product_id).available == 2
    settled = promoted.settler.settle_batch(product_id, [(None, ticket)]).settled
    assert settled == {"confirmed": 1}
    assert recover_lost_holds(promoted.settler, product_id) == {}  # nothing open is left
    rt.close()
    promoted.close()


def test_an_order_whose_hold_was_lost_and_its_unit_resold_fails_without_a_charge(pair, settings):
    rt = runtime_on(settings, pair.primary)
    product_id, ticket = _lost_in_a_failover(pair, rt, stock=1)
    promoted = runtime_on(settings, pair.replica, replicas=0)  # it has none of its own
    other = reserve(promoted, product_id, buyer_ids(promoted, 1)[0])  # the unit, sold again
    assert other.result == "reserved"
    assert recover_lost_holds(promoted.settler, product_id) == {"taken": 1}
    promoted.settler.settle_batch(product_id, [(None, other.ticket_id)])
    with promoted.sessions() as session:
        lost = get_order(session, ticket)
        assert (lost.status, lost.failure_reason) == ("failed", LOST)
        assert confirmed_quantity(session, product_id) == 1  # not oversold
    assert promoted.gateways["simulated"].charges(ticket) == 0
    rt.close()
    promoted.close()


@pytest.mark.parametrize("first", ["recovery", "settlement"])
def test_a_seat_whose_hold_a_failover_lost_and_that_sold_again_ends_in_one_order(
    pair, settings, first
):
    """Seat A-1-2's hold is lost by a failover after SQL took its order; the promoted primary,
    with no replica of its own, sells the seat again, its order recorded by the web too (SQL
    refuses it the seat). Whichever runs first, the recovery of the lost hold or the settlement
    of the new one, exactly one order ends with the seat, in SQL and in Redis, charged once."""
    rt = runtime_on(settings, pair.primary)
    with app_with(inventory_redis_url=pair.primary.url) as app:
        event_id = seated_hall(app, "Failover", 1, 4)["id"]
    with rt.sessions() as session:
        product_id = session.scalar(select(Product.id).where(Product.event_id == event_id))
    wait_until(lambda: rt.inventory.replicated(product_id), 10, "the seats on the replica")
    pair.promote()
    lost = reserve_seat(rt, product_id, "A-1-2")
    assert not lost.replicated
    record_unreplicated(rt.inventory, rt.sessions, product_id, lost.hold)
    pair.kill_primary()
    promoted = runtime_on(settings, pair.replica, replicas=0)
    again = reserve_seat(promoted, product_id, "A-1-2")
    assert again.result == "reserved", again
    record_unreplicated(promoted.inventory, promoted.sessions, product_id, again.hold)
    settle = promoted.settler.settle_batch
    if first == "recovery":
        assert recover_lost_holds(promoted.settler, product_id) == {"taken": 1}
        assert settle(product_id, [(None, again.ticket_id)]).settled == {"confirmed": 1}
        winner, loser, reason = again.ticket_id, lost.ticket_id, LOST
    else:
        assert settle(product_id, [(None, again.ticket_id)]).settled == {"failed": 1}
        assert recover_lost_holds(promoted.settler, product_id) == {"adopted": 1}
        assert settle(product_id, [(None, lost.ticket_id)]).settled == {"confirmed": 1}
        winner, loser, reason = lost.ticket_id, again.ticket_id, "seat_taken"
    with promoted.sessions() as session:
        assert live_seats(session, event_id) == {"A-1-2": winner}
        assert get_order(session, winner).status == "confirmed"
        ended = get_order(session, loser)
        assert (ended.status, ended.failure_reason) == ("failed", reason)
    states = promoted.inventory_redis.hgetall(promoted.inventory.keys(product_id).seats)
    assert states == {"A-1-1": "f", "A-1-2": f"s:{winner}", "A-1-3": "f", "A-1-4": "f"}
    charges = promoted.gateways["simulated"]
    assert (charges.charges(winner), charges.charges(loser)) == (1, 0)
    assert reconcile_product(promoted.inventory, promoted.sessions, product_id).result == (
        "consistent"
    )
    rt.close()
    promoted.close()


def reserve_seat(rt: Runtime, product_id: int, seat: str):  # type: ignore[no-untyped-def]
    buyer = buyer_ids(rt, 1)[0]
    ticket = new_ticket_id(product_id)
    return rt.inventory.reserve(product_id, buyer, 1, ticket, "pm_card_visa", seats=[seat])
