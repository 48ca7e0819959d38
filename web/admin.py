"""Admin routes: inventory figures, reconciliation, and rq-dashboard behind an admin check."""

from __future__ import annotations

import rq_dashboard
from flask import Blueprint, Flask, Response, jsonify, request
from flask_jwt_extended import verify_jwt_in_request
from rq.serializers import JSONSerializer

from core.models import Product
from core.orders import confirmed_quantity
from jobs.queues import enqueue_reconcile
from web.common import admin_required, check_id, end_read, is_admin, runtime
from web.errors import ApiError
from web.extensions import db

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/products/<int:product_id>/inventory")
@admin_required
def inventory(product_id: int) -> Response:
    product = db.session.get(Product, check_id(product_id))
    if product is None:
        raise ApiError(404, "not_found", "no such product")
    sold_in_db = confirmed_quantity(db.session, product_id)
    end_read()
    figures = runtime().inventory.figures(product_id)
    if figures is None:
        raise ApiError(503, "inventory_unavailable", "stock is not in Redis; it is being rebuilt")
    return jsonify(
        {
            "product_id": product_id,
            "initial_stock": figures.initial,
            "available": figures.available,
            "held": figures.held,
            "sold": figures.sold,
            "sold_in_db": sold_in_db,
            "consistent": figures.balanced and figures.initial == product.initial_stock,
            "settle_backlog": runtime().inventory.settle_backlog(product_id),
        }
    )


@bp.post("/reconcile")
@admin_required
def reconcile() -> tuple[Response, int]:
    job_id = enqueue_reconcile(runtime().settings)
    return jsonify({"job_id": job_id, "status": "queued"}), 202


def mount_rq_dashboard(app: Flask) -> None:
    """rq-dashboard's blueprint is a module-level object, so the guard lives on the app."""
    app.config["RQ_DASHBOARD_REDIS_URL"] = runtime_url(app)
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/admin/rq")

    @app.before_request
    def _admins_only_dashboard() -> None:
        if request.blueprint != "rq_dashboard":
            return
        verify_jwt_in_request()
        if not is_admin():
            raise ApiError(403, "forbidden", "admins only")


def runtime_url(app: Flask) -> str:
    return app.extensions["flashsale"].settings.redis_url
