"""A purchase's one Redis call and its answer, the same for every purchase route: a product's
units (web/orders.py) and an event's seats or places (web/events.py)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import structlog
from flask import Response, url_for
from pydantic import BaseModel
from redis.exceptions import RedisError

from core.failover import HoldNotDurable, record_unreplicated
from core.inventory import BestAvailable, Hold
from core.keys import new_ticket_id
from core.models import Product
from core.orders import get_order
from core.rooms import PassRefused, read_pass
from core.tickets.view import Receipt, receipt, recorded_receipt
from jobs.queues import enqueue_rebuild
from web.answers import Error, PurchaseAccepted, answer
from web.apidoc import BEARER_ERRORS, BODY_ERRORS, documented
from web.common import (
    current_request_id,
    current_user_id,
    end_read,
    kicker,
    purchase_rate,
    runtime,
    sold_out_flags,
)
from web.errors import ApiError
from web.extensions import db
from web.schemas import PurchaseHeaders

events = structlog.get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
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
        return refusal(outcome.result, outcome.remaining)
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


def refusal(code: str, remaining: int | None) -> Response:
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
