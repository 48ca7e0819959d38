"""Settlement jobs: drain a product's settle stream in batches."""

from __future__ import annotations

import logging
import os
import socket
import time

from core.runtime import Runtime
from jobs.queues import drain_started, enqueue_drains
from jobs.runtime import runtime

log = logging.getLogger(__name__)
DRAIN_BUDGET_S = 30.0


def consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def drain_product(product_id: int) -> dict[str, int]:
    """Settles the product's waiting tickets (a split product's, bucket after bucket, a batch
    each in turn); hands the rest to a new job when time runs out."""
    rt = runtime()
    drain_started(rt.settings, product_id)
    totals: dict[str, int] = {"deferred": 0}
    stop_at = time.monotonic() + DRAIN_BUDGET_S
    buckets = list(range(rt.settler.buckets_of(product_id)))
    while buckets:
        for bucket in list(buckets):
            if not _settle_one_batch(rt, product_id, bucket, totals):
                buckets.remove(bucket)
        if buckets and time.monotonic() > stop_at:
            enqueue_drains(rt.settings, [product_id])
            return totals
    return totals


def _settle_one_batch(rt: Runtime, product_id: int, bucket: int, totals: dict[str, int]) -> bool:
    """Settles one batch from the bucket's stream into `totals`; False once nothing is left
    there, or nothing moved (the rest is left to the sweep instead of spinning)."""
    size = rt.settler.batch_size
    entries = rt.inventory.read_settle_queue(product_id, consumer_name(), size, bucket)
    if not entries:
        return False
    report = rt.settler.settle_batch(product_id, entries)
    for status, count in report.settled.items():
        totals[status] = totals.get(status, 0) + count
    totals["deferred"] += report.deferred
    return report.deferred != len(entries)
