"""GET /metrics: the Prometheus exposition (core/metrics.py) of every process of this machine
when PROMETHEUS_MULTIPROC_DIR is set, else of the process answering; and the settlement
queue's figures, read at the scrape. With METRICS_TOKEN set it asks for that Bearer token;
unset, it is open, except in production, where it is off (404)."""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import select

from core.metrics import machine_registry
from core.models import Product
from web.common import end_read, runtime
from web.errors import ApiError
from web.extensions import db
from web.overview import queue_figures

bp = Blueprint("metrics", __name__)
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")


@bp.get("/metrics")
def metrics() -> Response:
    _check_scraper()
    body = generate_latest(machine_registry()) + generate_latest(_read_now())
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _check_scraper() -> None:
    settings = runtime().settings
    token = settings.metrics_token
    if not token:
        if settings.is_production:
            raise ApiError(404, "not_found", "metrics are off: set METRICS_TOKEN")
        return
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "send METRICS_TOKEN as a Bearer token")


def _read_now() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SettlementQueue())
    registry.register(WaitingRooms())
    return registry


class SettlementQueue(Collector):
    """The settlement queue's jobs by state and its workers (RQ's registries, in Redis)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = queue_figures()
        up = GaugeMetricFamily(
            "flashsale_settlement_queue_up", "1 when the queue's Redis answered the scrape"
        )
        up.add_metric([], 1 if figures.status == "ok" else 0)
        yield up
        if figures.status != "ok":
            return
        jobs = GaugeMetricFamily(
            "flashsale_settlement_queue_jobs", "Settlement jobs by state", labels=["state"]
        )
        for state in QUEUE_STATES:
            jobs.add_metric([state], getattr(figures, state) or 0)
        yield jobs
        workers = GaugeMetricFamily("flashsale_settlement_workers", "RQ workers on the queue")
        workers.add_metric([], figures.workers or 0)
        yield workers


class WaitingRooms(Collector):
    """Each sale with a waiting room: its buyers waiting and admitted so far (Redis)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with_rooms = db.session.scalars(select(Product.id).where(Product.waiting_room.is_(True)))
        product_ids = list(with_rooms)
        end_read()
        waiting = GaugeMetricFamily(
            "flashsale_room_waiting",
            "Buyers in a sale's waiting room not admitted yet (or waiting for the opening)",
            labels=["product"],
        )
        admitted = GaugeMetricFamily(
            "flashsale_room_admitted",
            "Buyers a sale's waiting room has admitted",
            labels=["product"],
        )
        for product_id in product_ids:
            try:
                figures = runtime().inventory.room_figures(product_id, points=1)
            except RedisError:
                continue  # (the queue's up gauge says whether Redis answers)
            if figures is not None:
                waiting.add_metric([str(product_id)], figures.waiting)
                admitted.add_metric([str(product_id)], figures.admitted)
        yield waiting
        yield admitted
