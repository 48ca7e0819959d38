"""Small helpers shared by the route modules."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from functools import cache, wraps
from typing import Any, TypeVar

import structlog
from flask import Flask, Response, current_app, request
from flask_jwt_extended import get_jwt, get_jwt_identity, verify_jwt_in_request
from limits import parse as parse_limit
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from core.config import Settings
from core.inventory import PurchaseRate
from core.models import Product
from core.runtime import Runtime
from web.errors import ApiError, validation_message
from web.extensions import db
from web.kicker import SettlementKicker

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])
MAX_DB_ID = 2_147_483_647
# On every answer (web/__init__.py adds them; web/queue.py's shortcut, which answers before
# Flask, too).
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]


def runtime() -> Runtime:
    return current_app.extensions["flashsale"]


def purchase_rate() -> PurchaseRate | None:
    """RATELIMIT_PURCHASE, as the reserve script applies it (None with rate limits off)."""
    return current_app.extensions["flashsale_purchase_rate"]


def parse_purchase_rate(settings: Settings) -> PurchaseRate | None:
    if not settings.ratelimit_enabled:
        return None
    item = parse_limit(settings.ratelimit_purchase)
    return PurchaseRate(item.amount, item.get_expiry() * 1000, str(item))


def catalogue_changed() -> None:
    """After an event's change is committed: the search answers kept are stale. (Without Redis
    the change shows once the answers' SEARCH_CACHE_SECONDS are over.)"""
    try:
        runtime().search_cache.changed()
    except RedisError:
        log.warning("the catalogue's version did not move: search answers may lag")


def kicker() -> SettlementKicker:
    return current_app.extensions["flashsale_kicker"]


def sold_out_flags() -> SoldOutFlags:
    return current_app.extensions["flashsale_sold_out"]


class SoldOutFlags:
    """Products this process saw sold out, answered without Redis for a moment: a crowd hitting
    a sold-out drop costs no round trip, and stock released meanwhile sells again once the flag
    lapses (SOLD_OUT_CACHE_MS)."""

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_s = ttl_ms / 1000
        self._until: dict[int, float] = {}

    def set(self, product_id: int) -> None:
        if self.ttl_s > 0:
            self._until[product_id] = time.monotonic() + self.ttl_s

    def is_set(self, product_id: int) -> bool:
        until = self._until.get(product_id)
        return until is not None and time.monotonic() < until


def parse_body(model: type[M]) -> M:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the JSON parser goes
        data = None
    if data is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return model.model_validate(data)


def parse_query(model: type[M]) -> M:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", validation_message(exc, "query")) from None


def parse_headers(model: type[M], error_code: str = "invalid_request") -> M:
    """The headers the model names (an empty one counts as not sent)."""
    sent = {name: request.headers.get(name) for name in _header_names(model)}
    try:
        return model.model_validate({name: value for name, value in sent.items() if value})
    except ValidationError as exc:
        raise ApiError(400, error_code, validation_message(exc)) from None


@cache
def _header_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(field.alias or name for name, field in model.model_fields.items())


def end_read() -> None:
    """Ends a read-only transaction at once (on SQLite it holds the write lock), keeping the
    objects read usable: they are detached first, so the rollback does not expire them."""
    db.session.expunge_all()
    db.session.rollback()


def available_units(products: list[Product]) -> dict[int, int | None]:
    """Each product's free units (None while Redis cannot say)."""
    try:
        return runtime().inventory.available(
            [p.id for p in products], {p.id: p.buckets for p in products}
        )
    except RedisError:
        return dict.fromkeys(p.id for p in products)


def current_user_id() -> int:
    return int(get_jwt_identity())


def is_admin() -> bool:
    return get_jwt().get("role") == "admin"


def admin_required(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verify_jwt_in_request()
        if not is_admin():
            raise ApiError(403, "forbidden", "admins only")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_id(value: int, what: str = "product") -> int:
    """An id SQL could hold. (A range in the route's converter would answer 405, not 404, to
    a method whose route refuses the id while another method's route exists.)"""
    if value < 1 or value > MAX_DB_ID:
        raise ApiError(404, "not_found", f"no such {what}")
    return value


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def current_request_id() -> str:
    """The id of the request being answered ('' outside one)."""
    return str(structlog.contextvars.get_contextvars().get("request_id", ""))


def register_request_ids(app: Flask) -> None:
    """Each request's id (a proxy's X-Request-ID when it is one, else a new one), bound to the
    request's log lines and answered in X-Request-ID."""

    @app.before_request
    def _bind() -> None:
        sent = request.headers.get("X-Request-ID", "")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

    @app.after_request
    def _answer(response: Response) -> Response:
        bound = structlog.contextvars.get_contextvars().get("request_id")
        if bound:
            response.headers["X-Request-ID"] = bound
        return response

    @app.teardown_request
    def _unbind(_error: BaseException | None) -> None:
        structlog.contextvars.clear_contextvars()
