"""A product's purchase route, order status, the buyer's orders and cancels. A purchase is one
Lua call in Redis and a 202 (web/purchase.py)."""

from __future__ import annotations

from flask import Blueprint, Response, request
from flask_jwt_extended import jwt_required

from core.keys import product_of_ticket
from core.locks import LockTimeout
from core.metrics import PURCHASES, STATUS_POLLS
from core.orders import list_orders
from core.payments import PaymentUnavailable
from core.refunds import RefundDeferred, RefundRefused
from core.tickets import OrderStatus
from core.tickets.cancel import CancelNotDurable, CancelRefused, cancel_ticket
from core.tickets.view import (
    TicketNotFound,
    TicketUnreadable,
    TicketView,
    Viewer,
    order_view,
    view_ticket,
)
from web.answers import Cancelled, OrderPage, answer
from web.apidoc import BEARER_ERRORS, documented
from web.common import (
    check_id,
    current_user_id,
    end_read,
    is_admin,
    kicker,
    parse_body,
    parse_headers,
    parse_query,
    runtime,
    sold_out_flags,
)
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.purchase import RETRY_SHORTLY, documented_purchase, refusal, reserve_and_answer
from web.schemas import OrderPageQuery, PurchaseHeaders, PurchaseRequest

bp = Blueprint("orders", __name__)
POLL_AFTER_MS = 1000


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
@documented_purchase(PurchaseRequest)
def purchase(product_id: int) -> Response:
    """Reserve units: 202 with a ticket to poll (a replayed Idempotency-Key: the first one)."""
    body = parse_body(PurchaseRequest)
    headers = parse_headers(PurchaseHeaders, "invalid_idempotency_key")
    check_id(product_id)
    if _known_sold_out():
        PURCHASES.labels("sold_out").inc()
        return refusal("sold_out", 0)
    return reserve_and_answer(
        product_id, body.quantity, body.payment_method, headers.idempotency_key, headers.queue_pass
    )


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
