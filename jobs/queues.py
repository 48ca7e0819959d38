"""RQ plumbing: JSON-serialised jobs with explicit ids and timeouts on the settlement queue."""

from __future__ import annotations

import secrets
from functools import cache

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from core.config import Settings
from core.keys import ProductKeys

DRAIN_TIMEOUT_S = 120
MAINTENANCE_TIMEOUT_S = 300
REBUILD_GUARD_S = 30  # a rebuild that died is asked for again after this (the sweep also rebuilds)


class JsonJob(Job):
    """A Job that always uses JSON, also for jobs rq-scheduler creates (it takes no serializer)."""

    def __init__(self, id=None, connection=None, serializer=None):  # type: ignore[no-untyped-def]
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


@cache
def rq_connection(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)  # RQ stores bytes: no decode_responses


def settlement_queue(settings: Settings) -> Queue:
    return Queue(
        settings.queue_name,
        connection=rq_connection(settings.redis_url),
        serializer=JSONSerializer,
        job_class=JsonJob,
    )


def enqueue_drains(settings: Settings, product_ids: list[int]) -> None:
    """One settlement job per product, in one round trip."""
    queue = settlement_queue(settings)
    jobs = [
        Queue.prepare_data(
            "jobs.settlement.drain_product",
            args=(product_id,),
            job_id=f"drain-{product_id}-{secrets.token_hex(6)}",
            timeout=DRAIN_TIMEOUT_S,
            result_ttl=60,
            failure_ttl=7 * 24 * 3600,
        )
        for product_id in product_ids
    ]
    queue.enqueue_many(jobs)


def enqueue_rebuild(settings: Settings, product_id: int) -> None:
    """Queues a rebuild of the product's stock unless one is pending already: a crowd answered
    503 while the stock is missing queues one job, not one per request."""
    connection = rq_connection(settings.redis_url)
    guard = ProductKeys(settings.key_prefix, product_id).rebuild_pending
    if not connection.set(guard, "1", nx=True, ex=REBUILD_GUARD_S):
        return
    settlement_queue(settings).enqueue(
        "jobs.maintenance.rebuild_product_stock",
        product_id,
        job_id=f"rebuild-{product_id}",
        job_timeout=MAINTENANCE_TIMEOUT_S,
        result_ttl=60,
        retry=Retry(max=5, interval=[1, 2, 5, 10, 30]),
    )


def enqueue_reconcile(settings: Settings) -> str:
    job = settlement_queue(settings).enqueue(
        "jobs.maintenance.reconcile_all",
        job_id=f"reconcile-{secrets.token_hex(6)}",
        job_timeout=MAINTENANCE_TIMEOUT_S,
        result_ttl=3600,
    )
    return job.id
