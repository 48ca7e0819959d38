"""Registration, login, token refresh and revocation."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)

from core.catalog import UsernameTaken, authenticate, create_user
from core.models import User
from web.common import current_user_id, end_read, parse_body, runtime
from web.errors import ApiError
from web.extensions import db, limiter, login_username_key
from web.schemas import Credentials, LoginRequest

bp = Blueprint("auth", __name__, url_prefix="/auth")


def _login_limit() -> str:
    return runtime().settings.ratelimit_login


def tokens_for(user: User) -> dict[str, object]:
    settings = runtime().settings
    claims = {"role": user.role}
    return {
        "access_token": create_access_token(identity=str(user.id), additional_claims=claims),
        "refresh_token": create_refresh_token(identity=str(user.id), additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": settings.jwt_access_minutes * 60,
    }


@bp.post("/register")
def register() -> tuple[Response, int]:
    body = parse_body(Credentials)
    try:
        user = create_user(
            db.session, body.username, body.password, runtime().settings.bcrypt_rounds
        )
        db.session.commit()
    except UsernameTaken:
        raise ApiError(409, "username_taken", "that username is taken") from None
    return jsonify({"id": user.id, "username": user.username}), 201


@bp.post("/login")
@limiter.limit(_login_limit)
@limiter.limit(_login_limit, key_func=login_username_key)
def login() -> Response:
    body = parse_body(LoginRequest)
    user = authenticate(db.session, body.username, body.password)
    end_read()
    if user is None:
        raise ApiError(401, "invalid_credentials", "wrong username or password")
    return jsonify(tokens_for(user))


@bp.post("/refresh")
@jwt_required(refresh=True)
def refresh() -> Response:
    user = db.session.get(User, int(get_jwt_identity()))
    end_read()
    if user is None:
        raise ApiError(401, "unauthorized", "the user no longer exists")
    settings = runtime().settings
    access = create_access_token(identity=str(user.id), additional_claims={"role": user.role})
    return jsonify(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": settings.jwt_access_minutes * 60,
        }
    )


@bp.post("/logout")
@jwt_required(verify_type=False)
def logout() -> Response:
    claims = get_jwt()
    ttl = max(1, int(claims["exp"] - datetime.now(UTC).timestamp()))
    runtime().redis.set(revoked_key(claims["jti"]), "1", ex=ttl)
    return jsonify({"revoked": True})


@bp.get("/me")
@jwt_required()
def me() -> Response:
    user = db.session.get(User, current_user_id())
    end_read()
    if user is None:
        raise ApiError(401, "unauthorized", "the user no longer exists")
    return jsonify({"id": user.id, "username": user.username, "role": user.role})


def revoked_key(jti: str) -> str:
    return f"{runtime().settings.key_prefix}:jwt:revoked:{jti}"
