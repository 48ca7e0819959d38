"""The service's Prometheus metrics (prometheus_client), each defined once here and counted where
it happens, in whichever process kind: web (purchases, status polls), RQ workers (settlement,
payments, locks), the scheduler's jobs (reconciliation).

With PROMETHEUS_MULTIPROC_DIR set (before the process starts), every process of a machine writes
its values to files there, and any process's exposition (`GET /metrics`) sums them: gunicorn's
workers, the RQ workers and the scheduler of one machine are scraped at one address. The folder
must be empty when the machine's processes start (`make run` empties its own). Unset, each
process exposes only its own values. Machines without a web process (workers, the scheduler)
serve them on METRICS_PORT instead (`serve_metrics`).
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

PURCHASES = Counter(
    "flashsale_purchases",
    "Purchase attempts by the reserve script's answer (reserved, duplicate, sold_out, "
    "per_user_limit, rate_limited, ...; unavailable: Redis did not answer)",
    ["outcome"],
)
RESERVE_SECONDS = Histogram(
    "flashsale_reserve_seconds", "The reserve script's round trip, as the web process saw it", [],
    buckets=_FAST,
)  # fmt: skip
STATUS_POLLS = Counter(
    "flashsale_status_polls", "Ticket status answers (GET /orders/<ticket>) by status", ["status"]
)
SETTLEMENT_LAG = Histogram(
    "flashsale_settlement_lag_seconds",
    "From the hold (the 202) until its final state was recorded, by final state",
    ["status"],
    buckets=_SLOW,
)
SETTLE_BATCH_SIZE = Histogram(
    "flashsale_settle_batch_size",
    "Tickets a settler took from a product's stream at once",
    [],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
PAYMENTS = Counter(
    "flashsale_payments",
    "Payment decisions by gateway and outcome (confirmed, failed, expired, requires_action, retry)",
    ["gateway", "outcome"],
)
PAYMENT_SECONDS = Histogram(
    "flashsale_payment_seconds",
    "The provider calls deciding one ticket's payment (retrieve, confirm, cancel)",
    ["gateway"],
    buckets=(*_FAST, 2.5, 5.0, 10.0, 30.0),
)
LOCKS = Counter(
    "flashsale_locks",
    "Locks asked for, by kind (lock: a ticket's settlement lock; lease: its payment lease; "
    "refund) and result (acquired, busy: still taken after the wait)",
    ["kind", "result"],
)
LOCK_WAIT_SECONDS = Histogram(
    "flashsale_lock_wait_seconds",
    "How long a caller waited for locks it had to have (a webhook, a refund, a settler's "
    "batch asked to wait)",
    [],
    buckets=_FAST,
)
RECONCILIATIONS = Counter(
    "flashsale_reconciliations",
    "Reconciliations of a product's Redis stock against SQL, by result (consistent, repaired, "
    "rebuilt, busy, ...)",
    ["result"],
)


def machine_registry() -> CollectorRegistry:
    """What an exposition shows: every process's values of the machine, summed, with
    PROMETHEUS_MULTIPROC_DIR; else this process's own."""
    if not os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def serve_metrics(host: str, port: int) -> bool:
    """Serves the metrics over HTTP on their own port (a thread of this process), for process
    kinds without a web server. False when the port is taken: on a machine sharing a
    PROMETHEUS_MULTIPROC_DIR, another process serves the same summed values already."""
    try:
        start_http_server(port, addr=host, registry=machine_registry())
    except OSError:
        return False
    return True
