"""The purchase path and order status. A purchase is one Lua call in Redis and a 202."""

from __future__ import annotations

import math
import re
from contextlib import suppress

from flask import Blueprint, Response, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from redis.exceptions import RedisError

from core.inventory import Hold, from_ms
from core.keys import new_ticket_id, product_of_ticket
from core.locks import LockTimeout, locked
from core.models import Order, OrderStatus, Product
from core.money import to_decimal_string
from core.orders import get_order, get_payment, list_orders
from core.payments import PaymentUnavailable
from core.settlement import RefundRefused
from jobs.queues import enqueue_rebuild
from web.common import (
    check_id,
    current_user_id,
    end_read,
    is_admin,
    iso,
    kicker,
    parse_body,
    purchase_rate,
    runtime,
    sold_out_flags,
)
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.schemas import PurchaseRequest

bp = Blueprint("orders", __name__)
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
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
        return jsonify(_reserved_json(product_id, outcome.hold)), 202
    if outcome.result == "duplicate" and outcome.ticket_id:
        return jsonify(_replayed_json(product_id, outcome.ticket_id, outcome.hold)), 202
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


def _reserved_json(product_id: int, hold: Hold) -> dict[str, object]:
    return {
        "ticket_id": hold.ticket_id,
        "status": hold.status,
        "product_id": product_id,
        "quantity": hold.quantity,
        "expires_at": _iso_ms(hold.deadline_ms),
        "status_url": url_for("orders.status", ticket_id=hold.ticket_id),
    }


def _replayed_json(product_id: int, ticket_id: str, hold: Hold | None) -> dict[str, object]:
    """The first answer again; once the hold is settled and gone from Redis, SQL has it."""
    if hold is not None:
        return _reserved_json(product_id, hold)
    order = get_order(db.session, ticket_id)
    end_read()
    return {
        "ticket_id": ticket_id,
        "status": order.status if order else OrderStatus.RESERVED.value,
        "product_id": product_id,
        "quantity": order.quantity if order else None,
        "expires_at": iso(order.expires_at) if order else None,
        "status_url": url_for("orders.status", ticket_id=ticket_id),
    }


def _iso_ms(ms: int) -> str:
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@bp.get("/orders/<ticket_id>")
@jwt_required()
@without_http_limit
def status(ticket_id: str) -> Response:
    product_id = product_of_ticket(ticket_id)
    if product_id is None:
        raise ApiError(404, "not_found", "no such order")
    try:
        hold = runtime().inventory.get_ticket(ticket_id)  # open, or final a while after
    except RedisError:
        return _recorded_status(ticket_id, hold_unknown=True)
    if hold is not None:
        if hold.user_id != current_user_id() and not is_admin():
            raise ApiError(404, "not_found", "no such order")
        return _with_poll_hint(_hold_json(product_id, hold))
    return _recorded_status(ticket_id)


def _recorded_status(ticket_id: str, hold_unknown: bool = False) -> Response:
    """The order as SQL records it. With Redis unreachable (`hold_unknown`) a ticket SQL has not
    recorded yet may be a hold all the same: 503, not 404."""
    order = get_order(db.session, ticket_id)
    if order is None and hold_unknown:
        end_read()
        raise ApiError(
            503, "unavailable", "the order cannot be read now, retry shortly", {"Retry-After": "2"}
        )
    order = _visible(order)
    payment = get_payment(db.session, ticket_id)
    body = _order_json(order) | {"payment": _payment_json(payment, order.status)}
    end_read()
    return _with_poll_hint(body)


def _with_poll_hint(body: dict[str, object]) -> Response:
    if OrderStatus(str(body["status"])).is_terminal:
        return jsonify(body)
    response = jsonify(body | {"poll_after_ms": POLL_AFTER_MS})
    response.headers["Retry-After"] = str(max(1, POLL_AFTER_MS // 1000))
    return response


def _hold_json(product_id: int, hold: Hold) -> dict[str, object]:
    return {
        "ticket_id": hold.ticket_id,
        "status": hold.status,
        "product_id": product_id,
        "quantity": hold.quantity,
        "amount": to_decimal_string(hold.amount_minor, hold.currency) if hold.currency else None,
        "currency": hold.currency or None,
        "created_at": _iso_ms(hold.created_ms),
        "updated_at": _iso_ms(hold.modified_ms),
        "expires_at": _iso_ms(hold.deadline_ms),
        "failure_reason": hold.reason,
        "payment": _hold_payment_json(hold),
    }


def _hold_payment_json(hold: Hold) -> dict[str, object]:
    if hold.client_secret:
        return {"client_secret": hold.client_secret}
    return {"status": hold.payment_status} if hold.payment_status else {}


def _order_json(order: Order) -> dict[str, object]:
    return {
        "ticket_id": order.ticket_id,
        "status": order.status,
        "product_id": order.product_id,
        "quantity": order.quantity,
        "amount": to_decimal_string(order.amount_minor, order.currency),
        "currency": order.currency,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "expires_at": iso(order.expires_at),
        "failure_reason": order.failure_reason,
    }


def _payment_json(payment, order_status: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    if payment is None:
        return {}
    waiting = order_status == OrderStatus.REQUIRES_ACTION.value
    return {
        "client_secret": payment.client_secret if waiting else None,
        "provider": payment.provider,
        "intent_id": payment.intent_id,
        "status": payment.status,
        "amount": to_decimal_string(payment.amount_minor, payment.currency),
        "amount_refunded": to_decimal_string(payment.amount_refunded_minor, payment.currency),
        "currency": payment.currency,
    }


def _owned_order(ticket_id: str) -> Order:
    return _visible(get_order(db.session, ticket_id))


def _visible(order: Order | None) -> Order:
    """The order if the caller may see it (its owner or an admin); 404 otherwise."""
    if order is None or (order.user_id != current_user_id() and not is_admin()):
        end_read()
        raise ApiError(404, "not_found", "no such order")
    return order


@bp.get("/orders")
@jwt_required()
def index() -> Response:
    page = request.args.get("page", "1")
    per_page = request.args.get("per_page", "20")
    if not (PAGE_NUMBER.fullmatch(page) and PAGE_NUMBER.fullmatch(per_page)) or not (
        1 <= int(page) <= 100_000 and 1 <= int(per_page) <= 100
    ):
        raise ApiError(400, "invalid_request", "page >= 1 and 1 <= per_page <= 100")
    orders, total = list_orders(
        db.session, current_user_id(), int(per_page), (int(page) - 1) * int(per_page)
    )
    end_read()
    return jsonify(
        {
            "orders": [_order_json(o) for o in orders],
            "page": int(page),
            "per_page": int(per_page),
            "total": total,
        }
    )


@bp.post("/orders/<ticket_id>/cancel")
@jwt_required()
def cancel(ticket_id: str) -> Response:
    """Releases a hold that no payment has started on; the workers record it in SQL."""
    product_id = product_of_ticket(ticket_id)
    if product_id is None:
        raise ApiError(404, "not_found", "no such order")
    inventory = runtime().inventory
    hold = inventory.get_hold(ticket_id)
    if hold is None:
        order = _owned_order(ticket_id)
        end_read()
        if order.status == OrderStatus.CONFIRMED.value and is_admin():
            return _refund(ticket_id)
        raise ApiError(409, f"already_{order.status}", f"the order is already {order.status}")
    if hold.user_id != current_user_id() and not is_admin():
        raise ApiError(404, "not_found", "no such order")
    try:
        with locked(inventory.lock(product_id, ticket_id)):
            state, after = inventory.finish_hold(
                product_id, ticket_id, OrderStatus.CANCELLED.value, "cancelled_by_buyer", "reserved"
            )
    except LockTimeout:
        raise ApiError(409, "payment_in_progress", "the order is being settled") from None
    if state in ("ok", "already"):
        kicker().kick(product_id)
        return jsonify({"ticket_id": ticket_id, "status": OrderStatus.CANCELLED.value})
    current = after.status if after else "settled"
    if current == OrderStatus.REQUIRES_ACTION.value:
        current = OrderStatus.PROCESSING.value  # a payment is under way either way
    if current == OrderStatus.PROCESSING.value:
        raise ApiError(
            409, "payment_in_progress", "the payment has started; it cannot be cancelled"
        )
    raise ApiError(409, f"already_{current}", f"the order is already {current}")


def _refund(ticket_id: str) -> Response:
    """An admin cancels a confirmed order: refunded, and its units go back on sale."""
    try:
        runtime().settler.refund_confirmed(ticket_id)
    except RefundRefused as exc:
        raise ApiError(409, "not_refundable", str(exc)) from None
    except (PaymentUnavailable, LockTimeout):
        raise ApiError(503, "payment_unavailable", "the payment provider did not answer") from None
    return jsonify({"ticket_id": ticket_id, "status": OrderStatus.REFUNDED.value})
