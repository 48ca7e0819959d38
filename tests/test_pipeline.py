"""The purchase pipeline end to end: Lua reservation, real RQ workers, SQL, expiry, rebuild."""

from __future__ import annotations

import dataclasses
import threading

from sqlalchemy import func, select

from core.inventory import Inventory
from core.keys import new_ticket_id
from core.models import Order, Payment
from core.stock import reconcile_product
from jobs.maintenance import sweep
from jobs.runtime import runtime
from tests.helpers import create_product, make_user, run_workers
from tests.servers import wait_until


def buy(client, account, product_id, quantity=1, pm="pm_card_visa", key=None):  # type: ignore[no-untyped-def]
    headers = dict(account.headers)
    if key:
        headers["Idempotency-Key"] = key
    return client.post(
        f"/purchase/{product_id}",
        json={"quantity": quantity, "payment_method": pm},
        headers=headers,
    )


def settle_until(client, account, ticket_id, settings, statuses, timeout=20, sweeping=False):  # type: ignore[no-untyped-def]
    def terminal():  # type: ignore[no-untyped-def]
        if sweeping:
            sweep()  # what the scheduler runs every few seconds
        run_workers(settings)
        body = client.get(f"/orders/{ticket_id}", headers=account.headers).get_json()
        rows = order_rows(runtime(), ticket_id=ticket_id)
        recorded = bool(rows) and rows[0].status == body["status"]
        return body if body["status"] in statuses and recorded else None

    return wait_until(terminal, timeout, f"ticket {ticket_id} to reach {statuses}")


def order_rows(rt, **where):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        query = select(Order).filter_by(**where)
        return list(session.scalars(query))


def test_purchase_is_reserved_at_once_then_confirmed_by_a_worker(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=5, price="19.99")
    response = buy(client, buyer, product["id"])
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "reserved" and body["quantity"] == 1
    assert body["status_url"] == f"/orders/{body['ticket_id']}"
    assert client.get(f"/products/{product['id']}").get_json()["available"] == 4

    final = settle_until(client, buyer, body["ticket_id"], settings, {"confirmed"})
    assert final["amount"] == "19.99" and final["currency"] == "USD"
    assert final["payment"]["status"] == "succeeded"
    [order] = order_rows(rt, ticket_id=body["ticket_id"])
    assert order.status == "confirmed" and order.amount_minor == 1999
    inventory = client.get(
        f"/admin/products/{product['id']}/inventory", headers=admin.headers
    ).get_json()
    assert (inventory["available"], inventory["held"], inventory["sold"]) == (4, 0, 1)
    assert inventory["sold_in_db"] == 1 and inventory["consistent"] is True


def test_the_last_unit_is_sold_once(client, app, settings):
    admin = make_user(app, "admin")
    product = create_product(client, admin, stock=1)
    first, second = make_user(app), make_user(app)
    assert buy(client, first, product["id"]).status_code == 202
    refused = buy(client, second, product["id"])
    assert refused.status_code == 409 and refused.get_json()["error"] == "sold_out"
    assert client.get(f"/products/{product['id']}").get_json()["available"] == 0


def test_the_last_unit_under_concurrency(app, settings):
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=1)
    buyers = [make_user(app) for _ in range(12)]
    codes: list[int] = []
    barrier = threading.Barrier(len(buyers))

    def attempt(account):  # type: ignore[no-untyped-def]
        local = app.test_client()
        barrier.wait()
        codes.append(buy(local, account, product["id"]).status_code)

    threads = [threading.Thread(target=attempt, args=(b,)) for b in buyers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202] + [409] * 11


def test_quantity_larger_than_what_is_left_is_refused(client, app):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    refused = buy(client, buyer, product["id"], quantity=3)
    assert refused.status_code == 409
    assert refused.get_json() == {"error": "sold_out", "message": "sold out", "remaining": 2}


def test_per_user_limit_holds_under_concurrency(app):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(app.test_client(), admin, stock=50, max_per_user=2)
    codes: list[int] = []
    barrier = threading.Barrier(10)

    def attempt():  # type: ignore[no-untyped-def]
        local = app.test_client()
        barrier.wait()
        response = buy(local, buyer, product["id"])
        codes.append(response.status_code)
        if response.status_code == 409:
            assert response.get_json()["error"] == "per_user_limit"

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(202) == 2 and codes.count(409) == 8
    assert app.test_client().get(f"/products/{product['id']}").get_json()["available"] == 48


def test_idempotency_key_replay_gives_the_same_ticket_and_one_hold(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=10)
    first = buy(client, buyer, product["id"], key="order-abc-1")
    again = buy(client, buyer, product["id"], key="order-abc-1")
    assert first.status_code == again.status_code == 202
    assert first.get_json()["ticket_id"] == again.get_json()["ticket_id"]
    assert client.get(f"/products/{product['id']}").get_json()["available"] == 9
    other_key = buy(client, buyer, product["id"], key="order-abc-2")
    assert other_key.get_json()["ticket_id"] != first.get_json()["ticket_id"]
    settle_until(client, buyer, first.get_json()["ticket_id"], settings, {"confirmed"})
    replay = buy(client, buyer, product["id"], key="order-abc-1")
    assert (
        replay.status_code == 202
        and replay.get_json()["ticket_id"] == first.get_json()["ticket_id"]
    )
    assert len(order_rows(rt, product_id=product["id"])) == 2


def test_declined_payment_fails_the_order_and_returns_the_stock(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3, max_per_user=1)
    ticket = buy(client, buyer, product["id"], pm="pm_card_chargeDeclined").get_json()["ticket_id"]
    final = settle_until(client, buyer, ticket, settings, {"failed"})
    assert final["failure_reason"] == "generic_decline"
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (3, 0, 0)
    # the per-user allowance comes back with the stock
    assert buy(client, buyer, product["id"]).status_code == 202


def test_an_unsettled_hold_expires_and_its_stock_returns(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    short = Inventory(rt.inventory_redis, dataclasses.replace(settings, hold_seconds=1))
    ticket = new_ticket_id(product["id"])
    outcome = short.reserve(product["id"], buyer.id, 2, ticket, "pm_card_visa")
    assert outcome.result == "reserved"
    assert rt.inventory.figures(product["id"]).available == 0
    wait_until(lambda: rt.inventory.expire_holds(product["id"]) == 2, 10, "the hold to expire")
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held) == (2, 0)
    assert client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()["status"] == "expired"
    sweep()  # nobody kicked a worker for this ticket: the periodic sweep does

    def recorded():  # type: ignore[no-untyped-def]
        run_workers(settings)
        return order_rows(rt, ticket_id=ticket)

    [order] = wait_until(recorded, 20, "the expiry to reach SQL")
    assert (order.status, order.failure_reason) == ("expired", "hold_expired")
    assert rt.gateway.charges(ticket) == 0


def test_the_same_settlement_run_twice_makes_one_order_and_one_charge(client, app, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=5)
    ticket = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    first = rt.settler.settle_batch(product["id"], [(None, ticket)])
    second = rt.settler.settle_batch(product["id"], [(None, ticket)])
    assert first.settled == {"confirmed": 1}
    assert second.settled == {}
    assert rt.gateway.charges(ticket) == 1
    with rt.sessions() as session:
        assert session.scalar(select(func.count()).where(Order.ticket_id == ticket)) == 1
        assert session.scalar(select(func.count()).where(Payment.ticket_id == ticket)) == 1
    assert rt.inventory.figures(product["id"]).sold == 1


def test_a_ticket_whose_settler_died_is_claimed_again(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=5)
    ticket = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    # A settler reads the ticket and dies before acknowledging it.
    taken = rt.inventory.read_settle_queue(product["id"], "dead-worker", 10)
    assert [t for _, t in taken] == [ticket]
    assert rt.inventory.read_settle_queue(product["id"], "live-worker", 10) == []
    final = settle_until(client, buyer, ticket, settings, {"confirmed"}, sweeping=True)
    assert final["status"] == "confirmed"
    assert rt.inventory.settle_backlog(product["id"]) == 0


def test_missing_stock_key_answers_503_then_is_rebuilt_from_sql(client, app, settings, rt):
    admin = make_user(app, "admin")
    product = create_product(client, admin, stock=10)
    buyers = [make_user(app) for _ in range(3)]
    tickets = [buy(client, b, product["id"]).get_json()["ticket_id"] for b in buyers]
    for account, ticket in zip(buyers, tickets, strict=True):
        settle_until(client, account, ticket, settings, {"confirmed"})
    rt.inventory_redis.delete(rt.inventory.keys(product["id"]).stock)

    late = make_user(app)
    refused = buy(client, late, product["id"])
    assert refused.status_code == 503
    assert refused.get_json()["error"] == "inventory_unavailable"
    run_workers(settings)  # runs the rebuild job the refusal queued
    figures = rt.inventory.figures(product["id"])
    assert (figures.initial, figures.available, figures.held, figures.sold) == (10, 7, 0, 3)
    assert buy(client, late, product["id"]).status_code == 202


def test_reconciliation_repairs_redis_from_sql(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=10)
    ticket = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    settle_until(client, buyer, ticket, settings, {"confirmed"})
    assert reconcile_product(rt.inventory, rt.sessions, product["id"]).result == "consistent"
    stock_key = rt.inventory.keys(product["id"]).stock
    rt.inventory_redis.hset(stock_key, mapping={"sold": 4, "available": 3})
    outcome = reconcile_product(rt.inventory, rt.sessions, product["id"])
    assert outcome.result == "repaired" and outcome.sold_in_db == 1
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (9, 0, 1)


def test_sweep_settles_tickets_nobody_kicked(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3)
    ticket = new_ticket_id(product["id"])
    assert rt.inventory.reserve(product["id"], buyer.id, 1, ticket, "pm_card_visa").result == (
        "reserved"
    )
    report = sweep()
    assert report["products_waiting"] >= 1
    final = settle_until(client, buyer, ticket, settings, {"confirmed"})
    assert final["status"] == "confirmed"


def test_buyer_cancels_a_hold_before_payment(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3)
    ticket = new_ticket_id(product["id"])
    rt.inventory.reserve(product["id"], buyer.id, 1, ticket, "pm_card_visa")
    stranger = make_user(app)
    assert client.post(f"/orders/{ticket}/cancel", headers=stranger.headers).status_code == 404
    cancelled = client.post(f"/orders/{ticket}/cancel", headers=buyer.headers)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert rt.inventory.figures(product["id"]).available == 3
    settle_until(client, buyer, ticket, settings, {"cancelled"})
    assert order_rows(rt, ticket_id=ticket)[0].status == "cancelled"
    again = client.post(f"/orders/{ticket}/cancel", headers=buyer.headers)
    assert again.status_code == 409


def test_restock_reaches_redis_and_a_lost_restock_is_repaired(client, app, rt):
    admin = make_user(app, "admin")
    product = create_product(client, admin, stock=2)
    patched = client.patch(
        f"/products/{product['id']}", json={"add_stock": 3}, headers=admin.headers
    )
    assert patched.status_code == 200
    assert (patched.get_json()["initial_stock"], patched.get_json()["available"]) == (5, 5)
    # Redis missed a restock that SQL recorded: reconciliation brings it in.
    rt.inventory_redis.hset(
        rt.inventory.keys(product["id"]).stock, mapping={"initial": 2, "available": 2}
    )
    assert reconcile_product(rt.inventory, rt.sessions, product["id"]).result == "repaired"
    figures = rt.inventory.figures(product["id"])
    assert (figures.initial, figures.available) == (5, 5)
    assert reconcile_product(rt.inventory, rt.sessions, product["id"]).result == "consistent"


def test_concurrent_confirmations_of_one_intent_charge_once(rt):
    intent = rt.gateway.create_intent("9-" + "a" * 24, 500, "USD", "pm_card_visa", {})
    results: list[str] = []
    barrier = threading.Barrier(8)

    def confirm():  # type: ignore[no-untyped-def]
        barrier.wait()
        results.append(rt.gateway.confirm_intent(intent.id, "9-" + "a" * 24).status)

    threads = [threading.Thread(target=confirm) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rt.gateway.charges("9-" + "a" * 24) == 1
    assert rt.gateway.retrieve_intent(intent.id).status == "succeeded"


def test_stock_released_after_a_sell_out_is_sold_again(client, app, rt):
    admin, first, second = make_user(app, "admin"), make_user(app), make_user(app)
    product = create_product(client, admin, stock=1)
    ticket = new_ticket_id(product["id"])
    rt.inventory.reserve(product["id"], first.id, 1, ticket, "pm_card_visa")
    refused = buy(client, second, product["id"])
    assert refused.get_json()["error"] == "sold_out"  # this process now remembers: sold out
    assert client.post(f"/orders/{ticket}/cancel", headers=first.headers).status_code == 200
    # The released unit sells again once the short-lived sold-out flag lapses.
    accepted = wait_until(
        lambda: (r := buy(client, second, product["id"])).status_code == 202 and r,
        5,
        "the released unit to be sold again",
    )
    assert accepted.get_json()["quantity"] == 1


def test_a_settled_ticket_is_answered_from_redis_until_it_changes(client, app, settings, rt):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    ticket = buy(client, buyer, product["id"]).get_json()["ticket_id"]
    settle_until(client, buyer, ticket, settings, {"confirmed"})
    final_key = rt.inventory.keys(product["id"]).final(ticket)
    assert rt.inventory_redis.ttl(final_key) > 0
    body = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
    assert (body["status"], body["payment"]) == ("confirmed", {"status": "succeeded"})
    other = make_user(app)
    assert client.get(f"/orders/{ticket}", headers=other.headers).status_code == 404
    # An admin refund changes the order after settlement: the cached answer goes.
    assert client.post(f"/orders/{ticket}/cancel", headers=admin.headers).status_code == 200
    assert not rt.inventory_redis.exists(final_key)
    assert client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()["status"] == "refunded"
