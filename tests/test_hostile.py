"""Hostile input: injection strings and awkward unicode in every text field are refused with a
4xx (or accepted where they are legitimately valid) and change nothing else; security headers on
every answer; secrets never reach the logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from core.models import Order, Product, User
from tests.helpers import create_product, make_user
from web.extensions import db

HOSTILE = [
    "' OR 1=1 --",
    '"; DROP TABLE users; --',
    "admin'--",
    "1; DELETE FROM products",
    "redis.call('FLUSHALL')",
    "]]; redis.call('DEL', KEYS[1]); --[[",
    "{0}",
    "{1}:stock",
    "%s%s%s%n",
    "%(password)s",
    "${jndi:ldap://x}",
    "\x00",
    "a\x00b",
    "x" * 10_000,
    "\u202eevil\u202c",  # right-to-left override
    "a\u200bb\u200dc\ufeff",  # zero-width characters
    "🔥💥🛒",
    "e\u0301\u0302\u0303\u0304",  # combining characters
    "../../etc/passwd",
    "<script>alert(1)</script>",
]
IDS = [repr(s[:20]) for s in HOSTILE]
# Lone surrogates cannot be sent as UTF-8: they arrive as JSON escapes in raw bytes.
SURROGATES = ["\\ud800", "abc\\udfffdef", "\\udc00\\ud800"]


def state(app: Any) -> dict[str, Any]:
    """The product table, the users, the orders and every product's stock in Redis."""
    with app.app_context():
        products = [
            (p.id, p.name, p.price_minor, p.currency, p.initial_stock, p.max_per_user)
            for p in db.session.scalars(select(Product).order_by(Product.id))
        ]
        users = [
            (u.id, u.username, u.password_hash, u.role)
            for u in db.session.scalars(select(User).order_by(User.id))
        ]
        orders = db.session.scalars(select(Order.ticket_id).order_by(Order.ticket_id)).all()
        db.session.rollback()
        inventory = app.extensions["flashsale"].inventory
        stock = {pid: inventory.figures(pid) for pid, *_ in products}
    return {"products": products, "users": users, "orders": orders, "stock": stock}


def assert_4xx(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:300])
    body = response.get_json()
    assert set(body) == {"error", "message"}, body


@pytest.fixture(scope="module")
def product(app, admin) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return create_product(app.test_client(), admin, stock=20)


def raw_post(client: Any, path: str, body: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        path, data=body.encode(), content_type="application/json", headers=headers or {}
    )


# --- usernames and passwords -----------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_username_is_refused_and_changes_nothing(app, client, value):
    before = state(app)
    assert_4xx(client.post("/auth/register", json={"username": value, "password": "long enough"}))
    for path in ("/auth/login", "/auth/session"):
        response = client.post(path, json={"username": value, "password": "long enough"})
        assert_4xx(response)
        assert "Set-Cookie" not in response.headers
    assert state(app) == before


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_password_is_refused_or_works_as_a_password(app, client, value):
    username = f"h_{secrets.token_hex(5)}"
    before = state(app)
    created = client.post("/auth/register", json={"username": username, "password": value})
    after = state(app)
    if created.status_code == 201:  # a legitimate password: it logs in, and nothing else does
        assert after["users"][:-1] == before["users"] and after["users"][-1][1] == username
        assert after["products"] == before["products"] and after["stock"] == before["stock"]
        ok = client.post("/auth/login", json={"username": username, "password": value})
        assert ok.status_code == 200, ok.get_json()
        assert_4xx(client.post("/auth/login", json={"username": username, "password": value + "x"}))
    else:
        assert_4xx(created)
        assert after == before
    # against an existing account, a hostile password never logs in
    assert_4xx(client.post("/auth/login", json={"username": username + "z", "password": value}))


@pytest.mark.parametrize("escaped", SURROGATES)
def test_lone_surrogates_in_credentials_are_400(app, client, escaped):
    before = state(app)
    for path in ("/auth/register", "/auth/login", "/auth/session"):
        for body in (
            f'{{"username": "u{escaped}", "password": "long enough"}}',
            f'{{"username": "someone", "password": "long enough{escaped}"}}',
        ):
            response = raw_post(client, path, body)
            assert response.status_code == 400, (path, body, response.data[:200])
    assert state(app) == before


# --- product names ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_product_name_is_stored_verbatim_or_refused(app, client, admin, product, value):
    before = state(app)
    created = client.post(
        "/products", json={"name": value, "price": "1.00", "stock": 3}, headers=admin.headers
    )
    after = state(app)
    if created.status_code == 201:  # valid text, stored and answered exactly as sent
        body = created.get_json()
        assert body["name"] == value.strip()
        assert after["products"][:-1] == before["products"]
        assert after["products"][-1][:2] == (body["id"], value.strip())
        assert client.get(f"/products/{body['id']}").get_json()["name"] == value.strip()
        assert after["users"] == before["users"]
        assert {k: v for k, v in after["stock"].items() if k != body["id"]} == before["stock"]
    else:
        assert_4xx(created)
        assert after == before
    renamed = client.patch(
        f"/products/{product['id']}", json={"name": value}, headers=admin.headers
    )
    if renamed.status_code == 200:
        assert renamed.get_json()["name"] == value.strip()
        client.patch(
            f"/products/{product['id']}", json={"name": product["name"]}, headers=admin.headers
        )
    else:
        assert_4xx(renamed)
    assert state(app)["stock"][product["id"]] == before["stock"][product["id"]]


@pytest.mark.parametrize("escaped", SURROGATES)
def test_lone_surrogates_in_a_product_name_are_400(app, client, admin, product, escaped):
    before = state(app)
    body = f'{{"name": "n{escaped}", "price": "1.00", "stock": 1}}'
    assert raw_post(client, "/products", body, admin.headers).status_code == 400
    rename = client.patch(
        f"/products/{product['id']}",
        data=f'{{"name": "n{escaped}"}}'.encode(),
        content_type="application/json",
        headers=admin.headers,
    )
    assert rename.status_code == 400
    assert state(app) == before


# --- purchases: payment_method and Idempotency-Key -------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_payment_method_is_400_and_reserves_nothing(app, client, buyer, product, value):
    before = state(app)
    response = client.post(
        f"/purchase/{product['id']}",
        json={"quantity": 1, "payment_method": value},
        headers=buyer.headers,
    )
    assert_4xx(response)
    assert state(app) == before


# Header values: no NUL, CR or LF (no client sends those), the rest as their UTF-8 bytes.
HEADER_VALUES = [v for v in HOSTILE if "\x00" not in v]


@pytest.mark.parametrize("value", HEADER_VALUES, ids=repr)
def test_hostile_idempotency_key_is_400_and_reserves_nothing(app, client, buyer, product, value):
    before = state(app)
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        value = value.encode().decode("latin-1")  # what a server reads from UTF-8 header bytes
    response = client.post(
        f"/purchase/{product['id']}",
        json={"quantity": 1, "payment_method": "pm_card_visa"},
        headers=buyer.headers | {"Idempotency-Key": value},
    )
    assert_4xx(response)
    assert response.get_json()["error"] == "invalid_idempotency_key"
    assert state(app) == before


@pytest.mark.parametrize("escaped", SURROGATES)
def test_lone_surrogates_in_a_payment_method_are_400(app, client, buyer, product, escaped):
    before = state(app)
    body = f'{{"quantity": 1, "payment_method": "pm_{escaped}"}}'
    assert raw_post(client, f"/purchase/{product['id']}", body, buyer.headers).status_code == 400
    assert state(app) == before


# --- ticket ids in paths ---------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_ticket_id_is_404_and_changes_nothing(app, client, buyer, admin, product, value):
    before = state(app)
    for ticket in (value, f"{product['id']}-{value}"):
        path = quote(ticket, safe="")
        for who in (buyer, admin):
            assert_4xx(client.get(f"/orders/{path}", headers=who.headers))
            assert_4xx(client.post(f"/orders/{path}/cancel", headers=who.headers))
    assert state(app) == before


@pytest.mark.parametrize("raw", ["%ED%A0%80", "1-%ED%A0%80", "1-%FF%FE", "1-%C0%AF"])
def test_invalid_utf8_in_a_ticket_path_is_404(app, client, buyer, raw):
    before = state(app)
    assert_4xx(client.get(f"/orders/{raw}", headers=buyer.headers))
    assert_4xx(client.post(f"/orders/{raw}/cancel", headers=buyer.headers))
    assert state(app) == before


# --- security headers on every answer --------------------------------------------------------

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("get", "/health", {}),
        ("get", "/products", {}),
        ("get", "/openapi.json", {}),
        ("get", "/", {}),
        ("get", "/nowhere", {}),
        ("get", "/products/999999999", {}),
        ("delete", "/products", {}),
        ("get", "/auth/me", {}),
        ("get", "/auth/me", {"headers": {"Authorization": "Bearer not.a.jwt"}}),
        ("post", "/auth/login", {"data": "{bad", "content_type": "application/json"}),
        ("post", "/auth/login", {"data": "x", "content_type": "text/plain"}),
        ("post", "/auth/login", {"json": {"username": "nobody", "password": "x"}}),
        ("post", "/auth/register", {"data": "x" * 20_000, "content_type": "application/json"}),
        ("post", "/payments/webhook", {"data": "{}", "content_type": "application/json"}),
        ("get", "/orders/' OR 1=1 --", {}),
    ],
)
def test_security_headers_on_every_answer(client, buyer, method, path, kwargs):
    if path.startswith("/orders/"):
        kwargs = {"headers": buyer.headers}
    response = getattr(client, method)(path, **kwargs)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name)


def test_security_headers_on_admin_refusals(client, buyer):
    for response in (
        client.get("/admin/overview", headers=buyer.headers),
        client.get("/admin/overview"),
        client.post("/products", json={}, headers=buyer.headers),
    ):
        assert response.status_code in (401, 403)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value


# --- secrets never reach the logs ------------------------------------------------------------


def _signed_event(secret: str) -> tuple[bytes, dict[str, str]]:
    event = {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": "charge.refunded",  # acknowledged and ignored
        "created": int(time.time()),
        "data": {"object": {"id": f"ch_{secrets.token_hex(8)}", "object": "charge"}},
    }
    payload = json.dumps(event).encode()
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return payload, {"Stripe-Signature": f"t={timestamp},v1={mac.hexdigest()}"}


def test_secrets_never_reach_the_logs(app, client, admin, product, caplog):
    password = f"pw-{secrets.token_hex(12)}"
    user = make_user(app, password=password)
    caplog.set_level(logging.DEBUG)
    login = client.post("/auth/login", json={"username": user.username, "password": password})
    assert login.status_code == 200
    tokens = login.get_json()
    wrong = client.post("/auth/login", json={"username": user.username, "password": password + "!"})
    assert wrong.status_code == 401
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    bought = client.post(
        f"/purchase/{product['id']}",
        json={"quantity": 1, "payment_method": "pm_card_visa"},
        headers=bearer | {"Idempotency-Key": f"k-{secrets.token_hex(6)}"},
    )
    assert bought.status_code == 202, bought.get_json()
    assert client.get(bought.get_json()["status_url"], headers=bearer).status_code == 200
    webhook_secret = os.environ["STRIPE_WEBHOOK_SECRET"]
    payload, signature = _signed_event(webhook_secret)
    hook = client.post(
        "/payments/webhook", data=payload, content_type="application/json", headers=signature
    )
    assert hook.status_code == 200, hook.get_json()
    forged = client.post(
        "/payments/webhook",
        data=payload,
        content_type="application/json",
        headers={"Stripe-Signature": "t=1,v1=" + "0" * 64},
    )
    assert forged.status_code == 400
    assert client.post("/auth/logout", headers=bearer).status_code == 200

    assert caplog.records, "nothing was logged: the capture is not working"
    secret_values = {
        "JWT secret": app.config["JWT_SECRET_KEY"],
        "password": password,
        "wrong password": password + "!",
        "webhook secret": webhook_secret,
        "access token": tokens["access_token"],
        "refresh token": tokens["refresh_token"],
        "admin token": admin.token,
        "signature": signature["Stripe-Signature"].split("v1=")[1],
    }
    for record in caplog.records:
        text = f"{record.getMessage()} {record.exc_text or ''} {record.__dict__!r}"
        for what, value in secret_values.items():
            assert value not in text, f"the {what} appears in a log record: {record.name}"
