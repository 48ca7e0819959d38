"""Waiting rooms: a buyer joins a sale's queue, polls where it stands, and once admitted gets a
pass that the purchase checks in-process (core/rooms/). Joining is one Redis call; a poll is
answered from the web process's copy of the room's board (core/rooms/board.py) once the process
knows the buyer's place. Both are answered before Flask (QueueShortcut) for a Bearer token.
SQL only on the rare answer that the stock is missing."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from flask import Blueprint, Flask, Response
from flask_jwt_extended import jwt_required
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from core.config import Settings
from core.models import Product
from core.rooms import BOARD_MAX_AGE_S, RoomPlace, issue_pass
from core.runtime import Runtime
from jobs.queues import enqueue_rebuild
from web.answers import QueuePlace, answer
from web.apidoc import BEARER_ERRORS, documented
from web.common import MAX_DB_ID, SECURITY_HEADERS, check_id, current_user_id, end_read, runtime
from web.errors import ApiError
from web.extensions import db, jwt, without_http_limit

bp = Blueprint("queue", __name__, url_prefix="/queue")
# When to ask again. A queued buyer: when its turn should come (the room admits at its rate
# while units remain) and the web processes' copies of the board have seen it. A buyer waiting
# for the opening: once more in the LAST_CALL_MS before it, then at the opening, spread by
# buyer over as many seconds as the web processes need to tell the whole crowd its places
# (ROOM_OPENING_POLLS_PER_SECOND), so the crowd does not ask in the same instant. Further
# than MAX_POLL_MS: somewhere between half of it and all of it, by how far (so the far crowd's
# polls do not come back in waves), for a fresh estimate. Most buyers ask two or three times
# in all, whatever their place.
MIN_POLL_MS, MAX_POLL_MS, LAST_CALL_MS = 500, 30_000, 10_000
RETRY = {"Retry-After": "2"}


@bp.post("/<int:product_id>/join")
@jwt_required()
@without_http_limit
@documented("orders", {200: QueuePlace}, (*BEARER_ERRORS, 404, 503), bearer=True)
def join(product_id: int) -> Response:
    """Take a place in the sale's waiting room (joining again keeps the place).

    Before the opening, places are drawn at random at it; after, first come first served. A
    sale without a room answers with a pass at once."""
    user_id = current_user_id()
    place = _ask(product_id, lambda: runtime().room_board.join(check_id(product_id), user_id))
    return _answer(place_answer(runtime().settings, product_id, user_id, place))


@bp.get("/<int:product_id>/status")
@jwt_required()
@without_http_limit
@documented("orders", {200: QueuePlace}, (*BEARER_ERRORS, 404, 503), bearer=True)
def status(product_id: int) -> Response:
    """Where the buyer stands: position, buyers ahead, estimated wait, when to ask again; once
    admitted, the pass (valid PASS_SECONDS) to buy with."""
    user_id = current_user_id()
    place = _ask(product_id, lambda: runtime().room_board.status(check_id(product_id), user_id))
    if place.state == "not_joined":
        raise ApiError(404, "not_in_queue", "join the queue first (POST /queue/<id>/join)")
    return _answer(place_answer(runtime().settings, product_id, user_id, place))


def _ask(product_id: int, call: Callable[[], RoomPlace]) -> RoomPlace:
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


def place_answer(settings: Settings, product_id: int, user_id: int, place: RoomPlace) -> QueuePlace:
    """The answer to a buyer in the room (open, waiting, queued, admitted or sold_out)."""
    queue_id = f"{product_id}:{user_id}"
    if place.state == "open" or place.admitted:
        position = place.position or 0
        return QueuePlace(
            status="admitted",
            queue_id=queue_id,
            position=place.position,
            ahead=0,
            estimated_wait_s=0,
            poll_after_ms=settings.pass_seconds * 1000,
            queue_pass=issue_pass(
                settings.jwt_secret_key, product_id, user_id, position, place.epoch
            ),
        )
    if place.state in ("waiting", "sold_out"):
        return QueuePlace(
            status=place.state,
            queue_id=queue_id,
            position=place.position,
            ahead=None,
            estimated_wait_s=None,
            poll_after_ms=_poll_after_ms(place, user_id, settings),
        )
    ahead = max(0, (place.position or 0) - place.served - 1)
    return QueuePlace(
        status="queued",
        queue_id=queue_id,
        position=place.position,
        ahead=ahead,
        estimated_wait_s=math.ceil((ahead + 1) / place.rate) if place.rate else None,
        poll_after_ms=_poll_after_ms(place, user_id, settings),
    )


def _poll_after_ms(place: RoomPlace, user_id: int, settings: Settings) -> int:
    if place.state == "sold_out":
        return MAX_POLL_MS
    if place.state == "waiting":
        until_ms = place.opens_ms - time.time() * 1000
        spot = user_id * 2_654_435_761  # the buyer's own spot in a spread (Knuth's hash)
        if until_ms <= 0:  # the opening's draw is being done
            return MIN_POLL_MS
        if until_ms > LAST_CALL_MS:  # ask once more shortly before it, to learn the crowd
            after_ms = until_ms - LAST_CALL_MS + spot % LAST_CALL_MS
        else:
            spread_ms = 1 + place.crowd * 1000 // settings.room_opening_polls_per_second
            after_ms = until_ms + spot % spread_ms
    elif place.rate:
        ahead = max(0, (place.position or 0) - place.served - 1)
        after_ms = (ahead + 1) * 1000 / place.rate + BOARD_MAX_AGE_S * 1000
    else:
        after_ms = MAX_POLL_MS
    if after_ms > MAX_POLL_MS:
        half = MAX_POLL_MS // 2
        after_ms = half + after_ms % half
    return int(max(MIN_POLL_MS, after_ms))


def _answer(body: QueuePlace) -> Response:
    response = answer(body)
    if body.status != "admitted":
        response.headers["Retry-After"] = _retry_after(body)
    return response


def _retry_after(body: QueuePlace) -> str:
    return str(max(1, body.poll_after_ms // 1000))


class QueueShortcut:
    """The queue's two requests, joining and polling, answered before Flask for a Bearer token
    (verified and kept as the routes do; its expiry, type and revocation checked on every
    request, as the routes do) whenever the room gives a place to answer. Everything else
    (another request, cookies, a token that does not verify, a refusal: not joined, or the
    room unavailable) goes on to the routes, which answer the same way for the same place.

    A sale's crowd joins once and then polls every few seconds: these are nearly all of a
    sale's requests, and Flask's dispatch, its extensions' hooks and the JWT library's
    per-request work cost several times what these answers do."""

    PATH = re.compile(r"/queue/([1-9][0-9]{0,9})/(join|status)")
    METHODS = {"join": "POST", "status": "GET"}

    def __init__(self, app: Flask, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        match = self.PATH.fullmatch(environ.get("PATH_INFO", ""))
        if (
            match
            and environ.get("REQUEST_METHOD") == self.METHODS[match[2]]
            and not environ.get("QUERY_STRING")
            and environ.get("CONTENT_LENGTH", "0") in ("", "0")
            and int(match[1]) <= MAX_DB_ID
        ):
            answered = self._answer(environ, int(match[1]), match[2])
            if answered is not None:
                body, headers = answered
                start_response("200 OK", headers)
                return [body]
        return self.wsgi_app(environ, start_response)

    def _answer(self, environ: dict[str, Any], product_id: int, ask: str) -> tuple | None:
        rt: Runtime = self.app.extensions["flashsale"]
        user_id = self._buyer(environ, rt)
        if user_id is None:
            return None
        try:
            if ask == "join":
                place = rt.room_board.join(product_id, user_id)
            else:
                place = rt.room_board.status(product_id, user_id)
        except RedisError:
            return None
        if place.state in ("not_joined", "unavailable"):
            return None
        body = place_answer(rt.settings, product_id, user_id, place)
        data = body.model_dump_json().encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        if body.status != "admitted":
            headers.append(("Retry-After", _retry_after(body)))
        return data, headers + SECURITY_HEADERS

    def _buyer(self, environ: dict[str, Any], rt: Runtime) -> int | None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header.startswith("Bearer "):
            return None
        token = header[7:]
        claims = jwt.verified_claims(rt.settings.jwt_secret_key, token)
        if claims is None:
            with self.app.app_context():
                claims = jwt.verify_quietly(token)
        if claims is None or claims.get("type") != "access":
            return None
        try:
            if rt.revocations.refuses(claims):
                return None
        except SQLAlchemyError:
            return None
        return int(claims["sub"])
