"""Reconciliation: Redis checked against SQL and repaired from it, bucket by bucket, writing back
only if Redis' version has not moved since it was read (every change a repair could race
moves it); the last outcome of each product kept for the admin."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.catalog import terms_of
from core.inventory import Inventory, Snapshot, StockFigures
from core.keys import ServiceKeys
from core.metrics import RECONCILIATIONS
from core.models import Product
from core.stock.rebuild import rebuild_stock
from core.stock.report import REFUNDED, Books, read_books, report, sum_figures, tickets_named
from core.stock.seats import reconcile_seats

log = logging.getLogger(__name__)


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


def sync_terms(inventory: Inventory, products: list[Product]) -> int:
    """Applies SQL's terms to every product whose stock in Redis enforces another version
    (an admin's change that did not reach Redis); answers how many were applied."""
    versions = inventory.terms_versions(
        [p.id for p in products], {p.id: p.buckets for p in products}
    )
    stale = [p for p in products if versions[p.id] not in (None, p.terms_version)]
    return sum(1 for p in stale if inventory.update_terms(terms_of(p)) == "applied")


def reconcile_product(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, attempts: int = 5
) -> Reconciliation:
    """Checks Redis against SQL (figures, held units, terms) and repairs Redis from SQL, each
    bucket of a split product on its own (each is a stock of its own); the product's outcome
    is the worst of its buckets', with their figures added up."""
    snapshot = inventory.snapshot(product_id)
    if snapshot is None:
        rebuilt = rebuild_stock(inventory, sessions, product_id)
        result = "rebuilt" if rebuilt else "unknown_product"
        return _recorded(inventory, Reconciliation(product_id, result, None, 0, 0))
    buckets = inventory.bucket_count(product_id)
    outcomes = [reconcile_bucket(inventory, sessions, product_id, 0, attempts, snapshot)]
    for bucket in range(1, buckets):
        outcomes.append(reconcile_bucket(inventory, sessions, product_id, bucket, attempts))
    return _recorded(inventory, _combined(product_id, outcomes))


def reconcile_bucket(
    inventory: Inventory,
    sessions: sessionmaker[Session],
    product_id: int,
    bucket: int = 0,
    attempts: int = 5,
    first: Snapshot | None = None,
) -> Reconciliation:
    repaired = False
    for attempt in range(attempts):
        snapshot = first if attempt == 0 and first else inventory.snapshot(product_id, bucket)
        if snapshot is None:
            rebuilt = rebuild_stock(inventory, sessions, product_id)
            return Reconciliation(product_id, "rebuilt" if rebuilt else "busy", None, 0, 0)
        books = read_books(sessions, product_id, tickets_named(snapshot), bucket)
        if books is None:
            return Reconciliation(product_id, "unknown_product", None, 0, 0)
        outcome = reconcile_step(inventory, product_id, snapshot, books)
        if outcome == "consistent" and bucket == 0:
            outcome = reconcile_seats(inventory, sessions, product_id)
        repaired = repaired or outcome in ("repaired", "set_right")
        if outcome in ("consistent", "repaired"):
            stock = report(snapshot, books)
            result = "repaired" if repaired else "consistent"
            return Reconciliation(
                product_id, result, snapshot.figures, stock.sold_in_db, stock.expected_sold
            )
    return Reconciliation(product_id, "busy", None, 0, 0)


_WORST_FIRST = ("unknown_product", "busy", "rebuilt", "repaired", "consistent")


def _combined(product_id: int, outcomes: list[Reconciliation]) -> Reconciliation:
    """A split product's outcome from its buckets': the worst result, the figures summed."""
    if len(outcomes) == 1:
        return outcomes[0]
    result = min((o.result for o in outcomes), key=_WORST_FIRST.index)
    figures = [o.before for o in outcomes]
    before = None if None in figures else sum_figures(figures)  # type: ignore[arg-type]
    return Reconciliation(
        product_id,
        result,
        before,
        sum(o.sold_in_db for o in outcomes),
        sum(o.expected_sold for o in outcomes),
    )


def reconcile_step(inventory: Inventory, product_id: int, snapshot: Snapshot, books: Books) -> str:
    """One pass: consistent; repaired (figures written); set_right (a refund's units returned
    or SQL's terms applied: read again); or changed (Redis moved meanwhile: read again)."""
    refunded = [t for t in snapshot.returning if books.statuses.get(t) == REFUNDED]
    if refunded:
        # A refund stopped after SQL recorded it: its units go back on sale now.
        inventory.return_units(product_id, refunded)
        return "set_right"
    stock = report(snapshot, books)
    if not stock.terms_agree:
        applied = inventory.update_bucket_terms(books.terms, snapshot.bucket)
        return "set_right" if applied == "applied" else "changed"
    if stock.consistent:
        return "consistent"
    figures = snapshot.figures
    if inventory.repair(
        product_id,
        figures.version,
        books.terms.initial_stock,
        stock.expected_sold,
        stock.expected_held,
        snapshot.bucket,
    ):
        log.warning(
            "stock of product %s (bucket %s) repaired from SQL: %s, expected sold %s held %s",
            product_id,
            snapshot.bucket,
            figures,
            stock.expected_sold,
            stock.expected_held,
        )
        return "repaired"
    return "changed"


def _service_keys(inventory: Inventory) -> ServiceKeys:
    return ServiceKeys(inventory.settings.key_prefix)


def _recorded(inventory: Inventory, outcome: Reconciliation) -> Reconciliation:
    RECONCILIATIONS.labels(outcome.result).inc()
    record = outcome.as_dict() | {"at": time.time()}
    inventory.redis.hset(
        _service_keys(inventory).last_reconciliations,
        str(outcome.product_id),
        json.dumps(record),
    )
    return outcome


def last_reconciliations(inventory: Inventory) -> dict[int, dict[str, Any]]:
    """The last reconciliation of each product, as `_recorded` wrote it (unreadable records are
    left out)."""
    results: dict[int, dict[str, Any]] = {}
    for product_id, record in inventory.redis.hgetall(
        _service_keys(inventory).last_reconciliations
    ).items():
        try:
            data = json.loads(record)
            if isinstance(data, dict):
                results[int(product_id)] = data
        except (ValueError, TypeError):
            continue
    return results
