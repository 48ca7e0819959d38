"""Flask extensions, created once and bound to the app in create_app."""

from __future__ import annotations

from flask import current_app, request
from flask_jwt_extended import JWTManager, get_jwt_identity
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from core.models import Base

db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})
jwt = JWTManager()
migrate = Migrate()
limiter = Limiter(key_func=get_remote_address)


@limiter.request_filter
def _limits_switched_off() -> bool:
    return not current_app.config.get("FLASHSALE_RATELIMIT_ENABLED", True)


def user_key() -> str:
    return f"user:{get_jwt_identity()}"


def login_username_key() -> str:
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    return f"login:{str(username)[:50].lower()}"
