"""Admin routes: inventory figures, the operations overview (web/overview.py), reconciliation,
and rq-dashboard behind an admin check."""

from __future__ import annotations

from typing import Any

import rq_dashboard
from flask import Blueprint, Flask, Response, request
from flask_jwt_extended import verify_jwt_in_request
from redis import Redis
from rq.serializers import JSONSerializer

from core.stock import product_report
from jobs.queues import enqueue_reconcile, rq_connection
from web.answers import Inventory, Overview, Queued, answer
from web.apidoc import ADMIN_ERRORS, documented
from web.common import admin_required, check_id, is_admin, runtime
from web.errors import ApiError
from web.overview import overview_data, settle_backlog

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
            settle_backlog=settle_backlog(product_id),
        )
    )


@bp.get("/overview")
@admin_required
@documented("admin", {200: Overview}, ADMIN_ERRORS, bearer=True)
def overview() -> Response:
    """Everything the operations page (/admin) shows, refreshed by its script."""
    return answer(overview_data())


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
