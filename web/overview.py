"""The operations overview: each product's figures in Redis against SQL's, with its sales chart
and waiting room, and the settlement queue's figures; the operations page (/admin), its JSON
(GET /admin/overview) and the metrics' scrape read them."""

from __future__ import annotations

import time
from dataclasses import asdict

from redis.exceptions import RedisError
from rq import Worker

from core.catalog import list_products
from core.inventory import StockFigures
from core.models import Product
from core.money import to_decimal_string
from core.stock import last_reconciliations, product_report, read_books
from core.times import iso, iso_seconds
from jobs.queues import settlement_queue
from web.answers import LastReconciliation, Overview, ProductRow, QueueFigures, RoomRow
from web.common import end_read, runtime
from web.extensions import db

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


def settle_backlog(product_id: int) -> int:
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
        backlog = settle_backlog(product.id) if stock else 0
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
