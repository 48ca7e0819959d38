"""Periodic jobs: expire holds, re-drive unsettled tickets, reconcile Redis against SQL."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.models import Product
from core.stock import rebuild_stock, reconcile_product
from jobs.queues import enqueue_drains
from jobs.runtime import runtime

log = logging.getLogger(__name__)


def _product_ids() -> list[int]:
    with runtime().sessions() as session:
        return list(session.scalars(select(Product.id).order_by(Product.id)))


def sweep() -> dict[str, int]:
    """Releases holds past their deadline and queues settlement wherever tickets wait.

    Tickets whose settler died stay pending in the stream; the drain job claims them back.
    """
    rt = runtime()
    expired = 0
    waiting: list[int] = []
    for product_id in _product_ids():
        if rt.inventory.figures(product_id) is None:
            rebuild_stock(rt.inventory, rt.sessions, product_id)
            continue
        expired += rt.inventory.expire_holds(product_id)
        if rt.inventory.settle_backlog(product_id):
            waiting.append(product_id)
    if waiting:
        enqueue_drains(rt.settings, waiting)
    return {"expired_units": expired, "products_waiting": len(waiting)}


def reconcile_all() -> dict[str, str]:
    rt = runtime()
    return {
        str(pid): reconcile_product(rt.inventory, rt.sessions, pid).result for pid in _product_ids()
    }


def rebuild_product_stock(product_id: int) -> bool:
    rt = runtime()
    return rebuild_stock(rt.inventory, rt.sessions, product_id)
