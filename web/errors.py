"""Every error is JSON {"error": code, "message": text} with the right status."""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response
from pydantic import ValidationError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from web.answers import Error, answer

log = logging.getLogger(__name__)
RETRY_AFTER_UNAVAILABLE_S = 2

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str) -> Response:
    return answer(Error(error=code, message=message), status)


def validation_message(exc: ValidationError, whole: str = "body") -> str:
    """Each error with where it is (`whole`: what an error of the whole model is about)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or whole
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _seconds_until_reset() -> int:
    from web.extensions import limiter

    current = limiter.current_limit
    if current is None:
        return 1
    return max(1, math.ceil(current.reset_at - time.time()))


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> Response:
        return error_response(400, "invalid_request", validation_message(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 429:
            message = f"rate limit exceeded ({exc.description})"
        response = error_response(status, CODES.get(status, "error"), message)
        if status == 429:
            response.headers["Retry-After"] = str(_seconds_until_reset())
        for name, value in (exc.get_response().headers or {}).items():
            if name.lower() in ("retry-after", "allow"):
                response.headers[name] = value
        return response

    @app.errorhandler(RedisError)
    def _redis_unavailable(exc: RedisError) -> Response:
        log.warning("Redis did not answer: %s", exc)
        response = error_response(503, "unavailable", "the service is unavailable, retry shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE_S)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
