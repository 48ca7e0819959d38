"""A sign-in's tokens and the pages' session cookies, shared by the auth routes and the pages:
tokens made, cookies set, and whether a token was revoked."""

from __future__ import annotations

import secrets

from flask import Response
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    set_access_cookies,
    set_refresh_cookies,
)
from sqlalchemy.exc import SQLAlchemyError

from core.models import User
from web.answers import Tokens
from web.common import runtime
from web.errors import ApiError


def tokens_for(user: User) -> Tokens:
    """A sign-in: its tokens, and every access token its refresh token makes, carry one sign-in
    id (`sid`), so that a logout ends all of them."""
    claims = {"role": user.role, "sid": secrets.token_hex(12)}
    return Tokens(
        access_token=create_access_token(identity=str(user.id), additional_claims=claims),
        refresh_token=create_refresh_token(identity=str(user.id), additional_claims=claims),
        token_type="Bearer",
        expires_in=access_seconds(),
    )


def access_token_for(user: User, refresh_claims: dict) -> str:
    """A new access token of the refresh token's sign-in."""
    claims = {"role": user.role} | (
        {"sid": refresh_claims["sid"]} if "sid" in refresh_claims else {}
    )
    return create_access_token(identity=str(user.id), additional_claims=claims)


def access_seconds() -> int:
    return runtime().settings.jwt_access_minutes * 60


def set_session_cookies(response: Response, access: str, refresh: str | None = None) -> None:
    """The token cookies (HttpOnly) and their CSRF cookies, kept as long as the tokens last."""
    settings = runtime().settings
    set_access_cookies(response, access, max_age=access_seconds())
    if refresh:
        set_refresh_cookies(response, refresh, max_age=settings.jwt_refresh_days * 24 * 3600)


def token_revoked(claims: dict) -> bool:
    """Whether a token (or its sign-in) was revoked: this process's copy, no round trip (SQL
    while the copy is not being kept current). Raises ApiError 503 when SQL would have to say
    and cannot."""
    try:
        return runtime().revocations.refuses(claims)
    except SQLAlchemyError:
        raise sessions_unavailable() from None


def sessions_unavailable() -> ApiError:
    return ApiError(
        503, "unavailable", "sessions cannot be checked now, retry shortly", {"Retry-After": "2"}
    )
