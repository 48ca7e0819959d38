"""Waiting room passes across a Redis that lost the sale and across a room switched on: a pass
buys once, in the room it was given in, whatever Redis lost or the admin changed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.models import Order
from core.stock import rebuild_stock
from jobs.maintenance import sweep
from tests.helpers import Account, app_with, create_product, make_user, run_workers
from tests.servers import free_port, wait_until
from tests.test_api_errors import assert_error
from tests.test_waiting_room import _admitted_pass, _buy, _join


def _settled(client: Any, buyer: Account, ticket: str, settings: Any) -> None:
    def confirmed() -> bool:
        run_workers(settings)
        answer = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
        return answer["status"] == "confirmed"

    wait_until(confirmed, 20, "the purchase to be confirmed")


def _bought(client: Any, buyer: Account, product_id: int, queue_pass: str) -> str:
    answer = _buy(client, buyer, product_id, queue_pass)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()["ticket_id"]


def _one_per_bucket(app: Any, buckets: int) -> list[Account]:
    """A buyer whose own bucket is each of a split product's, in the buckets' order."""
    by_home: dict[int, Account] = {}
    while len(by_home) < buckets:
        buyer = make_user(app)
        by_home.setdefault(buyer.id % buckets, buyer)
    return [by_home[home] for home in range(buckets)]


def _room_sale(client: Any, admin: Account, **fields: Any) -> int:
    return create_product(
        client, admin, stock=10, max_per_user=5, waiting_room=True, admit_per_second=1000, **fields
    )["id"]


def test_a_pass_that_bought_stays_used_when_the_stock_is_rebuilt(client, app, admin, rt, settings):
    product_id = _room_sale(client, admin)
    buyer = make_user(app)
    queue_pass = _admitted_pass(client, buyer, product_id)
    ticket = _bought(client, buyer, product_id, queue_pass)
    _settled(client, buyer, ticket, settings)
    keys = rt.inventory.keys(product_id)
    room = set(keys.room_keys)
    rt.inventory_redis.delete(*(key for key in keys.all() if key not in room))  # the stock lost
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert_error(_buy(client, buyer, product_id, queue_pass), 403, "queue_pass_invalid")
    assert rt.inventory.figures(product_id).held == 0  # nothing held
    with rt.sessions() as session:  # SQL's order kept the pass's use
        recorded = session.scalar(select(Order.queue_pass).where(Order.ticket_id == ticket))
    assert recorded in rt.inventory_redis.smembers(keys.passes_used)


def test_a_pass_whose_purchase_failed_stays_used_when_the_stock_is_rebuilt(client, app, admin, rt):
    product_id = _room_sale(client, admin)
    buyer = make_user(app)
    queue_pass = _admitted_pass(client, buyer, product_id)
    headers = buyer.headers | {"X-Queue-Pass": queue_pass}
    body = {"quantity": 1, "payment_method": "pm_card_chargeDeclined"}
    declined = client.post(f"/purchase/{product_id}", json=body, headers=headers)
    assert declined.status_code == 202, declined.get_json()
    ticket = declined.get_json()["ticket_id"]

    def failed() -> bool:
        run_workers(rt.settings)
        answer = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
        return answer["status"] == "failed"

    wait_until(failed, 20, "the declined purchase to fail")
    assert_error(_buy(client, buyer, product_id, queue_pass), 403, "queue_pass_invalid")
    keys = rt.inventory.keys(product_id)
    room = set(keys.room_keys)
    rt.inventory_redis.delete(*(key for key in keys.all() if key not in room))  # the stock lost
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    # As before the loss: the pass bought once, whatever became of that purchase.
    assert_error(_buy(client, buyer, product_id, queue_pass), 403, "queue_pass_invalid")


def test_after_redis_lost_the_sale_old_passes_are_refused_and_new_ones_do_not_collide(
    client, app, admin, rt, settings
):
    product_id = _room_sale(client, admin)
    buyer, waiting = make_user(app), make_user(app)
    used = _admitted_pass(client, buyer, product_id)
    unused = _admitted_pass(client, waiting, product_id)
    ticket = _bought(client, buyer, product_id, used)
    _settled(client, buyer, ticket, settings)
    rt.inventory_redis.delete(*rt.inventory.keys(product_id).all())  # Redis lost the sale
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    # A new room: its places start again from 1, and the old room's passes buy no more.
    assert_error(_buy(client, buyer, product_id, used), 403, "queue_pass_invalid")
    assert_error(_buy(client, waiting, product_id, unused), 403, "queue_pass_invalid")
    assert _join(client, buyer, product_id).get_json()["position"] == 1  # as before the loss
    again = _admitted_pass(client, buyer, product_id)
    _bought(client, buyer, product_id, again)  # the new pass is not the used one


def test_a_split_sale_rebuilt_checks_passes_against_the_new_room_in_every_bucket(
    client, app, admin, rt
):
    product_id = _room_sale(client, admin, buckets=2)
    buyers = _one_per_bucket(app, 2)
    old = {b.id: _admitted_pass(client, b, product_id) for b in buyers}
    for bucket in (0, 1):
        rt.inventory_redis.delete(*rt.inventory.keys(product_id, bucket).all())
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    for buyer in buyers:  # each buys in its own bucket: both know the new room
        assert_error(_buy(client, buyer, product_id, old[buyer.id]), 403, "queue_pass_invalid")
        _bought(client, buyer, product_id, _admitted_pass(client, buyer, product_id))


def test_a_pass_given_without_a_room_does_not_skip_the_room_switched_on(client, app, admin):
    product_id = create_product(client, admin, stock=10, max_per_user=5)["id"]
    buyer = make_user(app)
    joined = _join(client, buyer, product_id).get_json()
    assert joined["status"] == "admitted"  # no room: a pass at once
    switched = client.patch(
        f"/products/{product_id}",
        json={"waiting_room": True, "admit_per_second": 1000},
        headers=admin.headers,
    )
    assert switched.status_code == 200, switched.get_json()
    assert_error(_buy(client, buyer, product_id, joined["queue_pass"]), 403, "queue_pass_invalid")
    _bought(client, buyer, product_id, _admitted_pass(client, buyer, product_id))


def test_a_room_switched_on_again_is_a_new_room(client, app, admin):
    product_id = _room_sale(client, admin)
    buyer = make_user(app)
    first = _admitted_pass(client, buyer, product_id)
    for on in (False, True):
        switched = client.patch(
            f"/products/{product_id}", json={"waiting_room": on}, headers=admin.headers
        )
        assert switched.status_code == 200, switched.get_json()
    assert_error(_buy(client, buyer, product_id, first), 403, "queue_pass_invalid")

    def forgotten() -> bool:  # once the web process's copy of the board is read again
        status = client.get(f"/queue/{product_id}/status", headers=buyer.headers)
        return status.status_code == 404 and status.get_json()["error"] == "not_in_queue"

    wait_until(forgotten, 10, "the places of the earlier room to be gone")


def test_a_room_switched_on_while_redis_is_down_is_applied_by_the_sweep(client, app, admin, rt):
    product_id = create_product(client, admin, stock=10, max_per_user=5)["id"]
    buyer = make_user(app)
    down_url = f"redis://127.0.0.1:{free_port()}/0"
    with app_with(inventory_redis_url=down_url) as inventory_down:
        answer = inventory_down.test_client().patch(
            f"/products/{product_id}",
            json={"waiting_room": True, "admit_per_second": 1000},
            headers=admin.headers,
        )
    assert_error(answer, 503, "inventory_unavailable")  # saved; Redis will follow
    swept = sweep()
    assert_error(_buy(client, buyer, product_id), 403, "queue_pass_required")
    assert swept["terms_applied"] >= 1
    _bought(client, buyer, product_id, _admitted_pass(client, buyer, product_id))
