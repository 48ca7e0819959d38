"""Periodic jobs: expire holds, re-drive unsettled tickets, reconcile Redis against SQL."""

from __future__ import annotations

import logging

from core.catalog import list_products
from core.failover import recover_lost_holds
from core.revocations import delete_expired_revocations
from core.stock import rebuild_stock, reconcile_product, sweep_claims, sync_terms
from jobs.queues import enqueue_drains, rebuild_finished
from jobs.runtime import runtime

log = logging.getLogger(__name__)


def sweep() -> dict[str, int]:
    """Releases holds past their deadline and queues settlement wherever tickets wait.

    Tickets whose settler died stay pending in the stream; the drain job claims them back.
    """
    rt = runtime()
    delete_expired_revocations(rt.sessions)
    expired = 0
    waiting: list[int] = []
    with rt.sessions() as session:
        products = list_products(session)
    for product in products:
        buckets = range(product.buckets or 1)
        if any(rt.inventory.figures(product.id, b) is None for b in buckets):
            rebuild_stock(rt.inventory, rt.sessions, product.id)
            continue
        expired += sum(rt.inventory.expire_holds(product.id, bucket=b) for b in buckets)
        if len(buckets) > 1:
            sweep_claims(rt.inventory, rt.sessions, product.id, len(buckets))
        if any(rt.inventory.settle_backlog(product.id, b) for b in buckets):
            waiting.append(product.id)
    terms_applied = sync_terms(rt.inventory, products)
    if waiting:
        enqueue_drains(rt.settings, waiting)
    return {
        "expired_units": expired,
        "products_waiting": len(waiting),
        "terms_applied": terms_applied,
    }


def reconcile_all() -> dict[str, str]:
    """Every product: first the holds Redis lost that SQL has open (a failover), then the
    figures."""
    rt = runtime()
    with rt.sessions() as session:
        products = list_products(session)
    results: dict[str, str] = {}
    for product in products:
        recover_lost_holds(rt.settler, product.id, product.buckets or 1)
        results[str(product.id)] = reconcile_product(rt.inventory, rt.sessions, product.id).result
    return results


def rebuild_product_stock(product_id: int) -> bool:
    rt = runtime()
    rebuilt = rebuild_stock(rt.inventory, rt.sessions, product_id)
    rebuild_finished(rt.settings, product_id)  # a failed one lets the guard lapse
    return rebuilt
