"""Registration, login, token refresh and revocation; cookie sessions for the pages (their
tokens and cookies: web/sessions.py)."""

from __future__ import annotations

import hmac
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from flask import Blueprint, Response, current_app, request
from flask_jwt_extended import (
    decode_token,
    get_jwt,
    get_jwt_identity,
    get_jwt_request_location,
    jwt_required,
    unset_jwt_cookies,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import ExpiredSignatureError, PyJWTError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from core.catalog import UsernameTaken, authenticate, create_user
from core.models import User
from core.revocations import announce_revocations, record_revocations
from web.answers import AccessToken, Me, Revoked, SignedOut, Tokens, answer
from web.answers import Session as SessionAnswer
from web.answers import User as UserAnswer
from web.apidoc import BEARER_ERRORS, BODY_ERRORS, documented
from web.common import current_user_id, end_read, parse_body, runtime
from web.errors import ApiError
from web.extensions import db, everyone_key, limiter, login_username_key
from web.schemas import LoginRequest, LogoutRequest, MeUpdate, Registration
from web.sessions import (
    access_seconds,
    access_token_for,
    sessions_unavailable,
    set_session_cookies,
    tokens_for,
)

bp = Blueprint("auth", __name__, url_prefix="/auth")


def _login_limit() -> str:
    return runtime().settings.ratelimit_login


def _register_limit() -> str:
    return runtime().settings.ratelimit_register


def _register_global_limit() -> str:
    return runtime().settings.ratelimit_register_global


@bp.post("/register")
@limiter.limit(_register_limit)
@limiter.limit(_register_global_limit, key_func=everyone_key)
@documented("auth", {201: UserAnswer}, (*BODY_ERRORS, 409, 429), body=Registration)
def register() -> Response:
    """Create a buyer account (with an e-mail address for its mail, if given)."""
    body = parse_body(Registration)
    try:
        user = create_user(
            db.session, body.username, body.password, runtime().settings.bcrypt_rounds
        )
        user.email = body.email
        db.session.commit()
    except UsernameTaken:
        raise ApiError(409, "username_taken", "that username is taken") from None
    return answer(UserAnswer(id=user.id, username=user.username), 201)


@bp.post("/login")
@limiter.limit(_login_limit)
@limiter.limit(_login_limit, key_func=login_username_key)
@documented("auth", {200: Tokens}, (*BODY_ERRORS, 401, 429), body=LoginRequest)
def login() -> Response:
    """Log in: an access token and a refresh token."""
    body = parse_body(LoginRequest)
    user = authenticate(db.session, body.username, body.password, runtime().settings.bcrypt_rounds)
    end_read()
    if user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    return answer(tokens_for(user))


@bp.post("/refresh")
@jwt_required(refresh=True)
@documented("auth", {200: AccessToken}, BEARER_ERRORS, bearer=True)
def refresh() -> Response:
    """A new access token for a refresh token (a page's session renews its cookie too)."""
    user = db.session.get(User, int(get_jwt_identity()))
    end_read()
    if user is None:
        raise ApiError(401, "unauthorized", "the user no longer exists")
    access = access_token_for(user, get_jwt())
    response = answer(
        AccessToken(access_token=access, token_type="Bearer", expires_in=access_seconds())
    )
    if get_jwt_request_location() == "cookies":  # a page's session: renew its cookie too
        set_session_cookies(response, access)
    return response


@bp.post("/logout")
@jwt_required(verify_type=False)
@documented(
    "auth",
    {200: Revoked},
    (*BODY_ERRORS, *BEARER_ERRORS),
    body=LogoutRequest,
    bearer=True,
    body_optional=True,
)
def logout() -> Response:
    """End the sign-in of the presented token: it, the refresh token of the same login and every
    access token that refresh token made are refused from then on, as the pages' sign-out
    does. A refresh token named in the body (`{"refresh_token": ...}`) is revoked too (tokens
    made before sign-ins had an id)."""
    tokens = [get_jwt()]
    if request.get_data():
        tokens += _refresh_token_to_revoke(parse_body(LogoutRequest).refresh_token)
    revoke_tokens(tokens)  # Redis unreachable: 503, and the tokens are revoked in SQL already
    return answer(Revoked(revoked=True))


def _refresh_token_to_revoke(encoded: str) -> list[dict]:
    """The claims of the caller's own refresh token (none once it has expired: it is refused
    anyway). Raises ApiError 400 for any other token, before anything is revoked."""
    try:
        claims = decode_token(encoded)
    except ExpiredSignatureError:
        return []
    except (PyJWTError, JWTExtendedException):
        raise ApiError(400, "invalid_request", "refresh_token: not a valid token") from None
    if claims.get("type") != "refresh" or claims.get("sub") != get_jwt_identity():
        raise ApiError(400, "invalid_request", "refresh_token: not the caller's refresh token")
    return [claims]


def revoke_tokens(tokens: list[dict]) -> None:
    """Records the revocations (all or none), refuses the tokens in this process at once and
    tells the others. Raises ApiError 503 when SQL cannot record them, RedisError when only the
    telling failed (the other processes then learn it at their next reload)."""
    rt = runtime()
    expiries = {claims["jti"]: datetime.fromtimestamp(claims["exp"], UTC) for claims in tokens}
    # A sign-in lasts no longer than a refresh token made now would.
    sign_in_ends = datetime.now(UTC) + timedelta(days=rt.settings.jwt_refresh_days)
    expiries |= {claims["sid"]: sign_in_ends for claims in tokens if "sid" in claims}
    try:
        record_revocations(rt.sessions, expiries)
    except SQLAlchemyError:
        raise sessions_unavailable() from None
    for jti in expiries:
        rt.revocations.add(jti)
    announce_revocations(rt.redis, rt.settings.key_prefix, expiries)


@bp.get("/me")
@jwt_required()
@documented("auth", {200: Me}, BEARER_ERRORS, bearer=True)
def me() -> Response:
    """The caller."""
    user = db.session.get(User, current_user_id())
    end_read()
    if user is None:
        raise ApiError(401, "unauthorized", "the user no longer exists")
    return answer(Me(id=user.id, username=user.username, role=user.role, email=user.email))


@bp.patch("/me")
@jwt_required()
@documented("auth", {200: Me}, (*BODY_ERRORS, *BEARER_ERRORS), body=MeUpdate, bearer=True)
def update_me() -> Response:
    """Set the caller's e-mail address (null: no more mail)."""
    body = parse_body(MeUpdate)
    user = db.session.get(User, current_user_id())
    if user is None:
        raise ApiError(401, "unauthorized", "the user no longer exists")
    user.email = body.email
    db.session.commit()
    return answer(Me(id=user.id, username=user.username, role=user.role, email=user.email))


# --- cookie sessions for the pages -----------------------------------------------------------


@bp.post("/session")
@limiter.limit(_login_limit)
@limiter.limit(_login_limit, key_func=login_username_key)
@documented("auth", {200: SessionAnswer}, (*BODY_ERRORS, 401, 429), body=LoginRequest)
def start_session() -> Response:
    """The pages' sign-in: tokens in HttpOnly cookies.

    The same credentials as /auth/login, answered with HttpOnly cookies (access and refresh
    tokens) and readable CSRF cookies instead of tokens in the body."""
    body = parse_body(LoginRequest)
    user = authenticate(db.session, body.username, body.password, runtime().settings.bcrypt_rounds)
    end_read()
    if user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    tokens = tokens_for(user)
    response = answer(
        SessionAnswer(
            id=user.id,
            username=user.username,
            role=user.role,
            email=user.email,
            expires_in=tokens.expires_in,
        )
    )
    set_session_cookies(response, tokens.access_token, tokens.refresh_token)
    return response


@bp.delete("/session")
@documented("auth", {200: SignedOut}, (401,))
def end_session() -> Response:
    """The pages' sign-out (cookie session, CSRF header).

    Revokes the tokens the cookies carry and unsets the cookies. Like any unsafe request
    authenticated by cookie it needs the CSRF header (either CSRF cookie's value); with no
    session cookie left there is nothing to protect and the cookies are just unset."""
    config = current_app.config
    cookies = [request.cookies.get(config["JWT_ACCESS_COOKIE_NAME"])]
    cookies.append(request.cookies.get(config["JWT_REFRESH_COOKIE_NAME"]))
    if any(cookies):
        sent = request.headers.get(config["JWT_ACCESS_CSRF_HEADER_NAME"], "")
        expected = [
            request.cookies.get(config["JWT_ACCESS_CSRF_COOKIE_NAME"], ""),
            request.cookies.get(config["JWT_REFRESH_CSRF_COOKIE_NAME"], ""),
        ]
        if not sent or not any(hmac.compare_digest(sent, value) for value in expected if value):
            raise ApiError(401, "unauthorized", "Missing or wrong CSRF token")
    tokens = [claims for claims in map(_cookie_claims, filter(None, cookies)) if claims]
    if tokens:
        with suppress(RedisError):  # recorded in SQL: the sign-out goes on and unsets the cookies
            revoke_tokens(tokens)
    response = answer(SignedOut(signed_out=True))
    unset_jwt_cookies(response)
    return response


def _cookie_claims(encoded: str) -> dict | None:
    """A cookie token's claims; None when it has expired or is invalid (nothing to revoke)."""
    try:
        return decode_token(encoded)
    except (PyJWTError, JWTExtendedException):
        return None
