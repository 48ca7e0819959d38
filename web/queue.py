"""Waiting rooms: a buyer joins a sale's queue, polls where it stands, and once admitted gets a
pass that the purchase checks in-process (core/rooms.py). One Redis call per request; SQL only
on the rare answer that the stock is missing."""

from __future__ import annotations

import math
from contextlib import suppress

from flask import Blueprint, Response
from flask_jwt_extended import jwt_required
from redis.exceptions import RedisError

from core.inventory import RoomPlace
from core.models import Product
from core.rooms import issue_pass
from jobs.queues import enqueue_rebuild
from web.answers import QueuePlace, answer
from web.common import check_id, current_user_id, end_read, runtime
from web.errors import ApiError
from web.extensions import db, without_http_limit
from web.openapi import BEARER_ERRORS, documented

bp = Blueprint("queue", __name__, url_prefix="/queue")
# Polls come more often near the front: a buyer this many seconds away asks again after a
# quarter of it, between these bounds.
MIN_POLL_MS, MAX_POLL_MS, WAITING_POLL_MS = 1000, 30_000, 5000


@bp.post("/<int:product_id>/join")
@jwt_required()
@without_http_limit
@documented("orders", {200: QueuePlace}, (*BEARER_ERRORS, 404, 503), bearer=True)
def join(product_id: int) -> Response:
    """Take a place in the sale's waiting room (joining again keeps the place).

    Before the opening, places are drawn at random at it; after, first come first served. A
    sale without a room answers with a pass at once."""
    user_id = current_user_id()
    place = _ask(product_id, lambda: runtime().inventory.join_room(check_id(product_id), user_id))
    return _answer(product_id, user_id, place)


@bp.get("/<int:product_id>/status")
@jwt_required()
@without_http_limit
@documented("orders", {200: QueuePlace}, (*BEARER_ERRORS, 404, 503), bearer=True)
def status(product_id: int) -> Response:
    """Where the buyer stands: position, buyers ahead, estimated wait, when to ask again; once
    admitted, the pass (valid PASS_SECONDS) to buy with."""
    user_id = current_user_id()
    place = _ask(product_id, lambda: runtime().inventory.room_status(check_id(product_id), user_id))
    if place.state == "not_joined":
        raise ApiError(404, "not_in_queue", "join the queue first (POST /queue/<id>/join)")
    return _answer(product_id, user_id, place)


def _ask(product_id: int, call) -> RoomPlace:  # type: ignore[no-untyped-def]
    try:
        place = call()
    except RedisError:
        place = RoomPlace("unavailable")
    if place.state == "unavailable":
        # The rare answer: an unknown product, or a stock (or room) Redis lost and rebuilds.
        exists = db.session.get(Product, product_id) is not None
        end_read()
        if not exists:
            raise ApiError(404, "not_found", "no such product")
        with suppress(RedisError):  # as a purchase does: one rebuild job, however many ask
            enqueue_rebuild(runtime().settings, product_id)
        raise ApiError(
            503, "queue_unavailable", "the queue is being restored, retry shortly", RETRY
        )
    return place


RETRY = {"Retry-After": "2"}


def _answer(product_id: int, user_id: int, place: RoomPlace) -> Response:
    queue_id = f"{product_id}:{user_id}"
    if place.state == "open" or place.admitted:
        settings = runtime().settings
        position = place.position or 0
        body = QueuePlace(
            status="admitted",
            queue_id=queue_id,
            position=place.position,
            ahead=0,
            estimated_wait_s=0,
            poll_after_ms=settings.pass_seconds * 1000,
            queue_pass=issue_pass(settings.jwt_secret_key, product_id, user_id, position),
        )
        return answer(body)
    if place.state in ("waiting", "sold_out"):
        body = QueuePlace(
            status=place.state,
            queue_id=queue_id,
            position=place.position,
            ahead=None,
            estimated_wait_s=None,
            poll_after_ms=WAITING_POLL_MS,
        )
        return _polled(body)
    ahead = max(0, (place.position or 0) - place.served - 1)
    wait_s = math.ceil((ahead + 1) / place.rate) if place.rate else None
    poll_ms = min(MAX_POLL_MS, max(MIN_POLL_MS, (wait_s or 20) * 250))
    body = QueuePlace(
        status="queued",
        queue_id=queue_id,
        position=place.position,
        ahead=ahead,
        estimated_wait_s=wait_s,
        poll_after_ms=poll_ms,
    )
    return _polled(body)


def _polled(body: QueuePlace) -> Response:
    response = answer(body)
    response.headers["Retry-After"] = str(max(1, body.poll_after_ms // 1000))
    return response
