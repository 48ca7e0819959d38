"""Flask extensions, created once and bound to the app in create_app."""

from __future__ import annotations

import time

from flask import current_app, request
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from core.models import Base


class VerifiedTokenCache(JWTManager):
    """Verifying a token (PyJWT checks every character of it, then the signature) costs more
    than the rest of a purchase's own work, and a buyer sends the same token with every poll.
    Payloads that verified are kept per process, keyed by signing key and token, and only
    their expiry is checked again; revocation is still checked on every request."""

    MAX_ENTRIES = 50_000

    def __init__(self) -> None:
        super().__init__()
        self._verified: dict[tuple[str, str, str | None], dict] = {}

    def _decode_jwt_from_config(
        self, encoded_token: str, csrf_value: str | None = None, allow_expired: bool = False
    ) -> dict:
        key = (str(current_app.config["JWT_SECRET_KEY"]), encoded_token, csrf_value)
        payload = self._verified.get(key)
        if payload is not None and payload.get("exp", 0) > time.time():
            return payload
        payload = super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        if not allow_expired:
            if len(self._verified) >= self.MAX_ENTRIES:
                self._verified.clear()
            self._verified[key] = payload
        return payload


db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})
jwt = VerifiedTokenCache()
migrate = Migrate()
limiter = Limiter(key_func=get_remote_address)


@limiter.request_filter
def _limits_switched_off() -> bool:
    return not current_app.config.get("FLASHSALE_RATELIMIT_ENABLED", True)


def login_username_key() -> str:
    """Per username and client address: failed logins from one address cannot lock the owner of
    a username out of theirs."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    return f"login:{str(username)[:50].lower()}:{get_remote_address()}"


def everyone_key() -> str:
    """One bucket for all clients: a limit on the whole service."""
    return "everyone"
