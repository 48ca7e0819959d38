"""What a failover of the inventory's primary must not lose: the holds of accepted purchases.

With INVENTORY_MIN_REPLICAS set, a purchase is answered 202 once a replica has its hold (WAIT,
in the reserve's round trip: `Inventory.reserve`). When no replica confirms in time, the hold is
made durable in SQL instead: the order the settler would record for it, written by the web
process (`record_unreplicated`); when SQL cannot take it either, the hold is released and the
buyer told to retry. After a failover that lost such a hold (the promoted replica has the stock
but not the hold), `recover_lost_holds` finds SQL's open order without a hold and holds it again
if its units are still free, or ends it with no charge.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db import snapshot, transaction
from core.inventory import Ending, Hold, Inventory
from core.keys import bucket_of_ticket
from core.locks import LockTimeout, locked
from core.models import Product
from core.orders import open_orders, order_seats, record_orders
from core.settlement import Settler
from core.stock import restored_hold
from core.tickets import OrderStatus

log = logging.getLogger(__name__)
LOST = "hold_lost"  # the reason of an order whose hold a failover lost and whose units were taken


class HoldNotDurable(RuntimeError):
    """Neither a replica nor SQL took the hold in time: it was released, the buyer retries."""


def record_unreplicated(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, hold: Hold
) -> None:
    """Writes the order of a hold no replica confirmed, as the settler records it (reserved;
    the settler's own insert of the ticket is then a no-op). If SQL refuses, the hold is
    released under its lock and HoldNotDurable raised."""
    try:
        with transaction(sessions) as session:
            event_id = session.scalar(select(Product.event_id).where(Product.id == product_id))
            reserved = [(hold, OrderStatus.RESERVED)]
            record_orders(session, reserved, product_id, hold.currency, event_id)
    except SQLAlchemyError as error:
        log.warning("order of %s not recorded: its hold is released", hold.ticket_id)
        _release(inventory, product_id, hold.ticket_id)
        raise HoldNotDurable(hold.ticket_id) from error


def _release(inventory: Inventory, product_id: int, ticket_id: str) -> None:
    """The hold back to the stock, while no settler has taken it (the settler records it as
    failed once SQL answers: its stream entry stays)."""
    ending = Ending(ticket_id, OrderStatus.FAILED.value, "inventory_unavailable", "reserved")
    try:
        with locked(inventory.lock(product_id, ticket_id)):
            inventory.finish_holds(product_id, [ending])
    except (LockTimeout, RedisError):
        log.warning("hold %s could not be released: its settler records it", ticket_id)


def recover_lost_holds(settler: Settler, product_id: int, buckets: int = 1) -> dict[str, int]:
    """SQL's open orders of the product whose hold Redis does not have: each held again if its
    units are still free (`adopt_hold.lua`), else ended (expired past its deadline, failed
    otherwise) with any payment refunded. SQL is read first: an order is written only after its
    hold exists, and a hold is dropped only after SQL has its final state, so an open order
    with no hold and no final state in Redis lost its hold. Answers how many of each outcome."""
    inventory = settler.inventory
    counts: dict[str, int] = {}
    for bucket in range(buckets):
        with snapshot(settler.sessions) as session:
            holds = _open_holds(session, product_id, bucket, inventory.clock.now_ms())
        if not holds:
            continue
        present = inventory.holding(product_id, [h.ticket_id for h in holds])
        missing = [h for h in holds if h.ticket_id not in present]
        ended: list[Hold] = []
        for hold in missing:
            outcome = _adopt(inventory, product_id, buckets, hold)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in ("lapsed", "taken"):  # and no hold, no final state in Redis
                ended.append(_ended(hold, outcome))
        if ended:
            _end(settler, product_id, ended)
    if counts:
        log.warning("product %s: holds lost by Redis found in SQL: %s", product_id, counts)
    return counts


def _open_holds(session: Session, product_id: int, bucket: int, now_ms: int) -> list[Hold]:
    orders = open_orders(session, product_id, bucket)
    seats = order_seats(session, [o.ticket_id for o in orders])
    return [restored_hold(o, now_ms, seats.get(o.ticket_id, ())) for o in orders]


def _adopt(inventory: Inventory, product_id: int, buckets: int, hold: Hold) -> str:
    own = buckets == 1 or bucket_of_ticket(hold.ticket_id) == hold.user_id % buckets
    return inventory.adopt_hold(product_id, hold, own)


def _ended(hold: Hold, outcome: str) -> Hold:
    if outcome == "lapsed":
        return replace(hold, status=OrderStatus.EXPIRED.value, reason="hold_expired")
    return replace(hold, status=OrderStatus.FAILED.value, reason=LOST)


def _end(settler: Settler, product_id: int, holds: Sequence[Hold]) -> None:
    """Records the final states, one settler at a time per ticket (its payment lease)."""
    leases = settler.inventory.take_leases(product_id, [h.ticket_id for h in holds])
    try:
        free = [h for h in holds if h.ticket_id in leases]
        if free:
            settler.record_lost(product_id, free)
    finally:
        settler.inventory.release_leases(product_id, leases)
