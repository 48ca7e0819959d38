"""The purchase path and order status. A purchase is one Lua call in Redis and a 202."""

from __future__ import annotations

import math
import re
from contextlib import suppress

from flask import Blueprint, Response, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from redis.exceptions import RedisError

from core.keys import new_ticket_id, product_of_ticket
from core.locks import LockTimeout
from core.models import Product
from core.orders import get_order, list_orders
from core.payments import PaymentUnavailable
from core.refunds import RefundRefused
from core.tickets import OrderStatus
from core.tickets.cancel import CancelRefused, cancel_ticket
from core.tickets.view import (
    TicketNotFound,
    TicketUnreadable,
    Viewer,
    is_final,
    order_view,
    receipt,
    recorded_receipt,
    view_ticket,
)
from jobs.queues import enqueue_rebuild
from web.common import (
    check_id,
    current_user_id,
    end_read,
    is_admin,
    kicker,
    parse_body,
    purchase_rate,
    runtime,
    sold_out_flags,
)
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.schemas import IDEMPOTENCY_KEY_PATTERN, MAX_PAGE, MAX_PER_PAGE, PurchaseRequest

bp = Blueprint("orders", __name__)
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
PAGE_NUMBER = re.compile(r"[0-9]{1,6}")
POLL_AFTER_MS = 1000
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


@bp.post("/purchase/<int:product_id>")
@jwt_required()
@without_http_limit
def purchase(product_id: int) -> tuple[Response, int]:
    body = parse_body(PurchaseRequest)
    idempotency_key = request.headers.get("Idempotency-Key", "")
    if idempotency_key and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key: 1-100 of [A-Za-z0-9_.:-]")
    check_id(product_id)
    if _known_sold_out():
        return _refusal("sold_out", 0)
    try:
        outcome = runtime().inventory.reserve(
            product_id,
            current_user_id(),
            body.quantity,
            new_ticket_id(product_id),
            body.payment_method,
            idempotency_key,
            purchase_rate(),
        )
    except RedisError:
        raise ApiError(
            503, "inventory_unavailable", "inventory is unavailable, retry shortly"
        ) from None
    if outcome.result == "reserved" and outcome.hold:
        kicker().kick(product_id)
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
    return _stock_missing(product_id)


def _refusal(code: str, remaining: int | None) -> tuple[Response, int]:
    extra = {} if remaining is None else {"remaining": remaining}
    return jsonify({"error": code, "message": REFUSALS[code], **extra}), 409


def _stock_missing(product_id: int) -> tuple[Response, int]:
    """No stock key: an unknown product, or Redis lost it and it is being rebuilt from SQL."""
    exists = db.session.get(Product, product_id) is not None
    end_read()
    if not exists:
        raise ApiError(404, "not_found", "no such product")
    with suppress(RedisError):
        enqueue_rebuild(runtime().settings, product_id)
    raise ApiError(
        503, "inventory_unavailable", "stock is being rebuilt, retry shortly", {"Retry-After": "2"}
    )


def _accepted(body: dict[str, object]) -> tuple[Response, int]:
    status_url = url_for("orders.status", ticket_id=body["ticket_id"])
    return jsonify(body | {"status_url": status_url}), 202


@bp.get("/orders/<ticket_id>")
@jwt_required()
@without_http_limit
def status(ticket_id: str) -> Response:
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
    if is_final(view):
        return jsonify(view)
    response = jsonify(view | {"poll_after_ms": POLL_AFTER_MS})
    response.headers["Retry-After"] = str(max(1, POLL_AFTER_MS // 1000))
    return response


def _viewer() -> Viewer:
    return Viewer(current_user_id(), is_admin())


@bp.get("/orders")
@jwt_required()
def index() -> Response:
    page = request.args.get("page", "1")
    per_page = request.args.get("per_page", "20")
    if not (PAGE_NUMBER.fullmatch(page) and PAGE_NUMBER.fullmatch(per_page)) or not (
        1 <= int(page) <= MAX_PAGE and 1 <= int(per_page) <= MAX_PER_PAGE
    ):
        raise ApiError(400, "invalid_request", f"page >= 1 and 1 <= per_page <= {MAX_PER_PAGE}")
    orders, total = list_orders(
        db.session, current_user_id(), int(per_page), (int(page) - 1) * int(per_page)
    )
    end_read()
    return jsonify(
        {
            "orders": [order_view(o) for o in orders],
            "page": int(page),
            "per_page": int(per_page),
            "total": total,
        }
    )


@bp.post("/orders/<ticket_id>/cancel")
@jwt_required()
def cancel(ticket_id: str) -> Response:
    """Releases a hold that no payment has started on (the workers record it in SQL); an admin
    cancelling a confirmed order refunds it."""
    rt = runtime()
    try:
        outcome = cancel_ticket(rt.inventory, rt.settler, db.session, ticket_id, _viewer())
    except TicketNotFound:
        raise ApiError(404, "not_found", "no such order") from None
    except CancelRefused as refused:
        raise ApiError(409, refused.code, refused.message) from None
    except RefundRefused as exc:
        raise ApiError(409, "not_refundable", str(exc)) from None
    except (PaymentUnavailable, LockTimeout):
        raise ApiError(503, "payment_unavailable", "the payment provider did not answer") from None
    finally:
        end_read()
    if outcome == OrderStatus.CANCELLED:
        kicker().kick(product_of_ticket(ticket_id) or 0)
    return jsonify({"ticket_id": ticket_id, "status": outcome.value})
