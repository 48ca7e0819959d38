"""Admin routes: inventory figures, the operations overview, reconciliation, and rq-dashboard
behind an admin check."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import rq_dashboard
from flask import Blueprint, Flask, Response, request
from flask_jwt_extended import verify_jwt_in_request
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from rq.serializers import JSONSerializer

from core.catalog import list_products
from core.inventory import StockFigures
from core.models import Product
from core.money import to_decimal_string
from core.stock import last_reconciliations, product_report, read_books
from core.times import iso, iso_seconds
from jobs.queues import enqueue_reconcile, rq_connection, settlement_queue
from web.answers import (
    Inventory,
    LastReconciliation,
    Overview,
    ProductRow,
    Queued,
    QueueFigures,
    RoomRow,
    answer,
)
from web.common import admin_required, check_id, end_read, is_admin, runtime
from web.errors import ApiError
from web.extensions import db
from web.openapi import ADMIN_ERRORS, documented

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/products/<int:product_id>/inventory")
@admin_required
@documented("admin", {200: Inventory}, (*ADMIN_ERRORS, 404, 503), bearer=True)
def inventory(product_id: int) -> Response:
    """Redis' figures against SQL's."""
    check_id(product_id)
    rt = runtime()
    books, stock = product_report(rt.inventory, rt.sessions, product_id)
    if books is None:
        raise ApiError(404, "not_found", "no such product")
    if stock is None:
        raise ApiError(503, "inventory_unavailable", "stock is not in Redis; it is being rebuilt")
    figures = stock.figures
    return answer(
        Inventory(
            product_id=product_id,
            initial_stock=figures.initial,
            available=figures.available,
            held=figures.held,
            sold=figures.sold,
            sold_in_db=stock.sold_in_db,
            consistent=stock.consistent,
            settle_backlog=_backlog(product_id),
        )
    )


@bp.get("/overview")
@admin_required
@documented("admin", {200: Overview}, ADMIN_ERRORS, bearer=True)
def overview() -> Response:
    """Everything the operations page (/admin) shows, refreshed by its script."""
    return answer(overview_data())


# Stock events read per product for the sales chart (the newest ones; the stream keeps ~100k),
# and the most points sent per chart.
CHART_EVENTS = 2000
CHART_POINTS = 400
# Events that set the figures outright: the history before them does not chain to the present.
RESETS = ("restore", "repair")


def overview_data() -> Overview:
    last = _last_reconciliations()
    products = list_products(db.session)
    end_read()  # each row reads SQL in a snapshot of its own
    rows = [_product_row(product, last.get(product.id)) for product in products]
    return Overview(
        generated_at=iso_seconds(time.time()),
        redis="unreachable" if any(row.redis_error for row in rows) else "ok",
        products=rows,
        queue=queue_figures(),
        last_reconcile_at=max((r.at for r in last.values() if r.at), default=None),
    )


def _backlog(product_id: int) -> int:
    """Tickets waiting in the product's settle streams (each bucket's)."""
    inventory = runtime().inventory
    return sum(
        inventory.settle_backlog(product_id, b) for b in range(inventory.bucket_count(product_id))
    )


def _product_row(product: Product, reconcile: LastReconciliation | None) -> ProductRow:
    """Redis' figures against SQL's, as reconciliation compares them (core.stock.report)."""
    rt = runtime()
    inventory = rt.inventory
    redis_error = False
    try:
        books, stock = product_report(inventory, rt.sessions, product.id)
        events = inventory.recent_events(product.id, CHART_EVENTS) if stock else []
        backlog = _backlog(product.id) if stock else 0
        room = inventory.room_figures(product.id, CHART_POINTS) if product.waiting_room else None
    except RedisError:
        books, stock, events, backlog, redis_error, room = None, None, [], 0, True, None
    if books is None:
        books = read_books(rt.sessions, product.id, [])
    sold_in_db = stock.sold_in_db if stock else (books.sold if books else 0)
    pending = stock.pending_in_db if stock else 0
    figures = stock.figures if stock else None
    return ProductRow(
        id=product.id,
        name=product.name,
        price=to_decimal_string(product.price_minor, product.currency),
        currency=product.currency,
        initial_stock=product.initial_stock,
        max_per_user=product.max_per_user,
        sale_starts_at=iso(product.sale_starts_at),
        sale_ends_at=iso(product.sale_ends_at),
        in_redis=figures is not None,
        redis_error=redis_error,
        initial=figures.initial if figures else None,
        available=figures.available if figures else None,
        held=figures.held if figures else None,
        sold=figures.sold if figures else None,
        sold_in_db=sold_in_db,
        sold_pending_in_db=pending,
        balanced=bool(figures and figures.balanced),
        initial_matches=bool(figures and figures.initial == product.initial_stock),
        settle_backlog=backlog,
        reconcile=reconcile,
        sales=_thin(sales_series(figures, events)) if figures else [],
        agree=bool(stock and stock.consistent),
        room=RoomRow(**asdict(room)) if room else None,
    )


def _thin(points: list[list[int]], limit: int = CHART_POINTS) -> list[list[int]]:
    if len(points) <= limit:
        return points
    step = -(-len(points) // limit)
    return [*points[:-1:step], points[-1]]


def sales_series(figures: StockFigures, events: list[dict[str, str]]) -> list[list[int]]:
    """[[time_ms, sold, held], ...] oldest first, from the newest stock events (newest first)
    walked back from the current figures: each event is undone to learn the state before it."""
    sold, held = figures.sold, figures.held
    points = [[int(time.time() * 1000), sold, held]]
    for event in events:
        at = _event_ms(event)
        quantity = _int(event.get("quantity"))
        action = event.get("action", "")
        points.append([at, sold, held])  # the state just after this event
        if action in RESETS:
            break
        if action == "reserve":
            held -= quantity
        elif action == "confirm":
            held += quantity
            sold -= quantity
        elif action in ("release", "expire"):
            held += quantity
        elif action == "unsell":
            sold += quantity
    else:
        if events:
            points.append([_event_ms(events[-1]) - 1, sold, held])  # before the oldest one read
    points.reverse()
    return points


def _event_ms(event: dict[str, str]) -> int:
    at = _int(event.get("at"))
    return at or _int(event.get("id", "0").split("-")[0])


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _last_reconciliations() -> dict[int, LastReconciliation]:
    try:
        records = last_reconciliations(runtime().inventory)
    except RedisError:
        return {}
    return {
        product_id: LastReconciliation(
            result=data.get("result"),
            at=iso_seconds(data.get("at")),
            sold_in_db=data.get("sold_in_db"),
            expected_sold=data.get("expected_sold"),
            before=data.get("before"),
        )
        for product_id, data in records.items()
    }


def queue_figures() -> QueueFigures:
    settings = runtime().settings
    try:
        queue = settlement_queue(settings)
        return QueueFigures(
            name=queue.name,
            status="ok",
            queued=queue.count,
            started=queue.started_job_registry.count,
            scheduled=queue.scheduled_job_registry.count,
            deferred=queue.deferred_job_registry.count,
            failed=queue.failed_job_registry.count,
            workers=Worker.count(connection=queue.connection, queue=queue),
        )
    except RedisError:
        return QueueFigures(name=settings.queue_name, status="unreachable")


@bp.post("/reconcile")
@admin_required
@documented("admin", {202: Queued}, ADMIN_ERRORS, bearer=True)
def reconcile() -> Response:
    """Queue a reconciliation."""
    job_id = enqueue_reconcile(runtime().settings)
    return answer(Queued(job_id=job_id, status="queued"), 202)


# rq-dashboard's routes that only read (rq-dashboard 0.9.0). Every other route of it changes
# something (requeue, delete, empty, compact) and is taken by POST only: a GET could come from a
# cross-site link carrying the admin's cookie, and the CSRF check covers unsafe methods only.
DASHBOARD_READS = frozenset(
    f"rq_dashboard.{name}"
    for name in (
        "static",
        "favicon",
        "queues_overview",
        "workers_overview",
        "jobs_overview",
        "job_view",
        "list_queues",
        "list_jobs",
        "job_info",
        "list_workers",
    )
)


def mount_rq_dashboard(app: Flask) -> None:
    """rq-dashboard's blueprint is a module-level object, so the guard lives on the app."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = runtime_url(app)
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.from_url = _dashboard_connection
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/admin/rq")

    @app.before_request
    def _admins_only_dashboard() -> None:
        if request.blueprint != "rq_dashboard":
            return
        if request.endpoint not in DASHBOARD_READS and request.method != "POST":
            raise ApiError(
                405, "method_not_allowed", "this dashboard action takes POST", {"Allow": "POST"}
            )
        verify_jwt_in_request()  # for a cookie session, a POST must carry the CSRF header
        if not is_admin():
            raise ApiError(403, "forbidden", "admins only")


def _dashboard_connection(url: str, **_passwords: Any) -> tuple[None, Redis]:
    """What rq-dashboard connects with, for its URL (it asks again on every request): the
    queues' own client (jobs/queues.py), one per URL, following a Sentinel's primary too."""
    return None, rq_connection(url)


def runtime_url(app: Flask) -> str:
    return app.extensions["flashsale"].settings.redis_url
