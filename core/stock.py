"""Keeping Redis honest against SQL: stock set-up, rebuild after data loss, reconciliation."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.inventory import Hold, Inventory, StockFigures, now_ms, to_ms
from core.models import Product
from core.orders import confirmed_among, confirmed_quantity, counted_orders, open_orders

log = logging.getLogger(__name__)
OPEN_HOLD_STATES = ("reserved", "processing")


@dataclass(frozen=True)
class Reconciliation:
    product_id: int
    result: str  # consistent, repaired, rebuilt, busy, unknown_product
    before: StockFigures | None
    sold_in_db: int
    expected_sold: int

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["before"] = asdict(self.before) if self.before else None
        return data


def setup_stock(inventory: Inventory, product: Product) -> None:
    inventory.restore(terms_of(product), sold=0, open_holds=[], user_quantities={})


def _expected_sold(
    session: Session, product_id: int, redis_confirmed: dict[str, int]
) -> tuple[int, int]:
    """SQL's confirmed units, and those plus holds Redis confirmed that SQL has not recorded yet.

    `redis_confirmed` is read before SQL is asked: a ticket committed in between is then counted
    once, either in SQL's sum or as still pending.
    """
    sold_in_db = confirmed_quantity(session, product_id)
    recorded = confirmed_among(session, list(redis_confirmed))
    pending = sum(q for ticket, q in redis_confirmed.items() if ticket not in recorded)
    return sold_in_db, sold_in_db + pending


def _units_per_user(session: Session, product_id: int, redis_holds: list[Hold]) -> dict[int, int]:
    """Units each buyer holds or bought: Redis' state for the tickets it still has (it moves
    first), SQL's for the rest."""
    in_redis = {h.ticket_id: h for h in redis_holds}
    users: dict[int, int] = {}
    for ticket_id, (user_id, quantity) in counted_orders(session, product_id).items():
        if ticket_id not in in_redis:
            users[user_id] = users.get(user_id, 0) + quantity
    for hold in redis_holds:
        if hold.status in (*OPEN_HOLD_STATES, "confirmed"):
            users[hold.user_id] = users.get(hold.user_id, 0) + hold.quantity
    return users


def rebuild_stock(inventory: Inventory, sessions: sessionmaker[Session], product_id: int) -> bool:
    """Recreates a missing stock key from SQL; False if the product is unknown or the key exists."""
    lease_ms = inventory.settings.settle_lease_seconds * 1000
    redis_holds = [
        Hold.from_json(raw) for raw in inventory.redis.hvals(inventory.keys(product_id).holds)
    ]
    redis_confirmed = {h.ticket_id: h.quantity for h in redis_holds if h.status == "confirmed"}
    with sessions() as session:
        product = session.get(Product, product_id)
        if product is None:
            return False
        _, sold = _expected_sold(session, product_id, redis_confirmed)
        users = _units_per_user(session, product_id, redis_holds)
        holds = [
            Hold(
                ticket_id=o.ticket_id,
                user_id=o.user_id,
                quantity=o.quantity,
                amount_minor=o.amount_minor,
                deadline_ms=max(to_ms(o.expires_at), now_ms() + lease_ms),
                status=o.status,
                reason=None,
                payment_method=o.payment_method,
                created_ms=to_ms(o.created_at),
                modified_ms=now_ms(),
                currency=o.currency,
            )
            for o in open_orders(session, product_id)
        ]
        terms = terms_of(product)
    created = inventory.restore(terms, sold, holds, users)
    if created:
        log.warning(
            "stock of product %s rebuilt from SQL: sold=%s open=%s", product_id, sold, len(holds)
        )
    return created


def reconcile_product(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, attempts: int = 3
) -> Reconciliation:
    """Checks available + held + sold == initial and sold == SQL's; repairs from SQL if not."""
    for _ in range(attempts):
        snapshot = inventory.snapshot(product_id)
        if snapshot is None:
            rebuilt = rebuild_stock(inventory, sessions, product_id)
            result = "rebuilt" if rebuilt else "unknown_product"
            return _recorded(inventory, Reconciliation(product_id, result, None, 0, 0))
        with sessions() as session:
            product = session.get(Product, product_id)
            sold_in_db, sold = _expected_sold(session, product_id, snapshot.confirmed_holds)
        if product is None:
            return _recorded(inventory, Reconciliation(product_id, "unknown_product", None, 0, 0))
        figures = snapshot.figures
        initial = product.initial_stock
        if (
            figures.balanced
            and figures.initial == initial
            and figures.sold == sold
            and figures.held == snapshot.open_quantity
        ):
            return _recorded(
                inventory,
                Reconciliation(product_id, "consistent", figures, sold_in_db, sold),
            )
        if inventory.repair(product_id, figures.version, initial, sold, snapshot.open_quantity):
            log.warning(
                "stock of product %s repaired from SQL: %s, expected sold %s held %s",
                product_id,
                figures,
                sold,
                snapshot.open_quantity,
            )
            inventory.redis.hincrby(_metrics_key(inventory), "reconcile_repairs", 1)
            return _recorded(
                inventory, Reconciliation(product_id, "repaired", figures, sold_in_db, sold)
            )
    return _recorded(inventory, Reconciliation(product_id, "busy", None, 0, 0))


def _metrics_key(inventory: Inventory) -> str:
    return f"{inventory.settings.key_prefix}:metrics"


def _recorded(inventory: Inventory, outcome: Reconciliation) -> Reconciliation:
    record = outcome.as_dict() | {"at": time.time()}
    inventory.redis.hset(
        f"{inventory.settings.key_prefix}:reconcile:last",
        str(outcome.product_id),
        json.dumps(record),
    )
    return outcome
