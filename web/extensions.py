"""Flask extensions, created once and bound to the app in create_app."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request
from flask_jwt_extended import JWTManager
from flask_jwt_extended.config import config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_jwt_extended.tokens import _decode_jwt
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from jwt import ExpiredSignatureError, PyJWTError

from core.models import Base


class VerifiedTokenCache(JWTManager):
    """Verifying a token (PyJWT checks every character of it, then the signature) costs more
    than the rest of a purchase's own work, and a buyer sends the same token with every poll.
    Payloads that verified are kept per process, keyed by signing key and token, and only
    their expiry is checked again; revocation is still checked on every request.

    A token not seen yet is verified with one decode: the library decodes it twice more without
    the signature first, which only a per-token key loader needs, and this app has none."""

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
        payload = self._verify(encoded_token, csrf_value, allow_expired)
        if not allow_expired:
            if len(self._verified) >= self.MAX_ENTRIES:
                self._verified.clear()
            self._verified[key] = payload
        return payload

    def verified_claims(self, secret: str, encoded_token: str) -> dict | None:
        """A header token's payload if this process verified it already and it has not expired
        (revocation is the caller's to check); None otherwise."""
        payload = self._verified.get((secret, encoded_token, None))
        if payload is None or payload.get("exp", 0) <= time.time():
            return None
        return payload

    def verify_quietly(self, encoded_token: str) -> dict | None:
        """A header token's payload, verified as the routes verify it (and kept), or None when
        it does not verify (a route then answers why). Needs an app context."""
        try:
            return self._decode_jwt_from_config(encoded_token)
        except (PyJWTError, JWTExtendedException):
            return None

    def _verify(self, encoded_token: str, csrf_value: str | None, allow_expired: bool) -> dict:
        if self._decode_key_callback is not default_decode_key_callback:
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)
        try:
            return _decode_jwt(
                algorithms=config.decode_algorithms,
                allow_expired=allow_expired,
                audience=config.decode_audience,
                csrf_value=csrf_value,
                encoded_token=encoded_token,
                identity_claim_key=config.identity_claim_key,
                issuer=config.decode_issuer,
                leeway=config.leeway,
                secret=config.decode_key,
                verify_aud=config.decode_audience is not None,
                verify_sub=config.verify_sub,
            )
        except ExpiredSignatureError:
            # The library's own path attaches the header and claims its expiry callback reads.
            return super()._decode_jwt_from_config(encoded_token, csrf_value, allow_expired)


db = SQLAlchemy(metadata=Base.metadata, session_options={"expire_on_commit": False})
jwt = VerifiedTokenCache()
migrate = Migrate()
limiter = Limiter(key_func=get_remote_address)


F = TypeVar("F", bound=Callable[..., Any])


def without_http_limit(view: F) -> F:
    """A route Flask-Limiter leaves alone: no limit of its own, so not even the per-request
    lookup of limits (the purchase route counts a buyer's attempts inside the reserve script)."""
    view.no_http_limit = True  # type: ignore[attr-defined]  # functools.wraps carries it outward
    return limiter.exempt(view)


@limiter.request_filter
def _not_limited() -> bool:
    if not current_app.config.get("FLASHSALE_RATELIMIT_ENABLED", True):
        return True
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "no_http_limit", False)


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
