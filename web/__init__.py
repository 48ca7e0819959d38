"""The HTTP API. `create_app` is found by `flask --app web` and by gunicorn (`web:create_app()`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click
from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from core.catalog import UsernameTaken, create_user
from core.config import Settings
from core.db import engine_options, prepare_engine
from core.keys import ServiceKeys
from core.logs import configure_logging
from core.redis_urls import redis_pool
from core.runtime import Runtime
from web import (
    admin,
    auth,
    events,
    gate,
    health,
    metrics,
    openapi,
    orders,
    pages,
    payments,
    products,
    queue,
    search,
    tickets,
)
from web.common import SECURITY_HEADERS, SoldOutFlags, parse_purchase_rate, register_request_ids
from web.errors import error_response, register_error_handlers
from web.extensions import db, jwt, limiter, migrate
from web.health import SideBySide
from web.kicker import SettlementKicker
from web.sessions import token_revoked

ROLES = ("buyer", "admin", "gate")
MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
# The JSON API, which the OpenAPI document describes (with itself: web/openapi.py).
API_BLUEPRINTS = (
    auth.bp,
    products.bp,
    search.bp,
    events.bp,
    orders.bp,
    queue.bp,
    tickets.bp,
    gate.bp,
    payments.bp,
    admin.bp,
    health.bp,
)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url),
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.jwt_access_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.jwt_refresh_days),
        # API clients send a Bearer header; the pages (web/pages.py) sign in with cookies, and
        # every unsafe request authenticated by cookie must carry the CSRF double-submit header.
        JWT_TOKEN_LOCATION=["headers", "cookies"],
        JWT_COOKIE_CSRF_PROTECT=True,
        # The names rq-dashboard's own JavaScript uses: its buttons work for a cookie session.
        JWT_ACCESS_CSRF_COOKIE_NAME="_csrf_token",
        JWT_ACCESS_CSRF_HEADER_NAME="X-CSRFToken",
        JWT_REFRESH_CSRF_HEADER_NAME="X-CSRFToken",
        JWT_COOKIE_SAMESITE="Lax",
        JWT_COOKIE_SECURE=settings.is_production,
        RATELIMIT_ENABLED=True,  # the Limiter is shared: each app switches itself (below)
        FLASHSALE_RATELIMIT_ENABLED=settings.ratelimit_enabled,
        # limits' Redis storage on the service's own pool (which follows a Sentinel's primary);
        # the URI only picks that storage.
        RATELIMIT_STORAGE_URI="redis://",
        RATELIMIT_STORAGE_OPTIONS={"connection_pool": redis_pool(settings.redis_url)},
        RATELIMIT_KEY_PREFIX=ServiceKeys(settings.key_prefix).rate_limits,
        # X-RateLimit headers cost two Redis reads per request: only a 429 says when to retry.
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_SWALLOW_ERRORS=True,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    if settings.trusted_proxies:
        # The client address (rate limits) and scheme as the proxies saw them. Only the headers
        # every TLS proxy sets are trusted: X-Forwarded-Host or -Prefix a proxy passes through
        # untouched would be the client's own.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_prefix=0)
    configure_logging("web", settings.log_level)
    app.extensions["flashsale"] = Runtime(settings, settings.inventory_timeout_seconds)
    app.extensions["flashsale_kicker"] = SettlementKicker(settings)
    app.extensions["flashsale_sold_out"] = SoldOutFlags(settings.sold_out_cache_ms)
    app.extensions["flashsale_purchase_rate"] = parse_purchase_rate(settings)
    app.extensions["flashsale_health"] = SideBySide(settings.health_check_timeout_seconds)

    db.init_app(app)
    with app.app_context():
        prepare_engine(db.engine)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    jwt.init_app(app)
    limiter.init_app(app)
    _register_jwt_callbacks(settings)
    register_error_handlers(app)
    for blueprint in (*API_BLUEPRINTS, pages.bp, openapi.bp, metrics.bp):
        app.register_blueprint(blueprint)
    admin.mount_rq_dashboard(app)
    app.wsgi_app = queue.QueueShortcut(app, app.wsgi_app)  # type: ignore[method-assign]
    _register_cli(app, settings)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name, value)
        return response

    register_request_ids(app)

    return app


def _register_jwt_callbacks(settings: Settings) -> None:
    def unauthorized(code: str, message: str) -> Response:
        return error_response(401, code, message)

    jwt.unauthorized_loader(lambda reason: unauthorized("unauthorized", reason))
    jwt.invalid_token_loader(lambda reason: unauthorized("invalid_token", reason))
    jwt.expired_token_loader(lambda _h, _p: unauthorized("token_expired", "the token has expired"))
    jwt.revoked_token_loader(lambda _h, _p: unauthorized("token_revoked", "the token was revoked"))
    jwt.needs_fresh_token_loader(
        lambda _h, _p: unauthorized("fresh_token_required", "log in again")
    )
    jwt.user_lookup_error_loader(lambda _h, _p: unauthorized("unauthorized", "unknown user"))

    @jwt.token_verification_failed_loader
    def _claims_failed(_h, _p):  # type: ignore[no-untyped-def]
        return unauthorized("invalid_token", "the token's claims were refused")

    @jwt.token_in_blocklist_loader
    def _is_revoked(_header: dict, payload: dict) -> bool:
        return token_revoked(payload)


def _register_cli(app: Flask, settings: Settings) -> None:
    @app.cli.command("create-admin")
    @click.argument("username")
    @click.password_option("--password", help="prompted for when left out")
    def create_admin(username: str, password: str) -> None:
        """Create an admin user."""
        _create_user(username, password, "admin")

    @app.cli.command("create-user")
    @click.argument("username")
    @click.option("--role", type=click.Choice(ROLES), default="buyer", show_default=True)
    @click.password_option("--password", help="prompted for when left out")
    def create_user_command(username: str, role: str, password: str) -> None:
        """Create a user: a buyer, an admin, or gate staff (who scan tickets)."""
        _create_user(username, password, role)

    def _create_user(username: str, password: str, role: str) -> None:
        try:
            create_user(db.session, username, password, settings.bcrypt_rounds, role=role)
            db.session.commit()
        except UsernameTaken:
            raise click.ClickException(f"user {username!r} exists") from None
        click.echo(f"{role} {username!r} created")
