"""RQ plumbing: JSON-serialised jobs with explicit ids and timeouts on the settlement queue."""

from __future__ import annotations

import secrets
from functools import cache

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

import core.runtime  # noqa: F401  (imported once per worker process: see below)
from core.config import Settings
from core.keys import QueueGuardKeys
from core.redis_urls import redis_client

# `rq worker --job-class jobs.queues.JsonJob` imports this module in the worker process itself.
# Importing what the jobs need here (SQLAlchemy, the models, the settler: about 0.6 s) does it
# once per worker: RQ's forking `Worker` would otherwise pay it in every child, once per job.
# Nothing connects at import; each child builds its own Runtime after the fork (jobs.runtime).

DRAIN_TIMEOUT_S = 120
MAINTENANCE_TIMEOUT_S = 300
DRAIN_GUARD_S = (
    10  # a queued job lost with its worker is asked for again after this (and by the sweep)
)
FAILURE_TTL_S = 24 * 3600
REBUILD_GUARD_S = 30  # a rebuild that died is asked for again after this (the sweep also rebuilds)


class JsonJob(Job):
    """A Job that always uses JSON, also for jobs rq-scheduler creates (it takes no serializer)."""

    def __init__(self, id=None, connection=None, serializer=None):  # type: ignore[no-untyped-def]
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


@cache
def rq_connection(redis_url: str) -> Redis:
    return redis_client(redis_url)  # RQ stores bytes: no decode_responses


def settlement_queue(settings: Settings) -> Queue:
    return Queue(
        settings.queue_name,
        connection=rq_connection(settings.redis_url),
        serializer=JSONSerializer,
        job_class=JsonJob,
    )


def enqueue_drains(settings: Settings, product_ids: list[int]) -> None:
    """Settlement jobs for the products, in one round trip: as many as asked for each product,
    unless a job for it is queued already and not yet started (the job clears that mark when
    it starts, so tickets reserved after it began reading get a job of their own). Finished
    jobs leave nothing behind (result_ttl 0): a sale runs thousands of them."""
    connection = rq_connection(settings.redis_url)
    products = sorted(set(product_ids))
    with connection.pipeline(transaction=False) as pipe:
        for product_id in products:
            guard = QueueGuardKeys(settings.key_prefix, product_id).drain_queued
            pipe.set(guard, "1", nx=True, ex=DRAIN_GUARD_S)
        marked = {p for p, fresh in zip(products, pipe.execute(), strict=True) if fresh}
    jobs = [
        Queue.prepare_data(
            "jobs.settlement.drain_product",
            args=(product_id,),
            job_id=f"drain-{product_id}-{secrets.token_hex(6)}",
            timeout=DRAIN_TIMEOUT_S,
            result_ttl=0,
            failure_ttl=FAILURE_TTL_S,
        )
        for product_id in product_ids
        if product_id in marked
    ]
    if jobs:
        settlement_queue(settings).enqueue_many(jobs)


def drain_started(settings: Settings, product_id: int) -> None:
    """A settlement job of the product started: the next kick queues another."""
    rq_connection(settings.redis_url).delete(
        QueueGuardKeys(settings.key_prefix, product_id).drain_queued
    )


def enqueue_rebuild(settings: Settings, product_id: int) -> None:
    """Queues a rebuild of the product's stock unless one is pending already: a crowd answered
    503 while the stock is missing queues one job, not one per request."""
    connection = rq_connection(settings.redis_url)
    guard = QueueGuardKeys(settings.key_prefix, product_id).rebuild_pending
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


def rebuild_finished(settings: Settings, product_id: int) -> None:
    """The product's rebuild ran: the next request that finds the stock missing queues another."""
    rq_connection(settings.redis_url).delete(
        QueueGuardKeys(settings.key_prefix, product_id).rebuild_pending
    )


def enqueue_reconcile(settings: Settings) -> str:
    job = settlement_queue(settings).enqueue(
        "jobs.maintenance.reconcile_all",
        job_id=f"reconcile-{secrets.token_hex(6)}",
        job_timeout=MAINTENANCE_TIMEOUT_S,
        result_ttl=3600,
    )
    return job.id
