"""Settlement jobs: drain a product's settle stream in batches."""

from __future__ import annotations

import logging
import os
import socket
import time

from jobs.queues import drain_started, enqueue_drains
from jobs.runtime import runtime

log = logging.getLogger(__name__)
DRAIN_BUDGET_S = 30.0


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def drain_product(product_id: int) -> dict[str, int]:
    """Settles the product's waiting tickets; hands the rest to a new job when time runs out."""
    rt = runtime()
    drain_started(rt.settings, product_id)
    totals: dict[str, int] = {"deferred": 0}
    stop_at = time.monotonic() + DRAIN_BUDGET_S
    while True:
        entries = rt.inventory.read_settle_queue(product_id, consumer_name(), rt.settler.batch_size)
        if not entries:
            return totals
        report = rt.settler.settle_batch(product_id, entries)
        for status, count in report.settled.items():
            totals[status] = totals.get(status, 0) + count
        totals["deferred"] += report.deferred
        if report.deferred == len(entries):
            return totals  # nothing moved: leave the rest to the sweep instead of spinning
        if time.monotonic() > stop_at:
            enqueue_drains(rt.settings, [product_id])
            return totals
