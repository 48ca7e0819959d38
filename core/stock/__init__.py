"""Keeping Redis honest against SQL: stock set-up, rebuild after data loss, reconciliation, and
the claims sweep. This package's `__init__` is its public surface.

A repair reads a moving target, so it reads each side once: Redis in one atomic script
(`Inventory.snapshot`), SQL in one snapshot (`core.db.snapshot`), Redis before SQL, and writes
back only if Redis' version has not moved since (every change a repair could race moves it).
"""

from core.stock.claims import sweep_claims
from core.stock.rebuild import (
    RebuildPlan,
    apply_rebuild,
    plan_rebuild,
    rebuild_stock,
    restored_hold,
    setup_stock,
)
from core.stock.reconcile import (
    Reconciliation,
    last_reconciliations,
    reconcile_bucket,
    reconcile_product,
    reconcile_step,
    sync_terms,
)
from core.stock.report import (
    Books,
    StockReport,
    books_in,
    product_report,
    read_books,
    report,
    tickets_named,
)
from core.stock.seats import reconcile_seats, seat_plan

__all__ = [
    "Books",
    "RebuildPlan",
    "Reconciliation",
    "StockReport",
    "apply_rebuild",
    "books_in",
    "last_reconciliations",
    "plan_rebuild",
    "product_report",
    "read_books",
    "rebuild_stock",
    "reconcile_bucket",
    "reconcile_product",
    "reconcile_seats",
    "reconcile_step",
    "report",
    "restored_hold",
    "seat_plan",
    "setup_stock",
    "sweep_claims",
    "sync_terms",
    "tickets_named",
]
