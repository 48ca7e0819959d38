"""GET /health: the database, both Redis roles (the service's, the inventory's) and the
settlement queue."""

from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import text

from core.scripts import RedisClient
from jobs.queues import settlement_queue
from web.answers import Health, HealthChecks, QueueCheck, Reachable, answer
from web.common import runtime
from web.extensions import db
from web.openapi import documented

bp = Blueprint("health", __name__)


@bp.get("/health")
@documented("health", {200: Health, 503: Health})
def health() -> Response:
    """The database, Redis (REDIS_URL and the inventory's) and the settlement queue (503 names
    what failed)."""
    rt = runtime()
    checks = HealthChecks(
        database=_database(),
        redis=_ping(rt.redis),
        inventory=_ping(rt.inventory_redis),
        queue=_queue(),
    )
    failed = [name for name, check in checks if _status(check) != "ok"]
    if failed:
        return answer(Health(status="unavailable", failed=failed, checks=checks), 503)
    return answer(Health(status="ok", checks=checks))


def _status(check: object) -> str:
    return check.status if isinstance(check, QueueCheck) else str(check)


def _database() -> Reachable:
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except Exception:
        return "unreachable"
    finally:
        db.session.rollback()


def _ping(redis: RedisClient) -> Reachable:
    try:
        redis.ping()
        return "ok"
    except Exception:
        return "unreachable"


def _queue() -> QueueCheck:
    try:
        return QueueCheck(status="ok", depth=settlement_queue(runtime().settings).count)
    except Exception:
        return QueueCheck(status="unreachable")
