"""Flask extensions, created once and bound to the app in create_app."""

from __future__ import annotations

from flask import request
from flask_jwt_extended import JWTManager, get_jwt_identity
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from core.models import Base

db = SQLAlchemy(metadata=Base.metadata)
jwt = JWTManager()
migrate = Migrate()
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)


def user_key() -> str:
    return f"user:{get_jwt_identity()}"


def login_username_key() -> str:
    body = request.get_json(silent=True)
    username = body.get("username") if isinstance(body, dict) else None
    return f"login:{str(username)[:50].lower()}"
