"""A hot product's stock split across buckets (one hash tag each): a purchase tries the buyer's
own bucket and moves on when it is empty; sold out once every bucket is; settlement, expiry,
rebuild and reconciliation bucket by bucket; one stock report adding them up. Real Redis (a
real cluster in the cluster pass), real database, gunicorn over real HTTP for the rush."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from core.inventory import Ending, Inventory
from core.keys import bucket_of_ticket, bucket_order, new_ticket_id, ticket_in_bucket
from core.models import Order
from core.stock import product_report, rebuild_stock, reconcile_product
from jobs.queues import enqueue_drains
from tests.helpers import (
    buyer_ids,
    create_product,
    make_user,
    make_users,
    run_workers,
    rush,
    stocked_product,
)
from tests.servers import Gunicorn, clean_env, wait_until

BODY = {"quantity": 1, "payment_method": "pm_card_visa"}


def _buyers_at_home(rt, buckets: int, home: int, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Buyers whose own bucket is `home`."""
    found: list[int] = []
    while len(found) < count:
        found += [u for u in buyer_ids(rt, buckets * count) if u % buckets == home]
    return found[:count]


def _reserve(rt, product_id: int, user: int, **kw):  # type: ignore[no-untyped-def]
    """One unit bought through rt's inventory (or `rt` itself, an inventory)."""
    inventory = rt if isinstance(rt, Inventory) else rt.inventory
    ticket = new_ticket_id(product_id)
    return inventory.reserve(product_id, user, 1, ticket, "pm_card_visa", **kw)


def _settle_all(rt, settings, product_id: int) -> None:  # type: ignore[no-untyped-def]
    enqueue_drains(settings, [product_id])
    run_workers(settings)


def _orders(rt, product_id: int) -> list[Order]:  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return list(session.scalars(select(Order).where(Order.product_id == product_id)))


# --- the purchase decision -------------------------------------------------------------------


def test_the_stock_is_shared_out_and_each_bucket_has_its_own_keys(rt):
    product_id = stocked_product(rt, stock=10, buckets=4)
    shares = [rt.inventory.figures(product_id, b).initial for b in range(4)]  # type: ignore[union-attr]
    assert shares == [3, 3, 2, 2]
    tags = {rt.inventory.keys(product_id, b).tag for b in range(4)}
    assert len(tags) == 4
    assert rt.inventory.bucket_count(product_id) == 4
    assert rt.inventory.available([product_id], {product_id: 4}) == {product_id: 10}


def test_a_buyer_buys_in_their_own_bucket_then_moves_on_and_sold_out_comes_once_all_are_empty(rt):
    product_id = stocked_product(rt, stock=3, buckets=3)  # one unit a bucket
    buyers = _buyers_at_home(rt, 3, home=1, count=4)
    tickets = []
    for buyer in buyers[:3]:
        outcome = _reserve(rt, product_id, buyer)
        assert outcome.result == "reserved", outcome
        tickets.append(outcome.ticket_id)
    # The first in their own bucket, the next ones in the buckets after it, round.
    assert [bucket_of_ticket(t) for t in tickets] == [1, 2, 0]
    refused = _reserve(rt, product_id, buyers[3])
    assert (refused.result, refused.remaining) == ("sold_out", 0)
    figures = [rt.inventory.figures(product_id, b) for b in range(3)]
    assert [(f.available, f.held) for f in figures] == [(0, 1)] * 3  # type: ignore[union-attr]


def test_a_purchase_bigger_than_any_bucket_is_sold_out_with_what_one_purchase_can_get(rt):
    product_id = stocked_product(rt, stock=4, buckets=2)  # 2 and 2
    [buyer] = buyer_ids(rt, 1)
    outcome = rt.inventory.reserve(product_id, buyer, 3, new_ticket_id(product_id), "pm_card_visa")
    assert (outcome.result, outcome.remaining) == ("sold_out", 2)
    assert rt.inventory.available([product_id], {product_id: 2}) == {product_id: 4}


def test_a_retried_purchase_ends_where_the_first_did_even_with_units_back_in_the_first_bucket(rt):
    product_id = stocked_product(rt, stock=2, buckets=2)  # one unit a bucket
    first, retrier = _buyers_at_home(rt, 2, home=0, count=2)
    held = _reserve(rt, product_id, first)
    assert bucket_of_ticket(held.ticket_id) == 0
    original = _reserve(rt, product_id, retrier, idempotency_key="k-1")
    assert bucket_of_ticket(original.ticket_id) == 1
    # The first buyer's hold ends: bucket 0 has its unit again.
    ending = Ending(held.ticket_id, "failed", "card_declined")
    assert rt.inventory.finish_holds(product_id, [ending])[held.ticket_id][0] == "ok"
    assert rt.inventory.figures(product_id, 0).available == 1  # type: ignore[union-attr]
    retry = _reserve(rt, product_id, retrier, idempotency_key="k-1")
    assert (retry.result, retry.ticket_id) == ("duplicate", original.ticket_id)
    assert rt.inventory.figures(product_id, 0).available == 1  # type: ignore[union-attr]


def test_a_retry_after_a_rebuild_still_ends_where_the_first_did(rt, settings):
    product_id = stocked_product(rt, stock=2, buckets=2)
    first, retrier = _buyers_at_home(rt, 2, home=0, count=2)
    held = _reserve(rt, product_id, first)
    original = _reserve(rt, product_id, retrier, idempotency_key="k-2")
    _settle_all(rt, settings, product_id)  # both confirmed in SQL, with their buckets
    assert {o.ticket_id: o.bucket for o in _orders(rt, product_id)} == {
        held.ticket_id: 0,
        original.ticket_id: 1,
    }
    # Bucket 0 is lost with its marks, rebuilt from SQL, and gets a unit back (a refund's).
    rt.inventory_redis.delete(*rt.inventory.keys(product_id, 0).all())
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    rt.inventory_redis.hincrby(rt.inventory.keys(product_id, 0).stock, "available", 1)
    retry = _reserve(rt, product_id, retrier, idempotency_key="k-2")
    assert (retry.result, retry.ticket_id) == ("duplicate", original.ticket_id)


def test_a_missing_later_bucket_is_moved_past_without_a_key_and_answered_unavailable_with_one(rt):
    product_id = stocked_product(rt, stock=4, buckets=3)  # 2, 1 and 1
    first, [buyer] = _buyers_at_home(rt, 3, 0, 2), _buyers_at_home(rt, 3, 0, 1)
    for other in first:
        assert bucket_of_ticket(_reserve(rt, product_id, other).ticket_id) == 0
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 1).stock)
    assert bucket_of_ticket(_reserve(rt, product_id, buyer).ticket_id) == 2
    # With a key, a retry must meet bucket 1 as this attempt did: answered unavailable.
    assert _reserve(rt, product_id, buyer, idempotency_key="k-3").result == "unavailable"
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    keyed = _reserve(rt, product_id, buyer, idempotency_key="k-3")
    assert bucket_of_ticket(keyed.ticket_id) == 1


def test_a_missing_own_bucket_is_answered_unavailable(rt):
    product_id = stocked_product(rt, stock=6, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    # The process learns the number of buckets from the first bucket it calls.
    assert _reserve(rt, product_id, buyer).result == "reserved"
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 0).stock)
    assert _reserve(rt, product_id, buyer).result == "unavailable"  # it counts the buyer's units


def test_the_rate_limit_counts_each_attempt_once_however_many_buckets_it_tries(rt):
    from core.inventory import PurchaseRate

    product_id = stocked_product(rt, stock=3, buckets=3)
    rate = PurchaseRate(2, 60_000, "2 per 1 minute")
    [buyer] = buyer_ids(rt, 1)
    results = [_reserve(rt, product_id, buyer, rate=rate).result for _ in range(3)]
    assert results == ["reserved", "reserved", "rate_limited"]


# --- settlement, expiry, rebuild and reconciliation, bucket by bucket ---------------------------


def test_settlement_and_the_stock_report_cover_every_bucket(rt, settings):
    product_id = stocked_product(rt, stock=8, buckets=4)
    buyers = buyer_ids(rt, 10)
    outcomes = [_reserve(rt, product_id, b) for b in buyers]
    tickets = [o.ticket_id for o in outcomes if o.result == "reserved"]
    assert len(tickets) == 8 and {bucket_of_ticket(t) for t in tickets} == {0, 1, 2, 3}
    _settle_all(rt, settings, product_id)
    orders = _orders(rt, product_id)
    assert sorted(o.ticket_id for o in orders) == sorted(tickets)
    assert {o.status for o in orders} == {"confirmed"}
    assert all(o.bucket == bucket_of_ticket(o.ticket_id) for o in orders)
    books, stock = product_report(rt.inventory, rt.sessions, product_id)
    assert books is not None and stock is not None
    assert (stock.figures.initial, stock.figures.sold, stock.sold_in_db) == (8, 8, 8)
    assert stock.consistent
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"


def test_expiry_returns_units_to_the_bucket_that_held_them(rt, settings):
    product_id = stocked_product(rt, stock=4, buckets=2)
    buyers = _buyers_at_home(rt, 2, home=1, count=2)
    tickets = [_reserve(rt, product_id, b).ticket_id for b in buyers]
    assert [bucket_of_ticket(t) for t in tickets] == [1, 1]
    k = rt.inventory.keys(product_id, 1)
    rt.inventory_redis.zadd(k.deadlines, dict.fromkeys(tickets, 0))  # past their deadline
    assert rt.inventory.expire_holds(product_id, bucket=0) == 0
    assert rt.inventory.expire_holds(product_id, bucket=1) == 2
    assert rt.inventory.figures(product_id, 1).available == 2  # type: ignore[union-attr]
    _settle_all(rt, settings, product_id)
    assert {o.status for o in _orders(rt, product_id)} == {"expired"}
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"


def test_reconciliation_repairs_the_bucket_that_is_wrong_and_leaves_the_others(rt, settings):
    product_id = stocked_product(rt, stock=9, buckets=3)
    for buyer in buyer_ids(rt, 6):
        _reserve(rt, product_id, buyer)
    _settle_all(rt, settings, product_id)
    before = [rt.inventory.figures(product_id, b) for b in range(3)]
    rt.inventory_redis.hincrby(rt.inventory.keys(product_id, 2).stock, "available", 5)
    outcome = reconcile_product(rt.inventory, rt.sessions, product_id)
    assert outcome.result == "repaired"
    after = [rt.inventory.figures(product_id, b) for b in range(3)]
    assert [(f.available, f.sold) for f in after] == [(f.available, f.sold) for f in before]  # type: ignore[union-attr]
    assert after[0].version == before[0].version and after[1].version == before[1].version  # type: ignore[union-attr]
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"


def test_reconciliation_rebuilds_a_lost_bucket_and_then_finds_it_consistent(rt, settings):
    product_id = stocked_product(rt, stock=6, buckets=3)
    for buyer in buyer_ids(rt, 4):
        _reserve(rt, product_id, buyer)
    _settle_all(rt, settings, product_id)
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 2).stock)
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "rebuilt"
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"


def test_a_lost_bucket_is_rebuilt_from_its_own_orders_by_the_sweep(rt, settings):
    from jobs.maintenance import sweep

    product_id = stocked_product(rt, stock=6, buckets=3)
    tickets = [_reserve(rt, product_id, b).ticket_id for b in buyer_ids(rt, 5)]
    _settle_all(rt, settings, product_id)
    sold_in_1 = sum(1 for t in tickets if bucket_of_ticket(t) == 1)
    rt.inventory_redis.delete(*rt.inventory.keys(product_id, 1).all())
    sweep()
    figures = rt.inventory.figures(product_id, 1)
    assert figures is not None
    assert (figures.initial, figures.sold, figures.available) == (2, sold_in_1, 2 - sold_in_1)
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"


# --- the per-user limit: the buyer's units are counted in the buyer's own bucket -------------


def _claims(rt, product_id: int, bucket: int) -> dict:  # type: ignore[no-untyped-def]
    return rt.inventory.open_claims(product_id, bucket)


def _counted(rt, product_id: int, bucket: int, user: int) -> int:  # type: ignore[no-untyped-def]
    k = rt.inventory.keys(product_id, bucket)
    return int(rt.inventory_redis.hget(k.users, str(user)) or 0)


def _sell_out_home(rt, product_id: int, buckets: int, home: int, units: int) -> None:  # type: ignore[no-untyped-def]
    for other in _buyers_at_home(rt, buckets, home, units):
        assert bucket_of_ticket(_reserve(rt, product_id, other).ticket_id) == home


def test_the_limit_counts_a_buyers_units_in_every_bucket_in_the_buyers_own(rt, settings):
    product_id = stocked_product(rt, stock=6, max_per_user=2, buckets=2)  # 3 and 3
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    assert bucket_of_ticket(_reserve(rt, product_id, buyer).ticket_id) == 0
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    away = _reserve(rt, product_id, buyer)
    assert bucket_of_ticket(away.ticket_id) == 1
    assert _counted(rt, product_id, 0, buyer) == 2 and _counted(rt, product_id, 1, buyer) == 0
    assert list(_claims(rt, product_id, 0)) == [ticket_in_bucket(away.ticket_id, 0)]
    refused = _reserve(rt, product_id, buyer)
    assert (refused.result, refused.remaining) == ("per_user_limit", 0)
    _settle_all(rt, settings, product_id)  # confirmed: the claim goes, the units stay counted
    assert _claims(rt, product_id, 0) == {}
    assert _counted(rt, product_id, 0, buyer) == 2
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"


def test_a_failed_purchase_in_another_bucket_gives_the_buyer_the_units_back(rt, settings):
    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=1, count=1)
    _sell_out_home(rt, product_id, 2, home=1, units=2)
    ticket = new_ticket_id(product_id)
    declined = rt.inventory.reserve(product_id, buyer, 1, ticket, "pm_card_chargeDeclined")
    assert bucket_of_ticket(declined.ticket_id) == 0
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"
    _settle_all(rt, settings, product_id)
    assert {o.ticket_id: o.status for o in _orders(rt, product_id)}[declined.ticket_id] == "failed"
    assert _claims(rt, product_id, 1) == {} and _counted(rt, product_id, 1, buyer) == 0
    assert _reserve(rt, product_id, buyer).result == "reserved"


def test_a_purchase_sold_out_everywhere_leaves_no_claim_and_no_count(rt):
    product_id = stocked_product(rt, stock=2, max_per_user=3, buckets=2)
    for buyer in buyer_ids(rt, 2):
        assert _reserve(rt, product_id, buyer).result == "reserved"
    [late] = buyer_ids(rt, 1)
    refused = _reserve(rt, product_id, late)
    assert (refused.result, refused.remaining) == ("sold_out", 0)
    home = late % 2
    assert _claims(rt, product_id, home) == {} and _counted(rt, product_id, home, late) == 0


class _PausedAway(Inventory):
    """An inventory whose purchases stop before their first call to a later bucket until let
    go (or die there, with `fail`): the moment two purchases of one buyer can cross."""

    def __init__(self, rt, fail: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__(rt.inventory_redis, rt.settings)
        self.reached, self.go, self.fail = threading.Event(), threading.Event(), fail

    def _reserve_away(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.reached.set()
        if self.fail:
            raise ConnectionError("the web process died between two buckets")
        assert self.go.wait(10)
        return super()._reserve_away(*args, **kwargs)


def test_two_purchases_of_one_buyer_crossing_at_a_sold_out_bucket_sell_the_limit_once(rt):
    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    paused = _PausedAway(rt)
    outcomes: list = []
    first = threading.Thread(target=lambda: outcomes.append(_reserve(paused, product_id, buyer)))
    first.start()
    assert paused.reached.wait(10)  # its claim is made, its call to bucket 1 not yet
    second = _reserve(rt, product_id, buyer)
    paused.go.set()
    first.join(10)
    assert second.result == "per_user_limit"
    assert [o.result for o in outcomes] == ["reserved"]
    assert rt.inventory.figures(product_id, 1).held == 1  # type: ignore[union-attr]


def test_a_keyed_retry_whose_first_attempt_came_to_nothing_is_counted_anew(rt):
    product_id = stocked_product(rt, stock=6, max_per_user=1, buckets=3)  # 2, 2 and 2
    [buyer] = _buyers_at_home(rt, 3, home=0, count=1)
    _sell_out_home(rt, product_id, 3, home=0, units=2)
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 1).stock)
    first = _reserve(rt, product_id, buyer, idempotency_key="k-5")
    assert first.result == "unavailable"  # bucket 1 could not say: the claim went back
    assert _claims(rt, product_id, 0) == {} and _counted(rt, product_id, 0, buyer) == 0
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    retry = _reserve(rt, product_id, buyer, idempotency_key="k-5")
    assert bucket_of_ticket(retry.ticket_id) == 1
    assert _counted(rt, product_id, 0, buyer) == 1  # the retry's own claim
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"


def test_a_keyed_retry_carries_on_under_the_claim_of_a_first_attempt_that_died(rt):
    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    with pytest.raises(ConnectionError):
        _reserve(_PausedAway(rt, fail=True), product_id, buyer, idempotency_key="k-6")
    [claim] = _claims(rt, product_id, 0)
    retry = _reserve(rt, product_id, buyer, idempotency_key="k-6")
    assert retry.result == "reserved"
    assert retry.ticket_id == ticket_in_bucket(claim, 1)  # the first attempt's ticket
    assert _counted(rt, product_id, 0, buyer) == 1
    again = _reserve(rt, product_id, buyer, idempotency_key="k-6")
    assert (again.result, again.ticket_id) == ("duplicate", retry.ticket_id)
    assert _counted(rt, product_id, 0, buyer) == 1


def test_two_requests_with_one_key_crossing_keep_the_buyer_counted_once(rt, settings):
    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    paused = _PausedAway(rt)
    outcomes: list = []
    first = threading.Thread(
        target=lambda: outcomes.append(_reserve(paused, product_id, buyer, idempotency_key="k-7"))
    )
    first.start()
    assert paused.reached.wait(10)  # its claim is made, its call to bucket 1 not yet
    second = _reserve(rt, product_id, buyer, idempotency_key="k-7")  # carries on under it
    paused.go.set()
    first.join(10)
    assert second.result == "reserved" and bucket_of_ticket(second.ticket_id) == 1
    assert [(o.result, o.ticket_id) for o in outcomes] == [("duplicate", second.ticket_id)]
    # The first request found the second's hold: its claim still counts that purchase.
    assert _counted(rt, product_id, 0, buyer) == 1
    assert list(_claims(rt, product_id, 0)) == [ticket_in_bucket(second.ticket_id, 0)]
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"
    _settle_all(rt, settings, product_id)
    assert _counted(rt, product_id, 0, buyer) == 1
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"


def test_a_claim_left_by_a_purchase_that_died_is_released_by_the_sweep(rt, settings):
    from jobs.maintenance import sweep

    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    dying = _PausedAway(rt, fail=True)
    with pytest.raises(ConnectionError):
        _reserve(dying, product_id, buyer)
    [claim] = _claims(rt, product_id, 0)
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"
    sweep()
    assert list(_claims(rt, product_id, 0)) == [claim]  # not stale yet: the purchase may live
    _age_claims(rt, product_id, 0)
    sweep()
    assert _claims(rt, product_id, 0) == {} and _counted(rt, product_id, 0, buyer) == 0
    assert bucket_of_ticket(_reserve(rt, product_id, buyer).ticket_id) == 1


def _age_claims(rt, product_id: int, bucket: int) -> None:  # type: ignore[no-untyped-def]
    """The bucket's open claims, as if made CLAIM_MS ago."""
    k = rt.inventory.keys(product_id, bucket)
    for ticket, raw in rt.inventory_redis.hgetall(k.claims).items():
        claim = json.loads(raw) | {"d": 0}
        rt.inventory_redis.hset(k.claims, ticket, json.dumps(claim))


def test_the_sweep_keeps_a_stale_claim_whose_purchase_was_confirmed(rt, settings):
    from jobs.maintenance import sweep

    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=1, count=1)
    _sell_out_home(rt, product_id, 2, home=1, units=2)
    away = _reserve(rt, product_id, buyer)
    claim = ticket_in_bucket(away.ticket_id, 1)
    k = rt.inventory.keys(product_id, 1)
    saved = rt.inventory_redis.hget(k.claims, claim)
    _settle_all(rt, settings, product_id)
    rt.inventory_redis.hset(k.claims, claim, saved)  # as if the settler died before ending it
    _age_claims(rt, product_id, 1)
    sweep()
    assert _claims(rt, product_id, 1) == {} and _counted(rt, product_id, 1, buyer) == 1


def test_a_rebuilt_own_bucket_keeps_counting_a_claim_whose_purchase_holds_nothing_yet(rt):
    product_id = stocked_product(rt, stock=6, max_per_user=2, buckets=2)  # 3 and 3
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    assert bucket_of_ticket(_reserve(rt, product_id, buyer).ticket_id) == 0  # the last unit
    with pytest.raises(ConnectionError):  # a purchase dies between the two buckets
        _reserve(_PausedAway(rt, fail=True), product_id, buyer)
    assert _counted(rt, product_id, 0, buyer) == 2
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 0).stock)
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert _counted(rt, product_id, 0, buyer) == 2  # the hold, and the claim still open
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"
    _age_claims(rt, product_id, 0)
    from jobs.maintenance import sweep

    sweep()  # the dead purchase's claim goes: one unit counted, the hold's
    assert _claims(rt, product_id, 0) == {} and _counted(rt, product_id, 0, buyer) == 1


def test_a_rebuilt_own_bucket_drops_the_claim_of_a_purchase_that_ended(rt, settings):
    product_id = stocked_product(rt, stock=4, max_per_user=2, buckets=2)  # 2 and 2
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    assert bucket_of_ticket(_reserve(rt, product_id, buyer).ticket_id) == 0
    _sell_out_home(rt, product_id, 2, home=0, units=1)
    away = _reserve(rt, product_id, buyer)
    ending = Ending(away.ticket_id, "cancelled", "cancelled_by_buyer", "reserved")
    assert rt.inventory.finish_holds(product_id, [ending])[away.ticket_id][0] == "ok"
    assert _counted(rt, product_id, 0, buyer) == 2  # until settlement ends its claim
    rt.inventory_redis.delete(rt.inventory.keys(product_id, 0).stock)
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert _counted(rt, product_id, 0, buyer) == 1 and _claims(rt, product_id, 0) == {}
    _settle_all(rt, settings, product_id)  # the cancelled purchase's end: nothing to uncount
    assert _counted(rt, product_id, 0, buyer) == 1


def test_a_refund_of_a_purchase_held_in_another_bucket_uncounts_the_buyer_once(rt, settings):
    product_id = stocked_product(rt, stock=4, max_per_user=1, buckets=2)
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    away = _reserve(rt, product_id, buyer)
    _settle_all(rt, settings, product_id)
    assert _counted(rt, product_id, 0, buyer) == 1
    rt.settler.refunds.refund_confirmed(away.ticket_id)
    assert _counted(rt, product_id, 0, buyer) == 0
    assert rt.inventory.return_units(product_id, [away.ticket_id]) == 0  # once only
    assert _counted(rt, product_id, 0, buyer) == 0
    assert rt.inventory.figures(product_id, 1).available == 2  # type: ignore[union-attr]


def test_a_rebuilt_own_bucket_counts_the_buyers_units_held_in_other_buckets(rt, settings):
    product_id = stocked_product(rt, stock=6, max_per_user=2, buckets=2)  # 3 and 3
    [buyer] = _buyers_at_home(rt, 2, home=0, count=1)
    _sell_out_home(rt, product_id, 2, home=0, units=2)
    confirmed = _reserve(rt, product_id, buyer)  # bucket 0's last unit
    _settle_all(rt, settings, product_id)
    open_away = _reserve(rt, product_id, buyer)
    assert [bucket_of_ticket(t.ticket_id) for t in (confirmed, open_away)] == [0, 1]
    rt.inventory_redis.delete(*rt.inventory.keys(product_id, 0).all())
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert _counted(rt, product_id, 0, buyer) == 2
    assert list(_claims(rt, product_id, 0)) == [ticket_in_bucket(open_away.ticket_id, 0)]
    assert _reserve(rt, product_id, buyer).result == "per_user_limit"


# --- the API ---------------------------------------------------------------------------------


def test_the_api_takes_buckets_at_creation_within_their_range(client, admin, rt):
    product = create_product(client, admin, stock=12, buckets=4)
    assert (product["buckets"], product["available"]) == (4, 12)
    shown = client.get(f"/products/{product['id']}").get_json()
    assert (shown["buckets"], shown["available"]) == (4, 12)
    for fields in ({"buckets": 0}, {"buckets": 65}, {"buckets": "2"}):
        body = {"name": "hot", "price": "5.00", "stock": 10} | fields
        refused = client.post("/products", json=body, headers=admin.headers)
        assert refused.status_code == 400, fields
        assert refused.get_json()["error"] == "invalid_request"
    limited = client.patch(
        f"/products/{product['id']}",
        json={"max_per_user": 2, "waiting_room": True, "admit_per_second": 5},
        headers=admin.headers,
    )
    assert limited.status_code == 200 and limited.get_json()["max_per_user"] == 2
    snapshots = [rt.inventory.snapshot(product["id"], b) for b in range(4)]
    assert [s.terms.max_per_user for s in snapshots] == [2] * 4  # type: ignore[union-attr]
    stocks = [rt.inventory.keys(product["id"], b).stock for b in range(4)]
    assert [rt.inventory_redis.hget(stock, "room") for stock in stocks] == ["1"] * 4


# --- a waiting room in front of a split sale ---------------------------------------------------


def test_a_pass_buys_once_across_the_buckets_and_again_if_its_purchase_held_nothing(
    client, app, admin, rt
):
    from tests.test_api_errors import assert_error
    from tests.test_waiting_room import _admitted_pass
    from tests.test_waiting_room import _buy as buy_with

    product_id = create_product(
        client, admin, stock=2, buckets=2, waiting_room=True, admit_per_second=1000
    )["id"]
    first, second, third = [b for b in make_users(app, 8) if b.id % 2 == 0][:3]  # own bucket 0
    passes = {b.id: _admitted_pass(client, b, product_id) for b in (first, second, third)}
    bought = buy_with(client, first, product_id, passes[first.id])
    assert bucket_of_ticket(bought.get_json()["ticket_id"]) == 0
    assert_error(buy_with(client, first, product_id, passes[first.id]), 403, "queue_pass_invalid")
    away = buy_with(client, second, product_id, passes[second.id])  # its own bucket is sold out
    assert bucket_of_ticket(away.get_json()["ticket_id"]) == 1
    assert_error(buy_with(client, second, product_id, passes[second.id]), 403, "queue_pass_invalid")
    assert_error(buy_with(client, third, product_id, passes[third.id]), 409, "sold_out")
    ticket = away.get_json()["ticket_id"]
    assert client.post(f"/orders/{ticket}/cancel", headers=second.headers).status_code == 200

    # The third buyer's purchase held nothing: its pass buys the unit that came back (once the
    # process's sold-out flag lapses: SOLD_OUT_CACHE_MS).
    def bought_again():  # type: ignore[no-untyped-def]
        answer = buy_with(client, third, product_id, passes[third.id])
        assert answer.status_code in (202, 409), answer.get_json()
        return answer if answer.status_code == 202 else None

    again = wait_until(bought_again, 10, "the pass to buy the unit that came back")
    assert bucket_of_ticket(again.get_json()["ticket_id"]) == 1


def test_the_room_counts_every_buckets_units_to_tell_a_sold_out_sale(client, app, admin, rt):
    product_id = create_product(
        client, admin, stock=2, buckets=2, waiting_room=True, admit_per_second=1000
    )["id"]
    k = rt.inventory.keys(product_id)

    def board() -> list:
        others = rt.inventory.other_buckets_stock(product_id)
        return rt.inventory.scripts.room_board(keys=[k.stock, *k.room_keys], args=[others])

    assert board()[4:6] == [2, 0]  # available, held: both buckets'
    rt.inventory_redis.hset(k.stock, "available", 0)  # the first bucket empty, the second not
    assert board()[4:6] == [1, 0]


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    gunicorn = Gunicorn(clean_env({}), workers=2, threads=16).start()
    yield gunicorn
    gunicorn.stop()


@pytest.mark.slow
def test_a_rush_on_a_split_product_sells_exactly_the_stock(server, app, settings, rt):
    admin = make_user(app, "admin")
    units, buckets = 50, 4
    product = create_product(app.test_client(), admin, stock=units, buckets=buckets, max_per_user=1)
    buyers = make_users(app, 160)
    responses = asyncio.run(rush(server.url, product["id"], [b.token for b in buyers]))
    codes = Counter(r.status_code for r in responses)
    assert codes == {202: units, 409: len(buyers) - units}, codes
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"sold_out"}
    tickets = [r.json()["ticket_id"] for r in responses if r.status_code == 202]
    assert Counter(bucket_of_ticket(t) for t in tickets) == {0: 13, 1: 13, 2: 12, 3: 12}
    # Every buyer that got a ticket got it from the first bucket of their order with units.
    for response, buyer in zip(responses, buyers, strict=True):
        if response.status_code == 202:
            assert bucket_of_ticket(response.json()["ticket_id"]) in bucket_order(buyer.id, 4)

    def all_confirmed() -> bool:
        run_workers(settings)
        return sum(o.status == "confirmed" for o in _orders(rt, product["id"])) == units

    wait_until(all_confirmed, 120, "every ticket to be confirmed")
    # The claims of purchases that moved on all ended: kept (confirmed) or released (sold out).
    assert [_claims(rt, product["id"], b) for b in range(buckets)] == [{}] * buckets
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get(f"/products/{product['id']}").json()["available"] == 0
        inventory = http.get(
            f"/admin/products/{product['id']}/inventory", headers=admin.headers
        ).json()
    assert (inventory["sold"], inventory["sold_in_db"], inventory["consistent"]) == (
        units,
        units,
        True,
    )
    assert reconcile_product(rt.inventory, rt.sessions, product["id"]).result == "consistent"
