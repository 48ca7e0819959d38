"""GET /health: the database, both Redis roles (the service's, the inventory's) and the
settlement queue, checked side by side, each given HEALTH_CHECK_TIMEOUT_SECONDS: a load balancer
hears within about that long whatever hangs, and the answer names what did not answer."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from flask import Blueprint, Response, current_app
from sqlalchemy import Engine, text

from core.scripts import RedisClient
from jobs.queues import settlement_queue
from web.answers import Health, HealthChecks, QueueCheck, Reachable, answer
from web.apidoc import documented
from web.common import runtime
from web.extensions import db

bp = Blueprint("health", __name__)


class SideBySide:
    """Runs named checks at once and waits `timeout_s` for them all. A check still running from
    an earlier call (its server hangs) is waited for again rather than started anew: a hung
    server holds one thread per check, not one per request."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running: dict[str, Future[Any]] = {}

    def run(self, checks: Mapping[str, Callable[[], Any]]) -> dict[str, Any | None]:
        """Each check's result; None for a check that did not finish in time or raised."""
        with self._guard:
            if self._pid != os.getpid():  # first use in this (possibly forked) process
                self._pid = os.getpid()
                self._pool = ThreadPoolExecutor(len(checks), thread_name_prefix="health")
                self._running = {}
            assert self._pool is not None
            for name, check in checks.items():
                running = self._running.get(name)
                if running is None or running.done():
                    self._running[name] = self._pool.submit(check)
            futures = {name: self._running[name] for name in checks}
        wait(futures.values(), timeout=self.timeout_s)
        return {name: _result(future) for name, future in futures.items()}


def _result(future: Future[Any]) -> Any | None:
    if not future.done() or future.exception() is not None:
        return None
    return future.result()


def side_by_side() -> SideBySide:
    return current_app.extensions["flashsale_health"]


@bp.get("/health")
@documented("health", {200: Health, 503: Health})
def health() -> Response:
    """The database, Redis (REDIS_URL and the inventory's) and the settlement queue, side by side
    (503 names what failed or did not answer in time)."""
    rt = runtime()
    engine = db.engine
    results = side_by_side().run(
        {
            "database": lambda: _database(engine),
            "redis": lambda: _ping(rt.redis),
            "inventory": lambda: _ping(rt.inventory_redis),
            "queue": lambda: QueueCheck(status="ok", depth=settlement_queue(rt.settings).count),
        }
    )
    checks = HealthChecks(
        database=results["database"] or "unreachable",
        redis=results["redis"] or "unreachable",
        inventory=results["inventory"] or "unreachable",
        queue=results["queue"] or QueueCheck(status="unreachable"),
    )
    failed = [name for name, check in checks if _status(check) != "ok"]
    if failed:
        return answer(Health(status="unavailable", failed=failed, checks=checks), 503)
    return answer(Health(status="ok", checks=checks))


def _status(check: object) -> str:
    return check.status if isinstance(check, QueueCheck) else str(check)


def _database(engine: Engine) -> Reachable:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return "ok"


def _ping(redis: RedisClient) -> Reachable:
    redis.ping()
    return "ok"
