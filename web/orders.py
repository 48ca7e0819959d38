"""The purchase path and order status. A purchase is one Lua call in Redis and a 202."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import structlog
from flask import Blueprint, Response, request, url_for
from flask_jwt_extended import jwt_required
from pydantic import BaseModel
from redis.exceptions import RedisError

from core.failover import HoldNotDurable, record_unreplicated
from core.inventory import BestAvailable, Hold
from core.keys import new_ticket_id, product_of_ticket
from core.locks import LockTimeout
from core.metrics import PURCHASES, STATUS_POLLS
from core.models import Product
from core.orders import get_order, list_orders
from core.payments import PaymentUnavailable
from core.refunds import RefundDeferred, RefundRefused
from core.rooms import PassRefused, read_pass
from core.tickets import OrderStatus
from core.tickets.cancel import CancelNotDurable, CancelRefused, cancel_ticket
from core.tickets.view import (
    Receipt,
    TicketNotFound,
    TicketUnreadable,
    TicketView,
    Viewer,
    order_view,
    receipt,
    recorded_receipt,
    view_ticket,
)
from jobs.queues import enqueue_rebuild
from web.answers import Cancelled, Error, OrderPage, PurchaseAccepted, answer
from web.common import (
    check_id,
    current_request_id,
    current_user_id,
    end_read,
    is_admin,
    kicker,
    parse_body,
    parse_headers,
    parse_query,
    purchase_rate,
    runtime,
    sold_out_flags,
)
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.openapi import BEARER_ERRORS, BODY_ERRORS, documented
from web.schemas import OrderPageQuery, PurchaseHeaders, PurchaseRequest

bp = Blueprint("orders", __name__)
events = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
POLL_AFTER_MS = 1000
RETRY_SHORTLY = {"Retry-After": "2"}
SEAT_REFUSALS = {
    "seats_unavailable": (409, "some of those seats are taken"),
    "unknown_seats": (400, "no such seats in this event"),
    "seats_required": (409, "this product sells seats: choose them (POST /events/<id>/purchase)"),
    "not_seated": (409, "this product has no seats"),
    "unknown_section": (400, "no such seated section in this event"),
    "not_enough_seats": (409, "not that many seats are free in this section"),
    "not_enough_adjacent": (409, "not that many seats side by side are free in this section"),
}
REFUSALS = {
    "sold_out": "sold out",
    "per_user_limit": "the per-user limit for this product is reached",
    "sale_not_started": "the sale has not started yet",
    "sale_ended": "the sale has ended",
}


def _known_sold_out() -> bool:
    """Answered from this process's sold-out flag: no Redis round trip at all."""
    product_id = (request.view_args or {}).get("product_id")
    return (
        product_id is not None
        and not request.headers.get("Idempotency-Key")
        and sold_out_flags().is_set(product_id)
    )


def documented_purchase(body: type[BaseModel]) -> Callable[[F], F]:
    """A purchase route in the document: every purchase answers alike, whatever it asks for."""
    return documented(
        "orders",
        {202: PurchaseAccepted},
        (*BODY_ERRORS, *BEARER_ERRORS, 403, 404, 409, 429, 503),
        body=body,
        headers=PurchaseHeaders,
        bearer=True,
    )


@bp.post("/purchase/<int:product_id>")
@jwt_required()
@without_http_limit
@documented_purchase(PurchaseRequest)
def purchase(product_id: int) -> Response:
    """Reserve units: 202 with a ticket to poll (a replayed Idempotency-Key: the first one)."""
    body = parse_body(PurchaseRequest)
    headers = parse_headers(PurchaseHeaders, "invalid_idempotency_key")
    check_id(product_id)
    if _known_sold_out():
        PURCHASES.labels("sold_out").inc()
        return _refusal("sold_out", 0)
    return reserve_and_answer(
        product_id, body.quantity, body.payment_method, headers.idempotency_key, headers.queue_pass
    )


def reserve_and_answer(
    product_id: int,
    quantity: int,
    payment_method: str,
    idempotency_key: str | None,
    queue_pass: str | None,
    seats: Sequence[str] = (),
    best: BestAvailable | None = None,
) -> Response:
    """The one Redis call of a purchase, and its answer: 202 with the ticket, or the refusal.
    A waiting room's pass is verified here, in-process; the script lets it buy once."""
    pass_id = _pass_id(product_id, queue_pass) if queue_pass else ""
    try:
        outcome = runtime().inventory.reserve(
            product_id,
            current_user_id(),
            quantity,
            new_ticket_id(product_id),
            payment_method,
            idempotency_key or "",
            purchase_rate(),
            seats,
            best,
            pass_id,
            current_request_id(),
        )
    except RedisError:
        raise ApiError(
            503, "inventory_unavailable", "inventory is unavailable, retry shortly"
        ) from None
    if outcome.result == "reserved" and outcome.hold:
        if not outcome.replicated:
            _record_unreplicated(product_id, outcome.hold)
        kicker().kick(product_id)
        events.info(
            "purchase accepted",
            ticket_id=outcome.hold.ticket_id,
            product_id=product_id,
            quantity=outcome.hold.quantity,
        )
        return _accepted(receipt(outcome.hold))
    if outcome.result == "duplicate" and outcome.ticket_id:
        if outcome.hold is not None:
            return _accepted(receipt(outcome.hold))
        # The hold is settled and gone from Redis: SQL has the first answer's ticket.
        order = get_order(db.session, outcome.ticket_id)
        end_read()
        return _accepted(recorded_receipt(outcome.ticket_id, order))
    if outcome.result == "rate_limited":
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit exceeded ({purchase_rate().text})",
            {"Retry-After": str(max(1, math.ceil((outcome.retry_after_ms or 0) / 1000)))},
        )
    if outcome.result in REFUSALS:
        if outcome.result == "sold_out" and outcome.remaining == 0:
            sold_out_flags().set(product_id)
        return _refusal(outcome.result, outcome.remaining)
    if outcome.result == "queue_pass_required":
        raise ApiError(403, "queue_pass_required", "this sale has a waiting room: join its queue")
    if outcome.result == "queue_pass_used":
        raise ApiError(403, "queue_pass_invalid", "this pass has bought already")
    if outcome.result == "queue_pass_stale":
        raise ApiError(403, "queue_pass_invalid", "this pass is not of the sale's room: join again")
    if outcome.result in SEAT_REFUSALS:
        status, message = SEAT_REFUSALS[outcome.result]
        named = list(outcome.seats) or None
        return answer(Error(error=outcome.result, message=message, seats=named), status)
    return _stock_missing(product_id)


def _record_unreplicated(product_id: int, hold: Hold) -> None:
    """A hold no replica confirmed in time is durable once SQL has its order; else 503."""
    rt = runtime()
    try:
        record_unreplicated(rt.inventory, rt.sessions, product_id, hold)
    except HoldNotDurable:
        raise ApiError(
            503, "inventory_unavailable", "inventory is unavailable, retry shortly", RETRY_SHORTLY
        ) from None


def _pass_id(product_id: int, queue_pass: str) -> str:
    settings = runtime().settings
    try:
        return read_pass(
            settings.jwt_secret_key,
            queue_pass,
            product_id,
            current_user_id(),
            settings.pass_seconds,
        )
    except PassRefused as refused:
        raise ApiError(403, "queue_pass_invalid", str(refused)) from None


def _refusal(code: str, remaining: int | None) -> Response:
    return answer(Error(error=code, message=REFUSALS[code], remaining=remaining), 409)


def _stock_missing(product_id: int) -> Response:
    """No stock key: an unknown product, or Redis lost it and it is being rebuilt from SQL."""
    exists = db.session.get(Product, product_id) is not None
    end_read()
    if not exists:
        raise ApiError(404, "not_found", "no such product")
    with suppress(RedisError):
        enqueue_rebuild(runtime().settings, product_id)
    raise ApiError(
        503, "inventory_unavailable", "stock is being rebuilt, retry shortly", RETRY_SHORTLY
    )


def _accepted(ticket: Receipt) -> Response:
    status_url = url_for("orders.status", ticket_id=ticket.ticket_id)
    # The receipt is a validated model already: adding its URL needs no second validation.
    return answer(PurchaseAccepted.model_construct(**dict(ticket), status_url=status_url), 202)


@bp.get("/orders/<ticket_id>")
@jwt_required()
@without_http_limit
@documented("orders", {200: TicketView}, (*BEARER_ERRORS, 404, 503), bearer=True)
def status(ticket_id: str) -> Response:
    """A ticket's status (its buyer or an admin); poll_after_ms and Retry-After while open."""
    try:
        view = view_ticket(runtime().inventory, db.session, ticket_id, _viewer())
    except TicketNotFound:
        raise ApiError(404, "not_found", "no such order") from None
    except TicketUnreadable:
        raise ApiError(
            503, "unavailable", "the order cannot be read now, retry shortly", {"Retry-After": "2"}
        ) from None
    finally:
        end_read()
    STATUS_POLLS.labels(view.status.value).inc()
    response = answer(view.with_poll_hint(POLL_AFTER_MS))
    if not view.is_final:
        response.headers["Retry-After"] = str(max(1, POLL_AFTER_MS // 1000))
    return response


def _viewer() -> Viewer:
    return Viewer(current_user_id(), is_admin())


@bp.get("/orders")
@jwt_required()
@documented("orders", {200: OrderPage}, (400, *BEARER_ERRORS), query=OrderPageQuery, bearer=True)
def index() -> Response:
    """The caller's recorded orders, newest first."""
    query = parse_query(OrderPageQuery)
    orders, total = list_orders(
        db.session, current_user_id(), query.per_page, (query.page - 1) * query.per_page
    )
    end_read()
    return answer(
        OrderPage(
            orders=[order_view(o) for o in orders],
            page=query.page,
            per_page=query.per_page,
            total=total,
        )
    )


@bp.post("/orders/<ticket_id>/cancel")
@jwt_required()
@documented("orders", {200: Cancelled}, (*BEARER_ERRORS, 404, 409, 503), bearer=True)
def cancel(ticket_id: str) -> Response:
    """Release a hold no payment has started on; an admin cancelling a confirmed order refunds it.

    The workers record the release in SQL."""
    rt = runtime()
    try:
        outcome = cancel_ticket(rt.inventory, rt.settler, db.session, ticket_id, _viewer())
    except TicketNotFound:
        raise ApiError(404, "not_found", "no such order") from None
    except CancelRefused as refused:
        raise ApiError(409, refused.code, refused.message) from None
    except RefundRefused as exc:
        raise ApiError(409, "not_refundable", str(exc)) from None
    except RefundDeferred:
        raise ApiError(
            503, "inventory_unavailable", "stock is being rebuilt, retry shortly", RETRY_SHORTLY
        ) from None
    except CancelNotDurable:
        raise ApiError(
            503, "inventory_unavailable", "the cancel is not confirmed yet, retry", RETRY_SHORTLY
        ) from None
    except (PaymentUnavailable, LockTimeout):
        raise ApiError(503, "payment_unavailable", "the payment provider did not answer") from None
    finally:
        end_read()
    if outcome == OrderStatus.CANCELLED:
        kicker().kick(product_of_ticket(ticket_id) or 0)
    return answer(Cancelled(ticket_id=ticket_id, status=outcome.value))
