"""core/inventory/buckets.py: a ticket's stock read from its id, the buyer's bucket order, and a
product's bucket count learnt once a process for the inventory and the settler alike."""

from __future__ import annotations

from core.inventory.buckets import BucketRouter, Stock
from tests.helpers import stocked_product


def test_a_ticket_names_its_stock_and_moves_to_another_bucket_under_the_same_token():
    ticket = BucketRouter.new_ticket_id(Stock(42, 3))
    assert ticket.startswith("42.3-")
    assert BucketRouter.stock_of_ticket(ticket) == Stock(42, 3)
    first = BucketRouter.ticket_in_bucket(ticket, 0)
    assert BucketRouter.stock_of_ticket(first) == Stock(42, 0)
    assert first.split("-")[1] == ticket.split("-")[1]
    assert BucketRouter.stock_of_ticket("not-a-ticket") is None


def test_a_buyer_walks_every_bucket_once_from_their_own():
    assert BucketRouter.order(user_id=7, buckets=4) == [3, 0, 1, 2]
    assert BucketRouter.stocks(5, 2) == [Stock(5, 0), Stock(5, 1)]


def test_a_count_read_is_kept_and_an_unknown_one_is_read_again():
    router, reads = BucketRouter(), []

    def read(product_id: int) -> int | None:
        reads.append(product_id)
        return None if len(reads) == 1 else 4

    assert router.count(9, read) is None
    assert router.count(9, read) == 4
    assert router.count(9, read) == 4
    assert reads == [9, 9]


def test_the_settler_and_the_inventory_share_one_count(rt):
    product_id = stocked_product(rt, stock=8, buckets=4)
    assert rt.settler.inventory is rt.inventory
    assert rt.inventory.router.known_count(product_id) is None
    assert rt.settler.buckets_of(product_id) == 4
    assert rt.inventory.router.known_count(product_id) == 4
