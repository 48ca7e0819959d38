"""GET /openapi.json: an OpenAPI 3.1 description of the JSON API.

Request bodies come from the pydantic models that validate them (web/schemas.py), so the document
cannot drift from what the routes accept; the response schemas below describe what they answer.
The HTML pages and rq-dashboard (/admin/rq) are left out.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from core.tickets import OrderStatus
from web.common import MAX_DB_ID
from web.schemas import (
    IDEMPOTENCY_KEY_PATTERN,
    MAX_PAGE,
    MAX_PER_PAGE,
    Credentials,
    LoginRequest,
    ProductCreate,
    ProductUpdate,
    PurchaseRequest,
)

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    Credentials,
    LoginRequest,
    ProductCreate,
    ProductUpdate,
    PurchaseRequest,
)
STATUSES = tuple(status.value for status in OrderStatus)

_str = {"type": "string"}
_int = {"type": "integer"}
_bool = {"type": "boolean"}
_nullable_str = {"type": ["string", "null"]}
_nullable_int = {"type": ["integer", "null"]}
_datetime = {"type": ["string", "null"], "format": "date-time"}
_decimal = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": required | (optional or {}),
        "required": list(required),
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _object(
        {
            "error": {"type": "string", "minLength": 1},
            "message": {"type": "string", "minLength": 1},
        },
        {"remaining": {"type": "integer", "minimum": 0}},
    ),
    "Tokens": _object(
        {
            "access_token": _str,
            "refresh_token": _str,
            "token_type": {"const": "Bearer"},
            "expires_in": _int,
        }
    ),
    "AccessToken": _object(
        {"access_token": _str, "token_type": {"const": "Bearer"}, "expires_in": _int}
    ),
    "User": _object({"id": _int, "username": _str}),
    "Me": _object({"id": _int, "username": _str, "role": {"enum": ["buyer", "admin"]}}),
    "Session": _object(
        {"id": _int, "username": _str, "role": {"enum": ["buyer", "admin"]}, "expires_in": _int}
    ),
    "Revoked": _object({"revoked": {"const": True}}),
    "SignedOut": _object({"signed_out": {"const": True}}),
    "Product": _object(
        {
            "id": _int,
            "name": _str,
            "price": _decimal,
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "initial_stock": _int,
            "available": _nullable_int,
            "max_per_user": _int,
            "sale_starts_at": _datetime,
            "sale_ends_at": _datetime,
        }
    ),
    "ProductList": _object({"products": {"type": "array", "items": _ref("Product")}}),
    "Purchase": _object(
        {
            "ticket_id": _str,
            "status": {"enum": list(STATUSES)},
            "product_id": _int,
            "quantity": _nullable_int,
            "expires_at": _datetime,
            "status_url": _str,
        }
    ),
    "OrderStatus": _object(
        {
            "ticket_id": _str,
            "status": {"enum": list(STATUSES)},
            "product_id": _int,
            "quantity": _int,
            "amount": {"type": ["string", "null"]},
            "currency": _nullable_str,
            "created_at": _datetime,
            "updated_at": _datetime,
            "expires_at": _datetime,
            "failure_reason": _nullable_str,
            "payment": {"type": "object"},
        },
        {"poll_after_ms": _int},
    ),
    "Order": _object(
        {
            "ticket_id": _str,
            "status": {"enum": list(STATUSES)},
            "product_id": _int,
            "quantity": _int,
            "amount": _str,
            "currency": _str,
            "created_at": _datetime,
            "updated_at": _datetime,
            "expires_at": _datetime,
            "failure_reason": _nullable_str,
        }
    ),
    "OrderPage": _object(
        {
            "orders": {"type": "array", "items": _ref("Order")},
            "page": _int,
            "per_page": _int,
            "total": _int,
        }
    ),
    "Cancelled": _object({"ticket_id": _str, "status": {"enum": ["cancelled", "refunded"]}}),
    "Inventory": _object(
        {
            "product_id": _int,
            "initial_stock": _int,
            "available": _int,
            "held": _int,
            "sold": _int,
            "sold_in_db": _int,
            "consistent": _bool,
            "settle_backlog": _int,
        }
    ),
    "Overview": {
        "type": "object",
        "required": ["generated_at", "redis", "products", "queue", "last_reconcile_at"],
        "properties": {
            "generated_at": _datetime,
            "redis": {"enum": ["ok", "unreachable"]},
            "products": {"type": "array", "items": {"type": "object"}},
            "queue": {"type": "object"},
            "last_reconcile_at": _datetime,
        },
    },
    "Queued": _object({"job_id": _str, "status": {"const": "queued"}}),
    "WebhookReceived": _object({"received": {"const": True}}, {"duplicate": _bool, "result": _str}),
    "Health": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "failed": {"type": "array", "items": _str},
            "checks": {"type": "object"},
        },
    },
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


BEARER = [{"bearerAuth": []}]
ID_PARAM = {
    "name": "product_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DB_ID},
}
TICKET_PARAM = {"name": "ticket_id", "in": "path", "required": True, "schema": _str}
IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "replays of the same key answer the first ticket again",
    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
}
POLL_HEADERS = {"Retry-After": {"schema": {"type": "string"}}}

# Answers any route may give: a body over the limit, a body that is not JSON.
BODY_ERRORS = {
    "400": _error("invalid JSON or a body the model refuses"),
    "413": _error("body over MAX_BODY_BYTES"),
    "415": _error("the body is not application/json"),
}
AUTH_ERRORS = {"401": _error("no, an invalid, expired or revoked token")}
ADMIN_ERRORS = AUTH_ERRORS | {"403": _error("admins only")}


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: type[BaseModel] | None = None,
    security: list[dict[str, list[str]]] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": responses,
        "security": security if security is not None else [],
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    if parameters:
        operation["parameters"] = parameters
    return operation


def _paths() -> dict[str, Any]:
    return {
        "/auth/register": {
            "post": _op(
                "Create a buyer account",
                "auth",
                {
                    "201": _json("User", "created"),
                    **BODY_ERRORS,
                    "409": _error("username_taken"),
                    "429": _error("rate_limited"),
                },
                body=Credentials,
            )
        },
        "/auth/login": {
            "post": _op(
                "Log in: access and refresh tokens",
                "auth",
                {
                    "200": _json("Tokens", "tokens"),
                    **BODY_ERRORS,
                    "401": _error("invalid_credentials"),
                    "429": _error("rate_limited"),
                },
                body=LoginRequest,
            )
        },
        "/auth/refresh": {
            "post": _op(
                "A new access token for a refresh token",
                "auth",
                {"200": _json("AccessToken", "a new access token"), **AUTH_ERRORS},
                security=BEARER,
            )
        },
        "/auth/logout": {
            "post": _op(
                "Revoke the presented token",
                "auth",
                {"200": _json("Revoked", "revoked"), **AUTH_ERRORS},
                security=BEARER,
            )
        },
        "/auth/me": {
            "get": _op(
                "The caller",
                "auth",
                {"200": _json("Me", "the caller"), **AUTH_ERRORS},
                security=BEARER,
            )
        },
        "/auth/session": {
            "post": _op(
                "The pages' sign-in: tokens in HttpOnly cookies",
                "auth",
                {
                    "200": _json("Session", "signed in; cookies set"),
                    **BODY_ERRORS,
                    "401": _error("invalid_credentials"),
                    "429": _error("rate_limited"),
                },
                body=LoginRequest,
            ),
            "delete": _op(
                "The pages' sign-out (cookie session, CSRF header)",
                "auth",
                {"200": _json("SignedOut", "cookies unset"), "401": _error("wrong CSRF token")},
            ),
        },
        "/products": {
            "get": _op(
                "Products with live availability",
                "products",
                {"200": _json("ProductList", "the catalogue"), "429": _error("rate_limited")},
            ),
            "post": _op(
                "Create a product and put its stock on sale",
                "admin",
                {
                    "201": _json("Product", "created"),
                    **BODY_ERRORS,
                    **ADMIN_ERRORS,
                    "503": _error("inventory_unavailable: saved, stock not yet on sale"),
                },
                body=ProductCreate,
                security=BEARER,
            ),
        },
        "/products/{product_id}": {
            "get": _op(
                "One product",
                "products",
                {
                    "200": _json("Product", "the product"),
                    "404": _error("no such product"),
                    "429": _error("rate_limited"),
                },
                parameters=[ID_PARAM],
            ),
            "patch": _op(
                "Add stock, rename, move the sale window",
                "admin",
                {
                    "200": _json("Product", "updated"),
                    **BODY_ERRORS,
                    **ADMIN_ERRORS,
                    "404": _error("no such product"),
                    "503": _error("inventory_unavailable"),
                },
                body=ProductUpdate,
                security=BEARER,
                parameters=[ID_PARAM],
            ),
        },
        "/purchase/{product_id}": {
            "post": _op(
                "Reserve units: 202 with a ticket to poll",
                "orders",
                {
                    "202": _json("Purchase", "reserved (or the first answer to this key)"),
                    **BODY_ERRORS,
                    **AUTH_ERRORS,
                    "404": _error("no such product"),
                    "409": _error("sold_out, per_user_limit, sale_not_started, sale_ended"),
                    "429": _error("rate_limited"),
                    "503": _error("inventory_unavailable"),
                },
                body=PurchaseRequest,
                security=BEARER,
                parameters=[ID_PARAM, IDEMPOTENCY_PARAM],
            )
        },
        "/orders": {
            "get": _op(
                "The caller's recorded orders, newest first",
                "orders",
                {
                    "200": _json("OrderPage", "a page of orders"),
                    "400": _error("bad paging"),
                    **AUTH_ERRORS,
                },
                security=BEARER,
                parameters=[
                    {
                        "name": name,
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": top},
                    }
                    for name, top in (("page", MAX_PAGE), ("per_page", MAX_PER_PAGE))
                ],
            )
        },
        "/orders/{ticket_id}": {
            "get": _op(
                "A ticket's status (owner or admin)",
                "orders",
                {
                    "200": _json("OrderStatus", "status; poll_after_ms while not final")
                    | {"headers": POLL_HEADERS},
                    **AUTH_ERRORS,
                    "404": _error("no such order"),
                },
                security=BEARER,
                parameters=[TICKET_PARAM],
            )
        },
        "/orders/{ticket_id}/cancel": {
            "post": _op(
                "Release a hold; an admin refunds a confirmed order",
                "orders",
                {
                    "200": _json("Cancelled", "cancelled or refunded"),
                    **AUTH_ERRORS,
                    "404": _error("no such order"),
                    "409": _error("already final or payment in progress"),
                    "503": _error("payment_unavailable"),
                },
                security=BEARER,
                parameters=[TICKET_PARAM],
            )
        },
        "/admin/products/{product_id}/inventory": {
            "get": _op(
                "Redis' figures against SQL's",
                "admin",
                {
                    "200": _json("Inventory", "figures"),
                    **ADMIN_ERRORS,
                    "404": _error("no such product"),
                    "503": _error("inventory_unavailable"),
                },
                security=BEARER,
                parameters=[ID_PARAM],
            )
        },
        "/admin/overview": {
            "get": _op(
                "What the operations page shows",
                "admin",
                {"200": _json("Overview", "the overview"), **ADMIN_ERRORS},
                security=BEARER,
            )
        },
        "/admin/reconcile": {
            "post": _op(
                "Queue a reconciliation",
                "admin",
                {"202": _json("Queued", "queued"), **ADMIN_ERRORS},
                security=BEARER,
            )
        },
        "/payments/webhook": {
            "post": _op(
                "Stripe's payment intent events (Stripe-Signature)",
                "payments",
                {
                    "200": _json("WebhookReceived", "applied, ignored or already seen"),
                    "400": _error("invalid_signature"),
                    "404": _error("webhooks are not configured"),
                    "413": _error("body over 512 KiB"),
                    "503": _error("try_again: Stripe delivers it again"),
                },
                parameters=[
                    {"name": "Stripe-Signature", "in": "header", "required": True, "schema": _str}
                ],
            )
            | {
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            }
        },
        "/health": {
            "get": _op(
                "Database, Redis and queue",
                "health",
                {
                    "200": _json("Health", "all ok"),
                    "503": _json("Health", "names what failed"),
                },
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                "meta",
                {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            )
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas.update(RESPONSE_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Flash-sale purchase API",
            "version": "1.0.0",
            "description": "Errors are always JSON {error, message}. See README.md.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(openapi_document())
