"""GET /health: the database, Redis and the settlement queue."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from jobs.queues import settlement_queue
from web.common import runtime
from web.extensions import db

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> tuple[Response, int]:
    checks: dict[str, object] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    finally:
        db.session.rollback()
    try:
        runtime().redis.ping()
        checks["redis"] = "ok"
    except Exception:
        checks["redis"] = "unreachable"
    try:
        checks["queue"] = {"status": "ok", "depth": settlement_queue(runtime().settings).count}
    except Exception:
        checks["queue"] = {"status": "unreachable"}
    failed = [
        name
        for name, value in checks.items()
        if (value if isinstance(value, str) else value["status"]) != "ok"
    ]
    if failed:
        return jsonify({"status": "unavailable", "failed": failed, "checks": checks}), 503
    return jsonify({"status": "ok", "checks": checks}), 200
