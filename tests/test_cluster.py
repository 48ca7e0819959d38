"""The inventory on a Redis Cluster (TEST_INVENTORY_REDIS=cluster): what only a cluster can show."""

from __future__ import annotations

import os
import random

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from core.keys import new_ticket_id

pytestmark = pytest.mark.skipif(
    os.environ.get("TEST_INVENTORY_REDIS") != "cluster",
    reason="needs the inventory on a Redis Cluster (TEST_INVENTORY_REDIS=cluster)",
)


def _move_slot(cluster: RedisCluster, slot: int, to_id: str) -> None:
    """Gives an empty slot to another primary, told to every primary."""
    for node in cluster.get_primaries():
        node.redis_connection.execute_command("CLUSTER SETSLOT", slot, "NODE", to_id)


def _product_on_an_empty_slot(rt, cluster: RedisCluster) -> int:  # type: ignore[no-untyped-def]
    """A product with no keys yet whose slot holds none either (earlier tests fill slots): a
    slot may move to another primary only while it is empty."""
    for _ in range(1000):
        product_id = random.randrange(10**8, 10**9)
        tag = rt.inventory.keys(product_id).tag
        owner = cluster.get_node_from_key(tag).redis_connection
        if owner.execute_command("CLUSTER COUNTKEYSINSLOT", key_slot(tag.encode())) == 0:
            return product_id
    raise AssertionError("no empty slot found")


def test_a_script_follows_its_slot_to_another_primary(rt):
    cluster = rt.inventory_redis
    assert isinstance(cluster, RedisCluster)
    product_id = _product_on_an_empty_slot(rt, cluster)
    ticket = new_ticket_id(product_id)
    slot = key_slot(rt.inventory.keys(product_id).tag.encode())
    owner = cluster.get_node_from_key(rt.inventory.keys(product_id).tag)
    assert rt.inventory.get_ticket(ticket) is None  # routed to its owner, which it knows
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    other_id = other.redis_connection.execute_command("CLUSTER MYID")
    owner_id = owner.redis_connection.execute_command("CLUSTER MYID")
    _move_slot(cluster, slot, other_id)
    try:
        assert rt.inventory.get_ticket(ticket) is None  # MOVED from the old owner, then asked again
        assert cluster.get_node_from_key(rt.inventory.keys(product_id).tag).name == other.name
    finally:
        _move_slot(cluster, slot, owner_id)
        cluster.nodes_manager.initialize()


def test_a_split_products_buckets_are_served_by_every_primary(rt):
    from tests.helpers import buyer_ids, stocked_product

    cluster = rt.inventory_redis
    product_id = stocked_product(rt, stock=120, buckets=12)
    owners = {
        cluster.get_node_from_key(rt.inventory.keys(product_id, b).tag).name for b in range(12)
    }
    assert owners == {node.name for node in cluster.get_primaries()}
    served: set[str] = set()
    for buyer in buyer_ids(rt, 12):
        outcome = rt.inventory.reserve(
            product_id, buyer, 1, new_ticket_id(product_id), "pm_card_visa"
        )
        assert outcome.result == "reserved"
        k = rt.inventory.ticket_keys(product_id, [outcome.ticket_id])
        served.add(cluster.get_node_from_key(k.tag).name)
    assert served == owners  # twelve buyers, one a bucket: every primary sold
